"""Integer symbols through compressai's rANS coder under a per-call histogram: the
histogram (at most :data:`MAX_SYMBOLS` bins around the median, rarer values through the
escape/bypass code) travels with the string, as Zstd-coded quantised-CDF frequencies.
Generic: the error-bounded mode codes its quantised residual with it."""

from __future__ import annotations

import numpy as np
from numcodecs import Zstd

from vcinr_sci.coding.zstd import zstd_within
from vcinr_sci.errors import ChunkFormatError

CDF_PRECISION = 16


MAX_SYMBOLS = 4096


# the histogram's frequencies, as Zstd stores them in a residual section
ZSTD = Zstd(level=9)


def rans_encode(q: np.ndarray) -> tuple[int, bytes, bytes]:
    """``(offset, table, string)``: q under a histogram of at most ``MAX_SYMBOLS`` bins."""
    ans, pmf_to_quantized_cdf = _compressai_rans()
    lo, hi = int(q.min()), int(q.max())
    if hi - lo + 1 > MAX_SYMBOLS:  # keep the window around the median; the rest escapes
        lo = max(lo, int(np.median(q)) - MAX_SYMBOLS // 2)
        hi = lo + MAX_SYMBOLS - 1
    inside = (q >= lo) & (q <= hi)
    counts = np.bincount(q[inside] - lo, minlength=hi - lo + 1).astype(np.float64)
    pmf = np.append(counts, q.size - inside.sum()) / q.size  # the escape symbol last
    cdf = pmf_to_quantized_cdf(pmf.tolist(), CDF_PRECISION)
    string = ans.RansEncoder().encode_with_indexes(q.tolist(), [0] * q.size, [cdf], [len(cdf)], [lo])
    return lo, ZSTD.encode(np.diff(cdf).astype("<u2")), string


def rans_decode(table: bytes, string: bytes, offset: int, n: int) -> np.ndarray:
    ans, _ = _compressai_rans()
    # Sizes a section claims are checked before anything is allocated: chunk bytes are untrusted.
    freqs = np.frombuffer(zstd_within(table, 2 * (MAX_SYMBOLS + 1), "residual section: histogram", 2), "<u2")
    if freqs.size < 2 or (freqs == 0).any() or int(freqs.sum(dtype=np.int64)) != 1 << CDF_PRECISION:
        raise ChunkFormatError("residual section: the stored histogram is not a valid quantised CDF")
    cdf = np.concatenate([[0], np.cumsum(freqs, dtype=np.int64)]).tolist()
    q = ans.RansDecoder().decode_with_indexes(string, [0] * n, [cdf], [len(cdf)], [offset])
    return np.asarray(q, np.int64)


def _compressai_rans():
    """compressai's rANS module and CDF builder, imported on first use (3 s)."""
    from vcinr_sci.coding._compressai import ans, pmf_to_quantized_cdf

    return ans, pmf_to_quantized_cdf
