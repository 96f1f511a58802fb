"""The hyperprior latent coder compared in bench_latent_coders (issue 24): its bytes hold
exactly what ``quantise`` gives, its bit estimate is what it writes, and the side
information follows each vector's scale."""

from __future__ import annotations

import functools

import pytest
import torch

from vcinr_sci.bench.latent_hyperprior import HyperpriorLatentCoder
from vcinr_sci.coding.coder import rd_loss
from vcinr_sci.errors import ChunkFormatError


def _latents() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    scale = torch.exp(torch.randn(192, 1, generator=g))  # each vector its own size
    return torch.randn(192, 6, generator=g) * scale


@functools.cache  # each variant trained once for the module's tests
def _trained(mean_scale: bool) -> HyperpriorLatentCoder:
    phi = _latents()
    torch.manual_seed(0)
    coder = HyperpriorLatentCoder(phi.shape[1], phi.shape[1], 2, 16, 1, mean_scale)
    coder.set_stats(phi)
    opt = torch.optim.Adam(coder.parameters_main(), lr=1e-2)
    aux = torch.optim.Adam(coder.parameters_aux(), lr=1e-2)
    for _ in range(150):
        coder.train()
        out, bits = coder(phi)
        loss = rd_loss(bits, (out - phi).square().mean(), 100.0, phi.numel())
        opt.zero_grad()
        loss.backward()
        opt.step()
        aux_loss = coder.aux_loss()
        aux.zero_grad()
        aux_loss.backward()
        aux.step()
    coder.eval()
    coder.update()
    return coder


@pytest.fixture
def latents() -> torch.Tensor:
    return _latents()


@pytest.mark.parametrize("mean_scale", [False, True])
def test_hyperprior_bytes_decode_to_quantise_and_cost_the_estimate(latents, mean_scale):
    coder = _trained(mean_scale)
    data = coder.compress(latents)
    assert torch.equal(coder.decompress(data, len(latents)), coder.quantise(latents))
    with torch.no_grad():
        _, bits = coder(latents)
    # one string for z and y: the estimate plus the coder's final state (64 bits) and padding
    assert float(bits.sum()) <= 8 * len(data) <= 1.03 * float(bits.sum()) + 96
    assert float((coder.quantise(latents) - latents).square().mean()) < 0.2 * float(latents.var())


def test_hyperprior_side_information_follows_the_vectors_scale(latents):
    coder = _trained(False)
    with torch.no_grad():
        y = coder._analysis(latents)
        z = coder._hyper(y).round()
        scales, _ = coder._prior(z + coder._medians())
    size = latents.norm(dim=1)
    spread = scales.clamp_min(0.11).log().mean(dim=1)
    assert torch.corrcoef(torch.stack([size.log(), spread]))[0, 1] > 0.5


def test_hyperprior_truncated_string_is_refused(latents):
    coder = _trained(True)
    data = coder.compress(latents)
    with pytest.raises(ChunkFormatError):
        coder.decompress(data[: len(data) // 2 // 4 * 4], len(latents))
