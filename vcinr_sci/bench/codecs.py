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
  SPERR / SZ3 on the anomaly, EOF-k with entropy-coded coefficients (k and step swept),
  and EOF-8 with SPERR on the residual; their model file (mean, EOFs, deviations) is
  counted as vcinr's is.

Classical codecs compress one 2-D field at a time (as the papers' tables do); vcinr
compresses chunks of ``--chunk-fields`` fields, each field coded independently.

Per point: bits per value (bpv = 8 x bytes / grid values), compression ratio against
float32, PSNR on the fixed range (``--psnr-range``, by default method.md's ERA5
temperature range [202.66, 320.93] K mapped to [0, 1]; mean of per-field PSNR) and on
the data range of the fields evaluated, RMSE, latitude-weighted (cos lat) RMSE and max
abs error in the data's units, encode and decode throughput in MB/s of float32 on this
machine (CPU, or the GPU the vcinr codec runs on when one is present).

Summary: the bits each codec needs for 40, 45 and 50 dB (log-linear interpolation
between the two sweep points around the target; "-" where the sweep never reaches it),
and the ratio of the best other codec's bits (classical or baseline) to vcinr's, for
vcinr's whole chunks and its latent bytes alone. "Model per 1e9 values" spreads the model
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

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numcodecs
import numpy as np
import torch
from numcodecs.abc import Codec
from numcodecs.compat import ensure_ndarray_like

from vcinr_sci import metrics
from vcinr_sci.bench.baselines import TrainingBasis, TrainingBasisCodec, training_fields
from vcinr_sci.bench.masked import NanMasked
from vcinr_sci.bench.output import device_name, pyplot, save_figure, write_json
from vcinr_sci.bench.throughput import count_flops, encode_flops, matmul_rate
from vcinr_sci.codec.container import decode_container
from vcinr_sci.codec.numcodecs import VCINRCodec
from vcinr_sci.config import DataConfig
from vcinr_sci.data.grids import SphericalGrid
from vcinr_sci.data.items import load_dataset
from vcinr_sci.data.regrid import interp_lat_lon, regrid_lat_lon
from vcinr_sci.data.sources import FieldSource, open_variable
from vcinr_sci.errors import UsageError
from vcinr_sci.model.artifact import MANIFEST, WEIGHTS, find_artifact
from vcinr_sci.model.loaded import default_device
from vcinr_sci.model.registry import default_inner_steps, resolve_model

TARGETS_DB = (40.0, 45.0, 50.0)
METHOD_RANGE = (202.66, 320.93)  # method.md / COIN++: ERA5 temperature (K) -> [0, 1]
# Error tolerances, as fractions of the data range, swept for the error-bounded codecs.
TOLERANCES = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)
QUICK_TOLERANCES = (1e-2, 1e-3)
EOF_KS = (2, 4, 8, 16, 32, 64)
EOF_STEPS = (1.0, 0.5, 0.25)  # coefficient quantisation step, in training deviations
RESIDUAL_K = 8  # EOFs in front of SPERR / SZ3 in "EOF-k + SPERR"
ARCHIVE_VALUES = 1e9  # "model per 1e9 values": the model file spread over an archive this size


@dataclass
class Fields:
    """The fields every codec compresses: ``values (n, lat, lon)`` float32 and where
    they came from."""

    values: np.ndarray
    lat: np.ndarray | None
    lon: np.ndarray | None
    source: str

    @property
    def weights(self) -> np.ndarray | None:
        if self.lat is None:
            return None
        return SphericalGrid(self.lat, self.lon).area_weights()


@dataclass
class Candidate:
    """One point of a sweep: a codec pipeline (filters..., compressor) and its knob."""

    family: str
    knob: str
    pipeline: list[Codec]
    chunk_fields: int = 1  # fields per encode call
    kind: str = "classical"  # classical | baseline | vcinr
    extra: dict[str, Any] = field(default_factory=dict)


