"""The byte layout of the error-bounded mode's residual section (the maths that fills it:
:mod:`vcinr_sci.coding.bound`). Every size a section claims is checked before it is
used: chunk bytes are untrusted.

The section's layout is specified in ``docs/format.md`` (one place for the whole chunk
format).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
from numcodecs import Zstd

from vcinr_sci.coding.zstd import zstd_exact, zstd_within
from vcinr_sci.errors import ChunkFormatError

LAYOUT = 1


HEAD = struct.Struct("<BBdddddQBi")


# The method byte: how the correction is coded (the decoder dispatches on it).
PLAIN = 0  # rANS on q at the valid points
LORENZO = 1  # rANS on q's Lorenzo differences on the whole chunk
SPERR = 2  # SPERR on the float64 residual on the whole chunk (masked points 0)
METHODS = (PLAIN, LORENZO, SPERR)


LEN = struct.Struct("<I")


@dataclass(frozen=True)
class ResidualInfo:
    """A residual section's header: the guarantee a chunk carries."""

    mode: str
    max_abs_error: float | None
    max_rel_error: float | None
    bound: float
    margin: float
    step: float
    num_values: int


def nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value


def none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value


def pack_raw(values: np.ndarray) -> bytes:
    return ZSTD.encode(np.ascontiguousarray(values)) if values.size else b""


def unpack_raw(raw: bytes, dtype: np.dtype, n: int) -> np.ndarray:
    if not n:
        if raw:
            raise ChunkFormatError("residual section: raw values stored without outliers")
        return np.zeros(0, dtype)
    return np.frombuffer(zstd_exact(raw, n * dtype.itemsize, "residual section: raw values"), dtype)


def outlier_index(gaps: bytes, n: int) -> np.ndarray:
    if not gaps:
        return np.zeros(0, np.int64)
    steps = np.frombuffer(zstd_within(gaps, 4 * n, "residual section: outlier index", 4), "<u4").astype(np.int64)
    index = np.cumsum(steps) - 1
    if not steps.size or (steps == 0).any() or index[-1] >= n:
        raise ChunkFormatError("residual section: outlier index out of range")
    return index


def parse_section(section: bytes) -> tuple[ResidualInfo, int, int, list[bytes]]:
    if len(section) < HEAD.size:
        raise ChunkFormatError(f"residual section of {len(section)} bytes is shorter than its header")
    layout, mode, asked_abs, asked_rel, bound, m, step, n, method, offset = HEAD.unpack_from(section)
    if layout != LAYOUT or mode >= len(MODES) or method not in METHODS:
        raise ChunkFormatError(f"unknown residual section layout {layout} / mode {mode} / method {method}")
    if not (math.isfinite(bound) and bound >= 0 and math.isfinite(step) and step >= 0):
        raise ChunkFormatError("residual section: bound and step must be finite and non-negative")
    if method == SPERR and not (step > 0 and offset == 0):
        raise ChunkFormatError("residual section: a SPERR correction needs a positive tolerance and offset 0")
    parts, pos = [], HEAD.size
    for _ in range(4):
        if len(section) < pos + LEN.size:
            raise ChunkFormatError("residual section truncated")
        (length,) = LEN.unpack_from(section, pos)
        pos += LEN.size
        if len(section) < pos + length:
            raise ChunkFormatError("residual section truncated")
        parts.append(bytes(section[pos : pos + length]))
        pos += length
    if pos != len(section):
        raise ChunkFormatError("residual section: trailing bytes")
    info = ResidualInfo(MODES[mode], none_if_nan(asked_abs), none_if_nan(asked_rel), bound, m, step, n)
    return info, method, offset, parts


ZSTD = Zstd(level=9)


MODES = ("abs", "rel", "abs_and_rel")
