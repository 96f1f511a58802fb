"""``vcinr decompress STORE OUT``: decode a vcinr-coded Zarr store to plain data.

Writes netCDF (``OUT`` ending in ``.nc``) or an ordinary Zarr store (anything else) with
the decoded values; the ``vcinr_*`` attributes stay, as a record that the values are
lossy approximations. Decoding is chunk by chunk (dask), so the store may exceed memory.

The output is written under a temporary name beside ``OUT`` and renamed when complete:
a failure leaves no partial output. A chunk that cannot be decoded (corrupt, or not a
vcinr chunk of this array) stops the run with one line naming the variable and the
chunk; ``--skip-bad-chunks`` writes NaN in its place instead and says how many.
"""

from __future__ import annotations

import argparse
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable

import dask.array
import numpy as np
import xarray as xr
import zarr

from vcinr_sci.atomic import atomic_path
from vcinr_sci.codec.numcodecs import codec_of
from vcinr_sci.errors import ArtifactError, BadChunkError, ChunkFormatError, CodecError
from vcinr_sci.io.accessor import joined_dask_pool, open_zarr


@dataclass
class Decompressed:
    """Where the output went and the chunks written as NaN (``--skip-bad-chunks``)."""

    path: Path
    skipped: list[BadChunkError] = field(default_factory=list)


class _GuardedChunks:
    """A zarr array read one whole chunk per ``[]`` (as dask reads it with the array's
    own chunks), turning a chunk's decoding error into a :class:`BadChunkError` that
    names it, or, when ``skipped`` is a list, into NaN (recording the error there)."""

    def __init__(self, name: str, array: zarr.Array, skipped: list[BadChunkError] | None):
        self.name, self.array, self.skipped = name, array, skipped
        self.shape, self.dtype, self.ndim = tuple(array.shape), np.dtype(array.dtype), array.ndim
        self._lock = threading.Lock()

    def __getitem__(self, region: tuple[slice, ...]) -> np.ndarray:
        try:
            return np.asarray(self.array[region])
        except (ChunkFormatError, CodecError) as e:
            index = tuple(int(s.start or 0) // c for s, c in zip(region, self.array.chunks))
            err = BadChunkError(self.name, index, self.array.metadata.encode_chunk_key(index), e)
            if self.skipped is None:
                raise err from None
            with self._lock:
                self.skipped.append(err)
            shape = tuple(len(range(*s.indices(n))) for s, n in zip(region, self.shape))
            return np.full(shape, np.nan, self.dtype)


def _guard(ds: xr.Dataset, store: Any, skipped: list[BadChunkError] | None) -> xr.Dataset:
    """``ds`` with each vcinr-coded variable read through :class:`_GuardedChunks`."""
    group = zarr.open_group(store, mode="r")
    out = ds.copy()
    for name, var in ds.data_vars.items():
        array = group.get(str(name))
        if not isinstance(array, zarr.Array) or codec_of(array) is None:
            continue
        fill = var.encoding.get("_FillValue")
        if fill is not None and not np.isnan(fill):  # vcinr writes NaN as missing value; this array is not ours
            continue
        guarded = _GuardedChunks(str(name), array, skipped)
        data = dask.array.from_array(
            guarded, chunks=array.chunks, meta=np.empty((0,) * array.ndim, guarded.dtype), name=f"vcinr-{uuid.uuid4().hex}"
        )
        out[name] = var.copy(data=data)
    return out


def _native_byte_order(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with every variable in native byte order. Zarr 3 reads arrays as explicitly
    little-endian (dtype ``<f4``, not ``=f4``), and netCDF4 warns of each such variable
    ("endian-ness of dtype and endian kwarg do not match"). Cast, not relabelled: the two
    dtypes compare equal, so dask's and xarray's own casts would keep ``<f4``."""
    coords: dict[Hashable, xr.Variable] = {}
    data_vars: dict[Hashable, xr.Variable] = {}
    for name, var in ds.variables.items():
        if var.dtype.byteorder not in "<>":
            continue
        native = var.dtype.newbyteorder("=")
        if isinstance(var.data, dask.array.Array):
            data = dask.array.map_blocks(np.ndarray.astype, var.data, native, dtype=native)
        else:
            data = np.asarray(var.data).astype(native)
        (coords if name in ds.coords else data_vars)[name] = var.copy(data=data)
    return ds.assign_coords(coords).assign(data_vars)


def decompress(
    store: str, out: str, variables: list[str] | None = None, overwrite: bool = False, skip_bad_chunks: bool = False
) -> Decompressed:
    """Decode ``store`` (or its ``variables``) into ``out`` (see the module doc); raises
    :class:`BadChunkError` for the first chunk that does not decode, unless
    ``skip_bad_chunks``, and leaves ``out`` untouched on any failure."""
    target = Path(out)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists (pass --overwrite)")
    ds = open_zarr(store)
    if variables:
        ds = ds[variables]
    result = Decompressed(target)
    ds = _native_byte_order(_guard(ds, store, result.skipped if skip_bad_chunks else None))
    for var in ds.variables.values():
        var.encoding = {k: v for k, v in var.encoding.items() if k in ("units", "calendar", "dtype", "_FillValue")}
    with atomic_path(target) as tmp, joined_dask_pool():
        if target.suffix in (".nc", ".nc4"):
            ds.to_netcdf(tmp)
        else:
            ds.to_zarr(tmp, mode="w-")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="vcinr decompress", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("store", help="vcinr-coded Zarr store")
    p.add_argument("out", help="output: *.nc for netCDF, else a Zarr store")
    p.add_argument("--variables", nargs="+", help="only these variables")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--skip-bad-chunks", action="store_true", help="write NaN for chunks that do not decode")
    args = p.parse_args(argv)
    try:
        result = decompress(args.store, args.out, args.variables, args.overwrite, args.skip_bad_chunks)
    except (ChunkFormatError, CodecError, ArtifactError, FileExistsError, FileNotFoundError) as e:
        print(f"vcinr decompress: {args.store}: {e}", file=sys.stderr)
        return 1
    for err in result.skipped:
        print(f"skipped (written as NaN): {err}", file=sys.stderr)
    skipped = f"; {len(result.skipped)} bad chunk(s) written as NaN" if result.skipped else ""
    print(f"decoded {args.store} -> {result.path}{skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
