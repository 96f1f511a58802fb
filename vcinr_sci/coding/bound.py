"""The error-bounded mode's residual: quantise, code, verify, apply.

With a bound ``b`` the codec guarantees ``|x - decode(encode(x))| <= b`` at every valid
(not NaN, not fill) point of a chunk. After the model's reconstruction ``xhat`` (from the
*quantised* latents, as the decoder will compute it) the encoder stores, in the chunk's
residual section:

- ``q = round((x - xhat) / step)`` with ``step = 2 (b - m)``, coded losslessly; the
  decoder computes ``x' = dtype(xhat + q * step)``;
- *outliers*: every point where the encoder's own ``x'`` (the same float operations,
  cast to the array's dtype) misses ``x`` by more than ``b - m`` is stored exactly (its
  index and raw value). Float rounding of large values under a tiny bound, float16
  overflow, or a huge ``q`` end up here. So the bound holds by construction *and* by a
  check of every point.

**The margin m and devices.** The decoder may compute ``xhat`` on another machine (another
BLAS, thread count or a GPU) and get a slightly different value; and it rounds
``xhat + q * step`` to the dtype independently. The margin covers both::

    m = max(b / 8, d + ulp_dtype(max|x| + b))

where ``d`` is the most a decoder's ``xhat`` can differ from the encoder's at the chunk's
valid points, which the model reports for the chunk
(:meth:`vcinr_sci.model.loaded.LoadedModel.reconstruction_margin`; the codec never asks
which kind of model it holds): for an INR, 256 float32 ulps of its output scale (a device
allowance, two orders above the measured CPU-GPU difference; the INR runs in full float32,
TF32 off, see :func:`vcinr_sci.model.device.full_float32`); for a linear model, a bound
derived from its float64 sum and float32 cast, about two float32 ulps of its values.
``ulp_dtype(v)`` is the spacing of the array's dtype at ``v``
(``|cast(a) - cast(c)| <= |a - c| + ulp``). The ``b / 8`` floor leaves slack for devices
beyond those measured, at a cost of ``log2(8/7) = 0.19`` bits per value. Since the encoder
checks ``|x - x'| <= b - m``, a decoder whose ``xhat`` is within ``d`` of the encoder's
stays within ``b``.

**Tight bounds.** When ``d + ulp`` takes more than half the bound (a bound within a few
ulps of the values, or an INR's device allowance on a narrow-range chunk) the correction
is coded against the reduced bound ``b - m`` with the finer step ``2 (b - m)``: more bits
per value, still far fewer than raw; points the dtype cannot bring within ``b - m`` are
outliers as always. Only when ``m >= b`` (nothing left to quantise against, e.g. a rel
bound on a constant chunk, where ``b = 0``) is every valid point stored exactly, with
``step = 0``; the bound then holds trivially and such chunks cost about their raw size
(Zstd-compressed). No bound is refused. The decoder reads ``step`` and never ``m``, so
chunks written before this rule decode as before.

**Coding of the correction: picked per chunk.** The encoder builds the section two ways
and stores the smaller (rANS on ties, :data:`RESIDUAL_METHODS`), the method byte telling
the decoder which:

- *rANS on q.* The model's errors are smooth, so neighbouring ``q`` are alike: ``q`` at the
  valid points or, on the whole chunk grid (``q = 0`` at masked points), its 2-D Lorenzo
  differences along the last two axes (``q[i, j] - q[i-1, j] - q[i, j-1] + q[i-1, j-1]``,
  inverted exactly by two integer cumulative sums), whichever has the smaller empirical
  entropy, through compressai's rANS coder with a per-chunk histogram (the quantised CDF's
  frequencies; at most :data:`MAX_SYMBOLS` values around the median, rarer ones through
  compressai's escape coding). The decoder computes ``x' = dtype(xhat + q * step)``.
- *SPERR on the residual* (:mod:`vcinr_sci.coding.sperr`): the float64 ``x - xhat`` on the
  chunk grid (0 at masked points, which the mask restores anyway) in SPERR's point-wise
  error mode with tolerance ``b - m``; the decoder computes ``x' = dtype(xhat + r_hat)``.
  The encoder decodes its own stream, computes ``x'`` exactly so, and stores every point
  that misses by more than ``b - m`` as an outlier, as on the rANS path: the guarantee
  holds by construction and by check whichever coder is picked.

Measured (``vcinr bench residual``, tiny models, bits per valid value of the correction;
CCSM TREFHT 64 x 128, two 8-field chunks, and OSTIA SST 18 x 432 with its NaN land mask,
one 5-field chunk), rANS / SPERR / picked: at bounds of 1e-4, 1e-3 and 1e-2 of the range
rANS is the smaller everywhere (CCSM 8.26 / 8.48, 4.48 / 4.81, 1.72 / 1.87; OSTIA 9.42 /
10.75, 5.06 / 6.16, 2.05 / 2.09), at 3e-2 SPERR (CCSM 1.14 / 0.83, OSTIA 1.19 / 1.02), at
1e-1 rANS on CCSM (0.15 / 0.26) and SPERR on OSTIA (0.41 / 0.31). Trying SPERR costs
2-20 ms per chunk at encode.

**Why SPERR and not SZ3.** Both decode in floating point, so another build or machine may
rebuild ``r_hat`` with different last bits. What protects a user: the encoder's check of
every point against ``b - m``, the margin (at least ``b / 8``, far above SPERR's float64
wavelet round-off, a few ulps of the residual, which does not propagate); pinned versions
(requirements.txt's imagecodecs 2026.3.6 bundles SPERR 0.8.4, whose stream framing the
decoder checks); a float coder only where it made the chunk smaller; and the checks of
:mod:`vcinr_sci.coding.sperr`, which refuse a stream SPERR would decode truncated or
abort on, and pad what it hands SPERR past any bit its decoder can read. What does not: a future SPERR whose decoder no longer reads
0.8 streams or rebuilds them differently by more than the margin (an archive then needs
the pinned imagecodecs to read its SPERR-coded chunks; rANS-coded ones need only integer
arithmetic and one float64 multiply-add). SZ3 is measured by the bench but never stored:
its decoder rebuilds each value from already rebuilt neighbours, so a last-bit difference
propagates along the prediction chain; its stream format changes between releases (the
decoder warns of "program v3.3.1, program-data 3.3.0" on a damaged stream); and SZ3
3.3's decoder aborted the process on every truncated stream tried (15 of 15) and on
damaged headers, which no check outside SZ3 can prevent. On the grid as SPERR sees it,
SZ3 would be smaller than rANS at most bounds on CCSM (8.13, 4.45, 1.40 at 1e-4 ... 1e-2)
but not on OSTIA's masked grid. The compression-safeguards codec (also in the bench)
checks a checksum of the corrected values on decode, so it refuses to decode wherever
the INR's floats differ in the last bit (another device), besides being the slowest.

The section's byte layout: :mod:`vcinr_sci.coding.residual_format`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np

from vcinr_sci.coding import sperr
from vcinr_sci.coding.rans import BLOCK_VALUES, rans_decode, rans_encode
from vcinr_sci.coding.residual_format import (
    HEAD,
    LAYOUT,
    LEN,
    LORENZO,
    MODES,
    PLAIN,
    SPERR,
    ZSTD,
    ResidualInfo,
    nan_if_none,
    outlier_index,
    pack_raw,
    parse_section,
    unpack_raw,
)
from vcinr_sci.errors import BoundError, ChunkFormatError

# The margin's floor as a fraction of the bound (slack for devices not measured).
MARGIN_FRACTION = 1 / 8

# |q| beyond this goes to the outliers: compressai's bypass coding hangs near 2**28.
_MAX_Q = 2**20
# The correction coders an encoder tries per chunk, keeping the smallest section.
RESIDUAL_METHODS: tuple[str, ...] = ("rans", "sperr")
# ErrorBound.correction -> the coders tried. "smallest" (the default) keeps the fewest
# bytes at the bound; "sperr" alone suits a user after PSNR at a bound: at the same bound
# its errors are mostly far below it (lower MSE), where rANS's uniform quantiser spreads
# them evenly up to the bound.
CORRECTIONS = ("smallest", "rans", "sperr")
# The most grid values a SPERR-coded correction covers: SPERR 0.8's decoder holds about
# five float64 values per grid point (measured), so this bounds its memory (~45 MB)
# whatever a chunk claims. Larger chunks are corrected with rANS; a reader refuses more.
SPERR_MAX_VALUES = 2**20


def check_correction(correction: str) -> None:
    """Raise :class:`BoundError` unless ``correction`` is one of :data:`CORRECTIONS`."""
    if correction not in CORRECTIONS:
        raise BoundError(f"correction must be one of {list(CORRECTIONS)}, got {correction!r}")


@dataclass(frozen=True)
class ErrorBound:
    """What a codec was asked to guarantee: ``max_abs_error`` (data units) and/or
    ``max_rel_error`` (a fraction of the chunk's valid value range, as SZ3's REL mode);
    with both, the smaller bound holds."""

    max_abs_error: float | None = None
    max_rel_error: float | None = None
    correction: str = "smallest"  # how the correction is coded: one of CORRECTIONS

    @property
    def methods(self) -> tuple[str, ...]:
        """The correction coders an encoder tries (the smallest section is kept)."""
        return RESIDUAL_METHODS if self.correction == "smallest" else (self.correction,)

    def __post_init__(self) -> None:
        check_correction(self.correction)
        for name in ("max_abs_error", "max_rel_error"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise BoundError(f"{name} must be a positive number or None, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise BoundError(f"{name} must be a positive finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.max_abs_error is None and self.max_rel_error is None:
            raise BoundError("an error bound needs max_abs_error or max_rel_error")

    @property
    def mode(self) -> str:
        if self.max_rel_error is None:
            return "abs"
        return "rel" if self.max_abs_error is None else "abs_and_rel"

    def absolute(self, values: np.ndarray) -> float:
        """The bound in data units for a chunk whose valid values are ``values``."""
        bounds = []
        if self.max_abs_error is not None:
            bounds.append(self.max_abs_error)
        if self.max_rel_error is not None:
            spread = float(values.max()) - float(values.min()) if values.size else 0.0
            bounds.append(self.max_rel_error * spread)
        return min(bounds)




def margin(bound: float, device: float, max_abs_value: float, dtype: np.dtype) -> float:
    """``m`` for a chunk (see the module doc); ``device`` is ``d``, the model's
    reconstruction margin, in data units."""
    with np.errstate(over="ignore"):
        top = dtype.type(max_abs_value + bound)
    ulp = float(np.spacing(top)) if np.isfinite(top) else math.inf
    return max(bound * MARGIN_FRACTION, device + ulp)


def corrected(xhat: np.ndarray, q: np.ndarray, step: float, dtype: np.dtype) -> np.ndarray:
    """``dtype(xhat + q * step)``: the one computation of the corrected values, shared by
    the encoder's check and the decoder."""
    with np.errstate(over="ignore"):
        return (xhat + q * step).astype(dtype)


