"""A short run of the decoder fuzzer (examples/fuzz_decoder.py): mutated chunks, CRC-
recomputed crafted ones included, are refused or decoded, never crash, hang, or make a
decode allocate more than its seed's own decode (twice, plus 1 MiB)."""

from __future__ import annotations

import importlib.util
import sys
import tracemalloc
from pathlib import Path

import pytest
from _vcinr_tiny import tiny_artifact

pytestmark = pytest.mark.usefixtures("one_torch_thread", "isolated_model_lookup")


def _fuzzer():
    path = Path(__file__).resolve().parents[1] / "examples" / "fuzz_decoder.py"
    spec = importlib.util.spec_from_file_location("fuzz_decoder", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_fuzzed_chunks_are_refused_or_decoded():
    fuzz = _fuzzer()
    tracemalloc.start()
    try:
        seeds = fuzz.make_seeds(tiny_artifact(), None)
        result = fuzz.run(seeds, mutations=400, seed=1)
    finally:
        tracemalloc.stop()
    counts = result["counts"]
    assert sum(c.get("crashed", 0) for c in counts.values()) == 0, result["crashes"]
    assert sum(c.get("hung", 0) for c in counts.values()) == 0
    for accident in fuzz.ACCIDENTS:  # CRCs refuse every accidental corruption
        assert set(counts[accident]) == {"refused"}, (accident, counts[accident])
    assert result["over_alloc_limit"] == 0, result["worst_alloc"]
    assert sum(sum(c.values()) for c in counts.values()) == 400
