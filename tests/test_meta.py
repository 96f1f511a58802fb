"""MetaSGD (vcinr_sci.model.meta): the inner loop, masks, step-size clipping, second-order
gradients (against finite differences) and encoding with more steps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vcinr_sci.config import MetaConfig, ModelConfig, load_config
from vcinr_sci.data.items import load_dataset
from vcinr_sci.model.inr import build_inr
from vcinr_sci.model.meta import MetaSGD, masked_mse
from vcinr_sci.model.training import outer_step, sample_batch, seed_everything

TINY = "configs/tiny.yaml"  # the iris sample field (air temperature over North America)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[1] / TINY)
    ds = load_dataset(cfg.data)
    return cfg, ds


@pytest.fixture(scope="module")
def real_batch(tiny):
    _, ds = tiny
    return ds.items("val").batch(np.arange(8))


def fresh_model(cfg, seed=0, **meta):
    seed_everything(seed)
    mcfg = MetaConfig(**(vars(cfg.meta) | meta))
    return MetaSGD(build_inr(3, cfg.model), mcfg)


@pytest.fixture(scope="module")
def trained(tiny):
    """The tiny config's model after 20 outer steps (about 2 s on one core)."""
    cfg, ds = tiny
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = fresh_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.meta.outer_lr)
    train = ds.items("train")
    losses = [outer_step(model, opt, sample_batch(train, cfg, step), cfg.meta.grad_clip) for step in range(20)]
    torch.set_num_threads(threads)
    return model, losses


def loss_at(model, batch, phi):
    coords, target, mask = batch
    with torch.no_grad():
        return masked_mse(model.inr(coords, phi), target, mask)


# ---------------------------------------------------------------- inner loop on a real field


def test_inner_loop_lowers_loss_on_real_field_untrained(tiny, real_batch):
    cfg, _ = tiny
    model = fresh_model(cfg)
    coords, target, mask = real_batch
    before = loss_at(model, real_batch, model.phi0.expand(len(target), -1))
    phi = model.inner_loop(coords, target, mask, steps=3, create_graph=False)
    after = loss_at(model, real_batch, phi)
    assert (after < before).all(), (before, after)


def test_inner_loop_lowers_loss_on_real_field_meta_trained(trained, real_batch):
    model, losses = trained
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])  # meta-training learns
    coords, target, mask = real_batch
    before = loss_at(model, real_batch, model.phi0.expand(len(target), -1))
    after = loss_at(model, real_batch, model.adapt(coords, target, mask))
    assert (after < before).all()
    assert after.mean() < 0.97 * before.mean()


def test_adapt_more_steps_than_k(trained, real_batch):
    model, _ = trained
    coords, target, mask = real_batch
    assert model.cfg.inner_steps == 3
    grads_before = _grads(model)  # those of the last outer step
    phi3 = model.adapt(coords, target, mask)
    phi10 = model.adapt(coords, target, mask, steps=10)
    for phi in (phi3, phi10):
        assert phi.shape == (len(target), model.latent_dim)
        assert not phi.requires_grad and phi.grad_fn is None
    assert not torch.equal(phi3, phi10)
    assert loss_at(model, real_batch, phi10).mean() < loss_at(model, real_batch, phi3).mean()
    # encoding leaves no gradients behind on the model
    for before, after in zip(grads_before, _grads(model)):
        assert (before is None and after is None) or torch.equal(before, after)
    # zero steps: phi_0 for every item
    torch.testing.assert_close(model.adapt(coords, target, mask, steps=0), model.phi0.detach().expand(8, -1))


def _grads(model):
    return [None if p.grad is None else p.grad.clone() for p in model.parameters()]


def test_adapt_works_under_no_grad_and_does_not_touch_grads(tiny, real_batch):
    cfg, _ = tiny
    model = fresh_model(cfg)
    coords, target, mask = real_batch
    with torch.no_grad():
        phi = model.adapt(coords, target, mask, steps=2)
    assert phi.shape == (8, model.latent_dim) and not phi.requires_grad
    assert not torch.equal(phi, model.phi0.detach().expand(8, -1))
    assert all(p.grad is None for p in model.parameters())


