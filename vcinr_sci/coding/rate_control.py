"""Rate control: the step at which a chunk lands on its level's target PSNR.

A level's step is tuned on the tuning items (``pipelines/fit_basis.py``); held-out data
of another season, year or region can be harder or easier, and the same step then gives
it another PSNR (ERA5 UK: the 40 dB level gave 37.6 dB on held-out hours). The encoder
therefore searches, per chunk, the coarsest step whose squared error over the chunk's
valid points is at most the target's, and stores its choice in the chunk: a level of the
model (the header's quality) and an exponent on that level's step
(:func:`~vcinr_sci.coding.coefficients.step_factor`, 0.5x to 2x in 3 % steps), coded
under that level's tables.

Tables matter: the coder's rate-distortion optimised rounding prices symbols with them,
so under one level's tables the error grows with the step, but across two levels' tables
it jumps (ERA5 UK: 1 dB between neighbouring steps under two levels' tables), and a
level's tables 2x off its step bought 1.5 dB for halving it, not 6. So the search runs
within one level's exponents (:func:`coarsest_within`), from the requested level's own
step, and goes on into the neighbouring level toward the step it found (a finer level
where even the finest exponent misses); of the levels searched, the chunk takes the
shortest string that reaches the target (:func:`choose_coding`).

Where no level's finest step reaches the target (the target is past what the model
reaches on this chunk), the latents aim :data:`LIMIT_GAP_DB` below what the finest step
gives, as the fit does for a target past the tuning items' reach (the last fraction of a
dB would cost bits out of all proportion), and the rest of the way is a correction
(:func:`target_correction`): the error-bounded mode's residual section
(:mod:`vcinr_sci.coding.bound`) at the loosest bound that reaches the target, per
correction coder, whichever is smaller.

Within a level the search gallops from its start (strides doubling) until the target is
bracketed, then narrows the bracket by interpolation in log-log (the error is a power of
the step at high rate) and bisection by turns; every choice it returns was coded and
measured.
"""

from __future__ import annotations

import bisect
import math
from typing import Callable

import numpy as np

from vcinr_sci.coding.bound import RESIDUAL_METHODS, ErrorBound, apply_residual, encode_residual
from vcinr_sci.coding.coefficients import MAX_STEP_EXPONENT, step_factor

# A target beyond what the model reaches is aimed this far below its reach instead.
LIMIT_GAP_DB = 0.25
# Candidate steps the search first moves by, then doubles: 8 is about 1.2x the step
# (1.5 dB at high rate), what a level's step is typically off by on held-out data.
_FIRST_STRIDE = 8

# The correction's bound: doubled from the one that guarantees the target (MSE at most
# b^2) until it misses (at most this many times), then bisected in log: a 6 dB bracket
# halved 4 times, within 0.4 dB of the target.
_BOUND_DOUBLINGS = 8
_BOUND_BISECTIONS = 4
# Values a trial's squared error is summed over at a time (its float64 temporaries
# would otherwise be several times the chunk).
ERROR_BLOCK_VALUES = 2**19

Measure = Callable[[str, int], tuple[float, int]]  # (level, exponent) -> (squared error, bytes)


def target_error(target_psnr: float, valid_points: int) -> float:
    """The squared error (normalised units, summed over ``valid_points``) of ``target_psnr``
    dB on the normalised range."""
    return valid_points * 10.0 ** (-target_psnr / 10.0)


def level_steps(step: float) -> list[float]:
    """A level's steps at exponents ``-MAX_STEP_EXPONENT..MAX_STEP_EXPONENT``, ascending."""
    return [step * step_factor(e) for e in range(-MAX_STEP_EXPONENT, MAX_STEP_EXPONENT + 1)]


def choose_coding(steps: dict[str, float], requested: str, measure: Measure, target: float) -> tuple[str, int, bool]:
    """``(level, exponent, reached)`` for a chunk at level ``requested``: of the levels
    ``steps`` (level -> its own step) searched (module doc), the one whose coarsest
    exponent within ``target`` has the shortest string (``measure``, memoised by the
    caller); where none reaches ``target``, the finest level's coarsest exponent within
    :data:`LIMIT_GAP_DB` of its finest, and ``reached`` False."""
    order = sorted(steps, key=lambda q: (steps[q], q))  # finest first
    found: dict[str, int] = {}
    level, start = requested, steps[requested]
    while level not in found:
        own = steps[level]
        i = coarsest_within(level_steps(own), start, lambda i, q=level: measure(q, i - MAX_STEP_EXPONENT)[0], target)
        k = order.index(level)
        if i is None:  # even its finest step misses: a finer level's tables
            if k == 0:
                break
            start, level = own * step_factor(-MAX_STEP_EXPONENT), order[k - 1]
            continue
        found[level] = e = i - MAX_STEP_EXPONENT
        start = own * step_factor(e)
        toward = k + (e > 0) - (e < 0)  # the neighbour on the side the chunk's step moved to
        if toward == k or not 0 <= toward < len(order) or order[toward] in found:
            break
        nearer = abs(math.log(start / steps[order[toward]])) < abs(math.log(start / own))
        if not (nearer or abs(e) == MAX_STEP_EXPONENT):
            break
        level = order[toward]
    if found:
        best = min(found, key=lambda q: measure(q, found[q])[1])
        return best, found[best], True
    finest = order[0]
    floor = measure(finest, -MAX_STEP_EXPONENT)[0] * 10.0 ** (LIMIT_GAP_DB / 10.0)
    i = coarsest_within(level_steps(steps[finest]), steps[finest] * step_factor(-MAX_STEP_EXPONENT),
                        lambda i: measure(finest, i - MAX_STEP_EXPONENT)[0], floor)
    assert i is not None  # the finest exponent is within its own floor
    return finest, i - MAX_STEP_EXPONENT, False


