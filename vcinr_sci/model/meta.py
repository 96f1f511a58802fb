"""MetaSGD: a learned latent init phi_0 and per-dimension inner step sizes.

Encoding an item is ``K`` gradient steps on its latent from phi_0
(``phi <- phi - alpha * grad_phi MSE``); meta-training differentiates through those
steps (second order, or first order as an option) to learn the INR, phi_0 and alpha.
"""

from __future__ import annotations

import torch
from torch import nn

from vcinr_sci.config import MetaConfig


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-item mean squared error over valid points, shape ``(B,)``."""
    err = (pred - target) ** 2
    if mask is None:
        return err.flatten(1).mean(1)
    m = mask.to(err.dtype).expand_as(err)  # a (B, N, 1) point mask counts every channel
    return (err * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1.0)


class MetaSGD(nn.Module):
    """The INR together with what its inner loop learns (phi_0, alpha).

    ``forward`` is one outer step's loss, so that DDP wraps the whole meta-step.
    """

    def __init__(self, inr: nn.Module, cfg: MetaConfig):
        super().__init__()
        self.inr = inr
        self.cfg = cfg
        self.phi0 = nn.Parameter(inr.initial_latent())
        self.alpha = nn.Parameter(torch.full((inr.latent_dim,), float(cfg.inner_lr_init)))

    @property
    def latent_dim(self) -> int:
        return self.phi0.numel()

    def step_sizes(self) -> torch.Tensor:
        lo, hi = self.cfg.inner_lr_clip
        return self.alpha.clamp(lo, hi)

    def inner_loop(
        self,
        coords: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor | None,
        steps: int,
        create_graph: bool,
        phi: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Adapt latents to ``target`` with ``steps`` MetaSGD steps; returns ``(B, D)``."""
        if phi is None:
            phi = self.phi0.unsqueeze(0).expand(target.shape[0], -1)
        if not phi.requires_grad:
            phi = phi.detach().requires_grad_(True)
        alpha = self.step_sizes()
        for _ in range(steps):
            # Sum over items of each item's mean: each latent's gradient is independent
            # of the batch size. In units of the targets' spread, so that the step sizes
            # need not scale with it.
            loss = masked_mse(self.inr(coords, phi), target, mask).sum() / self.inr.output_scale**2
            (grad,) = torch.autograd.grad(loss, phi, create_graph=create_graph)
            phi = phi - alpha * grad
        return phi

    def forward(self, coords, target, mask=None):
        """Outer loss: mean MSE after the inner loop, in units of the targets' spread (of
        the latents with quantisation noise, plus their rate, where ``latent_noise`` /
        ``latent_rate`` ask); also returns per-item MSE in the targets' own units."""
        phi = self.inner_loop(coords, target, mask, self.cfg.inner_steps, create_graph=not self.cfg.first_order)
        unit = self.inr.output_scale**2  # the loss in units of the targets' spread, like the inner loop's
        if not self.cfg.latent_noise or phi.shape[0] < 2:  # (one item has no spread to scale by)
            per_item = masked_mse(self.inr(coords, phi), target, mask)
            return per_item.mean() / unit, per_item.detach()
        # The step tracks the latents' own spread, so shrinking them buys nothing.
        width = self.cfg.latent_noise * phi.detach().std(0).max().clamp_min(1e-12)
        per_item = masked_mse(self.inr(coords, phi + width * (torch.rand_like(phi) - 0.5)), target, mask)
        loss = per_item.mean() / unit
        if self.cfg.latent_rate:
            bits = 0.5 * torch.log2(1 + phi.var(0) / (width**2 / 12)).sum()
            loss = loss + self.cfg.latent_rate * bits
        return loss, per_item.detach()

    @torch.no_grad()
    def decode(self, coords: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        return self.inr(coords, phi)

    def adapt(
        self,
        coords: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor | None = None,
        steps: int | None = None,
    ) -> torch.Tensor:
        """Encode new items: their latents after ``steps`` inner steps (default K)."""
        steps = self.cfg.inner_steps if steps is None else steps
        with torch.enable_grad():
            phi = self.inner_loop(coords, target, mask, steps, create_graph=False)
        return phi.detach()