def quantise(x: np.ndarray, xhat: np.ndarray, bound: float, m: float) -> tuple[np.ndarray, float, np.ndarray]:
    """``(q, step, outliers)`` for the valid values ``x`` (their dtype) and the float64
    reconstruction ``xhat``: ``q`` int64 (0 at outliers), ``outliers`` a bool mask of the
    points whose corrected value misses ``x`` by more than ``bound - m``."""
    if m >= bound:  # nothing left to quantise against: store every point
        return np.zeros(x.size, np.int64), 0.0, np.ones(x.size, bool)
    step = 2.0 * (bound - m)
    q, outliers = np.empty(x.size, np.int64), np.empty(x.size, bool)
    for start in range(0, x.size, BLOCK_VALUES):  # float64 temporaries of a block, not of the chunk
        block = slice(start, start + BLOCK_VALUES)
        x64 = x[block].astype(np.float64)
        ratio = (x64 - xhat[block]) / step
        far = ~(np.abs(ratio) <= _MAX_Q)
        qb = np.where(far, 0.0, np.rint(ratio)).astype(np.int64)
        with np.errstate(invalid="ignore"):  # inf - inf after a float16 overflow: a miss
            miss = ~(np.abs(corrected(xhat[block], qb, step, x.dtype).astype(np.float64) - x64) <= bound - m)
        out = far | miss
        qb[out] = 0
        q[block], outliers[block] = qb, out
    return q, step, outliers


