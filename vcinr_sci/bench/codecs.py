"""``vcinr bench codecs``: vcinr against the codecs climate scientists use today, at equal
error, from real bytes.

Every codec runs through its numcodecs code path (``encode`` / ``decode`` of the codec
objects a Zarr array would hold, filters first), on the same held-out fields:

- **vcinr** at each learned quality level (``q*``) and, as the COIN++ baseline on the
  same INR, uniform quantisation of the latents (``u<b>``, Zstd-coded indices); at the
  model's encode steps and with more inner steps at encode time (``--more-steps``). Its
  bits are reported from the chunk bytes alone and with the model's bytes (INR and
  coders, the safetensors file) spread over the fields compressed;
- **SZ3** (absolute bound) and **SPERR** (point-wise error) from imagecodecs, **ZFP**
  (``numcodecs.ZFPY``, fixed accuracy and fixed rate), **JPEG 2000** (imagecodecs, on a
  16-bit linear quantisation of the field over its range), **BitRound + Zstd** and
  **Zstd** lossless (numcodecs), each with its knob swept (on fields with NaN points,
  each stores the field's mask beside it: :mod:`vcinr_sci.bench.masked`);
- **baselines that see vcinr's training data** (:mod:`vcinr_sci.bench.baselines`, fitted
  on the training part of the model's own split): the training mean field alone, with
  SPERR / SZ3 on the anomaly, EOF-k with entropy-coded coefficients (k and step swept;
  each coefficient's step relative to its own deviation), EOF abs-step (one absolute step
  for all coefficients, k up to 256; k and step swept, the step finer at the largest k
  until the highest target PSNR is passed), and EOF-8 with SPERR on the
  residual; their model file (mean, EOFs, deviations) is counted as vcinr's is.

Classical codecs compress one 2-D field at a time (as the papers' tables do); vcinr
compresses chunks of ``--chunk-fields`` fields, each field coded independently.

Per point: bits per value (bpv = 8 x bytes / grid values), compression ratio against
float32, PSNR on the fixed range (``--psnr-range``, by default method.md's ERA5
temperature range [202.66, 320.93] K mapped to [0, 1]; mean of per-field PSNR) and on
the data range of the fields evaluated, RMSE, latitude-weighted (cos lat) RMSE and max
abs error in the data's units, encode and decode throughput in MB/s of float32 on this
machine (CPU, or the GPU the vcinr codec runs on when one is present).

Every sweep of a classical codec or a baseline goes on past its listed knob values until
it passes the highest target PSNR, or says why it cannot (:mod:`vcinr_sci.bench.sweep`).

Summary: the bits each codec needs for 40, 45 and 50 dB (log-linear interpolation along
the lower convex front of its sweep's points, log-bits against PSNR; "-" where the sweep
never reaches it), and vcinr's bits over the best other codec's (classical or baseline;
below 1: vcinr wins), for vcinr's whole chunks and its latent bytes alone. "Model per 1e9 values" spreads the model
file (vcinr's or a baseline's) over a billion values, an archive's size.

Distance to the physical limit (vcinr): FLOPs per decoded and per encoded value, counted
by torch's FlopCounterMode from the model's matrix products, and the fraction of this
machine's float32 matrix-multiply rate (a large product, measured in the same run) that
the codec's measured throughput achieves.

Data: by default the held-out (test) fields of the model's own data split
(in-distribution). ``--data PATH --variable V --grid-dims lat,lon`` takes any dataset
instead (cross-dataset: a model trained on one dataset applied to another);
``--regrid 46x90`` / ``181x360`` (the papers' ERA5 grids) or ``model`` (the model's own
lat/lon grid) interpolates it bilinearly first (:mod:`vcinr_sci.data.regrid`). vcinr rows need
the fields on the model's grid.

    vcinr bench codecs --model artifacts/<hash> --json out/codecs.json --plot out/codecs.png
    vcinr bench codecs --model artifacts/<hash> --data ts.nc --variable TS --grid-dims lat,lon
"""

