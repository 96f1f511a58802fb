"""The latent coder's training objective, free of Ray: rate (the coder's bits) plus
lambda times distortion measured through the frozen INR on the data, as
:mod:`pipelines.train_coder` runs it on Ray Train."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from vcinr_sci.coding.coder import rd_loss
from vcinr_sci.config import CoderConfig
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


def cosine_schedule(optimiser: torch.optim.Optimizer, cc: CoderConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """The coders' learning rate: cosine decay from ``cc.lr`` to ``cc.lr * cc.lr_final``
    over ``cc.steps``, then held."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: cc.lr_final + (1 - cc.lr_final) * 0.5 * (1 + math.cos(math.pi * min(s, cc.steps) / cc.steps))
    )


def sample_coder_batch(rng: np.random.Generator, cc: CoderConfig, num_items: int, per_item: int) -> tuple[np.ndarray, np.ndarray | None]:
    """One step's items (``cc.batch_size`` of ``num_items``, sorted) and grid points
    (``cc.points_per_step`` of ``per_item``, sorted; None for all) drawn from ``rng``."""
    idx = np.sort(rng.choice(num_items, size=min(cc.batch_size, num_items), replace=False))
    points = None
    if cc.points_per_step and cc.points_per_step < per_item:
        points = np.sort(rng.choice(per_item, cc.points_per_step, replace=False))
    return idx, points


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


def latent_metric(model: MetaSGD, phi: torch.Tensor, items: ItemSet, indices: np.ndarray, batch_size: int = 16,
                  device="cpu") -> np.ndarray:
    """The data-space metric of the latents, ``H = mean over items[indices] and their
    valid points of J^T J`` (``J``: the INR's output's derivative with respect to the
    item's latent, at its latent in ``phi``, which holds all of ``items``'): a latent
    error ``e`` adds about ``e^T H e`` to the MSE per value. ``(D, D)`` float64, from one
    forward-mode derivative per latent dimension."""
    d = phi.shape[1]
    total = torch.zeros(d, d, dtype=torch.float64)
    count = 0
    for s in range(0, len(indices), batch_size):
        idx = indices[s : s + batch_size]
        coords, _, mask = (t.to(device) for t in items.batch(idx))
        p = phi[idx].to(device, torch.float32)
        columns = []
        for k in range(d):
            tangent = torch.zeros_like(p)
            tangent[:, k] = 1.0
            _, jv = torch.func.jvp(functools.partial(model.inr, coords), (p,), (tangent,))
            columns.append(torch.where(mask, jv, 0.0).reshape(len(idx), -1).double())
        jac = torch.stack(columns, dim=-1)  # (B, P, D)
        total += torch.einsum("bpi,bpj->ij", jac, jac).cpu()
        count += int(mask.sum())
    return (total / max(1, count)).numpy()


# ---------------------------------------------------------------- operating points

# Uniform quantisers whose rate-distortion points give the data's slope (bits per latent
# dimension before entropy coding).
PROBE_BITS = tuple(range(1, 9))
# The highest learned level aims this close (dB) to the unquantised latents' PSNR: the
# last fraction of a dB costs bits out of all proportion.
TOP_GAP_DB = 0.25


@torch.no_grad()
def decoded_mse(model, phi: torch.Tensor, items: ItemSet, batch_size: int = 32, device="cpu") -> float:
    """MSE over the valid points of all of ``items`` decoded from their latents ``phi``
    through the INR (all grid points, pooled)."""
    sq, count = 0.0, 0
    for s in range(0, len(items), batch_size):
        idx = np.arange(s, min(s + batch_size, len(items)))
        coords, values, mask = (t.to(device) for t in items.batch(idx))
        err = torch.where(mask, model.decode(coords, phi[idx].to(device)) - values, 0.0).double()
        sq, count = sq + float((err**2).sum()), count + int(mask.sum())
    return sq / max(1, count)


@torch.no_grad()
def operating_point(model, coder, phi: torch.Tensor, items: ItemSet, chunk_items: int, device="cpu") -> tuple[float, float]:
    """(bits per value, MSE) of ``items`` coded by ``coder``: bits from the bytes of
    ``phi`` coded in strings of ``chunk_items`` latents, as the codec codes a chunk; MSE
    of the data decoded through the INR from exactly what the decoder gets."""
    step = max(1, chunk_items)
    nbytes = sum(len(coder.compress(phi[s : s + step])) for s in range(0, len(phi), step))
    mse = decoded_mse(model, coder.quantise(phi).cpu(), items, device=device)
    return 8 * nbytes / (len(items) * items.points_per_item), mse


def lambdas_from_slope(points: list[tuple[float, float]], floor_mse: float, levels: int) -> list[float]:
    """Up to ``levels`` rate-distortion trade-offs (bits per value per unit MSE) whose optima
    lie across the range that ``points`` (bits per value, MSE: the uniform quantisers'
    measured points) span, from the coarsest point's MSE up to ``TOP_GAP_DB`` below the
    unquantised latents' MSE ``floor_mse``.

    A coder trained on ``bits + lambda * MSE`` settles where the rate falls by lambda
    per unit of MSE gained: lambda is the slope ``-d bits / d MSE`` of the lower convex
    hull of ``points``, read at each target MSE (log-log interpolation between the
    hull's segments; ends held)."""
    if levels < 1:
        raise ValueError(f"coder.levels must be at least 1, got {levels}")
    hull: list[tuple[float, float]] = []
    for p in sorted(points):  # lower convex hull in (bits, MSE), MSE falling with bits
        if hull and p[1] >= hull[-1][1]:
            continue
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) <= 0:
            hull.pop()
        hull.append(p)
    if len(hull) < 2:
        raise ValueError(f"no rate-distortion slope: the probe points {points} do not trade bits for MSE")
    slopes = np.array([(b1 - b0) / (m0 - m1) for (b0, m0), (b1, m1) in zip(hull, hull[1:])])
    at = np.array([np.sqrt(m0 * m1) for (_, m0), (_, m1) in zip(hull, hull[1:])])  # falling
    coarsest = hull[0][1]
    finest = min(max(floor_mse * 10 ** (TOP_GAP_DB / 10), hull[-1][1]), coarsest)
    targets = np.geomspace(coarsest, finest, levels) if levels > 1 else np.array([np.sqrt(coarsest * finest)])
    log_lam = np.interp(np.log(targets), np.log(at[::-1]), np.log(slopes[::-1]))
    return sorted({float(v) for v in np.exp(log_lam)})  # fewer when the data offer no range


def _cross(o, a, b) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
