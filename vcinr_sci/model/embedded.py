"""Models stored inside a Zarr store.

A store may carry the model it was written with, so that the store alone is enough to
decode: the group ``_vcinr_models`` holds one subgroup per model, named by its hash
prefix, with the artifact's two files as uint8 arrays ``manifest`` (artifact.json) and
``weights`` (weights.safetensors) and the full hash as attribute ``vcinr_model_hash``.
Being plain Zarr, it travels with the store and upsets no Zarr tool.
:func:`vcinr_sci.model.registry.use_embedded_models` (called by :func:`vcinr_sci.io.accessor.open_zarr`,
which knows the store) copies them into the cache folder (``$VCINR_CACHE_DIR``), where the
codec finds them by hash. The codec alone (plain ``xarray.open_zarr``) does not know where
the store is: writers record the model's place relative to the store
(``_vcinr_models/<prefix>``) and put the model in their cache. The codec follows a
``model_path`` naming such a subgroup of a local store (an absolute one, as older writers
recorded) only when the user trusts store paths (``$VCINR_TRUST_STORE_PATHS=1``).
A store is untrusted input: the hash attribute must be a full model hash before it names
a folder, the arrays' claimed sizes are checked before they are read, and a copy enters
the cache only once its content hash is verified (a bad copy, whatever its damage, is
skipped with an :class:`ArtifactError` and leaves the cache as it was).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from vcinr_sci.errors import ArtifactError
from vcinr_sci.model.artifact import (
    MANIFEST,
    MAX_ARTIFACT_BYTES,
    WEIGHTS,
    ModelArtifact,
    check_model_hash,
    default_cache_dir,
    install_artifact,
    is_verified_artifact,
    model_dir_name,
    save_artifact,
)

MODELS_GROUP = "_vcinr_models"


HASH_ATTR = "vcinr_model_hash"


_FILES = {"manifest": MANIFEST, "weights": WEIGHTS}


def embed_model(group: zarr.Group, artifact: ModelArtifact) -> str:
    """Store ``artifact`` inside ``group``; returns the model subgroup's path."""
    if artifact.path is None or not (Path(artifact.path) / MANIFEST).is_file():
        save_artifact(artifact, tempfile.mkdtemp(prefix="vcinr-embed-"))
    name = model_dir_name(artifact.hash)
    sub = group.require_group(MODELS_GROUP).require_group(name)
    sub.attrs[HASH_ATTR] = artifact.hash
    create = getattr(sub, "create_array", None) or sub.create_dataset  # zarr 2 names it create_dataset
    for key, filename in _FILES.items():
        data = np.frombuffer((Path(artifact.path) / filename).read_bytes(), np.uint8)
        arr = create(key, shape=data.shape, dtype=np.uint8, chunks=(max(1, data.size),), overwrite=True)
        arr[:] = data
    return f"{MODELS_GROUP}/{name}"


def stored_models(store: Any) -> tuple[list[tuple[str, zarr.Group]], list[str]]:
    """``(hash, subgroup)`` of each model stored inside ``store``, and the names of the
    subgroups whose hash attribute is not a model hash (never used)."""
    try:
        group = zarr.open_group(store, mode="r")
        if MODELS_GROUP not in group:
            return [], []
        subgroups = list(group[MODELS_GROUP].groups())
    except (KeyError, FileNotFoundError, ValueError, TypeError):
        return [], []
    valid, invalid = [], []
    for name, sub in subgroups:
        if HASH_ATTR not in sub.attrs:
            continue
        try:
            valid.append((check_model_hash(sub.attrs[HASH_ATTR]), sub))
        except ArtifactError:
            invalid.append(name)
    return sorted(valid, key=lambda pair: pair[0]), invalid


def embedded_models(store: Any) -> list[str]:
    """Full hashes of the models stored inside ``store`` (empty when none)."""
    return [h for h, _ in stored_models(store)[0]]


def extract_model(model_group: zarr.Group, cache: Path | None = None) -> Path:
    """Copy a stored model into ``cache`` (default: the cache folder) as an artifact
    folder, verified; returns it. :class:`ArtifactError` when the stored hash is not a
    model hash or the stored copy is bad (nothing then enters the cache)."""
    full = check_model_hash(model_group.attrs.get(HASH_ATTR))
    cache = Path(cache or default_cache_dir())
    target = cache / model_dir_name(full)
    if is_verified_artifact(target, full):
        return target
    files = {}
    for key, filename in _FILES.items():
        try:
            arr = model_group[key]
            if not isinstance(arr, zarr.Array) or arr.ndim != 1 or arr.dtype != np.uint8:
                raise ArtifactError(f"'{key}' is not a 1-d uint8 array")
            if arr.shape[0] > MAX_ARTIFACT_BYTES:  # checked before anything is allocated
                raise ArtifactError(f"'{key}' claims {arr.shape[0]} bytes, above the limit of {MAX_ARTIFACT_BYTES}")
            files[filename] = np.asarray(arr[:], np.uint8).tobytes()
        except (KeyError, ArtifactError) as e:
            raise ArtifactError(f"stored model {full}: {e}") from None
        except Exception as e:  # a damaged array fails as its codec does (Zstd: RuntimeError)
            raise ArtifactError(f"stored model {full}: '{key}' cannot be read ({type(e).__name__})") from None
    try:
        return install_artifact(files[MANIFEST], files[WEIGHTS], full, cache)
    except ArtifactError as e:
        raise ArtifactError(f"stored model {full}: {e}") from None


def extract_model_at(path: str | os.PathLike, model_hash: str | None = None) -> Path | None:
    """If ``path`` is a stored model's subgroup in a local store (holding ``model_hash``,
    when given), extract it (see :func:`extract_model`) and return the artifact folder;
    else None."""
    p = Path(path)
    if not ((p / "zarr.json").is_file() or (p / ".zgroup").is_file()) or (p / MANIFEST).is_file():
        return None
    try:
        group = zarr.open_group(p, mode="r")
        stored = group.attrs.get(HASH_ATTR)
    except (KeyError, FileNotFoundError, ValueError, OSError):
        return None
    if stored is None or (model_hash is not None and stored != model_hash):
        return None
    return extract_model(group)
