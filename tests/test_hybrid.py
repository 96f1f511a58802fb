"""The hybrid model (``model.kind: hybrid``): levels that are never larger than the linear
model's chunk, the mode choice by rate-distortion cost, the codec (plain and bounded),
sampling off the grid, and crafted strings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _vcinr_tiny import fields, hybrid_artifact, linear_artifact

from vcinr_sci.codec.numcodecs import VCINRCodec
from vcinr_sci.coding.coefficients import CoefficientCoder
from vcinr_sci.coding.hybrid import LINEAR_ONLY, HybridCoder
from vcinr_sci.errors import ChunkFormatError, CodecError
from vcinr_sci.model.artifact import load_artifact
from vcinr_sci.model.kinds import HybridKind
from vcinr_sci.model.registry import register_model


@pytest.fixture(scope="module")
def hybrid():
    return load_artifact(hybrid_artifact())


@pytest.fixture(scope="module")
def linear():
    return load_artifact(linear_artifact())


def _items(model, x):
    norm = model.artifact.normaliser.normalise(x.astype(np.float64)).astype(np.float32)
    items = model.to_items(norm)
    return np.arange(len(items)), items, np.isfinite(items)


def test_hybrid_artifact_holds_both_models_and_scored_levels(hybrid, linear):
    model = register_model(hybrid)
    assert isinstance(model.kind, HybridKind) and hybrid.model is not None
    assert hybrid.basis.num_components == linear.basis.num_components
    assert hybrid.quality_levels == linear.ladder
    for level in hybrid.quality_levels:
        coder = hybrid.coder(level)
        assert isinstance(coder, HybridCoder) and coder.step == linear.coder(level).step
        scored = hybrid.metrics["hybrid"]["levels"][level]
        alone = linear.metrics["levels"][level]
        # scored on the same tuning items as the linear model: never more bits for less PSNR
        assert scored["val_bits_per_value"] <= alone["val_bits_per_value"] or scored["val_psnr"] > alone["val_psnr"]
    assert hybrid.ladder  # recorded


def test_levels_are_scored_as_the_codec_codes_with_a_mean_field():
    """With ``data.subtract_mean_field`` the tuning items are what the mean field leaves:
    scored as the codec codes them, a level whose chunks all take the linear model has
    the linear model's own bits and PSNR (the scorer took the mean field out a second
    time: 22.95 against 30.02 dB, 2.8x the bits, on ERA5 UK's coarsest level), and a
    hybrid chunk is no larger than the linear model's."""
    hybrid = load_artifact(hybrid_artifact(subtract_mean_field=True))
    linear = load_artifact(linear_artifact(subtract_mean_field=True))
    assert hybrid.normaliser.mean_field is not None
    for level in hybrid.quality_levels:
        scored = hybrid.metrics["hybrid"]["levels"][level]
        alone = linear.metrics["levels"][level]
        if scored["inr_chunk_share"] == 0:
            assert scored["val_bits_per_value"] == pytest.approx(alone["val_bits_per_value"], rel=1e-9)
            assert scored["val_psnr"] == pytest.approx(alone["val_psnr"], abs=1e-6)
        else:
            assert scored["val_bits_per_value"] <= alone["val_bits_per_value"] or scored["val_psnr"] > alone["val_psnr"]
    x = fields(8).air_temperature.values.astype(np.float32)
    level = hybrid.quality_levels[0]
    h = VCINRCodec(hybrid.hash, level, hybrid.grid.to_dict(), model_path=str(hybrid.path))
    lin = VCINRCodec(linear.hash, level, linear.grid.to_dict(), model_path=str(linear.path))
    assert len(h.encode(x)) <= len(lin.encode(x))


def test_a_hybrid_chunk_is_never_larger_than_the_linear_models(hybrid, linear):
    """Without the INR a chunk is byte for byte the linear model's; with it, it was cheaper."""
    x = fields(24).air_temperature.values.astype(np.float32)
    for level in hybrid.quality_levels:
        h = VCINRCodec(hybrid.hash, level, hybrid.grid.to_dict(), model_path=str(hybrid.path))
        lin = VCINRCodec(linear.hash, level, linear.grid.to_dict(), model_path=str(linear.path))
        for start in (0, 8, 16):
            chunk = x[start : start + 8]
            ours, theirs = h.encode(chunk), lin.encode(chunk)
            assert len(ours) <= len(theirs)
            out = h.decode(ours).reshape(chunk.shape)
            assert np.isfinite(out).all()


