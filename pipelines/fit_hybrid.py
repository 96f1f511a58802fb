"""Fit a hybrid model (``model.kind: hybrid``): the linear model, an INR meta-learned on
what its leading EOFs leave, and one hybrid quality level per linear level.

    python -m pipelines.fit_hybrid --config configs/suite-era5-uk.yaml --set model.kind=hybrid

1. the linear model (:mod:`pipelines.fit_basis`, the config as ``kind: linear``): the
   mean, the EOFs and a coefficient coder per ``basis.target_psnr``;
2. the INR, meta-learned (:mod:`pipelines.meta_train`, Ray Train) on what the mean and
   the leading ``model.residual_components`` EOFs leave of every training item; its
   latents (:mod:`pipelines.build_latents`, Ray Data) and latent coders
   (:mod:`pipelines.train_coder`) on those residuals too;
3. per linear level, a hybrid level (:class:`~vcinr_sci.coding.hybrid.HybridCoder`): that
   level's coefficients alone, or the leading ones at its step plus the INR's latents
   under any coder of the INR's ladder; each chunk takes the cheapest at the level's
   rate-distortion slope (:meth:`~vcinr_sci.model.kinds.HybridKind.encoder`); a chunk
   without the INR is byte for byte the linear model's;
4. the artifact: the INR, the basis and the hybrid levels, each measured on the tuning
   items as the codec codes them (bits of chunks of ``compress.chunk_fields`` fields,
   PSNR, and the share of chunks that use the INR), the ladder recorded.

Every stage resumes or reuses what an earlier run of the same config made.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np

from pipelines import build_latents, fit_basis, meta_train, train_coder
from pipelines.cli_args import config_parser, load
from vcinr_sci.coding.coefficients import CoefficientCoder
from vcinr_sci.coding.hybrid import LINEAR_ONLY, HybridCoder
from vcinr_sci.config import Config
from vcinr_sci.data.holdout import tuning_split
from vcinr_sci.data.items import load_dataset
from vcinr_sci.errors import ArtifactError, ConfigError
from vcinr_sci.metrics import bits_per_value, psnr_from_mse
from vcinr_sci.model.artifact import ModelArtifact, load_artifact, save_artifact
from vcinr_sci.model.registry import default_inner_steps, prepare_model
from vcinr_sci.model.selection import select_artifact


def fit(cfg: Config) -> Path:
    """All four stages of ``cfg`` (``model.kind: hybrid``); returns the hybrid artifact."""
    if cfg.model.kind != "hybrid":
        raise ConfigError(f"pipelines.fit_hybrid fits model.kind 'hybrid', the config says {cfg.model.kind!r}")
    print("[hybrid 1/4] the linear model", flush=True)
    linear = linear_model(cfg)
    print(f"[hybrid 2/4] meta-training the INR on what the mean and {cfg.model.residual_components} EOFs leave "
          f"({cfg.meta.steps} outer steps)", flush=True)
    inr = meta_train.fit(cfg, linear).artifact
    print(f"[hybrid 3/4] the INR's latents ({cfg.latents.inner_steps} inner steps) and latent coders", flush=True)
    build_latents.build(cfg, model=str(inr))
    coded = train_coder.fit(cfg, model=str(inr))
    print("[hybrid 4/4] hybrid levels", flush=True)
    return write_levels(cfg, load_artifact(linear), load_artifact(coded))


def linear_model(cfg: Config) -> Path:
    """The linear model of the hybrid ``cfg``: the one fitted before from the same data
    and basis sections (the same model), else fitted now by :mod:`pipelines.fit_basis`."""
    linear_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, kind="linear"))
    try:
        linear = select_artifact(linear_cfg, with_coders=True, require_coders=True)
        print(f"linear model fitted before: {linear}", flush=True)
        return linear
    except ArtifactError:
        return fit_basis.fit(linear_cfg)


def hybrid_levels(linear: ModelArtifact, latent_coders: list, head: int, typical_bits: list[float] | None = None,
                  typical_error: list[float] | None = None) -> dict[str, HybridCoder]:
    """A hybrid level per level of ``linear``'s ladder: its coefficient coder, the
    leading ``head`` components' coder at the same step, and ``latent_coders`` (with
    their typical bits and squared error per item)."""
    out = {}
    for level in linear.ladder:
        full = linear.coder(level)
        assert isinstance(full, CoefficientCoder)
        part = CoefficientCoder(full.scales[:head], full.rho[:head], full.step, full.predict)
        out[level] = HybridCoder(full, part, latent_coders, typical_bits, typical_error)
    return out


def write_levels(cfg: Config, linear: ModelArtifact, coded: ModelArtifact) -> Path:
    """The hybrid artifact: ``coded`` (the INR with its basis and latent coders) with
    hybrid levels in place of its latent coders, scored on the tuning items."""
    latents = [coded.coder(q) for q in coded.ladder]
    # bits and squared error per item of each latent coder on the tuning items (per value x points)
    points = [coded.metrics.get("ladder", {}).get("points", {}).get(q, {}) for q in coded.ladder]
    per_item = math.prod(cfg.data.patch_shape) if cfg.data.patch_shape else coded.grid.size
    bits = [p.get("bits_per_value", 0.0) * per_item for p in points]
    error = [10 ** (-p["psnr"] / 10) * per_item if "psnr" in p else 0.0 for p in points]
    artifact = dataclasses.replace(coded, extra=dict(coded.extra), metrics=dict(coded.metrics))
    artifact.extra.pop("coders", None)
    artifact.extra_tensors = {k: v for k, v in coded.extra_tensors.items() if not k.startswith("coders.")}
    for level, coder in hybrid_levels(linear, latents, cfg.model.residual_components, bits, error).items():
        artifact.add_coder(level, coder)
    artifact.metrics |= {"hybrid": {"linear_model": linear.hash, "latent_levels": coded.ladder,
                                    "linear_levels": linear.metrics.get("levels", {})}}
    scored = score_levels(cfg, artifact)
    artifact.metrics["hybrid"]["levels"] = scored
    ladder = artifact.set_ladder({k: (v["val_bits_per_value"], v["val_psnr"]) for k, v in scored.items()},
                                 f"tuning items, chunks of {cfg.compress.chunk_fields} fields")
    path = save_artifact(artifact, cfg.train.artifact_dir)
    print(f"{'level':<6} {'bits/value':>10} {'PSNR':>7} {'linear alone':>20} {'chunks with INR':>16}")
    for level, s in scored.items():
        lin = linear.metrics.get("levels", {}).get(level, {})
        alone = f"{lin.get('val_bits_per_value', float('nan')):.4f} {lin.get('val_psnr', float('nan')):.2f} dB"
        print(f"{level:<6} {s['val_bits_per_value']:>10.4f} {s['val_psnr']:>6.2f} {alone:>20} "
              f"{s['inr_chunk_share']:>15.0%}")
    print(f"ladder {ladder}; model artifact {artifact.hash[:16]} -> {path}", flush=True)
    return path


def score_levels(cfg: Config, artifact: ModelArtifact) -> dict[str, dict]:
    """Per level, on the tuning items in chunks of ``compress.chunk_fields`` fields as
    the codec codes them: bits per value of the latent strings, PSNR (normalised range)
    and the share of chunks coded with the INR."""
    model = prepare_model(artifact)
    data = load_dataset(cfg.data, artifact.normaliser)
    items = data.items("val", tuning_split(data.split, data.source).tune)
    values = items.values(np.arange(len(items))).astype(np.float32)
    valid = np.isfinite(values)
    values = np.where(valid, values, 0.0).astype(np.float32)
    chunk = max(1, cfg.compress.chunk_fields) * items.num_patches
    steps = default_inner_steps(artifact)
    out = {}
    for level in artifact.quality_levels:
        nbytes, se, inr = 0, 0.0, 0
        starts = range(0, len(values), chunk)
        for start in starts:
            idx = np.arange(start, min(start + chunk, len(values)))
            # the items have the mean field out already, where the model has one
            string, decoded = model.round_trip(idx % items.num_patches, values[idx], valid[idx], steps, level)
            nbytes, inr = nbytes + len(string), inr + (HybridCoder.mode(string) != LINEAR_ONLY)
            se += float(np.square(np.where(valid[idx], decoded - values[idx], 0.0)).sum())
        out[level] = {"val_bits_per_value": bits_per_value(nbytes, values.size),
                      "val_psnr": psnr_from_mse(se / max(1, int(valid.sum()))),
                      "inr_chunk_share": inr / max(1, len(starts))}
    return out


def main(argv: list[str] | None = None) -> int:
    args = config_parser("vcinr fit-hybrid", __doc__, "YAML run config with model.kind: hybrid",
                         "model.residual_components=8").parse_args(argv)
    fit(load(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