def classical_candidates(fields: Fields, quick: bool = False) -> list[Candidate]:
    """Every classical codec with its knob swept over the data's range."""
    from imagecodecs.numcodecs import Jpeg2k, Sperr, Sz3

    x = fields.values
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    span = hi - lo if hi > lo else 1.0
    shape, dtype = x.shape[1:], x.dtype
    tols = QUICK_TOLERANCES if quick else TOLERANCES
    out: list[Candidate] = []
    for t in tols:
        out.append(Candidate("SZ3 (abs)", f"abs={t:g} x range", [Sz3(shape=shape, dtype=dtype, mode="abs", abs=t * span)]))
    for t in tols:
        out.append(Candidate("SPERR (pwe)", f"pwe={t:g} x range", [Sperr(level=t * span, mode="pwe", shape=shape, dtype=dtype)]))
    for t in tols:
        out.append(Candidate("ZFP (accuracy)", f"tol={t:g} x range", [numcodecs.ZFPY(mode=4, tolerance=t * span)]))
    for r in ((2, 8) if quick else (1, 2, 4, 6, 8, 12, 16)):
        out.append(Candidate("ZFP (rate)", f"rate={r}", [numcodecs.ZFPY(mode=2, rate=r)]))
    # JPEG 2000 codes integers: a 16-bit linear map of the data range first. Its level
    # is (about) the target PSNR in dB of the 16-bit image.
    to_u16 = numcodecs.FixedScaleOffset(offset=lo, scale=65535.0 / span, dtype="<f4", astype="<u2")
    for level in ((40, 60) if quick else (30, 35, 40, 45, 50, 55, 60, 70)):
        out.append(Candidate("JPEG 2000 (16-bit)", f"level={level}", [to_u16, Jpeg2k(level=level)]))
    for keep in ((4, 8) if quick else (2, 3, 4, 5, 6, 7, 8, 10, 12, 14)):
        out.append(Candidate("BitRound + Zstd", f"keepbits={keep}", [numcodecs.BitRound(keepbits=keep), numcodecs.Zstd(level=9)]))
    out.append(Candidate("Zstd (lossless)", "level=9", [numcodecs.Zstd(level=9)]))
    return _masked_if_nan(out, x)


def _masked_if_nan(candidates: list[Candidate], x: np.ndarray) -> list[Candidate]:
    """On fields with NaN points, each per-field codec stores the mask beside the field."""
    if not np.isnan(x).any():
        return candidates
    for c in candidates:
        if c.kind == "classical":
            c.pipeline = [NanMasked(c.pipeline, x.shape[1:], x.dtype)]
    return candidates


def _residual_codec(name: str, tol: float, shape: tuple[int, ...]) -> Codec:
    """SPERR (point-wise error) or SZ3 (absolute bound) for one float64 residual field."""
    from imagecodecs.numcodecs import Sperr, Sz3

    if name == "SPERR":
        return Sperr(level=tol, mode="pwe", shape=shape, dtype=np.float64)
    return Sz3(shape=shape, dtype=np.float64, mode="abs", abs=tol)


def baseline_candidates(basis: TrainingBasis, fields: Fields, chunk_fields: int,
                        quick: bool = False) -> list[Candidate]:
    """The codecs that use vcinr's training split (mean field, EOFs), each knob swept."""
    x = fields.values
    span = float(np.nanmax(x) - np.nanmin(x)) or 1.0
    shape = x.shape[1:]
    tols = QUICK_TOLERANCES if quick else TOLERANCES
    ks = [k for k in ((4, 8) if quick else EOF_KS) if k <= basis.max_k]
    k_res = min(RESIDUAL_K, basis.max_k)

    def cand(family: str, knob: str, codec: TrainingBasisCodec) -> Candidate:
        return Candidate(family, knob, [codec], chunk_fields, "baseline", {"model_bytes": len(codec.model_bytes())})

    out = [cand("mean field (training)", "k=0", TrainingBasisCodec(basis))]
    out += [cand("EOF-k (training)", f"k={k} step={s:g}", TrainingBasisCodec(basis, k, s))
            for k in ks for s in ((0.5,) if quick else EOF_STEPS)]
    for name in ("SPERR", "SZ3"):
        out += [cand(f"mean field + {name}", f"{'pwe' if name == 'SPERR' else 'abs'}={t:g} x range",
                     TrainingBasisCodec(basis, residual=_residual_codec(name, t * span, shape))) for t in tols]
    out += [cand(f"EOF-{k_res} + SPERR", f"pwe={t:g} x range",
                 TrainingBasisCodec(basis, k_res, 0.5, _residual_codec("SPERR", t * span, shape))) for t in tols]
    return out


def bounded_baseline_candidates(basis: TrainingBasis, fields: Fields, bounds: Sequence[float],
                                chunk_fields: int) -> list[Candidate]:
    """Mean field and EOF-8 with SPERR / SZ3 in their bounded modes on what is left, each
    asked for the bound less the float32 rounding of adding the residual back."""
    x = fields.values
    span = float(np.nanmax(x) - np.nanmin(x)) or 1.0
    top = float(np.nanmax(np.abs(x)))
    k_res = min(RESIDUAL_K, basis.max_k)
    out = []
    for rel in bounds:
        b = rel * span
        inner = b - 2 * float(np.spacing(np.float32(top + b)))
        extra = {"bound": b, "bound_rel": rel}
        for k in (0, k_res):
            for name in ("SPERR", "SZ3"):
                codec = TrainingBasisCodec(basis, k, 0.5, _residual_codec(name, inner, x.shape[1:]))
                out.append(Candidate(f"{'mean field' if k == 0 else f'EOF-{k}'} + {name}", f"bound={rel:g} x range",
                                     [codec], chunk_fields, "baseline",
                                     dict(extra, model_bytes=len(codec.model_bytes()))))
    return out


