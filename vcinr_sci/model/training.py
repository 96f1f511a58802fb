"""One meta-training run's inner workings, free of Ray: batches, steps, evaluation
(:mod:`vcinr_sci.model.steps`, re-exported here), the data an INR learns, and small
models trained in this process.

``pipelines/meta_train.py`` calls these inside Ray Train workers; tests and benchmarks
call them directly.
"""

from __future__ import annotations

import numpy as np
import torch

from vcinr_sci.coding.quantiser import UniformQuantiser
from vcinr_sci.config import Config
from vcinr_sci.data.items import Dataset, ItemSet, load_dataset
from vcinr_sci.errors import ConfigError
from vcinr_sci.model.artifact import ModelArtifact, build_model
from vcinr_sci.model.inr import scaled_targets
from vcinr_sci.model.meta import MetaSGD
from vcinr_sci.model.registry import default_inner_steps
from vcinr_sci.model.steps import Evaluation as Evaluation
from vcinr_sci.model.steps import batch_rng as batch_rng
from vcinr_sci.model.steps import evaluate as evaluate
from vcinr_sci.model.steps import global_batch_size as global_batch_size
from vcinr_sci.model.steps import outer_step, sample_batch, seed_everything


def training_data(cfg: Config, linear: ModelArtifact | None = None) -> Dataset:
    """The data ``cfg``'s INR learns: the variable itself, or for a hybrid what the mean
    and the leading ``model.residual_components`` EOFs of its linear model (the artifact
    ``linear``) leave of it, in that model's normalisation."""
    if cfg.model.kind != "hybrid":
        return load_dataset(cfg.data)
    if linear is None or linear.basis is None or linear.model is not None:
        raise ConfigError("model.kind hybrid: its INR learns what a linear model leaves; run pipelines.fit_hybrid "
                          "(it fits the linear model first), or give the linear model's artifact")
    return load_dataset(cfg.data, linear.normaliser, linear.basis.leading(cfg.model.residual_components).project)


def set_output_scale(model: MetaSGD, items: ItemSet, cfg: Config, max_items: int = 64) -> float:
    """Measure ``cfg``'s INR's targets in units of their spread, where
    :func:`~vcinr_sci.model.inr.scaled_targets` asks: the root mean square of the valid
    values of up to ``max_items`` training items, evenly spaced (the same on every
    worker), becomes the INR's ``output_scale``. Returns the scale (1 where not asked)."""
    if not scaled_targets(cfg) or len(items) == 0:
        return 1.0
    picked = np.unique(np.linspace(0, len(items) - 1, max_items).astype(np.int64))
    total, count = 0.0, 0
    for start in range(0, len(picked), 8):  # a few items at a time: items can be large grids
        v = items.values(picked[start : start + 8])
        v = v[np.isfinite(v)].astype(np.float64)
        total, count = total + float(np.sum(v * v)), count + v.size
    scale = float(np.sqrt(total / count)) if count else 0.0
    if not scale > 0:  # nothing valid, or the linear model leaves nothing: keep the raw units
        return 1.0
    model.inr.output_scale.fill_(scale)
    return scale


def start_in_process(cfg: Config, data: Dataset, items: ItemSet) -> tuple[MetaSGD, torch.optim.Adam]:
    """The seeded start of an in-process run of ``cfg`` on ``data``: the new network, its
    output scale set on the training ``items``, and its optimiser."""
    seed_everything(cfg.train.seed)
    model = build_model(cfg, data.grid)
    if model is None:
        raise ConfigError("a linear model has no network to train: use pipelines.fit_basis")
    set_output_scale(model, items, cfg)
    return model, torch.optim.Adam(model.parameters(), lr=cfg.meta.outer_lr)


def train_in_process(cfg: Config, steps: int, linear: ModelArtifact | None = None) -> tuple[ModelArtifact, ItemSet]:
    """``steps`` outer steps of ``cfg``'s INR in this process, with no Ray and no
    checkpoints (small models for tests and benchmarks): the unsaved artifact, in eval
    mode, and its training items (for a hybrid, on what ``linear`` leaves; the artifact
    holds its basis)."""
    data = training_data(cfg, linear)
    items = data.items("train")
    model, optimiser = start_in_process(cfg, data, items)
    for step in range(steps):
        outer_step(model, optimiser, sample_batch(items, cfg, step), cfg.meta.grad_clip)
    model.eval()
    artifact = ModelArtifact(model, cfg, data.grid, data.normaliser, data.split.to_dict())
    if linear is not None and linear.basis is not None:
        artifact.set_basis(linear.basis)
    return artifact, items


def add_uniform_coder(artifact: ModelArtifact, items: ItemSet, bits: int, max_items: int = 48) -> torch.Tensor:
    """Give ``artifact`` quality level ``u{bits}``: a uniform latent quantiser fitted on
    the latents of the first ``max_items`` of ``items``; returns those latents."""
    coords, values, mask = items.batch(np.arange(min(max_items, len(items))))
    phi = artifact.model.adapt(coords, values, mask, default_inner_steps(artifact))
    quantiser = UniformQuantiser(artifact.model.latent_dim, bits=bits)
    quantiser.fit(phi)
    artifact.add_coder(f"u{bits}", quantiser)
    return phi
