"""The model artifact: everything a later stage needs to use a trained INR.

An artifact is a folder holding ``weights.safetensors`` (all tensors, no pickle) and
``artifact.json`` (the run config, grid, normalisation, data split, metrics and any
extra component specs). Its content hash (SHA-256 over both files' canonical content)
names it; loading recomputes the hash and refuses a mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from vcinr_sci.config import Config
from vcinr_sci.data import Normaliser
from vcinr_sci.grids import Grid, grid_from_dict
from vcinr_sci.inr import build_inr
from vcinr_sci.meta import MetaSGD

FORMAT_VERSION = 1
MANIFEST = "artifact.json"
WEIGHTS = "weights.safetensors"
MODEL_PATH_ENV = "VCINR_MODEL_PATH"
HASH_PREFIX_LEN = 16


class ArtifactError(RuntimeError):
    """A model artifact is missing, corrupt, or not the one asked for."""


@dataclass
class ModelArtifact:
    """A loaded artifact. ``extra`` holds component specs added by later stages
    (e.g. latent coders), with their tensors in ``extra_tensors``."""

    model: MetaSGD
    config: Config
    grid: Grid
    normaliser: Normaliser
    split: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    extra_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    hash: str = ""
    path: Path | None = None

    @property
    def quality_levels(self) -> list[str]:
        """Labels of the latent coders this artifact holds (one per operating point)."""
        return list(self.extra.get("coders", {}))

    def add_coder(self, level: str, coder) -> None:
        """Store ``coder`` (a LatentCoder or UniformQuantiser) under quality ``level``.
        The artifact's hash changes when it is saved again."""
        from vcinr_sci.coding import coder_spec, coder_state

        if not level or "." in level:
            raise ValueError(f"quality level must be a non-empty label without '.', got {level!r}")
        self.extra.setdefault("coders", {})[level] = coder_spec(coder)
        prefix = f"coders.{level}."
        self.extra_tensors = {k: v for k, v in self.extra_tensors.items() if not k.startswith(prefix)}
        self.extra_tensors.update({prefix + k: v for k, v in coder_state(coder).items()})

    def coder(self, level: str):
        """The latent coder of quality ``level`` (loaded fresh, in eval mode)."""
        from vcinr_sci.coding import load_coder

        specs = self.extra.get("coders", {})
        if level not in specs:
            raise KeyError(f"model {self.hash[:16]} has no quality level {level!r}; it has {sorted(specs)}")
        prefix = f"coders.{level}."
        return load_coder(specs[level], {k[len(prefix):]: v for k, v in self.extra_tensors.items() if k.startswith(prefix)})


def build_model(config: Config, grid: Grid) -> MetaSGD:
    return MetaSGD(build_inr(grid.coord_dim, config.model), config.meta)


def _content_hash(manifest: dict[str, Any], weights: bytes) -> str:
    body = {k: v for k, v in manifest.items() if k != "hash"}
    h = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    h.update(weights)
    return h.hexdigest()


def save_artifact(artifact: ModelArtifact, root: str | os.PathLike) -> Path:
    """Write ``artifact`` under ``root/<hash prefix>``; returns that folder.

    Written to a temporary folder and renamed, so a crash leaves no half artifact.
    """
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in artifact.model.state_dict().items()}
    tensors.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in artifact.extra_tensors.items()})
    weights = st_save(tensors)
    manifest = {
        "format_version": FORMAT_VERSION,
        "config": artifact.config.to_dict(),
        "grid": artifact.grid.to_dict(),
        "normaliser": artifact.normaliser.to_dict(),
        "split": artifact.split,
        "metrics": artifact.metrics,
        "extra": artifact.extra,
    }
    digest = _content_hash(manifest, weights)
    manifest["hash"] = digest
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / digest[:HASH_PREFIX_LEN]
    if not final.exists():
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
        (tmp / WEIGHTS).write_bytes(weights)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        try:
            tmp.rename(final)
        except OSError:  # another writer got there first with the same content
            shutil.rmtree(tmp, ignore_errors=True)
    artifact.hash, artifact.path = digest, final
    return final


def load_artifact(path: str | os.PathLike, expected_hash: str | None = None) -> ModelArtifact:
    """Load and verify an artifact folder; ``expected_hash`` may be a prefix."""
    path = Path(path)
    if not (path / MANIFEST).is_file() or not (path / WEIGHTS).is_file():
        raise ArtifactError(f"no model artifact at {path} (needs {MANIFEST} and {WEIGHTS})")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path / MANIFEST} is not valid JSON: {e}") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: artifact format {manifest.get('format_version')} is not supported (expected {FORMAT_VERSION})"
        )
    weights = (path / WEIGHTS).read_bytes()
    digest = _content_hash(manifest, weights)
    if digest != manifest.get("hash"):
        raise ArtifactError(f"{path}: content hash {digest[:16]} does not match its manifest; the files are corrupt")
    if expected_hash and not digest.startswith(expected_hash):
        raise ArtifactError(f"{path} holds model {digest[:16]}, not the requested {expected_hash[:16]}")
    config = Config.from_dict(manifest["config"])
    grid = grid_from_dict(manifest["grid"])
    tensors = st_load(weights)
    model = build_model(config, grid)
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    model.eval()
    return ModelArtifact(
        model=model,
        config=config,
        grid=grid,
        normaliser=Normaliser.from_dict(manifest["normaliser"]),
        split=manifest["split"],
        metrics=manifest.get("metrics", {}),
        extra=manifest.get("extra", {}),
        extra_tensors={k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")},
        hash=digest,
        path=path,
    )


def default_cache_dir() -> Path:
    return Path(os.environ.get("VCINR_CACHE_DIR", Path.home() / ".cache" / "vcinr"))


def find_artifact(model_hash: str, hints: list[str | os.PathLike] = ()) -> Path:
    """Where the artifact of ``model_hash`` lies: the hinted paths, then each folder of
    ``$VCINR_MODEL_PATH`` (os.pathsep-separated), then the cache folder. A candidate
    whose hash differs is skipped; if none matches, an :class:`ArtifactError` lists
    where it looked."""
    if len(model_hash) < 8:
        raise ArtifactError("a model hash (or prefix) needs at least 8 hex digits")
    roots = [Path(h) for h in hints if h]
    roots += [Path(p) for p in os.environ.get(MODEL_PATH_ENV, "").split(os.pathsep) if p]
    roots.append(default_cache_dir())
    for root in roots:
        for cand in [root, *sorted(root.glob(model_hash[:HASH_PREFIX_LEN] + "*"))] if root.is_dir() else []:
            manifest = cand / MANIFEST
            if manifest.is_file():
                try:
                    if json.loads(manifest.read_text()).get("hash", "").startswith(model_hash):
                        return cand
                except json.JSONDecodeError:
                    continue
    raise ArtifactError(
        f"model {model_hash} not found; looked in {[str(r) for r in roots]} "
        f"(set {MODEL_PATH_ENV} to the folder holding it)"
    )
