"""The Gaussian (transform + per-component tables) latent coder: round trip, rate set by
the step, storage, and refusal of crafted or truncated strings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vcinr_sci.coding.coder import coder_spec, coder_state, load_coder
from vcinr_sci.coding.transform import GaussianLatentCoder, fit_transform


def _latents(n=400, d=6, seed=0):
    """Correlated latents of unequal deviations (one mixing for every seed), consecutive
    rows an AR(1) process."""
    fixed = np.random.default_rng(0)
    mix, offset = fixed.normal(size=(d, d)) * np.linspace(2.0, 0.05, d), fixed.normal(size=d)
    rng = np.random.default_rng(seed)
    z = np.zeros((n, d))
    for t in range(1, n):
        z[t] = 0.9 * z[t - 1] + np.sqrt(1 - 0.81) * rng.normal(size=d)
    return (z @ mix.T + offset).astype(np.float32)


@pytest.fixture(scope="module")
def coder() -> GaussianLatentCoder:
    phi = _latents()
    metric = np.diag(np.linspace(1.0, 3.0, phi.shape[1]))
    return fit_transform(phi, 0.05, metric, follows=np.arange(len(phi)) > 0)


def test_round_trip_is_exact_and_close(coder):
    phi = torch.from_numpy(_latents(64, seed=1))
    data = coder.compress(phi)
    out = coder.decompress(data, len(phi))
    assert out.dtype == torch.float32 and out.shape == phi.shape
    assert torch.equal(out, coder.quantise(phi))
    string, decoded = coder.code(phi)
    assert string == data and torch.equal(decoded, out)
    # error per component ~ step / sqrt(12) in the whitened metric: small against the latents' spread
    assert float((out - phi).abs().max()) < 0.2 * float(phi.std())


def test_transform_decorrelates_and_orders_components(coder):
    c = (_latents(4000, seed=2).astype(np.float64) - coder.mean) @ coder.forward.T
    cov = np.cov(c.T)
    off = cov - np.diag(np.diag(cov))
    assert np.abs(off).max() < 0.1 * np.diag(cov).max()
    assert np.all(np.diff(coder.coefficients.scales) <= 1e-6)
    np.testing.assert_allclose(coder.inverse @ coder.forward, np.eye(coder.latent_dim), atol=1e-9)
    assert np.all(coder.coefficients.rho > 0.5)  # the AR(1) rows are found


def test_steps_give_an_ordered_ladder(coder):
    phi = torch.from_numpy(_latents(128, seed=3))
    metric = np.diag(np.linspace(1.0, 3.0, phi.shape[1]))
    points = []
    for step in (0.01, 0.04, 0.16, 0.64, 2.56):
        c = coder.at_step(step)
        err = (c.quantise(phi).double() - phi.double()).numpy()
        points.append((len(c.compress(phi)), float(np.einsum("ni,ij,nj->", err, metric, err))))
    bits, errors = zip(*points)
    assert list(bits) == sorted(bits, reverse=True) and len(set(bits)) == len(bits)
    assert list(errors) == sorted(errors)
    assert bits[0] > 4 * bits[-1]


def test_storage_round_trip(coder):
    phi = torch.from_numpy(_latents(32, seed=4))
    loaded = load_coder(coder_spec(coder), coder_state(coder))
    assert isinstance(loaded, GaussianLatentCoder)
    assert loaded.compress(phi) == coder.compress(phi)
    assert torch.equal(loaded.decompress(coder.compress(phi), len(phi)), coder.quantise(phi))
    state = coder_state(coder)
    state.pop("inverse")
    with pytest.raises(ValueError, match="needs tensors"):
        load_coder(coder_spec(coder), state)
    bad = coder_state(coder) | {"forward": torch.full((6, 6), float("nan"), dtype=torch.float64)}
    with pytest.raises(ValueError, match="NaN"):
        load_coder(coder_spec(coder), bad)


def test_crafted_and_truncated_strings_are_refused(coder):
    phi = torch.from_numpy(_latents(40, seed=5))
    data = coder.compress(phi)
    for bad in (b"", data[:1], data[:-3], bytes([7]) + data[1:]):
        with pytest.raises(ValueError):
            coder.decompress(bad, len(phi))
    rng = np.random.default_rng(0)
    for _ in range(50):  # random payloads: decoded or refused, never a crash or a hang
        junk = bytes([data[0]]) + rng.integers(0, 256, 4 * int(rng.integers(1, 40)), dtype=np.uint8).tobytes()
        try:
            assert coder.decompress(junk, len(phi)).shape == phi.shape
        except ValueError:
            pass
    with pytest.raises(ValueError, match="n"):
        coder.decompress(data, 0)


def test_bad_inputs_give_clear_errors(coder):
    with pytest.raises(ValueError, match="NaN"):
        coder.compress(torch.full((2, 6), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        coder.compress(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="at least 2"):
        fit_transform(np.zeros((1, 6)), 0.1)
    with pytest.raises(ValueError, match="metric"):
        fit_transform(_latents(), 0.1, metric=np.eye(5))
    with pytest.raises(ValueError, match="too fine"):
        coder.at_step(1e-9)
