"""The codecs ``vcinr bench codecs`` compares, each knob swept: the classical per-field
codecs, the baselines fitted on vcinr's training data, vcinr's quality levels, and the
codecs that promise a point-wise bound."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numcodecs
import numpy as np
from numcodecs.abc import Codec

from vcinr_sci.bench.baselines import TrainingBasis, TrainingBasisCodec
from vcinr_sci.bench.fields import Fields
from vcinr_sci.bench.masked import NanMasked
from vcinr_sci.codec.numcodecs import VCINRCodec
from vcinr_sci.errors import UsageError
from vcinr_sci.model.registry import default_inner_steps, resolve_model

# Error tolerances, as fractions of the data range, swept for the error-bounded codecs.
TOLERANCES = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)
QUICK_TOLERANCES = (1e-2, 1e-3)
EOF_KS = (2, 4, 8, 16, 32, 64)
EOF_STEPS = (1.0, 0.5, 0.25)  # coefficient quantisation step, in training deviations
# EOF abs-step: k capped at the EOFs the training fields give; one step for all the
# coefficients, in units of the training anomalies' total deviation, 1 down to 1/128 by
# factors of sqrt(2) (on CCSM TREFHT, from about the mean field's PSNR to where 256 EOFs
# stop gaining)
EOF_ABS_KS = (8, 16, 32, 64, 128, 256)
EOF_ABS_STEPS = tuple(2 ** (-i / 2) for i in range(15))
MAX_EOFS = max(EOF_KS + EOF_ABS_KS)  # EOFs fitted for the baselines
RESIDUAL_K = 8  # EOFs in front of SPERR / SZ3 in "EOF-k + SPERR"


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
    abs_ks = sorted({min(k, basis.max_k) for k in ((8, 64) if quick else EOF_ABS_KS)})
    abs_steps = (0.25, 0.0625) if quick else EOF_ABS_STEPS
    k_res = min(RESIDUAL_K, basis.max_k)

    def cand(family: str, knob: str, codec: TrainingBasisCodec) -> Candidate:
        return Candidate(family, knob, [codec], chunk_fields, "baseline", {"model_bytes": len(codec.model_bytes())})

    out = [cand("mean field (training)", "k=0", TrainingBasisCodec(basis))]
    out += [cand("EOF-k (training)", f"k={k} step={s:g}", TrainingBasisCodec(basis, k, s))
            for k in ks for s in ((0.5,) if quick else EOF_STEPS)]
    out += [cand("EOF abs-step (training)", f"k={k} step={s:.3g} x dev",
                 TrainingBasisCodec(basis, k, s * basis.deviation, absolute=True))
            for k in abs_ks for s in abs_steps]
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


def corrected_candidates(model_path: Path, levels: Sequence[str] | None, bounds: Sequence[float], span: float,
                         chunk_fields: int, corrections: Sequence[str] = ("smallest", "sperr")) -> list[Candidate]:
    """vcinr's bounded mode as points of the rate-distortion sweep: each quality level
    with a correction to each bound (``rel x span``, data units), coded each way in
    ``corrections`` (the fewest bytes at the bound, or SPERR's, lower MSE at it), so vcinr
    reaches PSNRs beyond what its model alone represents, as the baselines' EOF-8 + SPERR
    does."""
    loaded = resolve_model(model_path)
    names = [n for n in (levels or loaded.artifact.quality_levels) if n.startswith("q")]
    out = []
    for name in names:
        for rel in bounds:
            for how in corrections:
                codec = VCINRCodec.for_model(loaded, name, max_abs_error=rel * span, correction=how)
                out.append(Candidate("vcinr + correction", f"{name}, bound={rel:g} x range, {how}", [codec], chunk_fields,
                                     "vcinr", {"inner_steps": codec.inner_steps, "bound": rel * span, "bound_rel": rel}))
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
