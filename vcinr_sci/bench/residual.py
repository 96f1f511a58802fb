"""``vcinr bench residual``: how to code the error-bounded mode's correction, measured.

For held-out fields of a real dataset, coded in chunks by the plain ``vcinr`` codec, and
for each bound (a fraction of each chunk's value range, 1e-4, 1e-3, 1e-2 by default), it
codes what the bounded mode must add, several ways, and checks every point of each result
against the bound:

- ``rans``: the codec's residual section (:mod:`vcinr_sci.coding.bound`) held to rANS: the
  quantised residual ``q`` under compressai's rANS with a per-chunk histogram, outliers raw;
- ``sperr``: the codec's residual section held to SPERR (imagecodecs, point-wise error
  ``b - m``) on the float residual ``x - xhat``, points that miss stored raw;
- ``pick``: what the codec stores: per chunk the smaller of the two (the row's ``picked``
  counts how often each method was chosen);
- ``zstd``: the same ``q`` (and outliers) as the smallest integer dtype that holds it,
  numcodecs Zstd (level 19, its smallest output; level 3 reported as ``zstd-3``);
- ``sz3``: SZ3 (pysz) on the float32 residual ``x - xhat`` at the valid points (1-D)
  with absolute bound ``b - m``, then the same check, points that miss stored raw as
  outliers; ``sz3-grid`` the same on the chunk grid, masked points 0 (as ``sperr``);
- ``safeguards``: compression-safeguards' ``SafeguardedCodec`` (``eb``, ``abs``,
  ``b - m``) around the plain codec, all its bytes.

Each row gives bits per valid value of the correction alone (``correction``) and of the
whole chunk (latents + correction), and the encode / decode time of the correction stage
(for ``safeguards``, its whole encode and decode, which include the plain codec's).
The same margin ``m`` (:func:`vcinr_sci.coding.bound.margin`) is used throughout, so every
method meets the same guarantee. Without ``--model`` a tiny model is trained on the
data's training part first (seconds; the residuals are then those of a weak INR).

    vcinr bench residual                          # CCSM TREFHT from the shared data folder
    vcinr bench residual --model artifacts/<hash> --fields 32 --json out/residual.json
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from numcodecs import Zstd

from vcinr_sci.bench.output import write_json
from vcinr_sci.codec.core import decode_latents
from vcinr_sci.codec.numcodecs import VCINRCodec
from vcinr_sci.coding import bound, residual_format
from vcinr_sci.config import load_config
from vcinr_sci.data.items import load_dataset
from vcinr_sci.data.sources import shared_data_dir
from vcinr_sci.errors import UsageError
from vcinr_sci.model.artifact import ModelArtifact, load_artifact, save_artifact
from vcinr_sci.model.training import add_uniform_coder, train_in_process

REPO = Path(__file__).resolve().parents[2]
_METHOD_NAMES = {residual_format.PLAIN: "rans", residual_format.LORENZO: "rans", residual_format.SPERR: "sperr"}
METHODS = ("rans", "sperr", "pick", "zstd", "zstd-3", "sz3", "sz3-grid", "safeguards")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vcinr bench residual", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", help="model artifact folder (default: train a tiny model on --data)")
    p.add_argument("--data", help="netCDF file (default: CCSM TREFHT run 57 in the shared data folder)")
    p.add_argument("--variable", default="TREFHT", help="variable of --data (default TREFHT)")
    p.add_argument("--grid-dims", nargs="+", default=["lat", "lon"], help="grid dims of --data (default lat lon)")
    p.add_argument("--fields", type=int, default=16, help="held-out fields to code (default 16)")
    p.add_argument("--chunk-fields", type=int, default=8, help="fields per chunk (default 8)")
    p.add_argument("--bounds", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2],
                   help="bounds as fractions of each chunk's value range (default 1e-4 1e-3 1e-2)")
    p.add_argument("--train-steps", type=int, default=40, help="outer steps of the tiny model (default 40)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return p


# ---------------------------------------------------------------------------- model and data


def tiny_model(data_path: str, variable: str, grid_dims: list[str], steps: int) -> Path:
    """A tiny model trained on ``data_path``'s training part (configs/tiny.yaml sizes),
    with a 6-bit uniform latent quantiser ``u6``, as the tests' tiny model."""
    overrides = {"data.paths": [data_path], "data.variable": variable, "data.grid_dims": grid_dims}
    artifact, items = train_in_process(load_config(REPO / "configs" / "tiny.yaml", overrides), steps)
    add_uniform_coder(artifact, items, bits=6)
    return save_artifact(artifact, tempfile.mkdtemp(prefix="vcinr-bench-residual-"))