@pytest.mark.parametrize("perfect", [False, True])
def test_the_mode_is_the_cheapest_at_the_levels_slope(hybrid, monkeypatch, perfect):
    """The encoder takes the INR exactly when its latents buy their bits at the level's
    slope: an INR that adds nothing is never taken; one that fits what the coefficients
    leave exactly is taken at a fine step and left at a step so coarse that (this model's
    handful of EOFs aside) its latents' bits outweigh the error they remove. Each string
    decodes to what its mode says."""
    kind = register_model(hybrid).kind
    asked = {}

    def adapt(items, values, valid, steps):  # records what the INR is asked to fit
        asked["residual"] = values
        return torch.zeros(len(items), kind.inr.latent_dim)

    monkeypatch.setattr(kind.inr, "adapt", adapt)
    monkeypatch.setattr(kind.inr, "evaluate", lambda items, phi: asked["residual"] if perfect else 0 * asked["residual"])
    level = hybrid.coder(hybrid.quality_levels[0])
    x = fields(8).air_temperature.values.astype(np.float32)
    idx, values, valid = _items(register_model(hybrid), x)
    chosen = {}
    for step in (8.0, level.full.step / 64):
        coder = HybridCoder(CoefficientCoder(level.full.scales, level.full.rho, step),
                            CoefficientCoder(level.head.scales, level.head.rho, step), level.latents)
        string = kind.encoder(idx, values, valid, 3)(coder)
        chosen[step] = HybridCoder.mode(string)
        phi = coder.decompress(string, len(idx))
        assert bool((phi[:, -1] == 1).all()) == (chosen[step] != LINEAR_ONLY)
    assert chosen[8.0] == LINEAR_ONLY
    assert (chosen[level.full.step / 64] != LINEAR_ONLY) == perfect


def test_hybrid_chunks_keep_an_error_bound(hybrid):
    x = fields(8).air_temperature.values.astype(np.float32)
    x[2, :4, :4] = np.nan
    codec = VCINRCodec(hybrid.hash, hybrid.quality_levels[-1], hybrid.grid.to_dict(), model_path=str(hybrid.path),
                       max_abs_error=0.02)
    out = codec.decode(codec.encode(x)).reshape(x.shape)
    assert np.array_equal(np.isnan(out), np.isnan(x))
    assert np.nanmax(np.abs(out - x)) <= 0.02


def test_sampling_off_the_grid_interpolates_the_linear_part_and_evaluates_the_inr(hybrid):
    model = register_model(hybrid)
    x = fields(2).air_temperature.values.astype(np.float32)
    idx, values, valid = _items(model, x)
    phi = model.adapt(idx, values, valid, 3)
    assert (phi[:, -1] == 1).all()
    coords = hybrid.grid.coords().reshape(-1, hybrid.grid.coord_dim)
    on_grid = model.evaluate(idx, phi)
    np.testing.assert_allclose(model.evaluate_at(coords, phi), on_grid, atol=1e-5)
    between = (coords[:-1] + coords[1:]) / 2
    assert np.isfinite(model.evaluate_at(between, phi)).all()


def test_crafted_hybrid_strings_are_refused(hybrid):
    coder = hybrid.coder(hybrid.quality_levels[0])
    model = register_model(hybrid)
    x = fields(4).air_temperature.values.astype(np.float32)
    idx, values, valid = _items(model, x)
    head = coder.head.compress(coder.head.quantise(np.zeros((len(idx), coder.head_components))).numpy())
    latents = coder.latents[0].compress(torch.zeros(len(idx), coder.inr_latent_dim))
    good = HybridCoder.pack(1, head, latents)
    assert coder.decompress(good, len(idx)).shape == (len(idx), coder.latent_dim)
    for bad in (bytes([good[0] | 0x7E]) + good[1:],  # a mode past the level's latent coders
                good[:1] + b"\xff\xff\xff\xff\x0f" + good[2:],  # a length past the end
                good[:1]):  # truncated
        with pytest.raises((ValueError, ChunkFormatError)):
            coder.decompress(bad, len(idx))
    codec = VCINRCodec(hybrid.hash, hybrid.quality_levels[0], hybrid.grid.to_dict(), model_path=str(hybrid.path))
    enc = bytearray(codec.encode(x))
    with pytest.raises(ChunkFormatError):
        codec.decode(bytes(enc[:-5]))


def test_a_hybrid_refuses_a_bare_latent_coder(hybrid):
    model = register_model(hybrid)
    x = fields(2).air_temperature.values.astype(np.float32)
    idx, values, valid = _items(model, x)
    bare = hybrid.coder(hybrid.quality_levels[0]).latents[0]
    with pytest.raises(CodecError, match="hybrid levels"):
        model.kind.encoder(idx, values, valid, 3)(bare)


def test_latents_that_cannot_pay_are_not_adapted(hybrid, monkeypatch):
    """Where even 3/4 of a latent coder's typical cost (bits, or error) outweighs the
    linear model's whole cost, the encoder does not adapt the INR (the linear model's
    speed) and writes the linear model's string; with no typical cost known it tries
    the INR."""
    model = register_model(hybrid)
    kind = model.kind
    level = hybrid.coder(hybrid.quality_levels[0])
    x = fields(8).air_temperature.values.astype(np.float32)
    idx, values, valid = _items(model, x)
    tried = []
    adapt = kind.inr.adapt
    monkeypatch.setattr(kind.inr, "adapt", lambda *a: tried.append(1) or adapt(*a))
    n = len(level.latents)
    for heavy in (HybridCoder(level.full, level.head, level.latents, [1e6] * n),
                  HybridCoder(level.full, level.head, level.latents, [0.0] * n, [1e3] * n)):
        assert kind.encoder(idx, values, valid, 3)(heavy) == level.full.compress(kind.basis.coefficients(values, valid))
    assert not tried
    kind.encoder(idx, values, valid, 3)(HybridCoder(level.full, level.head, level.latents))
    assert tried