def encode_residual(
    x: np.ndarray, kept: np.ndarray, xhat: np.ndarray, spec: ErrorBound, device: float,
    methods: tuple[str, ...] | None = None,
) -> bytes:
    """The residual section of the chunk ``x`` (its dtype) whose valid points are
    ``kept`` (bool, ``x.shape``) and whose float64 reconstruction there is ``xhat``, any
    decoder's within ``device`` of it (data units): the smallest of the ``methods``
    (default: those of ``spec.correction``), rANS on ties. With ``m >= b`` every point is
    stored exactly, whatever ``methods`` say."""
    methods = spec.methods if methods is None else methods
    x = x[kept]
    bound = spec.absolute(x)
    max_abs = float(np.abs(x).max()) if x.size else 0.0
    m = margin(bound, device, max_abs, x.dtype)
    head = partial(_head, spec, bound, m, x.size)
    sections = []
    use_sperr = "sperr" in methods and m < bound and kept.ndim and x.size and kept.size <= SPERR_MAX_VALUES
    if "rans" in methods or not use_sperr:
        sections.append(_rans_section(x, kept, xhat, bound, m, head))
    if use_sperr:
        sections.append(_sperr_section(x, kept, xhat, bound - m, head))
    return min(sections, key=len)


def _head(spec: ErrorBound, bound: float, m: float, n: int, step: float, method: int, offset: int) -> bytes:
    return HEAD.pack(
        LAYOUT, MODES.index(spec.mode), nan_if_none(spec.max_abs_error), nan_if_none(spec.max_rel_error),
        bound, m, step, n, method, offset,
    )


