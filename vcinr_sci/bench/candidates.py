"""The codecs ``vcinr bench codecs`` compares, each knob swept: the classical per-field
codecs, the baselines fitted on vcinr's training data, vcinr's quality levels, and the
codecs that promise a point-wise bound."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numcodecs
import numpy as np
from numcodecs.abc import Codec

from vcinr_sci.bench.baselines import TrainingBasis, TrainingBasisCodec
from vcinr_sci.bench.fields import Fields
from vcinr_sci.bench.masked import NanMasked
from vcinr_sci.codec.numcodecs import VCINRCodec
from vcinr_sci.errors import UsageError
from vcinr_sci.model.registry import default_inner_steps, resolve_model

# Error tolerances, as fractions of the data range, swept for the error-bounded codecs
# (and past 1e-4 by the same factor, sqrt 10, where a sweep stops short: sweep.py).
TOLERANCES = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)
QUICK_TOLERANCES = (1e-2, 1e-3)
EOF_KS = (2, 4, 8, 16, 32, 64)
EOF_STEPS = (1.0, 0.5, 0.25)  # coefficient quantisation step, in training deviations
# EOF abs-step: k capped at the EOFs the training fields give; one step for all the
# coefficients, in units of the training anomalies' total deviation, 1 down to 1/128 by
# factors of sqrt(2) (on CCSM TREFHT, from about the mean field's PSNR to where 256 EOFs
# stop gaining), and finer at the largest k where a sweep stops short (sweep.py)
EOF_ABS_KS = (8, 16, 32, 64, 128, 256)
EOF_ABS_STEPS = tuple(2 ** (-i / 2) for i in range(15))
# EOFs fitted for the baselines (at most the training fields less one): the grids above
# stop at 256; a line that stops short of the highest target goes on to more (sweep.py)
MAX_EOFS = 1024
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
    # The end of a knob's line: the next, finer point past it (built only when the sweep
    # stops short of the highest target PSNR), or the reason there is none.
    finer: Callable[[], "Candidate | str"] | None = None
    ceiling: str = ""  # what bounds the line's PSNR when finer points stop gaining


def _line(make: Callable[[Any], Candidate], knobs: Sequence[Any],
          next_knob: Callable[[Any], Any], ceiling: str = "") -> list[Candidate]:
    """The candidates ``make(k)`` for ``knobs``, the last able to go on: ``next_knob(k)``
    is the knob after ``k``, or a string saying why there is none."""
    out = [make(k) for k in knobs]
    if out:
        _go_on(out[-1], make, knobs[-1], next_knob, ceiling)
    return out


def _go_on(c: Candidate, make: Callable[[Any], Candidate], knob: Any, next_knob: Callable[[Any], Any],
           ceiling: str) -> None:
    def finer() -> Candidate | str:
        nxt = next_knob(knob)
        if isinstance(nxt, str):
            return nxt
        try:
            cand = make(nxt)
        except ValueError as e:  # the codec refuses the knob (e.g. a step finer than its tables)
            return str(e)
        _go_on(cand, make, nxt, next_knob, ceiling)
        return cand

    c.finer, c.ceiling = finer, ceiling


def _finer_tolerance(x: np.ndarray, span: float) -> Callable[[float], float | str]:
    """The next tolerance (fraction of ``span``) down by sqrt 10, as the list goes, until
    it would fall below the float32 resolution of the data."""
    resolution = float(np.spacing(np.float32(np.nanmax(np.abs(x)))))

    def step(t: float) -> float | str:
        nxt = t / math.sqrt(10)
        if nxt * span < resolution:
            return f"its tolerance reached the float32 resolution of the data ({resolution:.3g})"
        return nxt

    return step


def _up_to(increment: float, top: float, why: str) -> Callable[[float], float | str]:
    """The next knob ``increment`` up, until ``top`` (then ``why``)."""
    return lambda v: v + increment if v + increment <= top else why


def classical_candidates(fields: Fields, quick: bool = False) -> list[Candidate]:
    """Every classical codec with its knob swept over the data's range."""
    from imagecodecs.numcodecs import Jpeg2k, Sperr, Sz3

    x = fields.values
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    span = hi - lo if hi > lo else 1.0
    shape, dtype = x.shape[1:], x.dtype
    tols = QUICK_TOLERANCES if quick else TOLERANCES
    finer_tol = _finer_tolerance(x, span)

    def masked(family: str, knob: str, pipeline: list[Codec]) -> Candidate:
        return _masked_if_nan([Candidate(family, knob, pipeline)], x)[0]

    out: list[Candidate] = []
    out += _line(lambda t: masked("SZ3 (abs)", f"abs={t:g} x range",
                                  [Sz3(shape=shape, dtype=dtype, mode="abs", abs=t * span)]), tols, finer_tol)
    out += _line(lambda t: masked("SPERR (pwe)", f"pwe={t:g} x range",
                                  [Sperr(level=t * span, mode="pwe", shape=shape, dtype=dtype)]), tols, finer_tol)
    out += _line(lambda t: masked("ZFP (accuracy)", f"tol={t:g} x range",
                                  [numcodecs.ZFPY(mode=4, tolerance=t * span)]), tols, finer_tol)
    out += _line(lambda r: masked("ZFP (rate)", f"rate={r}", [numcodecs.ZFPY(mode=2, rate=r)]),
                 (2, 8) if quick else (1, 2, 4, 6, 8, 12, 16), _up_to(4, 32, "rate 32 is float32's own size"))
    # JPEG 2000 codes integers: a 16-bit linear map of the data range first. Its level
    # is (about) the target PSNR in dB of the 16-bit image.
    to_u16 = numcodecs.FixedScaleOffset(offset=lo, scale=65535.0 / span, dtype="<f4", astype="<u2")
    out += _line(lambda level: masked("JPEG 2000 (16-bit)", f"level={level}", [to_u16, Jpeg2k(level=level)]),
                 (40, 60) if quick else (30, 35, 40, 45, 50, 55, 60, 70),
                 _up_to(10, 100, "the 16-bit map of the data range bounds its PSNR"))
    out += _line(lambda keep: masked("BitRound + Zstd", f"keepbits={keep}",
                                     [numcodecs.BitRound(keepbits=keep), numcodecs.Zstd(level=9)]),
                 (4, 8) if quick else (2, 3, 4, 5, 6, 7, 8, 10, 12, 14),
                 _up_to(2, 23, "keepbits 23 keeps all of float32's mantissa"))
    out.append(masked("Zstd (lossless)", "level=9", [numcodecs.Zstd(level=9)]))
    return out


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

    finer_tol = _finer_tolerance(x, span)
    exhausted = (f"EOFs exhausted: k = {basis.max_k}, every EOF the training fields give"
                 if basis.max_k < MAX_EOFS else f"k = {MAX_EOFS}, the most EOFs the bench fits")

    def cand(family: str, knob: str, codec: TrainingBasisCodec) -> Candidate:
        return Candidate(family, knob, [codec], chunk_fields, "baseline", {"model_bytes": len(codec.model_bytes())})

    mean = cand("mean field (training)", "k=0", TrainingBasisCodec(basis))
    mean.finer = lambda: "no knob: the training mean field alone"
    out = [mean]

    def eof_k(ks: tuple[int, float]) -> Candidate:
        k, s = ks
        return cand("EOF-k (training)", f"k={k} step={s:g}", TrainingBasisCodec(basis, k, s))

    steps = (0.5,) if quick else EOF_STEPS
    grid = [(k, s) for k in ks for s in steps]
    # past the grid: twice the EOFs (up to all of them) and half the step, together
    out += _line(eof_k, grid, lambda ks: (min(2 * ks[0], basis.max_k), ks[1] / 2), ceiling=exhausted)

    def eof_abs(ks: tuple[int, float]) -> Candidate:
        k, s = ks
        return cand("EOF abs-step (training)", f"k={k} step={s:.3g} x dev",
                    TrainingBasisCodec(basis, k, s * basis.deviation, absolute=True))

    # past the grid: from the largest k, twice the EOFs (up to all of them) and the step
    # down by sqrt 2, together
    out += _line(eof_abs, [(k, s) for k in abs_ks for s in abs_steps],
                 lambda ks: (min(2 * ks[0], basis.max_k), ks[1] / math.sqrt(2)), ceiling=exhausted)
    for name in ("SPERR", "SZ3"):
        def mean_res(t: float, name: str = name) -> Candidate:
            return cand(f"mean field + {name}", f"{'pwe' if name == 'SPERR' else 'abs'}={t:g} x range",
                        TrainingBasisCodec(basis, residual=_residual_codec(name, t * span, shape)))

        out += _line(mean_res, tols, finer_tol)
    out += _line(lambda t: cand(f"EOF-{k_res} + SPERR", f"pwe={t:g} x range",
                                TrainingBasisCodec(basis, k_res, 0.5, _residual_codec("SPERR", t * span, shape))),
                 tols, finer_tol)
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
            out.append(Candidate(f"{family}, {steps} steps", name, [codec], chunk_fields, "vcinr",
                                 {"inner_steps": steps, "latent_numbers": loaded.latent_dim * loaded.num_patches}))
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