def vcinr_candidates(model_path: Path, levels: Sequence[str] | None, more_steps: Sequence[int], chunk_fields: int) -> list[Candidate]:
    """vcinr at each quality level (learned ``q*``, uniform ``u*``), at the model's own
    encode steps and at each of ``more_steps``."""
    loaded = resolve_model(model_path)
    art = loaded.artifact
    names = list(levels) if levels else art.quality_levels
    missing = [n for n in names if n not in art.quality_levels]
    if missing:
        raise UsageError(f"vcinr bench codecs: model {art.hash[:16]} has no quality level(s) {missing}; it has {art.quality_levels}")
    out = []
    for name in names:
        own = default_inner_steps(art)
        learned = name.startswith("q")
        family = "vcinr" if learned else "vcinr uniform (COIN++)"
        for steps in [own, *[s for s in more_steps if s != own and learned]]:
            codec = VCINRCodec.for_model(loaded, name, inner_steps=steps)
            out.append(Candidate(f"{family}, {steps} steps", name, [codec], chunk_fields, "vcinr", {"inner_steps": steps}))
    return out


def bounded_candidates(fields: Fields, model_path: Path | None, levels: Sequence[str] | None,
                       bounds: Sequence[float], chunk_fields: int) -> list[Candidate]:
    """Codecs that promise a point-wise bound, each asked for the same absolute bound
    ``rel x data range``: SZ3, SPERR, ZFP (accuracy), compression-safeguards around a codec
    that stores nothing (all information in the correction), and vcinr's bounded mode at
    each quality level."""
    from imagecodecs.numcodecs import Sperr, Sz3
    from numcodecs_safeguards import SafeguardedCodec
    from numcodecs_zero import ZeroCodec

    x = fields.values
    span = float(np.nanmax(x) - np.nanmin(x)) or 1.0
    shape, dtype = x.shape[1:], x.dtype
    names: list[str] = []
    if model_path is not None:
        loaded = resolve_model(model_path)
        names = list(levels) if levels else loaded.artifact.quality_levels
    out: list[Candidate] = []
    for rel in bounds:
        b = rel * span
        knob = f"bound={rel:g} x range"
        extra = {"bound": b, "bound_rel": rel}
        out += [
            Candidate("SZ3 (abs)", knob, [Sz3(shape=shape, dtype=dtype, mode="abs", abs=b)], extra=extra),
            Candidate("SPERR (pwe)", knob, [Sperr(level=b, mode="pwe", shape=shape, dtype=dtype)], extra=extra),
            Candidate("ZFP (accuracy)", knob, [numcodecs.ZFPY(mode=4, tolerance=b)], extra=extra),
            Candidate("safeguards alone", knob,
                      [SafeguardedCodec(codec=ZeroCodec(), safeguards=[{"kind": "eb", "type": "abs", "eb": b}])],
                      extra=extra),
        ]
        for name in names:
            codec = VCINRCodec.for_model(model_path, name, max_abs_error=b)
            out.append(Candidate(f"vcinr bounded ({name})", knob, [codec], chunk_fields, "vcinr",
                                 dict(extra, inner_steps=codec.inner_steps)))
    return _masked_if_nan(out, x)


def run_candidate(c: Candidate, x: np.ndarray) -> tuple[np.ndarray, int, int, float, float]:
    """Encode ``x`` chunk by chunk through the pipeline, decode it back; returns the
    decoded fields, bytes written, the bytes of vcinr's coded latents and correction alone
    (without the chunk header and mask: what the papers count; 0 for other codecs), and
    encode / decode seconds."""
    decoded = np.empty_like(x)
    nbytes, payload, t_enc, t_dec = 0, 0, 0.0, 0.0
    for start in range(0, len(x), c.chunk_fields):
        chunk = np.ascontiguousarray(x[start : start + c.chunk_fields])
        if c.chunk_fields == 1:
            chunk = chunk[0]
        t0 = time.perf_counter()
        buf: Any = chunk
        for codec in c.pipeline:
            buf = codec.encode(buf)
        t1 = time.perf_counter()
        nbytes += len(bytes(buf)) if not isinstance(buf, np.ndarray) else buf.nbytes
        if c.kind == "vcinr":
            container = decode_container(buf)
            payload += len(container.payload) + len(container.residual or b"")
        for codec in reversed(c.pipeline):
            buf = codec.decode(buf)
        t2 = time.perf_counter()
        t_enc, t_dec = t_enc + t1 - t0, t_dec + t2 - t1
        arr = ensure_ndarray_like(buf)
        if arr.dtype != x.dtype:  # a bytes compressor last in the pipeline hands back raw bytes
            arr = arr.view(x.dtype)
        decoded[start : start + c.chunk_fields] = arr.reshape(-1, *x.shape[1:])
    return decoded, nbytes, payload, t_enc, t_dec