def test_forward_returns_outer_loss_and_gives_gradients(tiny, real_batch):
    cfg, _ = tiny
    model = fresh_model(cfg)
    coords, target, mask = real_batch
    loss, per_item = model(coords, target, mask)
    assert loss.dim() == 0 and per_item.shape == (8,) and not per_item.requires_grad
    torch.testing.assert_close(loss.detach(), per_item.mean())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.phi0.grad.abs().sum() > 0 and model.alpha.grad.abs().sum() > 0


# ---------------------------------------------------------------- masked_mse


def test_masked_mse_ignores_masked_points():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(3, 10, 1, generator=g), torch.rand(3, 10, 1, generator=g)
    mask = torch.rand(3, 10, 1, generator=g) > 0.4
    mask[2] = False
    got = masked_mse(pred, target, mask)
    assert got.shape == (3,)
    for b in range(2):
        m = mask[b, :, 0]
        torch.testing.assert_close(got[b], ((pred[b, m] - target[b, m]) ** 2).mean())
    assert got[2] == 0.0  # all masked: no loss, no NaN
    # what sits at masked points does not matter
    wild = torch.where(mask, pred, torch.full_like(pred, 1e6))
    torch.testing.assert_close(masked_mse(wild, target, mask), got)
    # no mask = every point counts
    torch.testing.assert_close(masked_mse(pred, target, None), ((pred - target) ** 2).mean(dim=(1, 2)))
    torch.testing.assert_close(masked_mse(pred, target, torch.ones_like(mask)), masked_mse(pred, target, None))


def test_masked_mse_multichannel_mask_counts_every_channel():
    # a (B, N, 1) point mask with (B, N, C) values: the mean is over valid values
    g = torch.Generator().manual_seed(1)
    pred, target = torch.rand(2, 8, 3, generator=g), torch.rand(2, 8, 3, generator=g)
    mask = torch.ones(2, 8, 1, dtype=torch.bool)
    torch.testing.assert_close(masked_mse(pred, target, mask), masked_mse(pred, target, None))
    mask[:, 4:] = False
    torch.testing.assert_close(masked_mse(pred, target, mask), ((pred[:, :4] - target[:, :4]) ** 2).mean(dim=(1, 2)))


def test_inner_loop_ignores_masked_targets(tiny, real_batch):
    cfg, _ = tiny
    model = fresh_model(cfg)
    coords, target, mask = real_batch
    mask = mask.clone()
    mask[:, ::3] = False
    garbage = torch.where(mask, target, torch.full_like(target, 50.0))
    phi_a = model.adapt(coords, target, mask)
    phi_b = model.adapt(coords, garbage, mask)
    torch.testing.assert_close(phi_a, phi_b, rtol=1e-5, atol=1e-7)
    phi_c = model.adapt(coords, garbage, None)  # without the mask the garbage counts
    assert not torch.allclose(phi_a, phi_c, atol=1e-4)


# ---------------------------------------------------------------- step sizes


def small_model(conditioning="gated", dtype=torch.float64, **meta):
    """A tiny net for exact checks (latent 4: LayerNorm leaves a 2-dim latent only
    2 values, so 4 is the smallest latent that gating can really use)."""
    torch.manual_seed(0)
    mcfg = ModelConfig(conditioning=conditioning, latent_dim=4, width=4, depth=2, mod_width=4, mod_blocks=1, gate_rank=1)
    model = MetaSGD(build_inr(3, mcfg), MetaConfig(**({"inner_steps": 3} | meta)))
    return model.to(dtype)


def small_data(dtype=torch.float64, n=6, b=2):
    g = torch.Generator().manual_seed(1)
    c = torch.randn(n, 3, generator=g, dtype=dtype)
    return c / c.norm(dim=-1, keepdim=True), torch.rand(b, n, 1, generator=g, dtype=dtype)


