"""The bounds-checked rANS decoder beside compressai's, on strings of the codec's own kinds.

    python examples/bench_rans.py            # a table: symbols/s of each decoder, best of 5

Strings: a linear model's coefficients (256 Gaussian tables, 64 fields, the step of a
45 dB level), and the error-bounded mode's quantised residual under its per-chunk
histogram (64 fields of 64 x 128 points, some escapes). Both decoders must return the
same symbols; the script checks that before it times them. One thread; run it on a quiet
machine and quote the load average (``uptime``) with the figures.
"""

from __future__ import annotations

import time

import numpy as np

from vcinr_sci.coding._compressai import GaussianConditional, ans
from vcinr_sci.coding.rans import RansTables, decode_with_indexes, encode_with_indexes, rans_encode
from vcinr_sci.coding.zstd import zstd_within


def _gaussian_tables(scales: np.ndarray) -> tuple[list[list[int]], list[int], list[int]]:
    gaussian = GaussianConditional(scales.tolist())
    gaussian.update()
    return gaussian._quantized_cdf.tolist(), gaussian._cdf_length.tolist(), gaussian._offset.tolist()


def _cases(rng: np.random.Generator):
    k, fields = 256, 64
    scales = np.geomspace(0.3, 40.0, k)
    cdfs, lengths, offsets = _gaussian_tables(scales)
    indexes = np.tile(np.arange(k), fields)
    symbols = np.round(rng.normal(0, scales[indexes])).astype(np.int64)
    yield "coefficients (256 x 64)", encode_with_indexes(symbols, indexes, cdfs, lengths, offsets), indexes, \
        (cdfs, lengths, offsets)
    q = np.round(rng.standard_t(3, 64 * 64 * 128) * 6).astype(np.int64)
    offset, table, string = rans_encode(q)
    freqs = np.frombuffer(zstd_within(table, 2 * 4097, "histogram", 2), "<u2")
    cdf = np.concatenate([[0], np.cumsum(freqs, dtype=np.int64)]).tolist()
    yield "correction (64 x 64 x 128)", string, np.zeros(q.size, np.int64), ([cdf], [len(cdf)], [offset])


def _best(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    rng = np.random.default_rng(0)
    print("| string | symbols | bytes | compressai M symbols/s | bounded M symbols/s | bounded / compressai |")
    print("|---|---|---|---|---|---|")
    for name, string, indexes, (cdfs, lengths, offsets) in _cases(rng):
        tables = RansTables.build(cdfs, lengths, offsets)
        index_list = indexes.tolist()
        theirs = ans.RansDecoder().decode_with_indexes(string, index_list, cdfs, lengths, offsets)
        if not np.array_equal(decode_with_indexes(string, indexes, tables), theirs):
            raise SystemExit(f"{name}: the decoders disagree")
        t_theirs = _best(lambda s=string, i=indexes, c=cdfs, n=lengths, o=offsets:
                         ans.RansDecoder().decode_with_indexes(s, i.tolist(), c, n, o))
        t_ours = _best(lambda s=string, i=indexes, t=tables: decode_with_indexes(s, i, t))
        n = indexes.size
        print(f"| {name} | {n:,} | {len(string):,} | {n / t_theirs / 1e6:.1f} | {n / t_ours / 1e6:.1f} | "
              f"{t_theirs / t_ours:.2f}x |")


if __name__ == "__main__":
    main()