def held_out_fields(artifact: ModelArtifact, n: int) -> np.ndarray:
    """The first ``n`` fields of the artifact's test part (else validation), ``(n, *grid)``."""
    data = load_dataset(artifact.config.data, artifact.normaliser)
    part = data.split.test if len(data.split.test) else data.split.val
    return data.source.load(np.asarray(part[:n]))


# ---------------------------------------------------------------------------- methods


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _smallest_int(q: np.ndarray) -> np.ndarray:
    for dt in (np.int8, np.int16, np.int32):
        info = np.iinfo(dt)
        if q.size == 0 or (q.min() >= info.min and q.max() <= info.max):
            return q.astype(dt)
    return q


def _outlier_bytes(x: np.ndarray, outliers: np.ndarray) -> int:
    index = np.flatnonzero(outliers)
    if not index.size:
        return 0
    return len(Zstd(9).encode(np.diff(index, prepend=-1).astype("<u4"))) + len(Zstd(9).encode(x[index]))


def _zstd(level: int):
    def run(x, xhat, b, m):
        (q, step, outliers), t_q = _timed(lambda: bound.quantise(x, xhat, b, m))
        codec = Zstd(level)
        small = _smallest_int(q)
        (blob, extra), t_enc = _timed(lambda: (codec.encode(small), _outlier_bytes(x, outliers)))
        back, t_dec = _timed(lambda: np.frombuffer(codec.decode(blob), small.dtype).astype(np.int64))
        out, t_apply = _timed(lambda: bound.corrected(xhat, back, step, x.dtype))
        out[outliers] = x[outliers]
        return out, len(blob) + extra, t_q + t_enc, t_dec + t_apply

    return run


def _sz3(x, xhat, b, m, kept=None):
    """SZ3 on the residual at the valid points (1-D), or with ``kept`` on the chunk grid
    (masked points 0), as the ``sperr`` row codes it."""
    from pysz import sz, szConfig, szErrorBoundMode

    r = (x.astype(np.float64) - xhat).astype(np.float32)
    if kept is not None:
        grid = np.zeros(kept.shape, np.float32)
        grid[kept] = r
        r = grid

    def encode():
        conf = szConfig(r.shape)
        conf.errorBoundMode = szErrorBoundMode.ABS
        conf.absErrorBound = b - m
        return sz.compress(r, conf)[0]

    blob, t_enc = _timed(encode)
    back, t_dec = _timed(lambda: sz.decompress(blob, np.float32, r.shape)[0])
    back = back if kept is None else back[kept]
    out = bound.corrected(xhat, back.astype(np.float64), 1.0, x.dtype)
    with np.errstate(invalid="ignore"):
        outliers = ~(np.abs(out.astype(np.float64) - x) <= b - m)
    out[outliers] = x[outliers]
    return out, blob.size + _outlier_bytes(x, outliers), t_enc, t_dec


def _safeguards(chunk: np.ndarray, plain: VCINRCodec, b: float, m: float):
    from numcodecs_safeguards import SafeguardedCodec

    codec = SafeguardedCodec(codec=plain, safeguards=[{"kind": "eb", "type": "abs", "eb": b - m}])
    blob, t_enc = _timed(lambda: codec.encode(chunk))
    out, t_dec = _timed(lambda: np.asarray(codec.decode(blob)).reshape(chunk.shape))
    return out, len(blob), t_enc, t_dec