# This module is the command line; the parts it wires live beside it: fields (what is
# compressed), candidates (the codecs and their sweeps), measure (bytes, time, error,
# FLOPs), summary (bits at a target PSNR, ratios at a bound) and report (tables, plot).

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vcinr_sci.bench.baselines import TrainingBasis, training_fields
from vcinr_sci.bench.candidates import (
    MAX_EOFS,
    Candidate,
    baseline_candidates,
    bounded_baseline_candidates,
    bounded_candidates,
    classical_candidates,
    corrected_candidates,
    vcinr_candidates,
)
from vcinr_sci.bench.fields import index_ranges, load_fields
from vcinr_sci.bench.measure import measure, vcinr_costs
from vcinr_sci.bench.output import write_json
from vcinr_sci.bench.report import markdown, plot
from vcinr_sci.bench.summary import TARGETS_DB, bounded_summary, summarise
from vcinr_sci.bench.sweep import extend_sweeps
from vcinr_sci.data.grids import SphericalGrid
from vcinr_sci.errors import UsageError
from vcinr_sci.model.artifact import MANIFEST, WEIGHTS, find_artifact
from vcinr_sci.model.device import default_device
from vcinr_sci.model.registry import resolve_model

METHOD_RANGE = (202.66, 320.93)  # method.md / COIN++: ERA5 temperature (K) -> [0, 1]


def _model_path(text: str) -> Path:
    return Path(text) if Path(text, MANIFEST).is_file() else find_artifact(text)


def run(args: argparse.Namespace) -> dict[str, Any]:
    model_path = _model_path(args.model) if args.model else None
    loaded = resolve_model(model_path) if model_path else None
    model_grid = loaded.grid if loaded is not None and isinstance(loaded.grid, SphericalGrid) else None
    fields = load_fields(args, model_grid, loaded.artifact.config if loaded else None)
    x = fields.values
    if args.psnr_range == "model":
        if loaded is None:
            raise UsageError("vcinr bench codecs: --psnr-range model needs --model")
        psnr_range = (loaded.artifact.normaliser.lo, loaded.artifact.normaliser.hi)
    else:
        psnr_range = tuple(args.psnr_range)
    notes = []
    on_grid = loaded is not None and tuple(x.shape[1:]) == tuple(loaded.grid.shape)
    if loaded is not None and not on_grid:
        notes.append(f"vcinr skipped: fields are {x.shape[1:]}, the model's grid is {tuple(loaded.grid.shape)} "
                     "(use --regrid model)")
    # The baselines use the training part of the model's own split, on the model's grid.
    basis = None
    if on_grid and not args.no_baselines:
        art = loaded.artifact
        basis = TrainingBasis.fit(training_fields(art.config.data, art.split), max_k=MAX_EOFS)
        train = art.split["positions"]["train"]
        notes.append(f"baselines fitted on the model's training part ({len(train)} {art.split['dim']} positions: "
                     f"{index_ranges(train)}); EOFs of its anomalies: {basis.max_k}; "
                     f"their total deviation ('dev', EOF abs-step's unit): {basis.deviation:.4g}")
    if args.bounded:
        candidates = bounded_candidates(fields, model_path if on_grid else None, args.levels,
                                        args.bounds, args.chunk_fields)
        if basis is not None:
            candidates += bounded_baseline_candidates(basis, fields, args.bounds, args.chunk_fields)
    else:
        candidates = [] if args.no_classical else classical_candidates(fields, args.quick)
        if basis is not None:
            candidates += baseline_candidates(basis, fields, args.chunk_fields, args.quick)
        if on_grid:
            candidates += vcinr_candidates(model_path, args.levels, args.more_steps, args.chunk_fields)
            if args.vcinr_bounds:
                span = float(np.nanmax(x) - np.nanmin(x)) or 1.0
                candidates += corrected_candidates(model_path, args.levels, args.vcinr_bounds, span, args.chunk_fields)
    vcinr_model_bytes = (model_path / WEIGHTS).stat().st_size if model_path else 0

    def measured(c: Candidate) -> dict[str, Any]:
        row = measure(c, fields, psnr_range, vcinr_model_bytes)
        print(f"  {c.family:28s} {c.knob:22s} {row['bpv']:9.4f} bpv  {row['psnr']:6.2f} dB  "
              f"max err {row['max_abs_error']:.3g}", file=sys.stderr, flush=True)
        return row

    rows = [measured(c) for c in candidates]
    if not args.bounded:
        rows += extend_sweeps(candidates, rows, measured, max(TARGETS_DB))
    out: dict[str, Any] = {
        "benchmark": "codecs",
        "fields": fields.source,
        "num_fields": len(x),
        "grid": list(x.shape[1:]),
        "values": int(x.size),
        "psnr_range": list(psnr_range),
        "data_range": [float(np.nanmin(x)), float(np.nanmax(x))],
        "model": loaded.hash if loaded else None,
        "model_bytes": vcinr_model_bytes,
        "chunk_fields": args.chunk_fields,
        "vcinr_device": str(default_device()),
        "threads": torch.get_num_threads(),
        "mode": "bounded" if args.bounded else "psnr",
        "rows": rows,
        "summary": bounded_summary(rows) if args.bounded else summarise(rows),
        "notes": notes,
    }
    if loaded is not None and any(r["kind"] == "vcinr" for r in rows):
        steps = min(r["inner_steps"] for r in rows if r["kind"] == "vcinr")
        out["vcinr_cost"] = vcinr_costs(model_path, fields, steps, rows)
    return out


