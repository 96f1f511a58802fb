"""Chunks written by earlier versions decode forever: the golden chunks in tests/golden
(formats 1, 2 and 3; uniform and learned coders; a linear chunk at a rate-controlled
step; NaN masks, a numeric fill value beside NaN, stored item means; absolute and
relative bounds, rANS- and SPERR-coded corrections) decode through the codec registry to
the values they decoded to when written. Written once by
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
def test_golden_chunk_decodes_as_when_written(name, monkeypatch):
    case = CASES[name]
    monkeypatch.setenv("VCINR_MODEL_PATH", str(GOLDEN / "models"))  # a config's model_path is the store's word
    codec = numcodecs.get_codec(case["config"])
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


def _version(chunk: bytes) -> int:
    return chunk[5] if chunk.startswith(b"VCINR") else chunk[2]  # after the 5- or 2-byte magic


def test_golden_covers_every_container_format():
    assert {_version((GOLDEN / f"{n}.vcinr").read_bytes()) for n in CASES} == {1, 2, 3}
    assert all(_version((GOLDEN / f"{n}.vcinr").read_bytes()) == int(n[1]) for n in CASES)


@pytest.mark.parametrize("name", [n for n in sorted(CASES) if n.startswith("v3_")])
def test_golden_chunk_decodes_without_its_config(name, monkeypatch):
    """A format-3 chunk holds a prefix of its model's hash: enough to find the model."""
    from vcinr_sci.codec.core import decode_chunk

    monkeypatch.setenv("VCINR_MODEL_PATH", str(GOLDEN / "models"))
    fill = CASES[name]["config"].get("fill_value")
    now = decode_chunk((GOLDEN / f"{name}.vcinr").read_bytes(), fill_value=fill)
    np.testing.assert_allclose(now, np.load(GOLDEN / f"{name}.out.npy"), rtol=0, atol=1e-3)


def test_golden_chunk_of_another_model_refused():
    """The codec config's model and the chunk's must agree, in every format."""
    from vcinr_sci.errors import ChunkFormatError

    plain, means = CASES["v1_uniform"], CASES["v1_means"]
    assert plain["model"] != means["model"]
    codec = numcodecs.get_codec(means["config"] | {"model_path": str(GOLDEN / "models" / means["model"])})
    for name in ("v1_uniform", "v3_uniform"):
        with pytest.raises(ChunkFormatError, match="written with model"):
            codec.decode((GOLDEN / f"{name}.vcinr").read_bytes())


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


def test_golden_covers_a_rate_controlled_chunk():
    """A linear chunk coded at a step exponent (payload flag bit 1, rate control)."""
    from vcinr_sci.codec.container import decode_container

    payloads = [decode_container((GOLDEN / f"{n}.vcinr").read_bytes()).payload for n in CASES]
    assert any(p and p[0] & 2 and p[1] for p in payloads)
