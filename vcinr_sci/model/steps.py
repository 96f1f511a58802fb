"""The steps of meta-training, free of Ray and of the coding stack: batches, outer steps,
evaluation.

Only torch, numpy, the config and the INR's own modules: a machine lent for training (a
GPU with no compressai, Zarr or Ray, ``examples/train_gpu.py``) runs the same steps as
the Ray workers of ``pipelines/meta_train.py``, which call them through
:mod:`vcinr_sci.model.training`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from vcinr_sci.config import Config
from vcinr_sci.metrics import psnr_from_mse
from vcinr_sci.model.meta import MetaSGD, masked_mse

if TYPE_CHECKING:
    from vcinr_sci.data.items import ItemSet


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def batch_rng(seed: int, step: int) -> np.random.Generator:
    """The global batch of ``step`` depends only on (seed, step): a resumed run sees
    exactly the batches the uninterrupted run would have seen, and any number of
    workers shares out the same items (the trailing 0 keeps the batches runs had
    before they were shared out)."""
    return np.random.default_rng([seed, step, 0])


def global_batch_size(items: ItemSet, cfg: Config) -> int:
    """Items in one outer step's batch, over all workers together."""
    return min(cfg.meta.batch_size, len(items))


def sample_batch(items: ItemSet, cfg: Config, step: int, rank: int = 0, world: int = 1, device="cpu"):
    """Worker ``rank``'s share (every ``world``-th item) of the global batch of ``step``;
    every worker uses the same random points of its items."""
    rng = batch_rng(cfg.train.seed, step)
    idx = rng.choice(len(items), size=global_batch_size(items, cfg), replace=False)
    points = None
    if cfg.meta.points_per_step and cfg.meta.points_per_step < items.points_per_item:
        points = np.sort(rng.choice(items.points_per_item, cfg.meta.points_per_step, replace=False))
    return tuple(t.to(device) for t in items.batch(idx[rank::world], points))


def outer_step(model, optimiser: torch.optim.Optimizer, batch, grad_clip: float | None, world: int = 1,
               global_items: int | None = None) -> float:
    """One MetaSGD outer step on this worker's ``batch`` (one of ``world`` shares of a
    global batch of ``global_items``); returns the batch's mean post-adaptation MSE."""
    coords, target, mask = batch
    loss, per_item = model(coords, target, mask)
    # DDP averages the workers' gradients. Weighting each worker's mean by its share of
    # the global batch makes that average the gradient of the global batch's mean, also
    # when the shares differ by an item (a mean of unequal means would not be).
    weight = world * target.shape[0] / global_items if global_items else 1.0
    optimiser.zero_grad(set_to_none=True)
    (loss * weight).backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimiser.step()
    return float(per_item.mean())


@dataclass
class Evaluation:
    psnr: float  # mean of per-item PSNR on the normalised [0, 1] scale
    mse: float
    items: int


def evaluate(
    model: MetaSGD, items: ItemSet, steps: int, max_items: int | None = None, batch_size: int = 32, device="cpu"
) -> Evaluation:
    """Adapt ``items`` (the first ``max_items``) with ``steps`` inner steps and score them."""
    n = len(items) if max_items is None else min(max_items, len(items))
    if n == 0:
        raise ValueError("no items to evaluate")
    psnrs, mses = [], []
    for start in range(0, n, batch_size):
        coords, target, mask = (t.to(device) for t in items.batch(np.arange(start, min(start + batch_size, n))))
        phi = model.adapt(coords, target, mask, steps)
        err = masked_mse(model.decode(coords, phi), target, mask).cpu().double()
        mses.append(err)
        psnrs.append(psnr_from_mse(err.clamp_min(1e-12)))
    return Evaluation(float(torch.cat(psnrs).mean()), float(torch.cat(mses).mean()), n)