def test_alpha_clipping():
    model = small_model("shift", inner_lr_clip=[-5.0, 5.0])
    with torch.no_grad():
        model.alpha.copy_(torch.tensor([10.0, -10.0, 0.5, 5.0]))
    torch.testing.assert_close(model.step_sizes(), torch.tensor([5.0, -5.0, 0.5, 5.0], dtype=torch.float64))
    coords, target = small_data()
    # one inner step uses the clipped step sizes
    phi0 = model.phi0.detach().expand(2, -1).clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(masked_mse(model.inr(coords, phi0), target, None).sum(), phi0)
    phi1 = model.inner_loop(coords, target, None, steps=1, create_graph=True)
    torch.testing.assert_close(phi1, phi0 - torch.tensor([5.0, -5.0, 0.5, 5.0], dtype=torch.float64) * grad)
    # no gradient flows into a clipped step size
    (g_alpha,) = torch.autograd.grad(masked_mse(model.inr(coords, phi1), target, None).mean(), model.alpha)
    assert g_alpha[0] == 0 and g_alpha[1] == 0 and g_alpha[2] != 0
    assert model.step_sizes().requires_grad


def test_alpha_initialisation():
    model = small_model(inner_lr_init=0.25)
    torch.testing.assert_close(model.alpha.detach(), torch.full((4,), 0.25, dtype=torch.float64))
    assert model.latent_dim == 4


# ---------------------------------------------------------------- second-order gradients


def _probe_points(p: torch.Tensor):
    first = (0,) * p.dim()
    last = tuple(s - 1 for s in p.shape)
    return [first] if first == last else [first, last]


@pytest.mark.parametrize("conditioning", ["gated", "shift"])
def test_second_order_gradients_match_finite_differences(conditioning):
    lr = 1.0 if conditioning == "gated" else 0.1
    model = small_model(conditioning, inner_lr_init=lr)
    coords, target = small_data()
    params = dict(model.named_parameters())

    # the inner loop does move the latents here, so second-order terms matter
    phi = model.inner_loop(coords, target, None, 3, create_graph=False).detach()
    moved = (phi - model.phi0.detach()).abs().max()
    assert moved > 1e-3

    loss, _ = model(coords, target)
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))

    h = 1e-6
    checked = 0
    for name, p in params.items():
        for idx in _probe_points(p):
            with torch.no_grad():
                p[idx] += h
            plus = model(coords, target)[0].item()
            with torch.no_grad():
                p[idx] -= 2 * h
            minus = model(coords, target)[0].item()
            with torch.no_grad():
                p[idx] += h
            fd = (plus - minus) / (2 * h)
            assert grads[name][idx].item() == pytest.approx(fd, rel=1e-4, abs=1e-9), (name, idx)
            checked += 1
    assert checked >= 15

    # first order drops the terms through the inner loop: a different gradient
    model.cfg.first_order = True
    loss_fo, _ = model(coords, target)
    grads_fo = torch.autograd.grad(loss_fo, list(params.values()))
    model.cfg.first_order = False
    torch.testing.assert_close(loss_fo, loss)  # same loss value, only its gradient differs
    so = torch.cat([g.flatten() for g in grads.values()])
    fo = torch.cat([g.flatten() for g in grads_fo])
    assert (so - fo).norm() > 1e-2 * so.norm()
    # phi_0 has its own direct path, so the first-order gradient still reaches it
    assert grads_fo[list(params).index("phi0")].abs().sum() > 0


# ---------------------------------------------------------------- quantisation-aware meta-training