def score(fields: Fields, decoded: np.ndarray, psnr_range: tuple[float, float]) -> dict[str, float | None]:
    x = fields.values
    fixed = psnr_range[1] - psnr_range[0]
    span = float(np.nanmax(x) - np.nanmin(x))
    with np.errstate(divide="ignore"):
        per_field = metrics.psnr_per_item(x, decoded, fixed)
    out: dict[str, float | None] = {
        "psnr": float(np.mean(np.minimum(per_field, 200.0))),  # a lossless field counts as 200 dB
        "psnr_data_range": metrics.psnr(x, decoded, span),
        "rmse": metrics.rmse(x, decoded),
        "max_abs_error": metrics.max_abs_error(x, decoded),
    }
    w = fields.weights
    out["rmse_lat_weighted"] = metrics.weighted_rmse(x, decoded, w) if w is not None else None
    return out


def needed_bits(points: list[tuple[float, float]], target: float) -> tuple[float | None, bool]:
    """Fewest bpv to reach ``target`` dB along a sweep of (bpv, psnr) points: the
    cheapest point at or above it, interpolated log-linearly from the best point below.
    The flag is True when no swept point lies below the target, so the figure is only an
    upper bound (the codec's knob did not go coarse enough)."""
    above = [(b, p) for b, p in points if p >= target]
    if not above:
        return None, False
    b_hi, p_hi = min(above)
    below = [(b, p) for b, p in points if p < target and b < b_hi]
    if not below:
        return b_hi, p_hi > target
    if p_hi == target:
        return b_hi, False
    b_lo, p_lo = max(below, key=lambda bp: bp[1])
    frac = (target - p_lo) / (p_hi - p_lo)
    return float(math.exp(math.log(b_lo) + frac * (math.log(b_hi) - math.log(b_lo)))), False


SUMMARY_COLUMNS = {
    "classical": ["bpv"],
    "baseline": ["bpv", "bpv_with_model", "bpv_model_1e9"],
    "vcinr": ["bpv", "bpv_latents", "bpv_with_model", "bpv_model_1e9"],
}


def summarise(rows: list[dict[str, Any]], targets: Sequence[float] = TARGETS_DB) -> list[dict[str, Any]]:
    """Per codec family: bits needed at each target; for vcinr and the baselines also with
    the model's bits; for vcinr the best other codec (classical or baseline) at each
    target and its bits over vcinr's (whole chunks, and latent bytes alone)."""
    families: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        families.setdefault(r["family"], []).append(r)
    out = []
    for fam, rs in families.items():
        entry: dict[str, Any] = {"family": fam, "kind": rs[0]["kind"]}
        for col in SUMMARY_COLUMNS[rs[0]["kind"]]:
            need = {str(t): needed_bits([(r[col], r["psnr"]) for r in rs if r[col] > 0], t) for t in targets}
            entry[col] = {t: v for t, (v, _) in need.items()}
            entry[f"{col}_upper_bound"] = {t: flag for t, (_, flag) in need.items()}
        out.append(entry)
    best, best_other = {}, {}
    for t in map(str, targets):
        classical = [e["bpv"][t] for e in out if e["kind"] == "classical" and e["bpv"][t] is not None]
        best[t] = min(classical) if classical else None
        others = [(e["bpv"][t], e["family"]) for e in out if e["kind"] != "vcinr" and e["bpv"][t] is not None]
        best_other[t] = min(others) if others else (None, None)

    def ratio(num: float | None, den: float | None) -> float | None:
        return num / den if num and den else None

    for e in out:
        if e["kind"] == "vcinr":
            e["best_classical_over_vcinr"] = {t: ratio(best[t], e["bpv"][t]) for t in best}
            e["best_classical_over_vcinr_with_model"] = {t: ratio(best[t], e["bpv_with_model"][t]) for t in best}
            e["best_other"] = {t: best_other[t][1] for t in best}
            e["best_other_bpv"] = {t: best_other[t][0] for t in best}
            e["best_other_over_vcinr"] = {t: ratio(best_other[t][0], e["bpv"][t]) for t in best}
            e["best_other_over_vcinr_latents"] = {t: ratio(best_other[t][0], e["bpv_latents"][t]) for t in best}
            e["at_best_psnr"] = _at_best_psnr(families[e["family"]], families)
    return out


