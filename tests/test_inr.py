"""The shared INR (vcinr_sci.model.inr): shapes, per-item conditioning, gates, initialisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vcinr_sci.config import Config, ModelConfig
from vcinr_sci.data.grids import RegularGrid, SphericalGrid
from vcinr_sci.model.artifact import build_model
from vcinr_sci.model.inr import GatedSiren, ShiftSiren, build_inr, first_layer_scale

D, N, B = 6, 40, 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cfg(conditioning="gated", **kw) -> ModelConfig:
    base = dict(conditioning=conditioning, latent_dim=D, width=16, depth=3, mod_width=24, mod_blocks=1, gate_rank=2)
    return ModelConfig(**(base | kw))


def make(conditioning, seed=0, out_dim=1, **kw):
    torch.manual_seed(seed)
    return build_inr(3, cfg(conditioning, **kw), out_dim=out_dim)


def sphere_points(n, seed=1, batch=None):
    g = torch.Generator().manual_seed(seed)
    shape = (n, 3) if batch is None else (batch, n, 3)
    x = torch.randn(shape, generator=g)
    return x / x.norm(dim=-1, keepdim=True)


def latents(b, seed=2):
    return torch.randn(b, D, generator=torch.Generator().manual_seed(seed))


BOTH = ["gated", "shift"]


def test_build_inr_kinds_and_errors():
    assert isinstance(make("gated"), GatedSiren)
    assert isinstance(make("shift"), ShiftSiren)
    with pytest.raises(ValueError, match="unknown conditioning 'film'"):
        build_inr(3, cfg("film"))
    with pytest.raises(ValueError, match="nothing to gate"):
        build_inr(3, cfg("gated", depth=1))
    with pytest.raises(ValueError, match="positive"):
        build_inr(3, cfg("shift", width=0))


@pytest.mark.parametrize("conditioning", BOTH)
@pytest.mark.parametrize("out_dim", [1, 2])
def test_output_shapes(conditioning, out_dim):
    f = make(conditioning, out_dim=out_dim)
    phi = latents(B)
    shared = sphere_points(N)
    assert f(shared, phi).shape == (B, N, out_dim)
    per_item = sphere_points(N, batch=B)
    assert f(per_item, phi).shape == (B, N, out_dim)
    # shared coords are the same as per-item coords repeated
    torch.testing.assert_close(f(shared, phi), f(shared.expand(B, N, 3), phi), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="coords must be"):
        f(sphere_points(N, batch=B + 1), phi)


@pytest.mark.parametrize("conditioning", BOTH)
def test_each_item_has_its_own_latent(conditioning):
    f = make(conditioning)
    coords = sphere_points(N)
    a, b = latents(2).unbind(0)
    phi = torch.stack([a, b, a, b])
    with torch.no_grad():
        out = f(coords, phi)
    assert not torch.allclose(out[0], out[1], atol=1e-4)  # different latents, different fields
    torch.testing.assert_close(out[0], out[2], rtol=0, atol=1e-6)  # same latent, same field
    torch.testing.assert_close(out[1], out[3], rtol=0, atol=1e-6)


@pytest.mark.parametrize("conditioning", BOTH)
def test_no_cross_item_leakage(conditioning):
    f = make(conditioning)
    coords = sphere_points(N, batch=3)
    phi = latents(3)
    with torch.no_grad():
        base = f(coords, phi)
        # change the other items' latents and coordinates: item 0 must not notice
        coords2, phi2 = coords.clone(), phi.clone()
        coords2[1:] = sphere_points(N, seed=9, batch=2)
        phi2[1:] = 10.0 * latents(2, seed=8)
        changed = f(coords2, phi2)
        alone = f(coords[:1], phi[:1])
    torch.testing.assert_close(changed[0], base[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(alone[0], base[0], rtol=0, atol=1e-6)
    assert not torch.allclose(changed[1], base[1], atol=1e-4)
    # and through gradients: item 0's output does not depend on item 1's latent
    phi = phi.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(coords, phi)[0].sum(), phi)
    assert g[0].abs().sum() > 0
    assert torch.count_nonzero(g[1:]) == 0


def test_gates_per_item_in_unit_interval_and_low_rank():
    f = make("gated", gate_rank=2)
    phi = latents(B)
    phi[2] = phi[0]
    with torch.no_grad():
        gates = f.gates(phi)
    assert f.gated == [1, 2]  # the first layer is not gated by default
    assert len(gates) == 2
    for g, i in zip(gates, f.gated):
        assert g.shape == (B,) + tuple(f.layers[i].weight.shape)
        assert (g > 0).all() and (g < 1).all()
        assert not torch.allclose(g[0], g[1], atol=1e-5)  # per item
        torch.testing.assert_close(g[0], g[2], rtol=0, atol=0)
        # sigmoid(U V^T): the logits have rank <= gate_rank
        s = torch.linalg.svdvals(torch.logit(g.double()))
        assert (s[:, 2] < 1e-4 * s[:, 0]).all()
        assert (s[:, 1] > 1e-3 * s[:, 0]).all()


def test_gate_first_layer_option():
    f = make("gated", gate_first_layer=True, depth=2)
    assert f.gated == [0, 1]
    gates = f.gates(latents(2))
    assert gates[0].shape == (2, 16, 3)
    # the gated first layer starts at twice the SIREN bound (gate ~ 0.5 halves it)
    assert f.layers[0].weight.abs().max() > 1.0 / 3 and f.layers[0].weight.abs().max() <= 2.0 / 3


def test_gates_are_what_the_forward_pass_uses():
    # forward == a plain SIREN run with the gated weights G_l * W_l, item by item
    f = make("gated")
    coords = sphere_points(N)
    phi = latents(2)
    with torch.no_grad():
        out = f(coords, phi)
        gates = dict(zip(f.gated, f.gates(phi)))
        for b in range(2):
            h = coords
            for i, layer in enumerate(f.layers):
                w = layer.weight * gates[i][b] if i in gates else layer.weight
                h = torch.sin(f.cfg.w0 * (h @ w.T + layer.bias))
            torch.testing.assert_close(f.head(h), out[b], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("conditioning", BOTH)
def test_initial_output_near_half(conditioning):
    f = make(conditioning, width=64, depth=4, mod_width=64)
    assert torch.all(f.head.bias == 0.5)
    coords = sphere_points(2000)
    phi0 = torch.stack([f.initial_latent() for _ in range(3)])
    with torch.no_grad():
        out = f(coords, phi0)
    assert abs(out.mean().item() - 0.5) < 0.05
    assert (out - 0.5).abs().max().item() < 0.5
    # ... but not constant: the SIREN carries signal at init
    assert out.std().item() > 1e-3


def test_initial_latents():
    torch.manual_seed(0)
    g = make("gated").initial_latent()
    assert g.shape == (D,) and 0 < g.abs().max() < 0.1  # small: see method.md section 9
    s = make("shift").initial_latent()
    assert torch.equal(s, torch.zeros(D))
    # ShiftSiren's shift map must not start at zero, or phi_0 = 0 never learns
    assert make("shift").to_shifts.weight.abs().sum() > 0


@pytest.mark.parametrize("conditioning", BOTH)
def test_latent_gradient_is_nonzero_at_init(conditioning):
    f = make(conditioning)
    phi = f.initial_latent().expand(2, -1).clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(sphere_points(N), phi).pow(2).sum(), phi)
    assert torch.isfinite(g).all() and g.abs().max() > 1e-6


# ERA5 UK's 33 x 49 points at 0.25 degrees; CCSM's 64 x 128 (Gaussian latitudes stop 1.4
# degrees short of the poles)
UK = SphericalGrid(np.linspace(58.0, 50.0, 33), np.linspace(-10.0, 2.0, 49))
GLOBAL = SphericalGrid(np.linspace(-87.86, 87.86, 64), np.arange(128) * 2.8125)


def test_the_first_layer_frequency_follows_the_grid_extent():
    # The UK spans 0.134 of the unit sphere's 2: the first layer runs 14.92 times faster.
    assert UK.coordinate_span() == pytest.approx(0.134, abs=0.001)
    assert first_layer_scale(UK) == pytest.approx(14.92, abs=0.01)
    # A global grid (or any regular grid: axes on [-1, 1]) keeps w0_initial exactly.
    assert first_layer_scale(GLOBAL) == 1.0 and first_layer_scale(RegularGrid([12, [0.0, 5.0, 7.0]])) == 1.0
    cfg = Config.from_dict({"model": {"latent_dim": D, "width": 16, "depth": 3, "mod_width": 24, "mod_blocks": 1}})
    torch.manual_seed(0)
    regional = build_model(cfg, UK)
    assert regional is not None and float(regional.inr.w0_of(0)) == pytest.approx(30.0 * 14.92)
    assert regional.inr.w0_of(1) == 30.0  # hidden layers see activations, not coordinates
    # The weights keep the training grid's scale: a model built for another grid (an
    # artifact evaluated off its grid) runs at the regional frequency once loaded.
    coords, phi = sphere_points(N), latents(2)
    other = build_model(cfg, GLOBAL)
    assert other is not None and float(other.inr.w0_of(0)) == 30.0
    other.load_state_dict(regional.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(other.inr(coords, phi), regional.inr(coords, phi), rtol=0, atol=0)
    # Weights from before the scale was kept ran at w0_initial, and still do.
    old = {k: v for k, v in regional.state_dict().items() if k != "inr.w0_initial_scale"}
    other.load_state_dict(old)
    assert float(other.inr.w0_of(0)) == 30.0
    with torch.no_grad():
        assert not torch.allclose(other.inr(coords, phi), regional.inr(coords, phi))


def test_an_artifact_keeps_its_grids_first_layer_scale():
    from tests._vcinr_tiny import tiny_artifact
    from vcinr_sci.model.artifact import load_artifact

    art = load_artifact(tiny_artifact())  # the tiny config's North American grid
    assert art.model is not None and first_layer_scale(art.grid) > 1.0
    assert float(art.model.inr.w0_initial_scale) == pytest.approx(first_layer_scale(art.grid))
