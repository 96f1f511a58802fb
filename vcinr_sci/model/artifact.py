"""The model artifact: everything a later stage needs to use a trained model.

An artifact is a folder holding ``weights.safetensors`` (all tensors, no pickle) and
``artifact.json`` (the run config, grid, normalisation, data split, metrics and any
extra component specs). Its model is a meta-learned INR (``model.kind: inr``), a
linear basis (``model.kind: linear``: no network, the basis among the extra tensors) or
both (``model.kind: hybrid``).
Its content hash (SHA-256 over both files' canonical content) names it; loading recomputes the hash and refuses a mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from vcinr_sci.atomic import atomic_path
from vcinr_sci.coding.coder import coder_spec, coder_state, load_coder
from vcinr_sci.config import Config
from vcinr_sci.data.grids import Grid, grid_from_dict
from vcinr_sci.data.normalise import Normaliser
from vcinr_sci.errors import ArtifactError
from vcinr_sci.model.basis import LinearBasis
from vcinr_sci.model.inr import build_inr, centred_targets
from vcinr_sci.model.meta import MetaSGD

FORMAT_VERSION = 1
MANIFEST = "artifact.json"
WEIGHTS = "weights.safetensors"
# the normaliser's mean field (data.subtract_mean_field), beside the weights
MEAN_FIELD = "normaliser.mean_field"
MODEL_PATH_ENV = "VCINR_MODEL_PATH"
HASH_PREFIX_LEN = 16
# Largest artifact file copied from a store or a remote place: a claimed size is checked
# before anything is read or allocated (models are a few MB; the paper's sizes tens).
MAX_ARTIFACT_BYTES = 2**30
_FULL_HASH = re.compile(r"[0-9a-f]{64}")
_HASH_PREFIX = re.compile(r"[0-9a-f]{8,64}")


def check_model_hash(value: object, prefix: bool = False) -> str:
    """``value`` if it is a full model hash (64 lowercase hex characters; with
    ``prefix``, 8 to 64), else :class:`ArtifactError`.

    Hashes name folders (the cache, artifact roots, models stored inside a store), and
    a store is untrusted input: only this shape may ever reach a path."""
    pattern = _HASH_PREFIX if prefix else _FULL_HASH
    if not isinstance(value, str) or not pattern.fullmatch(value):
        what = "a model hash prefix (8-64 lowercase hex)" if prefix else "a model hash (64 lowercase hex)"
        raise ArtifactError(f"{str(value)[:80]!r} is not {what}")
    return value


def model_dir_name(model_hash: str) -> str:
    """The folder name of the model ``model_hash`` (a checked full hash): its prefix."""
    return check_model_hash(model_hash)[:HASH_PREFIX_LEN]


@dataclass
class ModelArtifact:
    """A loaded artifact. ``extra`` holds component specs added by later stages
    (e.g. latent coders, a linear basis), with their tensors in ``extra_tensors``.
    ``model`` is None for a linear model."""

    model: MetaSGD | None
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
        if not level or "." in level:
            raise ValueError(f"quality level must be a non-empty label without '.', got {level!r}")
        self.extra.setdefault("coders", {})[level] = coder_spec(coder)
        prefix = f"coders.{level}."
        self.extra_tensors = {k: v for k, v in self.extra_tensors.items() if not k.startswith(prefix)}
        self.extra_tensors.update({prefix + k: v for k, v in coder_state(coder).items()})

    @property
    def ladder(self) -> list[str]:
        """The quality levels worth using, from fewest bits up: each spends more bits
        than the one before for more PSNR, as measured on held-out items when the
        artifact was made (``metrics["ladder"]``). An artifact from before ladders were
        recorded: its ``q`` levels in order."""
        recorded = self.metrics.get("ladder")
        if recorded:
            return list(recorded["levels"])
        return sorted((q for q in self.quality_levels if re.fullmatch(r"q\d+", q)), key=lambda q: int(q[1:]))

    def set_ladder(self, points: dict[str, tuple[float, float]], measured_on: str) -> list[str]:
        """Record ``points`` (level -> bits per value, PSNR) measured on ``measured_on``
        and the ladder they give (:func:`pareto_ladder`); returns the ladder."""
        ladder, dominated = pareto_ladder(points)
        self.metrics = dict(self.metrics) | {"ladder": {
            "levels": ladder,
            "measured_on": measured_on,
            "points": {k: {"bits_per_value": b, "psnr": p} | ({"dominated_by": dominated[k]} if k in dominated else {})
                       for k, (b, p) in points.items()},
        }}
        return ladder

    def level_target(self, level: str) -> float | None:
        """The PSNR (dB on the normalised range) quality ``level`` aims at, where its fit
        recorded one (a linear level's, in ``metrics["levels"]``; a hybrid level is one
        of its linear model's, recorded under ``metrics["hybrid"]["linear_levels"]``),
        else None."""
        hybrid = self.metrics.get("hybrid")
        levels = hybrid.get("linear_levels") if isinstance(hybrid, dict) else self.metrics.get("levels")
        entry = levels.get(level) if isinstance(levels, dict) else None
        target = entry.get("target_psnr") if isinstance(entry, dict) else None
        if target is None:
            return None
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0.0 < target < 400.0:
            raise ArtifactError(f"model {self.hash[:16]}: level {level!r} records a target PSNR of {target!r}, "
                                "not a number of dB in (0, 400)")
        return float(target)

    @property
    def basis(self) -> LinearBasis | None:
        """The linear model's basis (None for an INR)."""
        if "basis" not in self.extra:
            return None
        return LinearBasis.from_state({k[len("basis."):]: v.numpy() for k, v in self.extra_tensors.items()
                                       if k.startswith("basis.")})

    def linear_part(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """What a hybrid model's INR adds to (items ``(B, P)`` -> the mean and leading
        ``model.residual_components`` EOFs' reconstruction of them), for the items its
        INR trains and is scored on; None for a model whose INR codes the data itself."""
        basis = self.basis
        if basis is None or self.model is None:
            return None
        return basis.leading(self.config.model.residual_components).project

    def set_basis(self, basis: LinearBasis) -> None:
        """Store ``basis`` (the artifact's hash changes when it is saved again)."""
        self.extra["basis"] = {"components": basis.num_components, "points": basis.points}
        self.extra_tensors = {k: v for k, v in self.extra_tensors.items() if not k.startswith("basis.")}
        self.extra_tensors.update({f"basis.{k}": torch.from_numpy(v) for k, v in basis.state().items()})

    def coder(self, level: str):
        """The latent coder of quality ``level`` (loaded fresh, in eval mode)."""
        specs = self.extra.get("coders", {})
        if level not in specs:
            raise KeyError(f"model {self.hash[:16]} has no quality level {level!r}; it has {sorted(specs)}")
        prefix = f"coders.{level}."
        return load_coder(specs[level], {k[len(prefix):]: v for k, v in self.extra_tensors.items() if k.startswith(prefix)})


def pareto_ladder(points: dict[str, tuple[float, float]]) -> tuple[list[str], dict[str, str]]:
    """The levels of ``points`` (level -> bits per value, PSNR) that no other level
    dominates, from fewest bits up, and each dominated level with one that dominates it.

    A level is dominated by another that spends no more bits for at least its PSNR, and
    is strictly better in one of the two: a higher level of the ladder then never spends
    more bits for less (or the same) PSNR. Among identical points the first is kept."""
    names = list(points)
    dominated: dict[str, str] = {}
    for i, a in enumerate(names):
        (bits_a, psnr_a) = points[a]
        for j, b in enumerate(names):
            bits_b, psnr_b = points[b]
            better = bits_b <= bits_a and psnr_b >= psnr_a and (bits_b < bits_a or psnr_b > psnr_a)
            if better or (j < i and (bits_b, psnr_b) == (bits_a, psnr_a)):
                dominated[a] = b
                break
    ladder = sorted((n for n in names if n not in dominated), key=lambda n: points[n])
    return ladder, dominated


def build_model(config: Config, grid: Grid) -> MetaSGD | None:
    """The network of ``config`` (None for a linear model, which has none)."""
    if config.model.kind == "linear":
        return None
    return MetaSGD(build_inr(grid.coord_dim, config.model, centred=centred_targets(config), grid=grid), config.meta)


def _content_hash(manifest: dict[str, Any], weights: bytes) -> str:
    body = {k: v for k, v in manifest.items() if k != "hash"}
    h = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    h.update(weights)
    return h.hexdigest()


def save_artifact(artifact: ModelArtifact, root: str | os.PathLike) -> Path:
    """Write ``artifact`` under ``root/<hash prefix>``; returns that folder.

    Written to a temporary folder and renamed, so a crash leaves no half artifact.
    """
    state = artifact.model.state_dict() if artifact.model is not None else {}
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in state.items()}
    tensors.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in artifact.extra_tensors.items()})
    if artifact.normaliser.mean_field is not None:
        tensors[MEAN_FIELD] = torch.from_numpy(np.ascontiguousarray(artifact.normaliser.mean_field, np.float32))
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
    final = root / model_dir_name(digest)
    if not final.exists():
        try:
            with atomic_path(final, overwrite=False) as tmp:
                tmp.mkdir()
                (tmp / WEIGHTS).write_bytes(weights)
                (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        except OSError:  # another writer got there first with the same content
            pass
    artifact.hash, artifact.path = digest, final
    return final


def verify_artifact_files(manifest_text: bytes | str, weights: bytes, expected_hash: str | None = None) -> dict[str, Any]:
    """The parsed manifest of an artifact's two files, after checking its format and
    content hash (and that it is ``expected_hash``, a full hash or prefix); else
    :class:`ArtifactError`."""
    try:
        manifest = json.loads(manifest_text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{MANIFEST} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        found = manifest.get("format_version") if isinstance(manifest, dict) else None
        found = found if isinstance(found, int) else "(not a number)"  # never quote a file's text
        raise ArtifactError(f"artifact format {found} is not supported (expected {FORMAT_VERSION})")
    digest = _content_hash(manifest, weights)
    if digest != manifest.get("hash"):
        raise ArtifactError(f"content hash {digest[:16]} does not match its manifest; the files are corrupt")
    if expected_hash and not digest.startswith(expected_hash):
        raise ArtifactError(f"holds model {digest}, not the requested {expected_hash}")  # full: prefixes can agree
    return manifest


def load_artifact(path: str | os.PathLike, expected_hash: str | None = None) -> ModelArtifact:
    """Load and verify an artifact folder; ``expected_hash`` may be a prefix."""
    path = Path(path)
    if not (path / MANIFEST).is_file() or not (path / WEIGHTS).is_file():
        raise ArtifactError(f"no model artifact at {path} (needs {MANIFEST} and {WEIGHTS})")
    try:
        weights = (path / WEIGHTS).read_bytes()
        manifest = verify_artifact_files((path / MANIFEST).read_bytes(), weights, expected_hash)
    except OSError as e:
        raise ArtifactError(f"{path}: cannot be read ({type(e).__name__}: {e.strerror})") from None
    except ArtifactError as e:
        raise ArtifactError(f"{path}: {e}") from None
    try:
        return _parse_artifact(manifest, weights, path)
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as e:
        # Verified files a reader cannot parse (a newer or faulty writer's): skipped like a bad copy.
        raise ArtifactError(f"{path}: verified, but cannot be loaded ({type(e).__name__})") from None


def _parse_artifact(manifest: dict[str, Any], weights: bytes, path: Path) -> ModelArtifact:
    config = Config.from_dict(manifest["config"])
    grid = grid_from_dict(manifest["grid"])
    tensors = st_load(weights)
    model = build_model(config, grid)
    if model is not None:
        model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
        model.eval()
    if config.model.kind != "inr" and "basis" not in manifest.get("extra", {}):
        raise ArtifactError(f"{path}: a {config.model.kind} model artifact without its basis")
    return ModelArtifact(
        model=model,
        config=config,
        grid=grid,
        normaliser=_normaliser(manifest, tensors, grid, path),
        split=manifest["split"],
        metrics=manifest.get("metrics", {}),
        extra=manifest.get("extra", {}),
        extra_tensors={k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")},
        hash=manifest["hash"],
        path=path,
    )


def _normaliser(manifest: dict[str, Any], tensors: dict[str, torch.Tensor], grid: Grid, path: Path) -> Normaliser:
    """The artifact's normaliser, with its mean field when its config subtracts one."""
    wanted = bool(manifest["config"].get("data", {}).get("subtract_mean_field"))
    mean = tensors.get(MEAN_FIELD)
    if wanted != (mean is not None) or (mean is not None and tuple(mean.shape) != tuple(grid.shape)):
        raise ArtifactError(f"{path}: the mean field does not match the config and grid (data.subtract_mean_field)")
    try:
        return Normaliser.from_dict(manifest["normaliser"], None if mean is None else mean.numpy())
    except ValueError as e:
        raise ArtifactError(f"{path}: {e}") from None


def install_artifact(manifest_text: bytes, weights: bytes, model_hash: str, cache: str | os.PathLike | None = None) -> Path:
    """Put the artifact files of ``model_hash`` (from a store or a remote copy) into the
    cache folder, verified: nothing unverified ever enters the cache, so a bad copy
    cannot block a good one later. Returns the artifact folder; a bad copy raises
    :class:`ArtifactError` and leaves the cache as it was. A folder already there is
    kept if it verifies, else set aside (renamed ``.corrupt-*``) and replaced."""
    verify_artifact_files(manifest_text, weights, check_model_hash(model_hash))
    cache = Path(cache or default_cache_dir())
    target = cache / model_dir_name(model_hash)
    if is_verified_artifact(target, model_hash):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    # A bad copy (written before copies were verified) is set aside. Checked again here:
    # another process decoding the same store may have installed a good copy since the
    # check above, and setting that aside left its users, for a moment, no model at all.
    if target.exists() and not is_verified_artifact(target, model_hash):
        try:
            target.rename(cache / f".corrupt-{target.name}-{uuid.uuid4().hex[:8]}")
        except FileNotFoundError:  # another process set it aside first
            pass
    try:
        with atomic_path(target, overwrite=False) as tmp:
            tmp.mkdir()
            (tmp / WEIGHTS).write_bytes(weights)
            (tmp / MANIFEST).write_bytes(manifest_text)
    except OSError:  # another process got there first (its copy is checked on load)
        pass
    return target


def is_verified_artifact(folder: Path, model_hash: str) -> bool:
    """Whether ``folder`` holds the artifact of ``model_hash`` with matching content."""
    try:
        verify_artifact_files((folder / MANIFEST).read_bytes(), (folder / WEIGHTS).read_bytes(), model_hash)
        return True
    except (OSError, ArtifactError):
        return False


def default_cache_dir() -> Path:
    return Path(os.environ.get("VCINR_CACHE_DIR", Path.home() / ".cache" / "vcinr"))


def search_roots(hints: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Where models are looked for, in order: ``hints``, each folder of
    ``$VCINR_MODEL_PATH`` (os.pathsep-separated), the cache folder."""
    roots = [Path(h) for h in hints if h]
    roots += [Path(p) for p in os.environ.get(MODEL_PATH_ENV, "").split(os.pathsep) if p]
    roots.append(default_cache_dir())
    return roots


def artifact_candidates(model_hash: str, root: Path) -> list[Path]:
    """Folders in ``root`` (an artifact, or a folder of artifacts named by hash prefix)
    whose manifest claims ``model_hash`` (a full hash or a prefix of >= 8); unverified."""
    check_model_hash(model_hash, prefix=True)
    if not root.is_dir():
        return []
    found = []
    for cand in [root, *sorted(root.glob(model_hash[:HASH_PREFIX_LEN] + "*"))]:
        claimed = claimed_hash(cand)
        if claimed is not None and claimed.startswith(model_hash):
            found.append(cand)
    return found


def claimed_hash(folder: Path) -> str | None:
    """The full model hash ``folder``'s manifest claims, unverified; None when it has no
    readable manifest or claims no well-formed hash (so the claim is safe to print)."""
    try:
        claimed = json.loads((folder / MANIFEST).read_bytes()).get("hash")
        return check_model_hash(claimed)
    except (OSError, ValueError, AttributeError, ArtifactError):
        return None


def find_artifact(model_hash: str, hints: Sequence[str | os.PathLike] = ()) -> Path:
    """Where the artifact of ``model_hash`` lies: the first candidate (see
    :func:`artifact_candidates`) in :func:`search_roots`. If none claims it, an
    :class:`ArtifactError` lists where it looked."""
    model_hash = check_model_hash(str(model_hash).lower(), prefix=True)
    roots = search_roots(hints)
    for root in roots:
        for cand in artifact_candidates(model_hash, root):
            return cand
    raise ArtifactError(
        f"model {model_hash} not found; looked in {[str(r) for r in roots]} "
        f"(set {MODEL_PATH_ENV} to the folder holding it)"
    )