def _at_best_psnr(own: list[dict[str, Any]], families: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """vcinr's highest-PSNR point, and the fewest bits any other codec needs for that PSNR
    (where the targets lie above what vcinr reaches, this still compares it)."""
    top = max(own, key=lambda r: r["psnr"])
    need = [(needed_bits([(r["bpv"], r["psnr"]) for r in rs if r["bpv"] > 0], top["psnr"])[0], fam)
            for fam, rs in families.items() if rs[0]["kind"] != "vcinr"]
    bits, fam = min(((b, f) for b, f in need if b is not None), default=(None, None))
    return {"psnr": top["psnr"], "bpv": top["bpv"], "bpv_latents": top["bpv_latents"],
            "best_other": fam, "best_other_bpv": bits}


def bounded_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per bound: the best ratio of the classical codecs, of the baselines and of vcinr
    (latents and correction; and with the model's bytes), among the codecs that kept the
    bound at every point (and NaN points exactly), and the codecs that broke it."""
    out = []
    for rel in sorted({r["bound_rel"] for r in rows}):
        rs = [r for r in rows if r["bound_rel"] == rel]
        kept = [r for r in rs if r["bound_met"] and r.get("nan_exact", True)]

        def best(kinds: tuple[str, ...]) -> dict[str, Any] | None:
            return max((r for r in kept if r["kind"] in kinds), key=lambda r: r["ratio_vs_float32"], default=None)  # noqa: B023  (called at once, below)

        best_c, best_b, best_v = best(("classical",)), best(("baseline",)), best(("vcinr",))
        best_o = best(("classical", "baseline"))
        entry: dict[str, Any] = {
            "bound_rel": rel,
            "bound": rs[0]["bound"],
            "best_classical": best_c and best_c["family"],
            "best_classical_ratio": best_c and best_c["ratio_vs_float32"],
            "best_baseline": best_b and best_b["family"],
            "best_baseline_ratio": best_b and best_b["ratio_vs_float32"],
            "best_other": best_o and best_o["family"],
            "best_other_ratio": best_o and best_o["ratio_vs_float32"],
            "best_vcinr": best_v and best_v["family"],
            "best_vcinr_ratio": best_v and best_v["ratio_vs_float32"],
            "best_vcinr_ratio_with_model": best_v and 32 / best_v["bpv_with_model"],
            "broke_the_bound": [f"{r['family']} ({r['knob']})" for r in rs if r not in kept],
        }
        if best_c and best_v:
            entry["vcinr_over_best_classical"] = best_v["ratio_vs_float32"] / best_c["ratio_vs_float32"]
        if best_o and best_v:
            entry["vcinr_over_best_other"] = best_v["ratio_vs_float32"] / best_o["ratio_vs_float32"]
        out.append(entry)
    return out


def load_fields(args: argparse.Namespace, model_grid: SphericalGrid | None, model_cfg) -> Fields:
    """The fields to compress: ``--data`` or the model's held-out part, regridded if asked."""
    if args.data:
        if not args.variable or not args.grid_dims:
            raise UsageError("vcinr bench codecs: --data needs --variable and --grid-dims")
        cfg = DataConfig(paths=list(args.data), variable=args.variable, grid_dims=args.grid_dims.split(","),
                         concat_dim=args.concat_dim)
        source = FieldSource(open_variable(cfg), cfg.grid_dims)
        indices = np.arange(len(source))
        name = ", ".join(Path(p).name for p in args.data) + f" {args.variable}"
    elif model_cfg is not None:
        data = load_dataset(model_cfg.data)
        part = args.part
        source, indices = data.source, getattr(data.split, part)
        name = f"{model_cfg.name} {model_cfg.data.variable}, {part} part ({data.split.dim} {data.split.positions[part]})"
    else:
        raise UsageError("vcinr bench codecs: give --model or --data")
    da = source.da
    if args.regrid:
        if args.regrid == "model":
            if model_grid is None:
                raise UsageError("vcinr bench codecs: --regrid model needs a model on a lat/lon grid")
            da = interp_lat_lon(da, source.grid_dims, model_grid.lat, model_grid.lon)
        else:
            da = regrid_lat_lon(da, source.grid_dims, [int(v) for v in args.regrid.lower().split("x")])
        source = FieldSource(da, source.grid_dims)
        name += f", regridded to {args.regrid}"
    if args.fields and args.fields < len(indices):
        indices = indices[np.unique(np.linspace(0, len(indices) - 1, args.fields).round().astype(int))]
    values = source.load(indices)
    if np.isinf(values).any():
        raise UsageError("vcinr bench codecs: the fields hold inf values; codecs compare on finite values and NaN")
    lat = lon = None
    if len(source.grid_dims) == 2 and all(d in da.coords for d in source.grid_dims):
        lat, lon = (np.asarray(da[d].values, np.float64) for d in source.grid_dims)
        if np.abs(lat).max() > 90:
            lat = lon = None
    return Fields(values, lat, lon, name)


def vcinr_costs(model_path: Path, fields: Fields, steps: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """FLOPs per value of the vcinr decode and encode, and the fraction of the machine's
    matmul rate achieved by the fastest measured codec throughput."""
    loaded = resolve_model(model_path)
    model, device = loaded.artifact.model, loaded.device
    n = min(4, len(fields.values))
    items = loaded.to_items(loaded.artifact.normaliser.normalise(fields.values[:n]).astype(np.float32))
    idx = np.arange(len(items))
    valid = np.isfinite(items)
    items = np.where(valid, items, 0.0).astype(np.float32)
    coords = loaded.item_coords[torch.as_tensor(idx % loaded.num_patches, device=device)]
    target = torch.as_tensor(items, device=device).unsqueeze(-1)
    mask = torch.as_tensor(valid, device=device).unsqueeze(-1)
    phi = loaded.adapt(idx, items, valid, steps)
    model.eval()
    values = items.size
    dec = count_flops(lambda: model.decode(coords, phi)) / values
    enc = encode_flops(model, coords, target, mask, steps) / values
    peak = matmul_rate(device)
    vc = [r for r in rows if r["kind"] == "vcinr" and r["inner_steps"] == steps]
    best_dec = max((r["decode_mb_s"] for r in vc), default=0.0) * 1e6 / 4
    best_enc = max((r["encode_mb_s"] for r in vc), default=0.0) * 1e6 / 4
    return {
        "device": str(device),
        "device_name": device_name(device),
        "matmul_flop_s_float32": peak,
        "decode_flops_per_value": dec,
        "encode_flops_per_value": enc,
        "encode_inner_steps": steps,
        "decode_fraction_of_matmul": dec * best_dec / peak,
        "encode_fraction_of_matmul": enc * best_enc / peak,
    }


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
        basis = TrainingBasis.fit(training_fields(art.config.data, art.split), max_k=max(EOF_KS))
        notes.append(f"baselines fitted on the model's training part ({art.split['dim']} "
                     f"{art.split['positions']['train']}); EOFs of its anomalies: {basis.max_k}")
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
    vcinr_model_bytes = (model_path / WEIGHTS).stat().st_size if model_path else 0
    rows = []
    for c in candidates:
        decoded, nbytes, payload, t_enc, t_dec = run_candidate(c, x)
        mb = x.size * 4 / 1e6
        row = {"family": c.family, "knob": c.knob, "kind": c.kind, "bytes": nbytes,
               "bpv": 8 * nbytes / x.size, "ratio_vs_float32": 32 * x.size / (8 * nbytes),
               "encode_mb_s": mb / t_enc, "decode_mb_s": mb / t_dec, **c.extra, **score(fields, decoded, psnr_range)}
        if c.kind == "vcinr":
            row["model_bytes"] = vcinr_model_bytes
            row["bpv_latents"] = 8 * payload / x.size
        if c.kind != "classical":  # the model file: over these fields, and over an archive
            row["bpv_with_model"] = 8 * (nbytes + row["model_bytes"]) / x.size
            row["bpv_model_1e9"] = row["bpv"] + 8 * row["model_bytes"] / ARCHIVE_VALUES
        row["nan_exact"] = bool(np.array_equal(np.isnan(x), np.isnan(decoded)))
        if "bound" in row:
            row["bound_met"] = bool(row["max_abs_error"] <= row["bound"])
        rows.append(row)
        print(f"  {c.family:28s} {c.knob:22s} {row['bpv']:9.4f} bpv  {row['psnr']:6.2f} dB  "
              f"max err {row['max_abs_error']:.3g}", file=sys.stderr, flush=True)
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


def _fmt(v: float | None, spec: str = ".3g") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def markdown(out: dict[str, Any]) -> str:
    lo, hi = out["psnr_range"]
    lines = [
        f"Fields: {out['fields']}: {out['num_fields']} fields of {' x '.join(map(str, out['grid']))} "
        f"({out['values']:,} values, range {out['data_range'][0]:.5g} .. {out['data_range'][1]:.5g}).",
        f"PSNR: mean per-field, on [{lo}, {hi}] mapped to [0, 1]; PSNR (range): on the evaluated data's range. "
        f"bpv = 8 x bytes / values, from the bytes each codec wrote (vcinr: whole chunks of {out['chunk_fields']} fields, "
        "header included; 'latents only' leaves out the chunk header and mask, as the papers count, but keeps stored item means); ratio against float32.",
        "",
        "| codec | knob | bpv | bpv latents only | bpv with model | ratio | PSNR dB | PSNR (range) dB | RMSE | lat-w RMSE | max abs err | enc MB/s | dec MB/s |",
        "|" + "---|" * 13,
    ]
    for r in out["rows"]:
        lines.append(
            f"| {r['family']} | {r['knob']} | {r['bpv']:.4g} | {_fmt(r.get('bpv_latents'), '.4g')} | "
            f"{_fmt(r.get('bpv_with_model'), '.4g')} | "
            f"{r['ratio_vs_float32']:.3g} | {r['psnr']:.2f} | {r['psnr_data_range']:.2f} | {r['rmse']:.3g} | "
            f"{_fmt(r['rmse_lat_weighted'])} | {r['max_abs_error']:.3g} | {r['encode_mb_s']:.3g} | {r['decode_mb_s']:.3g} |"
        )
    if out["mode"] == "bounded":
        return _bounded_markdown(out, lines)
    targets = list(out["summary"][0]["bpv"]) if out["summary"] else []
    lines += ["", "Bits per value needed for a PSNR (interpolated in the sweep; - = not reached; "
              "<= = the sweep's coarsest point already exceeds it):", "",
              "| codec | " + " | ".join(f"{t} dB" for t in targets) + " |", "|---|" + "---|" * len(targets)]
    for e in out["summary"]:
        for col, label in (("bpv", ""), ("bpv_latents", ", latent bytes only"), ("bpv_with_model", " + model bits"),
                           ("bpv_model_1e9", " + model per 1e9 values")):
            if col in e:
                lines.append(f"| {e['family']}{label} | " + " | ".join(
                    ("<= " if e[f"{col}_upper_bound"][t] else "") + _fmt(e[col][t], ".4g") for t in targets) + " |")
    lines += ["", "vcinr against the best of all the others (classical codecs and the baselines fitted on "
              "vcinr's training data), bits per value:", "",
              "| vcinr | target | vcinr chunks | vcinr latents only | best other | its bpv | other / chunks | other / latents |",
              "|---|---|---|---|---|---|---|---|"]
    for e in out["summary"]:
        for t in e.get("best_other", {}):
            lines.append(f"| {e['family']} | {t} dB | {_fmt(e['bpv'][t], '.4g')} | {_fmt(e['bpv_latents'][t], '.4g')} | "
                         f"{e['best_other'][t] or '-'} | {_fmt(e['best_other_bpv'][t], '.4g')} | "
                         f"{_fmt(e['best_other_over_vcinr'][t])} | {_fmt(e['best_other_over_vcinr_latents'][t])} |")
    for e in out["summary"]:
        if "at_best_psnr" in e:
            a = e["at_best_psnr"]
            lines.append(f"\n{e['family']} at its highest PSNR, {a['psnr']:.2f} dB: {a['bpv']:.4g} bpv "
                         f"({a['bpv_latents']:.4g} latent bytes only); the best other there: "
                         f"{a['best_other'] or '-'} at {_fmt(a['best_other_bpv'], '.4g')} bpv.")
    for e in out["summary"]:
        if "best_classical_over_vcinr" in e:
            lines.append(
                f"\nBest classical / {e['family']}: "
                + ", ".join(f"{t} dB: {_fmt(e['best_classical_over_vcinr'][t])}x" for t in targets)
                + "; with the model's bits: "
                + ", ".join(f"{t} dB: {_fmt(e['best_classical_over_vcinr_with_model'][t])}x" for t in targets)
            )
    cost = out.get("vcinr_cost")
    if cost:
        lines.append(
            f"\nvcinr on {cost['device_name']}: {cost['decode_flops_per_value']:,.0f} FLOPs per decoded value, "
            f"{cost['encode_flops_per_value']:,.0f} per encoded value ({cost['encode_inner_steps']} inner steps); "
            f"the measured codec throughput reaches {cost['decode_fraction_of_matmul']:.2%} (decode) and "
            f"{cost['encode_fraction_of_matmul']:.2%} (encode) of this machine's float32 matmul rate "
            f"({cost['matmul_flop_s_float32'] / 1e9:.3g} GFLOP/s)."
        )
    if out["model"]:
        lines.append(f"Model {out['model'][:16]}: {out['model_bytes']:,} bytes (INR and coders), counted in 'bpv with model'.")
    lines += [f"Note: {n}" for n in out["notes"]]
    return "\n".join(lines)


def _bounded_markdown(out: dict[str, Any], lines: list[str]) -> str:
    lines = lines[:2] + [
        "", "| bound | codec | bpv | ratio | max abs err / bound | bound met | PSNR dB | enc MB/s | dec MB/s |",
        "|" + "---|" * 9,
    ]
    for r in out["rows"]:
        lines.append(
            f"| {r['knob']} | {r['family']} | {r['bpv']:.4g} | {r['ratio_vs_float32']:.3g} | "
            f"{r['max_abs_error'] / r['bound']:.3f} | {'yes' if r['bound_met'] else 'NO'} | {r['psnr']:.2f} | "
            f"{r['encode_mb_s']:.3g} | {r['decode_mb_s']:.3g} |"
        )
    lines += ["", "Among the codecs that kept the bound at every point:", "",
              "| bound (x range) | best classical (ratio) | best baseline (ratio) | best vcinr (ratio; with model bytes) "
              "| vcinr / classical | vcinr / best other | broke the bound |",
              "|---|---|---|---|---|---|---|"]
    for e in out["summary"]:
        vc = f"{e['best_vcinr']} ({_fmt(e['best_vcinr_ratio'])}; {_fmt(e['best_vcinr_ratio_with_model'])})" \
            if e["best_vcinr"] else "-"
        base = f"{e['best_baseline']} ({_fmt(e['best_baseline_ratio'])})" if e["best_baseline"] else "-"
        lines.append(f"| {e['bound_rel']:g} | {e['best_classical']} ({_fmt(e['best_classical_ratio'])}) | {base} | {vc} | "
                     f"{_fmt(e.get('vcinr_over_best_classical'))} | {_fmt(e.get('vcinr_over_best_other'))} | "
                     f"{', '.join(e['broke_the_bound']) or '-'} |")
    if out["model"]:
        lines.append(f"\nModel {out['model'][:16]}: {out['model_bytes']:,} bytes (INR and coders), counted in 'with model bytes'.")
    lines += [f"Note: {n}" for n in out["notes"]]
    return "\n".join(lines)


def plot(out: dict[str, Any], path: str) -> None:
    fig, ax = pyplot().subplots(figsize=(8, 5))
    if out["mode"] == "bounded":
        _bounded_axes(out, ax)
    else:
        _psnr_axes(out, ax)
    ax.set_xscale("log")
    ax.set_title(out["fields"][:90], fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _psnr_axes(out: dict[str, Any], ax) -> None:
    families: dict[str, list[dict[str, Any]]] = {}
    for r in out["rows"]:
        if r["psnr"] < 200:
            families.setdefault(r["family"], []).append(r)
    for fam, rs in families.items():
        rs = sorted(rs, key=lambda r: r["bpv"])
        if rs[0]["kind"] == "baseline":  # a sweep of two knobs (EOF k and step): its Pareto front
            rs = [r for i, r in enumerate(rs) if all(r["psnr"] > q["psnr"] for q in rs[:i])]
        style = {"vcinr": "o-", "baseline": "s-"}.get(rs[0]["kind"], ".--")
        ax.plot([r["bpv"] for r in rs], [r["psnr"] for r in rs], style, label=fam)
        if rs[0]["kind"] == "vcinr":
            ax.plot([r["bpv_latents"] for r in rs], [r["psnr"] for r in rs], "x-", alpha=0.7, label=f"{fam}, latents only")
            ax.plot([r["bpv_with_model"] for r in rs], [r["psnr"] for r in rs], "o:", alpha=0.5, label=f"{fam} + model bits")
    top = max((r["psnr"] for r in out["rows"] if r["kind"] == "vcinr"), default=60.0)
    ax.set_ylim(bottom=max(0.0, ax.get_ylim()[0]), top=max(top + 20.0, 60.0))  # the range where codecs compete
    ax.set_xlabel("bits per value (real bytes)")
    lo, hi = out["psnr_range"]
    ax.set_ylabel(f"PSNR (dB, [{lo}, {hi}] -> [0, 1])")


def _bounded_axes(out: dict[str, Any], ax) -> None:
    families: dict[str, list[dict[str, Any]]] = {}
    for r in out["rows"]:
        families.setdefault(r["family"], []).append(r)
    for fam, rs in families.items():
        rs = sorted(rs, key=lambda r: r["bound_rel"])
        ax.plot([r["bound_rel"] for r in rs], [r["ratio_vs_float32"] for r in rs],
                "o-" if rs[0]["kind"] == "vcinr" else ".--", label=fam)
    ax.set_yscale("log")
    ax.set_xlabel("max abs error bound / data range")
    ax.set_ylabel("compression ratio vs float32 (real bytes)")


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
