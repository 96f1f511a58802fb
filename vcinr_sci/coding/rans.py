"""compressai's rANS coder, used safely (:func:`encode_with_indexes`, every caller's one
way in), and integer symbols under a per-call histogram: the histogram (at most
:data:`MAX_SYMBOLS` bins around the median, rarer values through the escape/bypass code)
travels with the string, as Zstd-coded quantised-CDF frequencies. The error-bounded mode
codes its quantised residual with it."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numcodecs import Zstd

from vcinr_sci.coding.zstd import zstd_within
from vcinr_sci.errors import ChunkFormatError

CDF_PRECISION = 16


MAX_SYMBOLS = 4096
DECODE_BLOCK = 2**16  # symbols rans_decode asks compressai for at a time


# the histogram's frequencies, as Zstd stores them in a residual section
ZSTD = Zstd(level=9)


# A bypass value of 2**28 or more makes compressai's encoder loop forever (an int32
# shifted by 32); symbols that far out are refused first.
MAX_BYPASS_VALUE = 2**28


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
    indexes = np.asarray(indexes, np.int64)
    # As compressai's encoder maps a symbol: value in its table, escape beyond the last bin.
    value = symbols - np.asarray(offsets, np.int64)[indexes]
    escape = np.asarray(cdf_lengths, np.int64)[indexes] - 2
    outside = (value < 0) | (value >= escape)
    raw = np.where(value < 0, -2 * value - 1, 2 * (value - escape))[outside]
    if raw.size and raw.max() >= MAX_BYPASS_VALUE:
        raise ValueError(f"a symbol lies {int(raw.max()) // 2:,} bins beyond its coding table: more than "
                         "compressai's rANS codes; the data are far outside what the tables were made for")
    nibbles = np.zeros_like(raw)
    while (rest := raw >> (4 * nibbles)).any():
        nibbles += rest > 0
    bypass = int(np.sum(nibbles + nibbles // 15 + 1))  # each value's nibbles, then their count's
    words = -(-(16 * symbols.size + 4 * bypass) // 32) + 2  # the final state: two words
    pad = max(0, words - symbols.size)
    if pad:
        symbols = np.concatenate([symbols, np.zeros(pad, np.int64)])
        indexes = np.concatenate([indexes, np.full(pad, indexes[0] if indexes.size else 0, np.int64)])
        pad_value = -np.asarray(offsets, np.int64)[indexes[-1]]
        if not 0 <= pad_value < cdf_lengths[int(indexes[-1])] - 2:  # 0 escapes this table: use its first bin
            symbols[-pad:] = offsets[int(indexes[-1])]
    return ans.RansEncoder().encode_with_indexes(symbols.tolist(), indexes.tolist(), cdfs, cdf_lengths, offsets)


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
    string = encode_with_indexes(q, np.zeros(q.size, np.int64), [cdf], [len(cdf)], [lo])
    return lo, ZSTD.encode(np.diff(cdf).astype("<u2")), string


def rans_decode(table: bytes, string: bytes, offset: int, n: int) -> np.ndarray:
    """The ``n`` int32 symbols of ``string`` under the stored histogram ``table``."""
    ans, _ = _compressai_rans()
    # Sizes a section claims are checked before anything is allocated: chunk bytes are untrusted.
    freqs = np.frombuffer(zstd_within(table, 2 * (MAX_SYMBOLS + 1), "residual section: histogram", 2), "<u2")
    if freqs.size < 2 or (freqs == 0).any() or int(freqs.sum(dtype=np.int64)) != 1 << CDF_PRECISION:
        raise ChunkFormatError("residual section: the stored histogram is not a valid quantised CDF")
    cdf = np.concatenate([[0], np.cumsum(freqs, dtype=np.int64)]).tolist()
    # In blocks: compressai returns a Python list (8 bytes a symbol, 36 for one outside
    # the small-int cache, as a crafted offset makes every one), so a whole string at once
    # would cost several times the chunk's output; int32 holds every value it returns.
    q = np.empty(n, np.int32)
    decoder = ans.RansDecoder()
    decoder.set_stream(string)
    for start in range(0, n, DECODE_BLOCK):
        count = min(DECODE_BLOCK, n - start)
        q[start : start + count] = decoder.decode_stream([0] * count, [cdf], [len(cdf)], [offset])
    return q


def _compressai_rans():
    """compressai's rANS module and CDF builder, imported on first use (3 s)."""
    from vcinr_sci.coding._compressai import ans, pmf_to_quantized_cdf

    return ans, pmf_to_quantized_cdf
