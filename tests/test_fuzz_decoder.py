"""A short run of the decoder fuzzer (examples/fuzz_decoder.py): golden chunks of every
kind, mode and format, the issue's two crafted chunks, and structure-aware mutations
with recomputed CRCs, each decoded twice in a worker process: no hang, no error outside
the project's classes, no accident that decodes, no decode over 4 x output + 64 MiB of
RSS; and (once compressai's rANS decoder is replaced by a bounded one) no crash and no
nondeterministic decode."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    sys.path.insert(0, str(EXAMPLES))  # the workers import the fuzzer by name
    import fuzz_decoder

    mp = pytest.MonkeyPatch()
    # a smaller cap: mutated shapes "at and past the cap" stay quick to decode
    mp.setenv("VCINR_MAX_CHUNK_VALUES", str(2**18))
    mp.setenv("VCINR_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("VCINR_DEVICE", "cpu")
    try:
        yield fuzz_decoder, fuzz_decoder.run(fuzz_decoder.make_seeds(), inputs=240, seed=1, timeout=60, workers=2)
    finally:
        mp.undo()


def test_fuzzed_chunks_are_refused_or_decoded(result):
    fuzz, r = result
    c = r["counts"]
    assert sum(c.values()) == 240
    assert c.get("hung", 0) == 0, r["examples"]
    assert not [k for k in c if k.startswith("unexpected")], r["examples"]
    assert c.get("accident decoded", 0) == 0, r["examples"]
    assert r["over_memory"] == 0, r["examples"]
    assert c.get("decoded", 0) >= len(r["seeds"]) - 2  # every real seed decodes as it is
    assert {"crafted linear", "crafted histogram", "v1_uniform", "v2_sperr_residual", "v3_linear"} <= set(r["seeds"])


def test_fuzzed_chunks_never_crash_nor_decode_nondeterministically(result):
    _, r = result
    assert r["counts"].get("crashed", 0) == 0, r["examples"]
    assert r["counts"].get("nondeterministic", 0) == 0, r["examples"]