def _section(head: bytes, table: bytes, string: bytes, x: np.ndarray, outliers: np.ndarray) -> bytes:
    """A section's bytes: its header, the coder's two parts, the outliers."""
    index = np.flatnonzero(outliers)
    gaps = np.diff(index, prepend=-1).astype("<u4") if index.size else np.zeros(0, "<u4")
    parts = [table, string, ZSTD.encode(gaps) if index.size else b"", pack_raw(x[index])]
    return head + b"".join(LEN.pack(len(p)) + p for p in parts)


def _rans_section(x: np.ndarray, kept: np.ndarray, xhat: np.ndarray, bound: float, m: float,
                  head: Callable[[float, int, int], bytes]) -> bytes:
    """The correction as quantised ``q`` under rANS (plain or Lorenzo, the smaller entropy)."""
    q, step, outliers = quantise(x, xhat, bound, m)
    method, symbols = PLAIN, q
    if step and kept.ndim:
        grid = np.zeros(kept.shape, np.int64)
        grid[kept] = q
        lorenzo = _lorenzo(grid).ravel()
        del grid
        if _entropy_bits(lorenzo) < _entropy_bits(q):
            method, symbols = LORENZO, lorenzo
        del lorenzo
    del q  # symbols holds the one coded: the other is freed before the coder's own copies
    offset, table, string = (0, b"", b"") if step == 0 else rans_encode(symbols)
    return _section(head(step, method, offset), table, string, x, outliers)


def _sperr_section(x: np.ndarray, kept: np.ndarray, xhat: np.ndarray, tolerance: float,
                   head: Callable[[float, int, int], bytes]) -> bytes:
    """The correction as SPERR's stream of the float64 residual ``x - xhat`` on the chunk
    grid (0 at masked points) within ``tolerance = b - m``; the encoder decodes its own
    stream and stores every point whose corrected value misses by more as an outlier."""
    x64 = x.astype(np.float64)
    grid = np.zeros(kept.shape)
    grid[kept] = x64 - xhat
    stream = sperr.encode(grid, tolerance)
    with np.errstate(invalid="ignore"):  # inf - inf after a float16 overflow: a miss
        outliers = ~(np.abs(corrected(xhat, sperr.decode(stream, kept.shape)[kept], 1.0, x.dtype) - x64) <= tolerance)
    return _section(head(tolerance, SPERR, 0), b"", stream, x, outliers)


def read_info(section: bytes) -> ResidualInfo:
    """The guarantee stored in a residual section (its header only)."""
    info, _, _, _ = parse_section(section)
    return info


