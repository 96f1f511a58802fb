"""Zarr-store helpers around the vcinr codec: models stored inside a group, raw chunk
bytes, stored sizes. Works on local paths and on any zarr ``Store`` (through zarr's
store API, so remote stores work too).

A store may carry the model it was written with, so that the store alone is enough to
decode: the group ``_vcinr_models`` holds one subgroup per model, named by its hash
prefix, with the artifact's two files as uint8 arrays ``manifest`` (artifact.json) and
``weights`` (weights.safetensors) and the full hash as attribute ``vcinr_model_hash``.
Being plain Zarr, it travels with the store and upsets no Zarr tool.
:func:`use_embedded_models` (called by :func:`vcinr_sci.accessor.open_zarr`) copies them
into the cache folder (``$VCINR_CACHE_DIR``), where loading verifies their hash; the
codec also does so by itself when its ``model_path`` names such a subgroup of a local
store, so ``xarray.open_zarr`` alone decodes a local store written with the model.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from vcinr_sci.artifact import HASH_PREFIX_LEN, MANIFEST, WEIGHTS, ModelArtifact, default_cache_dir, save_artifact

MODELS_GROUP = "_vcinr_models"
HASH_ATTR = "vcinr_model_hash"
_FILES = {"manifest": MANIFEST, "weights": WEIGHTS}
_METADATA_KEYS = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}


def is_local_path(store: Any) -> bool:
    """True for a filesystem path (str or PathLike without a URL scheme)."""
    return isinstance(store, (str, os.PathLike)) and "://" not in os.fspath(store)


def embed_model(group: zarr.Group, artifact: ModelArtifact) -> str:
    """Store ``artifact`` inside ``group``; returns the model subgroup's path."""
    if artifact.path is None or not (Path(artifact.path) / MANIFEST).is_file():
        save_artifact(artifact, tempfile.mkdtemp(prefix="vcinr-embed-"))
    sub = group.require_group(MODELS_GROUP).require_group(artifact.hash[:HASH_PREFIX_LEN])
    sub.attrs[HASH_ATTR] = artifact.hash
    create = getattr(sub, "create_array", None) or sub.create_dataset  # zarr 2 names it create_dataset
    for name, filename in _FILES.items():
        data = np.frombuffer((Path(artifact.path) / filename).read_bytes(), np.uint8)
        arr = create(name, shape=data.shape, dtype=np.uint8, chunks=(max(1, data.size),), overwrite=True)
        arr[:] = data
    return f"{MODELS_GROUP}/{artifact.hash[:HASH_PREFIX_LEN]}"


def embedded_models(store: Any) -> list[str]:
    """Full hashes of the models stored inside ``store`` (empty when none)."""
    try:
        group = zarr.open_group(store, mode="r")
        if MODELS_GROUP not in group:
            return []
        return sorted(g.attrs[HASH_ATTR] for _, g in group[MODELS_GROUP].groups() if HASH_ATTR in g.attrs)
    except (KeyError, FileNotFoundError, ValueError, TypeError):
        return []


def extract_model(model_group: zarr.Group, cache: Path | None = None) -> Path:
    """Copy a stored model into ``cache`` (default: the cache folder) as an artifact
    folder; returns it (loading it later verifies its content hash)."""
    full = str(model_group.attrs[HASH_ATTR])
    cache = Path(cache or default_cache_dir())
    target = cache / full[:HASH_PREFIX_LEN]
    if (target / MANIFEST).is_file() and (target / WEIGHTS).is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".embedded-"))
    for name, filename in _FILES.items():
        (tmp / filename).write_bytes(np.asarray(model_group[name][:], np.uint8).tobytes())
    try:
        tmp.rename(target)
    except OSError:  # another process got there first
        pass
    return target


def extract_model_at(path: str | os.PathLike) -> Path | None:
    """If ``path`` is a stored model's subgroup in a local store, extract it (see
    :func:`extract_model`) and return the artifact folder; else None."""
    p = Path(path)
    if not ((p / "zarr.json").is_file() or (p / ".zgroup").is_file()) or (p / MANIFEST).is_file():
        return None
    try:
        group = zarr.open_group(p, mode="r")
        return extract_model(group) if HASH_ATTR in group.attrs else None
    except (KeyError, FileNotFoundError, ValueError, OSError):
        return None


def use_embedded_models(store: Any) -> list[str]:
    """Let the codec find the models stored inside ``store`` in this process (copied
    into the cache folder). Returns their hashes."""
    from vcinr_sci.codec import add_model_search_path

    hashes = embedded_models(store)
    if hashes:
        models = zarr.open_group(store, mode="r")[MODELS_GROUP]
        for h in hashes:
            add_model_search_path(extract_model(models[h[:HASH_PREFIX_LEN]]).parent)
    return hashes


def consolidate(store: Any, zarr_format: int) -> None:
    """``zarr.consolidate_metadata``, without zarr's notice that consolidated metadata is
    not (yet) part of the format-3 spec (xarray reads it either way)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(store, zarr_format=zarr_format)


def read_chunk(array: zarr.Array, chunk_coords: tuple[int, ...]) -> bytes | None:
    """The stored bytes of one chunk (None if the chunk was never written). Needs zarr 3."""
    from zarr.core.buffer import default_buffer_prototype  # zarr 3 only, unlike the rest here
    from zarr.core.sync import sync

    key = array.metadata.encode_chunk_key(tuple(int(c) for c in chunk_coords))
    buf = sync((array.store_path / key).get(default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def chunk_bytes_stored(array: zarr.Array) -> int:
    """Bytes of ``array``'s chunks in its store (metadata excluded). Needs zarr 3."""
    from zarr.core.sync import sync

    async def _total() -> int:
        store, prefix = array.store_path.store, array.store_path.path
        prefix = f"{prefix}/" if prefix else ""
        total = 0
        async for key in store.list_prefix(prefix):
            if key.rsplit("/", 1)[-1] not in _METADATA_KEYS:
                total += await store.getsize(key)
        return total

    return sync(_total())
