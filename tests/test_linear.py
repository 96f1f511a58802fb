"""The linear model: basis fit and least squares, the coefficient coder, the fit stage,
and linear models through the codec (plain and error-bounded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _vcinr_tiny import fields, linear_artifact

from vcinr_sci.codec.container import decode_container
from vcinr_sci.codec.numcodecs import VCINRCodec
from vcinr_sci.coding import residual_format
from vcinr_sci.coding.coder import load_coder
from vcinr_sci.coding.coefficients import MAX_SCALE_SYMBOLS, CoefficientCoder, min_step
from vcinr_sci.errors import ArtifactError, ChunkFormatError, UsageError
from vcinr_sci.model.artifact import load_artifact
from vcinr_sci.model.basis import LinearBasis
from vcinr_sci.model.kinds import INR_DEVICE_ULPS
from vcinr_sci.model.registry import register_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def low_rank_items(n=60, p=200, k=5, seed=0):
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=p)
    modes = rng.normal(size=(k, p))
    return mean + rng.normal(size=(n, k)) * np.array([5.0, 3, 2, 1, 0.5]) @ modes


def test_basis_spans_low_rank_data_and_solves_masked_items():
    x = low_rank_items()
    basis = LinearBasis.fit(lambda idx: x[idx], len(x), max_components=8)
    assert basis.num_components == 5  # null directions dropped
    assert np.allclose(basis.components @ basis.components.T, np.eye(5), atol=1e-5)
    new = low_rank_items(n=4, seed=1)  # other modes: outside the span
    same_span = x[:3] + 0.5 * (x[3:6] - x[6:9])
    assert np.allclose(basis.reconstruct(basis.coefficients(same_span)), same_span, atol=1e-3)
    assert np.abs(basis.reconstruct(basis.coefficients(new)) - new).max() > 1  # outside the span
    holed = same_span.copy()
    holed[:, :40] = np.nan  # least squares on the rest still finds the item
    assert np.allclose(basis.reconstruct(basis.coefficients(holed)), same_span, atol=1e-3)
    assert (basis.scales > 0).all() and (np.abs(basis.rho) <= 1).all()


def test_basis_state_round_trip_and_bad_state_refused():
    x = low_rank_items()
    basis = LinearBasis.fit(lambda idx: x[idx], len(x), max_components=3)
    again = LinearBasis.from_state(basis.state())
    assert np.array_equal(again.components, basis.components)
    state = basis.state()
    state["scales"] = state["scales"][:2]
    with pytest.raises(ArtifactError, match="do not agree"):
        LinearBasis.from_state(state)
    with pytest.raises(ArtifactError, match="needs tensors"):
        LinearBasis.from_state({"mean": basis.mean})


def ar1_coefficients(n=48, k=12, rho=0.95, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.geomspace(1.0, 0.01, k)
    c = np.zeros((n, k))
    c[0] = rng.normal(size=k) * scales
    for t in range(1, n):
        c[t] = rho * c[t - 1] + rng.normal(size=k) * scales * np.sqrt(1 - rho**2)
    return c, scales.astype(np.float32), np.full(k, rho, np.float32)


def test_coefficient_coder_round_trip_error_and_rate():
    c, scales, rho = ar1_coefficients()
    sizes = []
    for step in (0.1, 0.03, 0.01):
        coder = CoefficientCoder(scales, rho, step, predict=False)
        data = coder.compress(c)
        out = coder.decompress(data, len(c)).numpy()
        # RDOQ may move a symbol toward 0 where the bits saved outweigh the error: never
        # past what 48 bits at lambda = ln2/6 pay for (|u| < 2.4 steps)
        assert np.abs(out - c).max() <= 2.4 * step
        assert np.mean((out - c) ** 2) <= step**2 / 4
        assert np.array_equal(out, coder.quantise(c).numpy())
        sizes.append(len(data))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_prediction_is_chosen_when_it_pays_and_decodes_exactly():
    c, scales, rho = ar1_coefficients(rho=0.98)
    predicted, plain = CoefficientCoder(scales, rho, 0.01), CoefficientCoder(scales, rho, 0.01, predict=False)
    a, b = predicted.compress(c), plain.compress(c)
    assert a[0] == 1 and len(a) < 0.8 * len(b)
    out = predicted.decompress(a, len(c)).numpy()
    assert np.abs(out - c).max() <= 2.4 * 0.01  # closed loop: no drift along the chunk
    assert np.array_equal(out, predicted.quantise(c).numpy())
    shuffled = np.random.default_rng(1).permutation(c)  # no correlation left: the plain mode wins
    assert predicted.compress(shuffled)[0] == 0


def test_coefficient_coder_saved_and_loaded_codes_the_same_bytes():
    c, scales, rho = ar1_coefficients()
    coder = CoefficientCoder(scales, rho, 0.02)
    again = load_coder(coder.spec(), coder.state())
    assert again.compress(c) == coder.compress(c)
    assert torch.equal(again.decompress(coder.compress(c), len(c)), coder.decompress(coder.compress(c), len(c)))


def test_coefficient_coder_refuses_bad_input():
    c, scales, rho = ar1_coefficients()
    coder = CoefficientCoder(scales, rho, 0.02, predict=False)
    data = coder.compress(c)
    with pytest.raises(ValueError, match="truncated"):
        coder.decompress(data[:-1], len(c))
    with pytest.raises(ValueError, match="mode"):
        coder.decompress(b"\x01" + data[1:], len(c))  # a mode this coder was not made with
    with pytest.raises(ValueError, match="not finite"):
        coder.compress(np.full_like(c, np.nan))
    with pytest.raises(ValueError, match="too fine"):
        CoefficientCoder(scales, rho, min_step(scales) / 2)
    assert min_step(scales) * MAX_SCALE_SYMBOLS == pytest.approx(scales.max())


@pytest.fixture(scope="module")
def linear():
    return load_artifact(linear_artifact())


def test_fit_stage_makes_levels_that_reach_their_targets(linear):
    assert linear.model is None and linear.basis is not None
    assert linear.quality_levels == ["q0", "q1"]
    levels = linear.metrics["levels"]
    assert levels["q0"]["step"] > levels["q1"]["step"]
    for level in levels.values():
        assert level["val_psnr"] >= min(level["target_psnr"], linear.metrics["test_psnr"]) - 1.0
    # The ladder, as measured on the validation part, is recorded: more bits, more PSNR.
    ladder = linear.metrics["ladder"]
    assert linear.ladder == ["q0", "q1"] and ladder["measured_on"].endswith("chunks of 16 items")
    points = [ladder["points"][q] for q in linear.ladder]
    assert points[0]["bits_per_value"] < points[1]["bits_per_value"] and points[0]["psnr"] < points[1]["psnr"]
    assert linear.metrics["tuning"] == {"part": "val"}


def test_fit_stage_without_a_validation_part_tunes_on_held_out_fields(tmp_path, capsys):
    from pipelines import fit_basis
    from vcinr_sci.config import load_config

    overrides = {"model.kind": "linear", "basis.components": 16, "basis.target_psnr": [30, 40],
                 "data.val_fraction": 0, "train.artifact_dir": str(tmp_path)}
    art = load_artifact(fit_basis.fit(load_config(CONFIGS / "tiny.yaml", overrides)))
    assert "data.val_fraction is 0: holding out the last 22 of 216 training time positions" in capsys.readouterr().out
    assert art.metrics["tuning"]["positions"] == list(range(194, 216))
    # Tuned on fields the basis never saw: each level reaches its target on them.
    for level in art.metrics["levels"].values():
        assert level["val_psnr"] >= level["target_psnr"] - 0.01


def test_linear_model_through_the_codec(linear):
    da = fields(24).air_temperature
    x = da.values.astype(np.float32)
    x[3, :5, :7] = np.nan
    codec = VCINRCodec(linear.hash, "q1", linear.grid.to_dict(), model_path=str(linear.path))
    out = codec.decode(codec.encode(x)).reshape(x.shape)
    assert np.array_equal(np.isnan(out), np.isnan(x))
    span = linear.normaliser.hi - linear.normaliser.lo
    psnr = -10 * np.log10(np.nanmean(((out - x) / span) ** 2))
    assert psnr > 35  # the tiny data's 40 dB level, on fields partly from training
    coarse = VCINRCodec(linear.hash, "q0", linear.grid.to_dict(), model_path=str(linear.path))
    assert len(coarse.encode(x)) < len(codec.encode(x))
    data = bytearray(codec.encode(x))
    with pytest.raises(ChunkFormatError):
        codec.decode(bytes(data[:-3]))


def test_linear_model_keeps_an_error_bound(linear):
    x = fields(8).air_temperature.values.astype(np.float32)
    codec = VCINRCodec(linear.hash, "q0", linear.grid.to_dict(), model_path=str(linear.path), max_abs_error=0.05)
    out = codec.decode(codec.encode(x)).reshape(x.shape)
    assert np.abs(out - x).max() <= 0.05


def _narrow_chunk() -> np.ndarray:
    """24 real fields squeezed about their mean to a 6.7 K range at ~280 K (float32)."""
    x = fields(24).air_temperature.values.astype(np.float64)
    return (x.mean() + 0.15 * (x - x.mean())).astype(np.float32)


@pytest.mark.parametrize(("rel", "exact_at_most", "size_at_most"), [(1e-4, 0.01, 0.5), (1e-5, 0.25, 0.75)])
def test_linear_model_codes_a_narrow_chunk_at_a_tight_bound(linear, rel, exact_at_most, size_at_most):
    """The linear model's margin is its own arithmetic's (a few float32 ulps), not an
    INR's device allowance (which exceeds these bounds: every point was stored exactly):
    the correction is coded, few points are stored exactly, the chunk is well below its
    raw size and every point keeps the bound. At 1e-5 (``b`` about two float32 ulps) the
    dtype's ulp and the model's term take more than half the bound: coded against ``b - m``
    with the finer step; the points whose float32 rounding misses ``b - m`` (about 11 %
    here) are the ones stored exactly."""
    x = _narrow_chunk()
    codec = VCINRCodec(linear.hash, "q1", linear.grid.to_dict(), model_path=str(linear.path), max_rel_error=rel)
    enc = codec.encode(x)
    info, method, _, parts = residual_format.parse_section(decode_container(enc).residual)
    span = linear.normaliser.hi - linear.normaliser.lo
    inr_allowance = INR_DEVICE_ULPS * float(np.finfo(np.float32).eps) * span
    assert inr_allowance > info.bound  # an INR's margin would leave nothing to quantise against
    tolerance = info.step if method == residual_format.SPERR else info.step / 2  # SPERR's step field holds b - m
    assert tolerance > 0 and tolerance == pytest.approx(info.bound - info.margin)
    assert (info.margin > info.bound / 2) == (rel == 1e-5)
    assert residual_format.outlier_index(parts[2], info.num_values).size < exact_at_most * x.size
    assert len(enc) < size_at_most * x.nbytes
    out = codec.decode(enc).reshape(x.shape)
    assert np.abs(out.astype(np.float64) - x).max() <= info.bound


def test_linear_margin_covers_a_decoder_whose_sum_differs(linear, monkeypatch):
    """A decoder whose float32 reconstruction differs by the model's whole reported
    spread at every point (alternating signs) keeps the bound at a bound where the
    margin is tight (1e-5 of a narrow chunk's range, where the margin is about half the
    bound, mostly the float32 ulp of the values); 32 times the spread breaks it, so the
    margin is what holds it."""
    x = _narrow_chunk()
    codec = VCINRCodec(linear.hash, "q1", linear.grid.to_dict(), model_path=str(linear.path), max_rel_error=1e-5)
    enc = codec.encode(x)
    b = residual_format.parse_section(decode_container(enc).residual)[0].bound
    reconstruct = LinearBasis.reconstruct
    times = [1.0]

    def differing(self, coefficients):
        y = reconstruct(self, coefficients)
        spread = times[0] * self.reconstruction_spread(coefficients, float(np.abs(y).max()))
        signs = np.where(np.arange(y.size).reshape(y.shape) % 2, 1.0, -1.0)
        moved = (y + signs * spread).astype(np.float32)
        beyond = np.abs(moved.astype(np.float64) - y) > spread  # rounded past the spread: one ulp back
        moved[beyond] = np.nextafter(moved[beyond], y[beyond])
        return moved

    monkeypatch.setattr(LinearBasis, "reconstruct", differing)
    assert np.abs(codec.decode(enc).reshape(x.shape).astype(np.float64) - x).max() <= b
    times[0] = 32.0
    assert np.abs(codec.decode(enc).reshape(x.shape).astype(np.float64) - x).max() > b


def test_reconstruction_spread_bounds_other_summation_orders(linear):
    """The float64 sum in another order (reversed components, no BLAS) and exactly
    (math.fsum), cast to float32: within the reported spread of the BLAS result."""
    import math

    basis = linear.basis
    rng = np.random.default_rng(0)
    c = rng.normal(size=(6, basis.num_components)) * basis.scales
    blas = basis.reconstruct(c).astype(np.float64)
    terms = c[:, :, None] * basis.components.astype(np.float64)[None]  # (B, K, P) exact products
    backwards = basis.mean.astype(np.float64) + sum(terms[:, k] for k in reversed(range(basis.num_components)))
    exact = np.array([[math.fsum([float(basis.mean[p]), *terms[i, :, p]]) for p in range(basis.points)]
                      for i in range(len(c))])
    top = float(np.abs(blas).max())
    spread = basis.reconstruction_spread(c, top)
    assert spread < 2.5 * float(np.spacing(np.float32(top)))  # about two float32 ulps
    for other in (backwards, exact):
        assert np.abs(other.astype(np.float32) - blas).max() <= spread


def test_linear_model_has_no_off_grid_sampling(linear):
    loaded = register_model(linear)
    with pytest.raises(UsageError, match="linear"):
        loaded.evaluate_at(np.zeros((3, loaded.item_coords.shape[-1]), np.float32), torch.zeros(1, loaded.latent_dim))
