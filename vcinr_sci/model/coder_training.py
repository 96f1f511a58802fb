"""The latent coder's training objective, free of Ray: rate (the coder's bits) plus
lambda times distortion measured through the frozen INR on the data, as
:mod:`pipelines.train_coder` runs it on Ray Train."""

from __future__ import annotations

import numpy as np
import torch

from vcinr_sci.coding.coder import rd_loss
from vcinr_sci.data.items import ItemSet
from vcinr_sci.metrics import psnr_from_mse
from vcinr_sci.model.meta import MetaSGD, masked_mse


def freeze(model: MetaSGD) -> MetaSGD:
    """The INR as the coders see it: eval mode, no parameter takes gradients."""
    model.eval()
    model.requires_grad_(False)
    return model


def distortion_on_data(model: MetaSGD, coords, values, mask, phis: list[torch.Tensor]) -> torch.Tensor:
    """Per-item MSE ``(K, B)`` of the data reconstructed from each of ``K`` latent
    batches ``(B, D)`` through the INR, with one decode for all of them. Gradients flow
    to the latents (and so to the coders), never into a frozen INR."""
    k = len(phis)
    rep = lambda t: None if t is None else t.repeat(k, *([1] * (t.dim() - 1)))  # noqa: E731
    coords_k = rep(coords) if coords.dim() == 3 else coords
    pred = model.inr(coords_k, torch.cat(phis))  # not model.decode: that one is no_grad
    return masked_mse(pred, rep(values), rep(mask)).view(k, -1)


def coder_losses(model, coders, lambdas, phi, batch, num_values: int) -> tuple[torch.Tensor, list[dict]]:
    """Sum over coders of ``rate + lambda * distortion on data``, and each one's parts.

    ``num_values`` is how many data values the batch's latents stand for (items x grid
    points, not the subsampled points the distortion is estimated on).
    """
    coords, values, mask = batch
    outs = [coder(phi) for coder in coders]
    mse = distortion_on_data(model, coords, values, mask, [o[0] for o in outs])
    losses, stats = [], []
    for (_, bits), lam, err in zip(outs, lambdas, mse):
        loss = rd_loss(bits, err.mean(), lam, num_values)
        losses.append(loss)
        stats.append({"loss": float(loss.detach()), "bpv": float(bits.detach().sum()) / num_values, "mse": float(err.detach().mean())})
    return torch.stack(losses).sum(), stats


def train_step(model, coders, lambdas, optimiser, aux_optimiser, phi, batch, num_values: int) -> list[dict]:
    """One step on every coder: RD loss on the main parameters, aux loss on the quantiles."""
    for coder in coders:
        coder.train()
    total, stats = coder_losses(model, coders, lambdas, phi, batch, num_values)
    optimiser.zero_grad(set_to_none=True)
    total.backward()
    optimiser.step()
    aux = torch.stack([c.aux_loss() for c in coders]).sum()
    aux_optimiser.zero_grad(set_to_none=True)
    aux.backward()
    aux_optimiser.step()
    return stats


@torch.no_grad()
def evaluate_coders(
    model, coders, lambdas, phi: torch.Tensor, items: ItemSet, indices: np.ndarray, batch_size: int = 16, device="cpu"
) -> list[dict]:
    """RD figures of each coder on ``items[indices]`` (``phi`` holds the latents of all
    of ``items``), on all grid points, with rounding as at coding time; bits are the
    entropy model's estimate."""
    for coder in coders:
        coder.eval()
    n = len(indices)
    bits = [torch.zeros((), dtype=torch.float64) for _ in coders]
    mses: list[list[torch.Tensor]] = [[] for _ in coders]
    for s in range(0, n, batch_size):
        idx = indices[s : s + batch_size]
        coords, values, mask = (t.to(device) for t in items.batch(idx))
        outs = [coder(phi[idx].to(device)) for coder in coders]
        err = distortion_on_data(model, coords, values, mask, [o[0] for o in outs])
        for k, (_, b) in enumerate(outs):
            bits[k] += b.double().sum().cpu()
            mses[k].append(err[k].double().cpu())
    num_values = n * items.points_per_item
    out = []
    for lam, b, parts in zip(lambdas, bits, mses):
        m = torch.cat(parts)
        bpv, mse = float(b) / num_values, float(m.mean())
        psnr = float(psnr_from_mse(m.clamp_min(1e-20)).mean())
        out.append({"loss": bpv + lam * mse, "bpv": bpv, "mse": mse, "psnr": psnr})
    for coder in coders:
        coder.train()
    return out
