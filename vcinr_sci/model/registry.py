"""Model artifacts ready for coding: a per-process cache keyed by content hash, lookup by
hash, the device they run on.

A model is loaded once per process (:func:`get_model`) and kept, moved to the device
(CUDA when present, else the CPU; ``$VCINR_DEVICE`` overrides), for every later chunk.
Lookup of a hash (:func:`resolve_model_path`): the hints given (an artifact folder, a
``file://`` URI, any fsspec URI, or a model stored inside a local Zarr store), the
folders added with :func:`add_model_search_path` (:func:`use_embedded_models` adds the
copies it extracted from a store), ``$VCINR_MODEL_PATH``, and the cache folder
(``$VCINR_CACHE_DIR``).

A store is untrusted input: a hint that a store named (:class:`StoreModelPath`, the
``model_path`` of a codec config read from its metadata) is followed only when the user
sets ``$VCINR_TRUST_STORE_PATHS=1``; by default it is not touched (no request to a URL, no
read of a path outside the store) and the error names it when no other copy is found.

Every copy is verified by its content hash before use, and a bad one (damaged, missing a
file, another model's, or one that does not parse) is skipped, with a warning, for the
next (a bad copy early in the order never hides a good one later); the error raised when
none verifies names each place looked in and why each copy there was refused, never the
bytes of the files. Copies from a store or a remote place are verified before they enter
the cache folder, so the cache holds verified copies only.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from vcinr_sci.data.grids import Patcher
from vcinr_sci.errors import ArtifactError
from vcinr_sci.model.artifact import (
    HASH_PREFIX_LEN,
    MANIFEST,
    MAX_ARTIFACT_BYTES,
    MODEL_PATH_ENV,
    WEIGHTS,
    ModelArtifact,
    check_model_hash,
    claimed_hash,
    default_cache_dir,
    install_artifact,
    is_verified_artifact,
    load_artifact,
    model_dir_name,
    save_artifact,
    search_roots,
)
from vcinr_sci.model.device import default_device
from vcinr_sci.model.embedded import MODELS_GROUP, extract_model, extract_model_at, stored_models
from vcinr_sci.model.kinds import model_kind
from vcinr_sci.model.loaded import LoadedModel
from vcinr_sci.trust import TRUST_STORE_PATHS_ENV, check_store_links, trust_store_paths

_MODELS: dict[str, LoadedModel] = {}
_MODELS_LOCK = threading.Lock()
_SEARCH_PATHS: list[str] = []
_STATS = {"loads": 0}
# Why each stored copy use_embedded_models could not use was refused, by full hash: named
# in the error when no other copy of that model is found.
_BAD_STORED: dict[str, list[str]] = {}


@dataclasses.dataclass(frozen=True)
class StoreModelPath:
    """A place a store names for its model (a codec config's ``model_path`` read from
    the store's metadata): followed only when :func:`trust_store_paths`."""

    path: str


Hint = str | os.PathLike | StoreModelPath | None


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
        _BAD_STORED.clear()
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
            _MODELS[model.hash] = prepare_model(model)
        return _MODELS[model.hash]


def get_model(model_hash: str, hints: Sequence[Hint] = ()) -> LoadedModel:
    """The model of ``model_hash`` (its full 64-hex hash, or a prefix of >= 8 such as a
    chunk holds), loaded once per process. A prefix that more than one loaded model
    starts with is refused rather than guessed."""
    check_model_hash(model_hash, prefix=True)
    with _MODELS_LOCK:
        held = [h for h in _MODELS if h.startswith(model_hash)]
        if len(held) > 1:
            raise ArtifactError(f"model hash prefix {model_hash} is ambiguous: loaded models {held} share it")
        if held:
            return _MODELS[held[0]]
        artifact = load_model_artifact(model_hash, hints)
        _STATS["loads"] += 1
        loaded = _MODELS[artifact.hash] = prepare_model(artifact)
        return loaded


def prepare_model(artifact: ModelArtifact) -> LoadedModel:
    """``artifact`` ready to code chunks, not cached (its network moved to the device
    and frozen in place)."""
    device = default_device()
    if artifact.model is not None:
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
    item_coords = torch.as_tensor(np.ascontiguousarray(coords), device=device)
    return LoadedModel(artifact, device, patcher, item_coords, model_kind(artifact, item_coords, device))


def load_model_artifact(model_hash: str, hints: Sequence[Hint] = ()) -> ModelArtifact:
    """The verified artifact of ``model_hash`` (a full hash, or a prefix of >= 8): the
    first candidate, in the order of the module doc, whose files verify.

    A copy that claims the hash but fails verification or loading is skipped with a
    warning; the error raised when no candidate verifies names every place looked in,
    every copy refused and why, and each store path not followed."""
    check_model_hash(model_hash, prefix=True)
    skipped = [why for full, reasons in _BAD_STORED.items() if full.startswith(model_hash) for why in reasons]
    unused: list[str] = []
    tried: set[Path] = set()
    for where, folder in _candidates(model_hash, hints, skipped, unused):
        if folder.resolve() in tried:
            continue
        tried.add(folder.resolve())
        try:
            return load_artifact(folder, model_hash)
        except ArtifactError as e:
            _skip(skipped, where, e)
    used = [h.path if isinstance(h, StoreModelPath) else os.fspath(h) for h in hints if h]
    looked = [h for h in [*used, *_SEARCH_PATHS] if h not in unused] + [str(r) for r in search_roots()]
    detail = f"; refused: {skipped}" if skipped else ""
    if unused:
        detail += (f"; not followed, as the store named them: {unused} (set {TRUST_STORE_PATHS_ENV}=1 "
                   "to let a store you trust name where its model is)")
    raise ArtifactError(
        f"model {model_hash} not found (no good copy); looked in {looked} (set {MODEL_PATH_ENV} to the folder "
        f"holding it){detail}{_store_model_hint(hints)}"
    )


def resolve_model_path(model_hash: str, hints: Sequence[Hint] = ()) -> Path:
    """Where the verified artifact of ``model_hash`` lies (see :func:`load_model_artifact`)."""
    path = load_model_artifact(model_hash, hints).path
    assert path is not None  # a loaded artifact knows its folder
    return path


def _skip(skipped: list[str], where: str, error: Exception) -> None:
    text = str(error) if str(error).startswith(where) else f"{where}: {error}"
    skipped.append(text)
    warnings.warn(f"vcinr: skipped a bad copy of the model: {text}", stacklevel=4)


def _followed(hints: Sequence[Hint], unused: list[str]) -> Iterator[str]:
    """The hints to follow, as text: a store's only when the user trusts store paths
    (the others are added to ``unused``)."""
    trusted = None
    for hint in hints:
        if isinstance(hint, StoreModelPath):
            trusted = trust_store_paths() if trusted is None else trusted
            if not trusted:
                unused.append(hint.path)
                continue
            hint = hint.path
        if hint:
            yield os.fspath(hint)


def _candidates(model_hash: str, hints: Sequence[Hint], skipped: list[str], unused: list[str]) -> Iterator[tuple[str, Path]]:
    """``(where, artifact folder)`` of each copy claiming ``model_hash``, in lookup order,
    unverified (remote and stored copies are fetched into the cache, verified, on the way;
    those that fail are added to ``skipped``; store paths not followed to ``unused``)."""
    for hint in _followed([*hints, *_SEARCH_PATHS], unused):
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
    """The folders in ``root`` (an artifact, or a folder of artifacts named by hash
    prefix) that claim ``model_hash``; one that holds another model or no readable
    manifest, where this model was expected, is added to ``skipped``."""
    if not root.is_dir():
        return
    for folder in [root, *sorted(root.glob(model_hash[:HASH_PREFIX_LEN] + "*"))]:
        claimed = claimed_hash(folder)
        if claimed is not None and claimed.startswith(model_hash):
            yield str(folder), folder
        elif folder != root or (root / MANIFEST).exists():
            held = f"it holds model {claimed} (hash differs)" if claimed else f"no readable {MANIFEST} naming a model"
            skipped.append(f"{folder}: refused, {held}")


def _store_model_hint(hints: Sequence[Hint]) -> str:
    """How to read a store whose codec config names a model stored inside it: the
    codec alone does not know where the store is (and an absolute path written by an
    older version may be stale, the store moved or copied since)."""
    inside = [h.path for h in hints if isinstance(h, StoreModelPath) and MODELS_GROUP in Path(h.path).parts]
    if not inside:
        return ""
    return (
        ". The data was written with its model inside the store: open it with "
        "vcinr_sci.io.accessor.open_zarr(store), which finds the model stored inside it"
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
        return get_model(text.lower())
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


def use_embedded_models(store: Any) -> list[str]:
    """Let the codec find the models stored inside ``store`` in this process (copied
    into the cache folder, verified). Returns the hashes of those usable; a bad copy is
    skipped with a warning (and named in the error if no other copy of its model is
    found). A local store holding a symlink out of itself is refused first
    (:func:`~vcinr_sci.trust.check_store_links`)."""
    check_store_links(store)
    stored, invalid = stored_models(store)
    if invalid:
        warnings.warn(f"vcinr: {store}: ignored stored models without a valid model hash: {invalid}", stacklevel=2)
    usable = []
    for full, group in stored:
        try:
            folder = extract_model(group)
        except ArtifactError as e:
            why = f"stored in {store}: {e}"
            with _MODELS_LOCK:
                if why not in _BAD_STORED.setdefault(full, []):
                    _BAD_STORED[full].append(why)
            warnings.warn(f"vcinr: {store}: not using a stored model: {e}", stacklevel=2)
            continue
        add_model_search_path(folder.parent)
        usable.append(full)
    return usable


def cache_model(artifact: ModelArtifact) -> Path | None:
    """Put ``artifact`` into the cache folder, verified, and return its folder there; a
    writer does so, so that readers on its machine find the model by hash (stores record
    no absolute path of the writer's). A cache folder that cannot be written is warned
    about (None): the store is still written."""
    if artifact.path is None or not (Path(artifact.path) / MANIFEST).is_file():
        save_artifact(artifact, tempfile.mkdtemp(prefix="vcinr-cache-"))
    folder = Path(artifact.path)
    try:
        return install_artifact((folder / MANIFEST).read_bytes(), (folder / WEIGHTS).read_bytes(), artifact.hash)
    except OSError as e:
        warnings.warn(f"vcinr: model {artifact.hash[:16]} not cached ({e}): readers on this machine need "
                      f"{MODEL_PATH_ENV} or the model stored inside the store", stacklevel=2)
        return None