def apply_residual(section: bytes, kept: np.ndarray, xhat: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The corrected values (1-D, ``dtype``) at the valid points ``kept`` (bool, the
    chunk's shape) of a chunk whose float64 reconstruction there is ``xhat``."""
    correction = Correction(section, kept.shape, 1, None if kept.all() else ~kept.reshape(1, -1), xhat.size)
    return correction.apply(slice(0, 1), 0, xhat, dtype)


class Correction:
    """A residual section decoded once, applied block by block: the chunk's grid is seen
    as ``rows`` of whole fields (``mask``: ``(rows, columns)`` bool, True = masked, or
    None: every point valid), and :meth:`apply` corrects the valid points of a run of rows. What it holds
    besides the outliers is ``q`` (int32, one per valid point, or per grid point for
    Lorenzo) or SPERR's float64 residual grid: at most 8 bytes per grid point, decoded in
    blocks, so a decode's memory stays in proportion to its output."""

    def __init__(self, section: bytes, shape: tuple[int, ...], rows: int, mask: np.ndarray | None, num_valid: int):
        info, self.method, offset, (table, symbols, gaps, raw) = parse_section(section)
        if info.num_values != num_valid:
            raise ChunkFormatError(f"residual section holds {info.num_values} values, the chunk has {num_valid} valid points")
        self.step, self.rows, self.mask, self.raw = info.step, rows, mask, raw
        size = math.prod(shape)
        self.values: np.ndarray | None = None  # q or SPERR's residual; None: nothing quantised
        if info.step == 0:
            if table or symbols:
                raise ChunkFormatError("residual section: symbols stored while nothing is quantised")
        elif self.method == SPERR:
            if table:
                raise ChunkFormatError("residual section: a histogram stored beside a SPERR stream")
            if size > SPERR_MAX_VALUES:
                raise ChunkFormatError(f"residual section: a SPERR correction of {size} values, more than the "
                                       f"{SPERR_MAX_VALUES} any encoder writes")
            self.values = sperr.decode(symbols, shape).reshape(-1)
        elif self.method == LORENZO:
            self.values = _unlorenzo(rans_decode(table, symbols, offset, size).reshape(shape)).reshape(-1)
        else:
            self.values = rans_decode(table, symbols, offset, num_valid)
        self.index = outlier_index(gaps, num_valid)
        if info.step == 0 and self.index.size != num_valid:
            raise ChunkFormatError("residual section: an unquantised chunk must store every point")
        self.dtype: np.dtype | None = None
        self.outliers = np.zeros(0)

    def apply(self, rows: slice, start: int, xhat: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """The corrected values (``dtype``) of the valid points of ``rows``, the first of
        them valid point ``start`` of the chunk, whose reconstruction is ``xhat``."""
        if self.dtype is None or self.dtype != dtype:  # the outliers' raw values, once (np.dtype(None) is float64)
            self.outliers, self.dtype = unpack_raw(self.raw, dtype, self.index.size), dtype
        if self.values is None:
            out = np.zeros(xhat.size, dtype)
        elif self.method == PLAIN:
            out = corrected(xhat, self.values[start : start + xhat.size], self.step, dtype)
        else:  # per grid point: the block's rows, at their valid points
            grid = self.values.reshape(self.rows, -1)[rows]
            at = grid.reshape(-1) if self.mask is None else grid[~self.mask[rows]]
            out = corrected(xhat, at, 1.0 if self.method == SPERR else self.step, dtype)
        lo, hi = np.searchsorted(self.index, [start, start + xhat.size])
        out[self.index[lo:hi] - start] = self.outliers[lo:hi]
        return out


# ---------------------------------------------------------------------------- coding of q


def _lorenzo(grid: np.ndarray) -> np.ndarray:
    """Integer differences along the last (up to) two axes."""
    for axis in range(-1, -min(2, grid.ndim) - 1, -1):
        grid = np.diff(grid, axis=axis, prepend=0)
    return grid


def _unlorenzo(diffs: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`_lorenzo`, in place (in ``diffs``' dtype)."""
    for axis in range(-min(2, diffs.ndim), 0):
        np.cumsum(diffs, axis=axis, dtype=diffs.dtype, out=diffs)
    return diffs


def _entropy_bits(symbols: np.ndarray) -> float:
    """Empirical (order-0) entropy of ``symbols``, in bits, summed over them."""
    counts = np.unique(symbols, return_counts=True)[1]
    return float(-(counts * np.log2(counts / symbols.size)).sum())








# ---------------------------------------------------------------------------- helpers












