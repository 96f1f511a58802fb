"""Model artifacts ready for coding: a per-process cache keyed by content hash, lookup by
hash, the device they run on.

A model is loaded once per process (:func:`get_model`) and kept, moved to the device
(CUDA when present, else the CPU; ``$VCINR_DEVICE`` overrides), for every later chunk.
Lookup of a hash (:func:`resolve_model_path`): the hints given (a codec config's
``model_path``: an artifact folder, a ``file://`` URI, any fsspec URI, or a model stored
inside a local Zarr store), the folders added with :func:`add_model_search_path`,
``$VCINR_MODEL_PATH``, and the cache folder (``$VCINR_CACHE_DIR``). Loading recomputes the
content hash: a candidate whose hash differs is skipped, with a warning, for the next one
(a tampered copy early in the order does not hide a good one later), and named in the
error when none verifies. Copies from a store or a remote place are verified before they
enter the cache folder, so the cache holds verified copies only.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import re
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from vcinr_sci.artifact import (
    MANIFEST,
    MAX_ARTIFACT_BYTES,
    MODEL_PATH_ENV,
    WEIGHTS,
    ArtifactError,
    ModelArtifact,
    artifact_candidates,
    check_model_hash,
    default_cache_dir,
    install_artifact,
    is_verified_artifact,
    load_artifact,
    model_dir_name,
    search_roots,
)
from vcinr_sci.grids import Grid, Patcher

DEVICE_ENV = "VCINR_DEVICE"
BATCH_POINTS_ENV = "VCINR_BATCH_POINTS"


class CodecError(ValueError):
    """Input the codec cannot encode or decode: dtype, chunk shape, inf values, config,
    an unknown quality level."""


def default_device() -> torch.device:
    """``$VCINR_DEVICE`` if set, else CUDA when present, else the CPU."""
    name = os.environ.get(DEVICE_ENV) or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _batch_points() -> int:
    return max(1, int(os.environ.get(BATCH_POINTS_ENV, 2**16)))


_PRECISION_LOCK = threading.Lock()
_PRECISION_USERS = 0
_PRECISION_SAVED: str | None = None


@contextlib.contextmanager
def full_float32() -> Iterator[None]:
    """Run CUDA float32 matmuls in IEEE float32 (no TF32) inside the block, restoring the
    caller's setting afterwards.

    Decoding must not depend on a process-wide speed setting: TF32 changes the INR's
    output by ~1e-3 of the normalisation range, far beyond the error-bounded mode's
    margin (:mod:`vcinr_sci.bounded`). torch 2.13 sets this with
    ``torch.backends.cuda.matmul.fp32_precision`` (``"ieee"``); the legacy
    ``allow_tf32`` / ``set_float32_matmul_precision`` flags map onto it, and reading
    them after the new one was set raises, so only the new one is touched. The INR
    has no convolutions, so cuDNN's flag does not apply. Chunks decode in several
    threads at once: the first to enter saves and sets, the last to leave restores.
    On the CPU the setting has no effect.
    """
    global _PRECISION_USERS, _PRECISION_SAVED
    matmul = torch.backends.cuda.matmul
    with _PRECISION_LOCK:
        if _PRECISION_USERS == 0:
            _PRECISION_SAVED = matmul.fp32_precision
            matmul.fp32_precision = "ieee"
        _PRECISION_USERS += 1
    try:
        yield
    finally:
        with _PRECISION_LOCK:
            _PRECISION_USERS -= 1
            if _PRECISION_USERS == 0:
                matmul.fp32_precision = _PRECISION_SAVED


@dataclass
class LoadedModel:
    """A model artifact ready to code chunks: weights on ``device``, the items' layout
    (patches) and the coordinates of every item's points, latent coders by level."""

    artifact: ModelArtifact
    device: torch.device
    patcher: Patcher | None
    item_coords: torch.Tensor  # (num_patches, points_per_item, coord_dim) on device
    _coders: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def hash(self) -> str:
        return self.artifact.hash

    @property
    def grid(self) -> Grid:
        return self.artifact.grid

    @property
    def subtracts_item_mean(self) -> bool:
        """Whether chunks store each item's mean and the INR codes the rest."""
        return self.artifact.config.data.subtract_item_mean

    @property
    def num_patches(self) -> int:
        return self.item_coords.shape[0]

    @property
    def points_per_item(self) -> int:
        return self.item_coords.shape[1]

    def coder(self, level: str):
        """The latent coder of quality ``level`` (built once, on the model's device)."""
        with self._lock:
            if level not in self._coders:
                try:
                    coder = self.artifact.coder(level)
                except KeyError:
                    raise CodecError(
                        f"model {self.hash[:16]} has no quality level {level!r}; "
                        f"it has {self.artifact.quality_levels or 'none (train a coder first)'}"
                    ) from None
                if isinstance(coder, torch.nn.Module):
                    coder = coder.to(self.device)
                self._coders[level] = coder
            return self._coders[level]

    def to_items(self, fields: np.ndarray) -> np.ndarray:
        """``(n, *grid)`` -> ``(n * num_patches, points_per_item)`` (item i is patch
        ``i % num_patches`` of field ``i // num_patches``, as in :class:`~vcinr_sci.data.ItemSet`)."""
        if self.patcher is not None:
            fields = self.patcher.split(fields)
        return fields.reshape(-1, self.points_per_item)

    def to_fields(self, items: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_items`."""
        if self.patcher is None:
            return items.reshape(-1, *self.grid.shape)
        return self.patcher.merge(items.reshape(-1, self.num_patches, *self.patcher.patch_shape))

    def _batches(self, n: int):
        size = max(1, _batch_points() // self.points_per_item)
        for start in range(0, n, size):
            yield slice(start, min(start + size, n))

    def adapt(self, items: np.ndarray, values: np.ndarray, valid: np.ndarray, steps: int) -> torch.Tensor:
        """Latents ``(len(items), D)`` of the normalised ``values`` at item indices ``items``."""
        out = []
        model = self.artifact.model
        for sl in self._batches(len(items)):
            coords = self.item_coords[torch.as_tensor(items[sl] % self.num_patches, device=self.device)]
            target = torch.as_tensor(values[sl], device=self.device).unsqueeze(-1)
            mask = torch.as_tensor(valid[sl], device=self.device).unsqueeze(-1)
            out.append(model.adapt(coords, target, mask, steps))
        return torch.cat(out) if out else torch.zeros(0, model.latent_dim, device=self.device)

    @torch.no_grad()
    def evaluate(self, items: np.ndarray, phi: torch.Tensor) -> np.ndarray:
        """The INR of latents ``phi`` on the grid points of items ``items``: ``(n, P)``."""
        out = []
        model = self.artifact.model
        phi = phi.to(self.device, torch.float32)
        with full_float32():
            for sl in self._batches(len(items)):
                coords = self.item_coords[torch.as_tensor(items[sl] % self.num_patches, device=self.device)]
                out.append(model.decode(coords, phi[sl])[..., 0].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.points_per_item), np.float32)

    @torch.no_grad()
    def evaluate_at(self, coords: np.ndarray, phi: torch.Tensor) -> np.ndarray:
        """The INR of each latent in ``phi`` ``(B, D)`` at shared points ``coords``
        ``(N, coord_dim)``: ``(B, N)`` (continuous-resolution sampling)."""
        model = self.artifact.model
        c = torch.as_tensor(np.asarray(coords, np.float32), device=self.device)
        phi = phi.to(self.device, torch.float32)
        step = max(1, _batch_points() // max(1, len(c)))
        with full_float32():
            out = [model.decode(c, phi[i : i + step])[..., 0].float().cpu().numpy() for i in range(0, len(phi), step)]
        return np.concatenate(out) if out else np.zeros((0, len(c)), np.float32)


_MODELS: dict[str, LoadedModel] = {}
_MODELS_LOCK = threading.Lock()
_SEARCH_PATHS: list[str] = []
_STATS = {"loads": 0}


def add_model_search_path(path: str | os.PathLike) -> None:
    """Also look for model artifacts in ``path`` (a folder of artifacts, or one), in this
    process, before ``$VCINR_MODEL_PATH`` and the cache folder."""
    p = str(path)
    if p not in _SEARCH_PATHS:
        _SEARCH_PATHS.append(p)


def clear_model_cache(search_paths: bool = False) -> None:
    """Forget every loaded model (tests; freeing GPU memory), and with ``search_paths``
    the folders added by :func:`add_model_search_path`."""
    with _MODELS_LOCK:
        _MODELS.clear()
        if search_paths:
            _SEARCH_PATHS.clear()


def model_cache_stats() -> dict[str, Any]:
    """``{"loads": models loaded from disk by this process, "models": hashes held}``."""
    return {"loads": _STATS["loads"], "models": sorted(_MODELS)}


def register_model(model: ModelArtifact | str | os.PathLike) -> LoadedModel:
    """Put ``model`` (an artifact, or an artifact folder) in this process's cache and
    return it; chunks naming its hash then need no lookup. An artifact object is copied
    (the cached model is moved to the device and frozen; the caller's is left alone)."""
    if not isinstance(model, ModelArtifact):
        model = load_artifact(model)
        _STATS["loads"] += 1
    elif model.hash not in _MODELS:
        model = dataclasses.replace(model, model=copy.deepcopy(model.model))
    if not model.hash:
        raise ArtifactError("the artifact has no content hash: save it with save_artifact() first")
    with _MODELS_LOCK:
        if model.hash not in _MODELS:
            _MODELS[model.hash] = _prepare(model)
        return _MODELS[model.hash]


def get_model(model_hash: str, hints: Sequence[str | os.PathLike | None] = ()) -> LoadedModel:
    """The model of ``model_hash`` (full 64-hex hash), loaded once per process."""
    check_model_hash(model_hash)
    with _MODELS_LOCK:
        loaded = _MODELS.get(model_hash)
        if loaded is not None:
            return loaded
        artifact = load_model_artifact(model_hash, hints)
        _STATS["loads"] += 1
        loaded = _MODELS[model_hash] = _prepare(artifact)
        return loaded


def _prepare(artifact: ModelArtifact) -> LoadedModel:
    device = default_device()
    model = artifact.model.to(device).eval()
    for p in model.parameters():  # the inner loop needs gradients w.r.t. phi only
        p.requires_grad_(False)
    grid = artifact.grid
    patch_shape = artifact.config.data.patch_shape
    patcher = Patcher(tuple(grid.shape), tuple(patch_shape)) if patch_shape else None
    coords = grid.coords()
    if patcher is not None:
        coords = patcher.split(coords, trailing=1).reshape(patcher.num_patches, -1, grid.coord_dim)
    else:
        coords = coords.reshape(1, -1, grid.coord_dim)
    return LoadedModel(artifact, device, patcher, torch.as_tensor(np.ascontiguousarray(coords), device=device))


def load_model_artifact(model_hash: str, hints: Sequence[str | os.PathLike | None] = ()) -> ModelArtifact:
    """The verified artifact of ``model_hash`` (a full hash, or a prefix of >= 8): the
    first candidate, in the order of the module doc, whose files verify.

    A copy that claims the hash but fails verification is skipped with a warning; the
    error raised when no candidate verifies names every place looked in and every copy
    skipped, and why."""
    check_model_hash(model_hash, prefix=True)
    skipped: list[str] = []
    tried: set[Path] = set()
    for where, folder in _candidates(model_hash, hints, skipped):
        if folder.resolve() in tried:
            continue
        tried.add(folder.resolve())
        try:
            return load_artifact(folder, model_hash)
        except ArtifactError as e:
            _skip(skipped, where, e)
    hinted = [str(h) for h in [*hints, *_SEARCH_PATHS] if h]
    looked = hinted + [str(r) for r in search_roots()]
    detail = f"; skipped: {skipped}" if skipped else ""
    raise ArtifactError(
        f"model {model_hash} not found; looked in {looked} (set {MODEL_PATH_ENV} to the folder holding it)"
        f"{detail}{_moved_store_hint(hints)}"
    )


def resolve_model_path(model_hash: str, hints: Sequence[str | os.PathLike | None] = ()) -> Path:
    """Where the verified artifact of ``model_hash`` lies (see :func:`load_model_artifact`)."""
    return load_model_artifact(model_hash, hints).path


def _skip(skipped: list[str], where: str, error: Exception) -> None:
    text = str(error) if str(error).startswith(where) else f"{where}: {error}"
    skipped.append(text)
    warnings.warn(f"vcinr: skipped a bad copy of the model: {text}", stacklevel=4)


def _candidates(model_hash: str, hints: Sequence[str | os.PathLike | None], skipped: list[str]) -> Iterator[tuple[str, Path]]:
    """``(where, artifact folder)`` of each copy claiming ``model_hash``, in lookup order,
    unverified (remote and stored copies are fetched into the cache, verified, on the way;
    those that fail are added to ``skipped``)."""
    from vcinr_sci.store import extract_model_at  # a model stored inside a local store

    for hint in [*hints, *_SEARCH_PATHS]:
        if not hint:
            continue
        hint = str(hint)
        if hint.startswith("file://"):
            hint = hint[len("file://") :]
        try:
            if "://" in hint:
                fetched = _fetch_remote(hint, model_hash)
                if fetched is not None:
                    yield hint, fetched
                continue
            extracted = extract_model_at(hint, model_hash)
        except ArtifactError as e:
            _skip(skipped, hint, e)
            continue
        if extracted is not None:
            yield hint, extracted
            continue
        yield from _in_root(Path(hint), model_hash, skipped)
    for root in search_roots():
        yield from _in_root(root, model_hash, skipped)


def _in_root(root: Path, model_hash: str, skipped: list[str]) -> Iterator[tuple[str, Path]]:
    found = artifact_candidates(model_hash, root)
    if not found and (root / MANIFEST).is_file():  # a hinted artifact of another model
        try:
            other = str(json.loads((root / MANIFEST).read_text()).get("hash", ""))
        except (OSError, ValueError, AttributeError):
            other = "(unreadable)"
        skipped.append(f"{root}: refused, it holds model {other} (hash differs)")
    for folder in found:
        yield str(folder), folder


def _moved_store_hint(hints: Sequence[str | os.PathLike | None]) -> str:
    """How to read a store whose codec config names a model stored inside it, at a
    place where the store no longer is (moved or copied since)."""
    from vcinr_sci.store import MODELS_GROUP

    gone = [str(h) for h in hints if h and MODELS_GROUP in Path(str(h)).parts and not Path(str(h)).exists()]
    if not gone:
        return ""
    return (
        f". The data was written with its model inside the store, at {gone[0]}, which is no longer there: "
        "if the store was moved or copied, open it with vcinr_sci.accessor.open_zarr(store), "
        "which finds the model stored inside it"
    )


def _fetch_remote(uri: str, model_hash: str) -> Path | None:
    """The artifact at ``uri`` (any fsspec URI) copied into the cache folder, verified
    (:class:`ArtifactError` for a bad copy); None when it cannot be read."""
    if len(model_hash) != 64:
        return None  # a prefix cannot name the copy's place in the cache
    target = default_cache_dir() / model_dir_name(model_hash)
    if is_verified_artifact(target, model_hash):
        return target
    try:
        import fsspec

        fs, root = fsspec.core.url_to_fs(uri)
        paths = {name: f"{root.rstrip('/')}/{name}" for name in (MANIFEST, WEIGHTS)}
        sizes = {name: fs.size(path) for name, path in paths.items()}
    except Exception:  # unreachable or unknown scheme: fall through to the other places
        return None
    if any(size is None or size > MAX_ARTIFACT_BYTES for size in sizes.values()):
        raise ArtifactError(f"artifact file sizes {sizes} unknown or above the limit of {MAX_ARTIFACT_BYTES} bytes")
    try:
        files = {name: fs.cat_file(path) for name, path in paths.items()}
    except Exception:
        return None
    return install_artifact(files[MANIFEST], files[WEIGHTS], model_hash)


def resolve_model(model: ModelArtifact | LoadedModel | str | os.PathLike) -> LoadedModel:
    """A loaded model from an artifact, an artifact folder, or a hash (or prefix >= 8)."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, ModelArtifact):
        return register_model(model)
    text = os.fspath(model)
    if Path(text, MANIFEST).is_file():
        return register_model(text)
    if re.fullmatch(r"[0-9a-fA-F]{8,64}", text):
        with _MODELS_LOCK:
            held = [h for h in _MODELS if h.startswith(text.lower())]
        if held:
            return _MODELS[held[0]]
        return register_model(resolve_model_path(text.lower()))
    raise ArtifactError(f"{text!r} is neither a model artifact folder nor a model hash")


def default_inner_steps(artifact: ModelArtifact) -> int:
    """Adaptation steps used when a codec config names none: those the artifact's
    latent coders were trained on (``metrics["latents_inner_steps"]``, written by the
    coder training), else its config's ``latents.inner_steps``. A value that is not a
    whole number of steps is an :class:`ArtifactError`, not a silent fallback."""
    value = artifact.metrics.get("latents_inner_steps", artifact.config.latents.inner_steps)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ArtifactError(f"model {artifact.hash}: latents_inner_steps {value!r} is not a number of steps")
    return value