def test_latent_noise_and_rate_in_the_outer_loss(tiny, trained, real_batch):
    """``latent_noise`` decodes the adapted latents with uniform noise as wide as that
    fraction of their leading deviation over the batch; ``latent_rate`` adds that many
    MSE units per bit of the Gaussian channel's rate. Off, the loss is the clean MSE."""
    cfg, _ = tiny
    coords, target, mask = real_batch

    def model(**meta):  # the trained weights (a fresh model's latents barely differ)
        m = fresh_model(cfg, **meta)
        m.load_state_dict(trained[0].state_dict())
        return m

    clean = model()
    loss, per_item = clean(coords, target, mask)
    phi = clean.adapt(coords, target, mask)
    torch.testing.assert_close(per_item, loss_at(clean, real_batch, phi))

    noisy = model(latent_noise=1.0)
    torch.manual_seed(5)
    loss_n, per_item_n = noisy(coords, target, mask)
    width = phi.std(0).max()
    torch.manual_seed(5)
    noise = width * (torch.rand_like(phi) - 0.5)
    torch.testing.assert_close(per_item_n, loss_at(noisy, real_batch, phi + noise), rtol=1e-5, atol=1e-7)
    assert loss_n > loss  # noise at the coder's step costs distortion

    rated = model(latent_noise=1.0, latent_rate=1e-3)
    torch.manual_seed(5)
    loss_r, _ = rated(coords, target, mask)
    bits = 0.5 * torch.log2(1 + phi.var(0) / (width**2 / 12)).sum()
    assert 0 < bits < 0.5 * phi.shape[1] * np.log2(13) + 1e-4  # the leading dimension's var <= width**2
    torch.testing.assert_close(loss_r, loss_n + 1e-3 * bits, rtol=1e-5, atol=1e-7)
    loss_r.backward()  # the rate reaches the step sizes and phi_0 through the inner loop
    assert rated.alpha.grad.abs().sum() > 0 and rated.phi0.grad.abs().sum() > 0


# ---------------------------------------------------------------- targets in units of their spread


def test_the_inner_loop_is_free_of_the_targets_scale(tiny, trained, real_batch):
    """With ``output_scale`` the INR's spread, targets c times larger under a scale c
    times larger adapt to the same latents and decode to c times the output: one step
    size serves residuals of any spread. Weights saved without the scale keep 1."""
    cfg, _ = tiny
    coords, target, mask = real_batch
    model = fresh_model(cfg)
    model.load_state_dict(trained[0].state_dict())
    assert float(model.inr.output_scale) == 1.0
    phi = model.adapt(coords, target, mask)
    loss, per_item = model(coords, target, mask)
    c = 0.004
    scaled = fresh_model(cfg)
    scaled.load_state_dict(trained[0].state_dict())
    scaled.inr.output_scale.fill_(c)
    phi_c = scaled.adapt(coords, c * target, mask)
    torch.testing.assert_close(phi_c, phi, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(scaled.decode(coords, phi_c), c * model.decode(coords, phi), rtol=1e-4, atol=1e-7)
    loss_c, per_item_c = scaled(coords, c * target, mask)
    torch.testing.assert_close(loss_c, loss, rtol=1e-4, atol=0)  # the outer loss in units of the spread
    torch.testing.assert_close(per_item_c, c**2 * per_item, rtol=1e-4, atol=0)  # its metrics in the targets'
    old = {k: v for k, v in scaled.state_dict().items() if k != "inr.output_scale"}
    model.load_state_dict(old)
    assert float(model.inr.output_scale) == 1.0
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="output_scale"):
            model.load_state_dict(old | {"inr.output_scale": torch.tensor(bad)})


def test_a_hybrids_inr_takes_the_spread_of_its_residuals():
    from _vcinr_tiny import hybrid_artifact, linear_artifact

    from vcinr_sci.model.artifact import load_artifact
    from vcinr_sci.model.training import set_output_scale, training_data

    art = load_artifact(hybrid_artifact())
    items = training_data(art.config, load_artifact(linear_artifact())).items("train")
    v = items.values(np.arange(len(items)))
    rms = float(np.sqrt(np.nanmean(v.astype(np.float64) ** 2)))
    assert 0 < rms < 0.1  # what the mean and leading EOFs leave is small in normalised units
    assert float(art.model.inr.output_scale) == pytest.approx(rms, rel=0.15)  # from up to 64 of the items
    model = fresh_model(art.config)
    assert set_output_scale(model, items, art.config, max_items=len(items)) == pytest.approx(rms, rel=1e-6)
    assert float(model.inr.output_scale) == pytest.approx(rms, rel=1e-6)
    # an INR of the data itself keeps raw units
    plain = dataclasses.replace(art.config, model=dataclasses.replace(art.config.model, kind="inr"))
    assert set_output_scale(fresh_model(plain), items, plain) == 1.0