# ---------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    if args.model:
        path = Path(args.model)
    else:
        data = Path(args.data) if args.data else (shared_data_dir() or Path("missing")) / "ccsm_trefht_1890-1999_annual_run57.nc"
        if not data.is_file():
            raise UsageError(f"data file {data} not found: pass --data or set VCINR_DATA_DIR")
        path = tiny_model(str(data), args.variable, args.grid_dims, args.train_steps)
    artifact = load_artifact(path)
    plain = VCINRCodec.for_model(path, "u6" if "u6" in artifact.quality_levels else artifact.quality_levels[0])
    fields = held_out_fields(artifact, args.fields)
    norm = artifact.normaliser
    sums: dict[tuple[float, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    picked: dict[float, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    n_valid = 0
    for start in range(0, len(fields), args.chunk_fields):
        chunk = np.ascontiguousarray(fields[start : start + args.chunk_fields])
        kept = ~np.isnan(chunk)
        x = chunk[kept]
        n_valid += x.size
        encoded = plain.encode(chunk)
        latent_bytes = len(encoded)
        lat = decode_latents(encoded)
        inr = lat.inr_normalised()[kept]
        xhat = norm.denormalise(inr.astype(np.float64))
        device = lat.model.reconstruction_margin(lat.phi, inr - lat.offsets_on_grid()[kept], lat.offsets)
        for rel in args.bounds:
            spec = bound.ErrorBound(max_rel_error=rel)
            b = spec.absolute(x)
            m = bound.margin(b, device, float(np.abs(x).max()), x.dtype)
            results = {}
            for name, methods in (("rans", ("rans",)), ("sperr", ("sperr",)), ("pick", None)):
                # _timed calls each lambda at once, so the loop variables are the current ones
                section, t_enc = _timed(lambda: bound.encode_residual(chunk, kept, xhat, spec, device, methods))  # noqa: B023
                out, t_dec = _timed(lambda: bound.apply_residual(section, kept, xhat, x.dtype))  # noqa: B023
                results[name] = (out, len(section), t_enc, t_dec)
            picked[rel][_METHOD_NAMES[residual_format.parse_section(section)[1]]] += 1
            results["zstd"] = _zstd(19)(x, xhat, b, m)
            results["zstd-3"] = _zstd(3)(x, xhat, b, m)
            results["sz3"] = _sz3(x, xhat, b, m)
            results["sz3-grid"] = _sz3(x, xhat, b, m, kept)
            sg_out, sg_bytes, sg_enc, sg_dec = _safeguards(chunk, plain, b, m)
            results["safeguards"] = (sg_out[kept], sg_bytes - latent_bytes, sg_enc, sg_dec)
            for name, (out, nbytes, t_e, t_d) in results.items():
                err = float(np.abs(out.astype(np.float64) - x).max())
                s = sums[(rel, name)]
                s["bytes"] += nbytes
                s["total_bytes"] += nbytes + latent_bytes
                s["encode_s"] += t_e
                s["decode_s"] += t_d
                s["max_err_over_bound"] = max(s["max_err_over_bound"], err / b if b else (0.0 if err == 0 else math.inf))
    rows = []
    for (rel, name), s in sums.items():
        rows.append({
            "bound_rel": rel, "method": name,
            "correction_bits_per_value": 8 * s["bytes"] / n_valid,
            "total_bits_per_value": 8 * s["total_bytes"] / n_valid,
            "encode_ms": 1e3 * s["encode_s"], "decode_ms": 1e3 * s["decode_s"],
            "max_err_over_bound": s["max_err_over_bound"], "bound_holds": s["max_err_over_bound"] <= 1.0,
            **({"picked": dict(picked[rel])} if name == "pick" else {}),
        })
    return {
        "benchmark": "residual", "model": artifact.hash, "data": artifact.config.data.paths,
        "variable": artifact.config.data.variable, "fields": int(len(fields)), "chunk_fields": args.chunk_fields,
        "valid_values": n_valid, "torch_threads": 1, "rows": rows,
    }


def format_table(out: dict[str, Any]) -> str:
    lines = [
        f"model {out['model'][:16]}, {out['variable']}: {out['fields']} held-out fields in chunks of "
        f"{out['chunk_fields']} ({out['valid_values']:,} valid values), 1 torch thread",
        "",
        "| bound / range | method | correction bits/value | total bits/value | encode ms | decode ms | max err / bound | picked (chunks) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in out["rows"]:
        lines.append(
            f"| {r['bound_rel']:g} | {r['method']} | {r['correction_bits_per_value']:.3f} | "
            f"{r['total_bits_per_value']:.3f} | {r['encode_ms']:.1f} | {r['decode_ms']:.1f} | "
            f"{r['max_err_over_bound']:.3f} | {', '.join(f'{k} {v}' for k, v in sorted(r.get('picked', {}).items()))} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = run(args)
    print(format_table(out))
    if args.json:
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
