"""Zarr-store helpers around the vcinr codec: raw chunk bytes, stored sizes,
consolidated metadata. Works on local paths and on any zarr ``Store`` (through zarr's
store API, so remote stores work too). Models stored inside a store:
:mod:`vcinr_sci.model.embedded`; what a reader lets a store decide: :mod:`vcinr_sci.trust`.
"""

from __future__ import annotations

from typing import Any

import zarr

_METADATA_KEYS = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}


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
