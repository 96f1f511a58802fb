"""compressai's rANS coder, used safely, and integer symbols under a per-call histogram.

Every caller encodes through :func:`encode_with_indexes` (compressai's encoder with a
buffer that cannot overrun) and decodes through :func:`decode_with_indexes`, a
bounds-checked decoder whose output is compressai's, symbol for symbol, for every string
compressai's encoder writes. compressai's own decoder never checks the end of its input:
a CRC-valid chunk whose string is ten crafted bytes made it read past the string (garbage
that changed from run to run, or SIGSEGV with a few hundred symbols), and an escape run
(``0xff`` words) makes it read arbitrarily far. No length check can make it safe (a
legitimate string may spend well under a bit a symbol, and one escape's length is read
from the string itself), so ours stops at the string's last word instead, and refuses
what compressai's encoder never writes (an escape longer than 32 bits). Speed: see
:func:`decode_with_indexes`.

The histogram coder (:func:`rans_encode` / :func:`rans_decode`: at most
:data:`MAX_SYMBOLS` bins around the median, rarer values through the escape/bypass code)
sends its histogram with the string, as Zstd-coded quantised-CDF frequencies. The
error-bounded mode codes its quantised residual with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numba
import numpy as np
from numcodecs import Zstd

from vcinr_sci.coding.zstd import zstd_within
from vcinr_sci.errors import ChunkFormatError

CDF_PRECISION = 16


MAX_SYMBOLS = 4096


# the histogram's frequencies, as Zstd stores them in a residual section
ZSTD = Zstd(level=9)


# A bypass value of 2**28 or more makes compressai's encoder loop forever (an int32
# shifted by 32); symbols that far out are refused first.
MAX_BYPASS_VALUE = 2**28
# Values the encoders work through at a time (escape counts here, the bounded mode's
# quantiser): their int64/float64 temporaries are a block's, not a chunk's.
BLOCK_VALUES = 2**20


def encode_with_indexes(symbols: Sequence[int] | np.ndarray, indexes: Sequence[int] | np.ndarray,
                        cdfs: list[list[int]], cdf_lengths: list[int], offsets: list[int]) -> bytes:
    """compressai's ``RansEncoder().encode_with_indexes``, safe for any symbols.

    compressai writes the string into a buffer of one 32-bit word per symbol. A short or
    escape-heavy string overruns it (heap corruption: one symbol escaping far, or a field
    far outside the tables): a symbol costs at most 16 bits in its table plus, when it
    escapes, 4 bits a bypass nibble and a nibble count. Zero symbols (table ``indexes[0]``)
    appended past the real ones are coded first, so a decoder that stops after the real
    ones never reads them; they only make the buffer big enough, and a string that fits
    already gets none (its bytes are unchanged). A symbol whose bypass value would hang
    compressai is a ``ValueError``."""
    ans, _ = _compressai_rans()
    symbols = np.asarray(symbols, np.int64)
    indexes = np.asarray(indexes, np.int32)  # a table index: int32, as compressai reads it
    table_offsets, table_lengths = np.asarray(offsets, np.int64), np.asarray(cdf_lengths, np.int64)
    bypass = sum(_bypass_nibbles(symbols[start : start + BLOCK_VALUES], indexes[start : start + BLOCK_VALUES],
                                 table_offsets, table_lengths) for start in range(0, symbols.size, BLOCK_VALUES))
    words = -(-(16 * symbols.size + 4 * bypass) // 32) + 2  # the final state: two words
    pad = max(0, words - symbols.size)
    if pad:
        symbols = np.concatenate([symbols, np.zeros(pad, np.int64)])
        indexes = np.concatenate([indexes, np.full(pad, indexes[0] if indexes.size else 0, np.int32)])
        last = int(indexes[-1])
        if not 0 <= -table_offsets[last] < table_lengths[last] - 2:  # 0 escapes this table: use its first bin
            symbols[-pad:] = table_offsets[last]
    # int32 arrays, not lists: the binding reads any sequence into its int32 vectors, and
    # two lists of Python ints took 22 bytes a symbol more (the same string)
    return ans.RansEncoder().encode_with_indexes(symbols.astype(np.int32), indexes, cdfs, cdf_lengths, offsets)


def _bypass_nibbles(symbols: np.ndarray, indexes: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> int:
    """The bypass nibbles compressai's encoder writes for ``symbols`` under tables
    ``indexes``: each escaping value's nibbles, then their count's."""
    # As compressai's encoder maps a symbol: value in its table, escape beyond the last bin.
    value = symbols - offsets[indexes]
    escape = lengths[indexes] - 2
    outside = (value < 0) | (value >= escape)
    raw = np.where(value < 0, -2 * value - 1, 2 * (value - escape))[outside]
    if raw.size and raw.max() >= MAX_BYPASS_VALUE:
        raise ValueError(f"a symbol lies {int(raw.max()) // 2:,} bins beyond its coding table: more than "
                         "compressai's rANS codes; the data are far outside what the tables were made for")
    nibbles = np.zeros_like(raw)
    while (rest := raw >> (4 * nibbles)).any():
        nibbles += rest > 0
    return int(np.sum(nibbles + nibbles // 15 + 1))


def rans_encode(q: np.ndarray) -> tuple[int, bytes, bytes]:
    """``(offset, table, string)``: q under a histogram of at most ``MAX_SYMBOLS`` bins."""
    _, pmf_to_quantized_cdf = _compressai_rans()
    lo, hi = int(q.min()), int(q.max())
    if hi - lo + 1 > MAX_SYMBOLS:  # keep the window around the median; the rest escapes
        lo = max(lo, int(np.median(q)) - MAX_SYMBOLS // 2)
        hi = lo + MAX_SYMBOLS - 1
    inside = (q >= lo) & (q <= hi)
    counts = np.bincount(q[inside] - lo, minlength=hi - lo + 1).astype(np.float64)
    pmf = np.append(counts, q.size - inside.sum()) / q.size  # the escape symbol last
    cdf = pmf_to_quantized_cdf(pmf.tolist(), CDF_PRECISION)
    string = encode_with_indexes(q, np.zeros(q.size, np.int32), [cdf], [len(cdf)], [lo])
    return lo, ZSTD.encode(np.diff(cdf).astype("<u2")), string


def rans_decode(table: bytes, string: bytes, offset: int, n: int) -> np.ndarray:
    """The ``n`` int32 symbols of ``string`` under the stored histogram ``table``."""
    # Sizes a section claims are checked before anything is allocated: chunk bytes are untrusted.
    freqs = np.frombuffer(zstd_within(table, 2 * (MAX_SYMBOLS + 1), "residual section: histogram", 2), "<u2")
    if freqs.size < 2 or (freqs == 0).any() or int(freqs.sum(dtype=np.int64)) != 1 << CDF_PRECISION:
        raise ChunkFormatError("residual section: the stored histogram is not a valid quantised CDF")
    cdf = np.concatenate([[0], np.cumsum(freqs, dtype=np.int64)]).tolist()
    return decode_with_indexes(string, np.zeros(n, np.int32), RansTables.build([cdf], [len(cdf)], [offset]))


# compressai's constants (rans_interface.cpp): 16-bit CDFs, escapes in 4-bit nibbles.
_BYPASS_BITS = 4
# What compressai's encoder writes for one escape: a raw value of at most 31 bits, 8 nibbles.
_MAX_BYPASS_NIBBLES = 8
# Our decoder's verdicts (negative: the string is refused, and why).
_OVERRUN, _LONG_ESCAPE = -1, -2
_REFUSALS = {_OVERRUN: "it ends before its symbols do (truncated, or not a rANS string of this many symbols)",
             _LONG_ESCAPE: "an escaped symbol is longer than compressai's encoder writes"}


@dataclass(frozen=True)
class RansTables:
    """Quantised CDFs as :func:`decode_with_indexes` reads them: one padded row a table,
    its length and offset, checked once as compressai's debug build asserts them (0
    first, ``2**16`` last, strictly increasing), so a coder builds them once, not per
    chunk."""

    cdfs: np.ndarray  # (tables, longest) int64
    lengths: np.ndarray  # (tables,) int64
    offsets: np.ndarray  # (tables,) int64

    @classmethod
    def build(cls, cdfs: Sequence[Sequence[int]] | np.ndarray, cdf_lengths: Sequence[int] | np.ndarray,
              offsets: Sequence[int] | np.ndarray) -> "RansTables":
        lengths = np.array(cdf_lengths, np.int64).ravel()
        offset = np.array(offsets, np.int64).ravel()
        rows = [np.asarray(c, np.int64).ravel() for c in cdfs]
        if not rows or not len(rows) == lengths.size == offset.size:
            raise ValueError("rANS tables: as many CDFs, lengths and offsets, at least one")
        table = np.zeros((len(rows), max(r.size for r in rows)), np.int64)
        for i, r in enumerate(rows):
            table[i, : r.size] = r
        inside = np.arange(table.shape[1]) < lengths[:, None]
        sizes_ok = (lengths >= 2) & (lengths <= [r.size for r in rows])
        last = table[np.arange(len(rows)), np.clip(lengths - 1, 0, table.shape[1] - 1)]
        rising = ((np.diff(table, axis=1) > 0) | ~inside[:, 1:]).all(axis=1)
        bad = ~(sizes_ok & (table[:, 0] == 0) & (last == 1 << CDF_PRECISION) & rising)
        if bad.any():
            raise ValueError(f"rANS table {int(np.argmax(bad))} is not a quantised CDF (0 first, 2**16 last, "
                             "strictly increasing)")
        return cls(table, lengths, offset)


def decode_with_indexes(string: bytes, indexes: Sequence[int] | np.ndarray, tables: RansTables) -> np.ndarray:
    """The ``len(indexes)`` int32 symbols of a string from :func:`encode_with_indexes`,
    as compressai's ``RansDecoder().decode_with_indexes`` returns them, but never reading
    outside ``string``: a string that ends before its symbols, or holds an escape longer
    than compressai writes, is a :class:`ChunkFormatError`.

    Compiled with numba when this module is imported (or loaded from numba's cache); see
    the README for its speed beside compressai's binding."""
    raw = bytes(string)
    if len(raw) % 4 or len(raw) < 8:  # whole 32-bit words, at least the final state's two
        raise ChunkFormatError(f"rANS string of {len(raw)} bytes is truncated or not a rANS string")
    index = np.ascontiguousarray(indexes, np.int32)  # 4 bytes a symbol: a chunk's symbols may be 2**26
    if index.size and (index.min() < 0 or index.max() >= tables.lengths.size):
        raise ValueError(f"rANS table indexes must lie in [0, {tables.lengths.size})")
    out = np.empty(index.size, np.int32)
    status = _DECODE_WORDS(np.frombuffer(raw, "<u4"), index, tables.cdfs, tables.lengths, tables.offsets, out)
    if status < 0:
        raise ChunkFormatError(f"rANS string refused: {_REFUSALS[status]}")
    return out


def _renorm(x, words, at, end):
    """rans64's renormalisation: below ``2**31`` the state takes the next 32-bit word.
    Returns the state and the next word's position, -1 where the string has no word left."""
    if x < np.uint64(1) << np.uint64(31):
        if at >= end:
            return x, -1
        return (x << np.uint64(32)) | np.uint64(words[at]), at + 1
    return x, at


def _decode_words(words, indexes, cdfs, lengths, offsets, out):
    """compressai's ``decode_with_indexes`` (rans64.h's state, renormalised a 32-bit word
    at a time) with a bounds check before every word it reads. Returns the words read, or
    a negative verdict."""
    mask = np.uint64(0xFFFF)
    end = words.size
    x = np.uint64(words[0]) | (np.uint64(words[1]) << np.uint64(32))
    at = 2
    for i in range(indexes.size):
        row = indexes[i]
        max_value = lengths[row] - 2
        cum = np.int64(x & mask)
        lo, hi = 0, lengths[row] - 1  # the s with cdf[s] <= cum < cdf[s + 1]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if cdfs[row, mid] <= cum:
                lo = mid
            else:
                hi = mid
        start = np.uint64(cdfs[row, lo])
        freq = np.uint64(cdfs[row, lo + 1]) - start
        x, at = _renorm(freq * (x >> np.uint64(16)) + (x & mask) - start, words, at, end)
        if at < 0:
            return _OVERRUN
        value = np.int64(lo)
        if value == max_value:  # escape: nibble counts (15: another follows), then the nibbles
            nibbles, raw, j, counting = 0, np.int64(0), 0, True
            while counting or j < nibbles:
                val = np.int64(x & np.uint64(15))
                x, at = _renorm(x >> np.uint64(_BYPASS_BITS), words, at, end)
                if at < 0:
                    return _OVERRUN
                if counting:
                    nibbles += val
                    counting = val == 15
                    if nibbles > _MAX_BYPASS_NIBBLES:
                        return _LONG_ESCAPE
                else:
                    raw |= val << (j * _BYPASS_BITS)
                    j += 1
            if raw >= np.int64(1) << np.int64(31):  # compressai's int32 raw value never is
                return _LONG_ESCAPE
            value = raw >> 1
            value = -value - 1 if raw & 1 else value + max_value
        out[i] = np.int32(value + offsets[row])  # compressai's int32 sum wraps; so does this cast
    return at


# Compiled for the one signature it is called with when this module is imported (or loaded
# from numba's cache), so that a first decode costs no compiler time or memory (LLVM takes
# ~80 MB while it compiles).
_renorm = numba.njit(inline="always")(_renorm)
_WORDS = numba.types.Array(numba.types.uint32, 1, "C", readonly=True)  # a view of the string's bytes
_DECODE_WORDS = numba.njit(numba.int64(_WORDS, numba.int32[::1], numba.int64[:, ::1], numba.int64[::1],
                                       numba.int64[::1], numba.int32[::1]), cache=True, nogil=True)(_decode_words)


def _compressai_rans():
    """compressai's rANS module and CDF builder, imported on first use (3 s)."""
    from vcinr_sci.coding._compressai import ans, pmf_to_quantized_cdf

    return ans, pmf_to_quantized_cdf
