"""Chunks written by earlier versions decode forever: the golden chunks in tests/golden
(format 1 and 2; uniform and learned coders; NaN masks, a numeric fill value beside NaN,
stored item means; absolute and relative bounds, rANS- and SPERR-coded corrections) decode
through the codec registry to the values they decoded to when written. Written once by
tests/golden/make_golden.py."""

from __future__ import annotations

import json
from pathlib import Path

import numcodecs
import numpy as np
import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = json.loads((GOLDEN / "cases.json").read_text())

pytestmark = pytest.mark.usefixtures("one_torch_thread", "isolated_model_lookup")


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_chunk_decodes_as_when_written(name):
    case = CASES[name]
    codec = numcodecs.get_codec(case["config"] | {"model_path": str(GOLDEN / "models" / case["model"])})
    chunk = (GOLDEN / f"{name}.vcinr").read_bytes()
    assert len(chunk) == case["bytes"]
    x = np.load(GOLDEN / f"{name}.in.npy", allow_pickle=False)
    then = np.load(GOLDEN / f"{name}.out.npy", allow_pickle=False)
    now = codec.decode(chunk)
    assert now.dtype == then.dtype and now.shape == then.shape
    np.testing.assert_array_equal(np.isnan(now), np.isnan(then))
    fill = case["config"].get("fill_value")
    if isinstance(fill, (int, float)):
        np.testing.assert_array_equal(now[x == fill], x[x == fill])
    # The latents decode bit-exactly; the INR's float32 sums may differ in the last bits
    # between machines (vcinr bench cross-device), far below this tolerance.
    np.testing.assert_allclose(now, then, rtol=0, atol=1e-3)
    # A bounded chunk keeps its promise against what was encoded.
    cfg, valid = case["config"], ~np.isnan(x)
    bounds = [cfg.get("max_abs_error"), cfg.get("max_rel_error") and cfg["max_rel_error"] * float(np.ptp(x[valid]))]
    bounds = [b for b in bounds if b]
    if bounds:
        assert np.abs(now[valid] - x[valid]).max() <= min(bounds)


def test_golden_covers_both_container_formats():
    versions = {(GOLDEN / f"{n}.vcinr").read_bytes()[5] for n in CASES}  # after the 5-byte magic
    assert versions == {1, 2}


def test_golden_covers_each_correction_coder():
    """Bounded golden chunks with rANS-coded (plain or Lorenzo) and SPERR-coded corrections."""
    from vcinr_sci.codec.container import decode_container
    from vcinr_sci.coding import residual_format

    methods = set()
    for name in CASES:
        residual = decode_container((GOLDEN / f"{name}.vcinr").read_bytes()).residual
        if residual is not None:
            methods.add(residual_format.parse_section(residual)[1])
    assert residual_format.SPERR in methods and methods & {residual_format.PLAIN, residual_format.LORENZO}