def _range(text: str) -> list[float] | str:
    if text == "model":
        return text
    lo, hi = (float(v) for v in text.split(","))
    if not hi > lo:
        raise argparse.ArgumentTypeError("--psnr-range needs LO,HI with HI > LO")
    return [lo, hi]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vcinr bench codecs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="vcinr model artifact (folder or hash) with trained coders")
    p.add_argument("--levels", type=lambda s: [v for v in s.split(",") if v], help="quality levels (default: all)")
    p.add_argument("--more-steps", type=lambda s: [int(v) for v in s.split(",") if v], default=[30],
                   help="extra encode inner-step counts for the learned levels (default 30; '' for none)")
    p.add_argument("--chunk-fields", type=int, default=16, help="fields per vcinr chunk (default 16)")
    p.add_argument("--data", action="append", help="dataset file(s) instead of the model's held-out fields")
    p.add_argument("--variable", help="variable of --data")
    p.add_argument("--grid-dims", help="grid dims of --data, e.g. lat,lon")
    p.add_argument("--concat-dim", help="stack several --data files along this new dim")
    p.add_argument("--part", default="test", choices=["train", "val", "test"], help="model split part (default test)")
    p.add_argument("--regrid", help="46x90, 181x360 (equiangular, the papers' grids), any NxM, or 'model'")
    p.add_argument("--fields", type=int, default=24, help="fields evaluated, evenly spaced (default 24; 0 = all)")
    p.add_argument("--consecutive", action="store_true",
                   help="evaluate the last --fields fields in a row, as a store chunked along time holds them, "
                        "instead of evenly spaced ones")
    p.add_argument("--psnr-range", type=_range, default=list(METHOD_RANGE),
                   help="LO,HI mapped to [0, 1] for PSNR (default method.md's 202.66,320.93 K), "
                        "or 'model': the model's normalisation range (its training min/max or fixed range)")
    p.add_argument("--no-classical", action="store_true", help="no per-field (classical) codecs")
    p.add_argument("--no-baselines", action="store_true",
                   help="no baselines fitted on the model's training data (mean field, EOFs)")
    p.add_argument("--bounded", action="store_true",
                   help="compare at equal max-abs-error bounds (vcinr's bounded mode vs SZ3, SPERR, ZFP, safeguards)")
    p.add_argument("--bounds", type=lambda s: [float(v) for v in s.split(",") if v], default=[1e-4, 1e-3, 1e-2],
                   help="bounds as fractions of the data range, for --bounded (default 1e-4,1e-3,1e-2)")
    p.add_argument("--vcinr-bounds", type=lambda s: [float(v) for v in s.split(",") if v], default=[],
                   help="also vcinr's bounded mode in the PSNR sweep: each learned level with a correction to each "
                        "of these bounds (fractions of the data range), family 'vcinr + correction' (default none)")
    p.add_argument("--quick", action="store_true", help="two knob values per codec (smoke test)")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--plot", metavar="PNG")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = run(args)
    print(markdown(out))
    if args.json:
        write_json(args.json, out)
    if args.plot:
        plot(out, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
