"""The bounds-checked rANS decoder: compressai's output for every string compressai's
encoder writes, and a clear refusal, never a read outside the string, for the rest."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from vcinr_sci.coding._compressai import ans, pmf_to_quantized_cdf
from vcinr_sci.coding.rans import RansTables, decode_with_indexes, encode_with_indexes, rans_decode, rans_encode
from vcinr_sci.errors import ChunkFormatError


def _random_tables(rng: np.random.Generator, count: int = 12, width: int = 70):
    cdfs, lengths, offsets = [], [], []
    for _ in range(count):
        cdf = pmf_to_quantized_cdf(rng.dirichlet(np.full(int(rng.integers(2, 60)), 0.5)).tolist(), 16)
        cdfs.append(cdf + [0] * (width - len(cdf)))  # padded rows, as compressai's tables are
        lengths.append(len(cdf))
        offsets.append(int(rng.integers(-30, 5)))
    return cdfs, lengths, offsets


def test_matches_compressais_decoder_symbol_for_symbol():
    """Random tables, symbols near and far outside them (escapes of 1-7 nibbles): both
    decoders give the encoded symbols."""
    rng = np.random.default_rng(0)
    cdfs, lengths, offsets = _random_tables(rng)
    tables = RansTables.build(cdfs, lengths, offsets)
    for _ in range(100):
        n = int(rng.integers(0, 2000))
        indexes = rng.integers(0, len(cdfs), n)
        spread = rng.choice([1, 5, 100, 1e5, 1e7], n)
        symbols = (rng.normal(0, 1, n) * spread).astype(np.int64) + np.asarray(offsets)[indexes]
        string = encode_with_indexes(symbols, indexes, cdfs, lengths, offsets)
        theirs = ans.RansDecoder().decode_with_indexes(string, indexes.tolist(), cdfs, lengths, offsets)
        ours = decode_with_indexes(string, indexes, tables)
        assert ours.dtype == np.int32
        np.testing.assert_array_equal(ours, theirs)
        np.testing.assert_array_equal(ours, symbols)


def test_histogram_coder_round_trips():
    q = np.random.default_rng(1).integers(-9000, 9000, 5000)  # wider than MAX_SYMBOLS: escapes
    offset, table, string = rans_encode(q)
    np.testing.assert_array_equal(rans_decode(table, string, offset, q.size), q)


@pytest.mark.parametrize("string", [b"\x00" * 8, b"\xff" * 8, b"\x00\x00\x00\x00" + b"\xff" * 60, bytes(range(64))])
@pytest.mark.parametrize("n", [1, 240, 100_000])
def test_crafted_strings_are_refused_or_stay_inside(string, n):
    """Strings compressai's decoder read past (the issue's eight 0xff bytes under 240 or
    more symbols: SIGSEGV): ours refuses every one of 240 symbols or more, under random
    tables and under one whose escape bin has almost all the mass (the crafted histogram
    [1, 65535]). Where a single symbol fits in the bytes, it decodes what compressai
    decodes (safe to ask: ours read no word past the string, so compressai reads the same)."""
    rng = np.random.default_rng(2)
    for cdfs, lengths, offsets in (_random_tables(rng, count=1), ([[0, 1, 1 << 16]], [3], [0])):
        try:
            out = decode_with_indexes(string, np.zeros(n, np.int64), RansTables.build(cdfs, lengths, offsets))
        except ChunkFormatError as e:
            assert "rANS string refused" in str(e) or "truncated" in str(e)
            continue
        assert n == 1
        assert out.tolist() == ans.RansDecoder().decode_with_indexes(string, [0], cdfs, lengths, offsets)


def test_refusals_name_the_reason():
    tables = RansTables.build([[0, 1 << 15, 1 << 16]], [3], [0])
    with pytest.raises(ChunkFormatError, match="truncated"):
        decode_with_indexes(b"\x00" * 10, [0], tables)
    with pytest.raises(ChunkFormatError, match="ends before its symbols"):
        decode_with_indexes(encode_with_indexes([0] * 100, [0] * 100, [[0, 1 << 15, 1 << 16]], [3], [0])[:8],
                            np.zeros(5000, np.int64), tables)
    with pytest.raises(ChunkFormatError, match="escaped symbol is longer"):
        decode_with_indexes(b"\xff" * 64, [0] * 4, RansTables.build([[0, 1, 1 << 16]], [3], [0]))
    with pytest.raises(ValueError, match="not a quantised CDF"):
        RansTables.build([[0, 5, 5, 1 << 16]], [4], [0])
    with pytest.raises(ValueError, match="indexes"):
        decode_with_indexes(b"\x00" * 8, [1], tables)


def test_issue_strings_do_not_kill_a_process():
    """The crafted strings, decoded in a child process: it must exit normally."""
    code = textwrap.dedent("""
        import numpy as np
        from vcinr_sci.coding.rans import RansTables, decode_with_indexes
        from vcinr_sci.errors import ChunkFormatError
        tables = [RansTables.build([[0, 1, 1 << 16]], [3], [0]),
                  RansTables.build([[0] + list(range(1000, 64000, 1000)) + [1 << 16]], [65], [-32])]
        refused = 0
        for t in tables:
            for s in (b"\\xff" * 8, b"\\xff" * 4096):
                for n in (240, 100_000):
                    try:
                        decode_with_indexes(s, np.zeros(n, np.int64), t)
                    except ChunkFormatError:
                        refused += 1
        print("refused", refused)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "refused 8"
