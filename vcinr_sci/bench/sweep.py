"""Sweeps that go on until they pass the highest target PSNR, so that "not reached" in
``vcinr bench codecs``'s summary is never an artefact of the knob values listed.

Each codec family's knob list (:mod:`vcinr_sci.bench.candidates`) ends in a candidate
that can build the next, finer point. Where a family's best point stays below the
target, its line goes on one point at a time until a point passes the target, the knob
cannot go finer (the candidate says why: a codec's limit, float32 resolution), or the
PSNR stops gaining (then the line's ceiling says what bounds it: e.g. every EOF of the
training fields used). The reason is recorded on the family's last row
(``sweep_limit``) and shown in the summary. vcinr's levels are not extended: they are
the model's own.
"""

from __future__ import annotations

from typing import Any, Callable

from vcinr_sci.bench.candidates import Candidate

SATURATION_DB = 0.1  # a line gaining less than this over its last two points has stopped
MAX_EXTRA_POINTS = 24  # per family: a guard against a line that gains too slowly to end


def extend_sweeps(candidates: list[Candidate], rows: list[dict[str, Any]],
                  measure: Callable[[Candidate], dict[str, Any]], target: float) -> list[dict[str, Any]]:
    """The rows of the points added past each short sweep (``rows[i]`` measured
    ``candidates[i]``); marks a family that still stops short with ``sweep_limit`` on
    its last row."""
    top: dict[str, float] = {}
    for c, r in zip(candidates, rows, strict=True):
        top[c.family] = max(top.get(c.family, float("-inf")), r["psnr"])
    added: list[dict[str, Any]] = []
    for c, r in zip(candidates, rows, strict=True):
        if c.kind == "vcinr" or c.finer is None or top[c.family] >= target:
            continue
        line, reason = _extend(c, r, measure, target)
        added += line
        top[c.family] = max([top[c.family], *(q["psnr"] for q in line)])
        if reason:
            (line or [r])[-1]["sweep_limit"] = f"stops at {top[c.family]:.2f} dB: {reason}"
    return added


def _extend(c: Candidate, row: dict[str, Any], measure: Callable[[Candidate], dict[str, Any]],
            target: float) -> tuple[list[dict[str, Any]], str]:
    """Points past ``c`` along its line until one passes ``target``; and the reason the
    line stopped short ("" when it passed)."""
    line: list[dict[str, Any]] = []
    psnr = [row["psnr"]]
    while c.finer is not None:
        nxt = c.finer()
        if isinstance(nxt, str):
            return line, nxt
        c = nxt
        line.append(measure(c))
        psnr.append(line[-1]["psnr"])
        if psnr[-1] >= target:
            return line, ""
        if len(psnr) >= 3 and psnr[-1] - psnr[-3] < SATURATION_DB:
            return line, c.ceiling or "finer knob values stop gaining PSNR"
        if len(line) >= MAX_EXTRA_POINTS:
            return line, f"still short after {MAX_EXTRA_POINTS} more points"
    return line, "no finer knob value"