def coarsest_within(steps: list[float], start: float, error: Callable[[int], float], target: float) -> int | None:
    """The index into ``steps`` (ascending) of the coarsest step whose ``error`` (the
    chunk's squared error coded at ``steps[i]``) is at most ``target``, searched from the
    step nearest ``start``; None when even the finest misses it."""
    seen = {(first := _index_at(steps, start)): error(first)}
    stride, interpolate = _FIRST_STRIDE, True
    while True:
        good = max((i for i, e in seen.items() if e <= target), default=-1)
        bad = min((i for i, e in seen.items() if e > target and i > good), default=len(steps))
        if bad - good <= 1:
            return good if good >= 0 else None
        if good < 0:  # gallop toward finer steps
            probe, stride = max(0, bad - stride), 2 * stride
        elif bad == len(steps):  # gallop toward coarser ones
            probe, stride = min(len(steps) - 1, good + stride), 2 * stride
        else:  # bracketed: interpolate in log-log and bisect by turns
            probe = _interpolated(steps, seen, good, bad, target) if interpolate else (good + bad) // 2
            interpolate = not interpolate
        seen[probe] = error(probe)


def _index_at(steps: list[float], step: float) -> int:
    """The index of the step nearest ``step`` in ratio."""
    i = bisect.bisect_left(steps, step)
    if i == len(steps) or (i > 0 and steps[i] / step > step / steps[i - 1]):
        return i - 1
    return i


def _interpolated(steps: list[float], seen: dict[int, float], good: int, bad: int, target: float) -> int:
    """The index strictly inside ``(good, bad)`` nearest where the line through their
    (log step, log error) meets ``target``."""
    lo, hi = math.log(max(seen[good], 1e-300)), math.log(seen[bad])
    t = (math.log(target) - lo) / (hi - lo) if hi > lo else 0.5
    at = math.exp(math.log(steps[good]) + min(max(t, 0.0), 1.0) * math.log(steps[bad] / steps[good]))
    return min(max(bisect.bisect_left(steps, at), good + 1), bad - 1)


def target_correction(x: np.ndarray, kept: np.ndarray, xhat: np.ndarray, target_psnr: float, span: float,
                      device: float) -> bytes:
    """The residual section that brings the chunk ``x`` (its dtype; valid points
    ``kept``) from its reconstruction ``xhat`` there (float64, any decoder's within
    ``device``) up to ``target_psnr`` dB on the range ``span``: per correction coder
    (:data:`~vcinr_sci.coding.bound.RESIDUAL_METHODS`), the loosest max-error bound whose
    corrected values reach it, and of those the smaller section. The coders' errors
    differ (rANS's spread evenly up to the bound, SPERR's mostly far below it: on CCSM TS,
    at 3x the bound whose worst case is the target, SPERR still gave 4.7 dB more than the
    target), so each is searched alone: from that bound (which always reaches the
    target), doubling until it misses, then ``_BOUND_BISECTIONS`` bisections in log."""
    values = x[kept]
    worst = span * 10.0 ** (-target_psnr / 20.0)  # every error at most this: MSE <= target's
    allowed = target_error(target_psnr, values.size) * span**2

    def coded(bound: float, method: str) -> tuple[bytes, bool]:
        section = encode_residual(x, kept, xhat, ErrorBound(max_abs_error=bound), device, (method,))
        out, total = apply_residual(section, kept, xhat, x.dtype), 0.0
        for start in range(0, values.size, ERROR_BLOCK_VALUES):  # float64 temporaries of a block
            block = slice(start, start + ERROR_BLOCK_VALUES)
            total += float(np.square(out[block].astype(np.float64) - values[block]).sum())
        return section, total <= allowed

    sections = []
    for method in RESIDUAL_METHODS:
        best, _ = coded(worst, method)
        lo = hi = math.log(worst)
        for _ in range(_BOUND_DOUBLINGS):
            hi += math.log(2.0)
            section, reached = coded(math.exp(hi), method)
            if not reached:
                break
            best, lo = section, hi
        else:
            sections.append(best)
            continue
        for _ in range(_BOUND_BISECTIONS):
            mid = (lo + hi) / 2
            section, reached = coded(math.exp(mid), method)
            best, lo, hi = (section, mid, hi) if reached else (best, lo, mid)
        sections.append(best)
    return min(sections, key=len)
