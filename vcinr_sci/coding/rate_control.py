"""Rate control: the step at which a chunk lands on its level's target PSNR.

A level's step is tuned on the tuning items (``pipelines/fit_basis.py``); held-out data
of another season, year or region can be harder or easier, and the same step then gives
it another PSNR (ERA5 UK: the 40 dB level gave 37.5 dB on the last held-out hours). The
encoder therefore searches, per chunk, the coarsest step whose squared error over the
chunk's valid points is at most the target's, and stores its choice in the chunk: a
level of the model (the header's quality) and an exponent on that level's step
(:func:`~vcinr_sci.coding.coefficients.step_factor`, 0.5x to 2x in 3 % steps). Each step
is taken under the tables of the level whose own step is nearest: a coder's
rate-distortion optimised rounding prices symbols with its tables, and tables for a step
2x off priced the symbols of a finer step so high that halving it bought 1.5 dB, not 6.

Where even the finest step misses the target (the target is past what the model reaches
on this chunk), it aims :data:`LIMIT_GAP_DB` below what the finest step gives instead, as
the fit does for a target past the tuning items' reach: the last fraction of a dB would
cost bits out of all proportion.

The search assumes the error grows with the step (it does, up to the rounding's small
wobbles): from the level's own step it gallops (strides doubling) until the target is
bracketed, then narrows the bracket by interpolation in log-log (the error is a power of
the step at high rate) and bisection by turns; every choice it returns was coded and
measured. Five to seven codings a chunk on ERA5 UK.
"""

from __future__ import annotations

import bisect
import math
from typing import Callable

from vcinr_sci.coding.coefficients import MAX_STEP_EXPONENT, step_factor

# A target beyond what the model reaches is aimed this far below its reach instead.
LIMIT_GAP_DB = 0.25
# Candidate steps the search first moves by, then doubles: 8 is about 1.2x the step
# (1.5 dB at high rate), what a level's step is typically off by on held-out data.
_FIRST_STRIDE = 8

Choice = tuple[str, int]  # (level, step exponent)


def target_error(target_psnr: float, valid_points: int) -> float:
    """The squared error (normalised units, summed over ``valid_points``) of ``target_psnr``
    dB on the normalised range."""
    return valid_points * 10.0 ** (-target_psnr / 10.0)


def step_choices(steps: dict[str, float]) -> tuple[list[float], list[Choice]]:
    """Every step the levels ``steps`` (level -> its step) offer, ascending, each with the
    ``(level, exponent)`` that codes it: the level whose own step is nearest (in ratio)."""
    logs = {level: math.log(step) for level, step in steps.items()}
    out: dict[float, Choice] = {}
    for level, step in steps.items():
        for exponent in range(-MAX_STEP_EXPONENT, MAX_STEP_EXPONENT + 1):
            s = step * step_factor(exponent)
            if min(logs, key=lambda q: (abs(math.log(s) - logs[q]), q)) == level:
                out.setdefault(s, (level, exponent))
    order = sorted(out)
    return order, [out[s] for s in order]


def choose_step(steps: list[float], start: int, error: Callable[[int], float], target: float) -> int:
    """The index into ``steps`` (ascending) of the coarsest step whose ``error`` (the
    chunk's squared error coded at ``steps[i]``) is at most ``target``, searched from
    ``start``; where none reaches it, the coarsest within :data:`LIMIT_GAP_DB` of the
    finest step's error (module doc)."""
    seen = {start: error(start)}
    stride, interpolate = _FIRST_STRIDE, True
    while True:
        good = max((i for i, e in seen.items() if e <= target), default=-1)
        bad = min((i for i, e in seen.items() if e > target and i > good), default=len(steps))
        if bad - good <= 1:
            if good >= 0:
                return good
            target = max(target, seen[0] * 10.0 ** (LIMIT_GAP_DB / 10.0))  # the finest missed: out of reach
            stride = _FIRST_STRIDE
            continue
        if good < 0:  # gallop toward finer steps
            probe, stride = max(0, bad - stride), 2 * stride
        elif bad == len(steps):  # gallop toward coarser ones
            probe, stride = min(len(steps) - 1, good + stride), 2 * stride
        else:  # bracketed: interpolate in log-log and bisect by turns
            probe = _interpolated(steps, seen, good, bad, target) if interpolate else (good + bad) // 2
            interpolate = not interpolate
        seen[probe] = error(probe)


def _interpolated(steps: list[float], seen: dict[int, float], good: int, bad: int, target: float) -> int:
    """The index strictly inside ``(good, bad)`` nearest where the line through their
    (log step, log error) meets ``target``."""
    lo, hi = math.log(max(seen[good], 1e-300)), math.log(seen[bad])
    t = (math.log(target) - lo) / (hi - lo) if hi > lo else 0.5
    at = math.exp(math.log(steps[good]) + min(max(t, 0.0), 1.0) * math.log(steps[bad] / steps[good]))
    return min(max(bisect.bisect_left(steps, at), good + 1), bad - 1)
