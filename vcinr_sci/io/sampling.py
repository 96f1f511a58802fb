"""Continuous-resolution reading: the INR of stored latents evaluated at any points.

Only the chunks holding the requested fields are read; their latents are decoded
(container, entropy code) and the INR is evaluated at the requested points alone, never
on the whole grid. Used by ``da.vcinr.sample`` (:mod:`vcinr_sci.io.accessor`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
import zarr

from vcinr_sci.codec.core import decode_latents
from vcinr_sci.codec.numcodecs import codec_of
from vcinr_sci.data.grids import RegularGrid, SphericalGrid, lat_lon_to_xyz
from vcinr_sci.errors import CodecError
from vcinr_sci.io.store import read_chunk
from vcinr_sci.model.loaded import LoadedModel
from vcinr_sci.model.registry import use_embedded_models


def nearest_index(axis: np.ndarray, values: np.ndarray, period: float | None = None) -> np.ndarray:
    """Index of the nearest ``axis`` point to each value (``period``: a periodic axis)."""
    axis = np.asarray(axis, np.float64)
    order = np.argsort(axis)
    a = axis[order]
    v = np.asarray(values, np.float64)
    if period:
        v = a[0] + np.mod(v - a[0], period)
    if len(a) == 1:
        return np.zeros(v.shape, np.int64)
    i = np.searchsorted(a, v).clip(1, len(a) - 1)
    pick = np.where(v - a[i - 1] <= a[i] - v, i - 1, i)
    if period:
        pick = np.where(v - a[-1] > a[0] + period - v, 0, pick)
    return order[pick]


def point_coords(model: LoadedModel, values: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """INR coordinates of points given per grid axis, and their nearest grid indices."""
    grid = model.grid
    if isinstance(grid, SphericalGrid):
        lat, lon = values
        if np.any(np.abs(lat) > 90):
            raise ValueError("latitudes must lie in [-90, 90]")
        coords = lat_lon_to_xyz(lat, lon).astype(np.float32)
        return coords, [nearest_index(grid.lat, lat), nearest_index(grid.lon, lon, 360.0)]
    if isinstance(grid, RegularGrid):
        cols = []
        for axis, v in zip(grid.axes, values):
            lo, hi = axis.min(), axis.max()
            cols.append(np.zeros_like(v) if hi == lo else 2.0 * (v - lo) / (hi - lo) - 1.0)
        return np.stack(cols, -1).astype(np.float32), [nearest_index(a, v) for a, v in zip(grid.axes, values)]
    raise TypeError(f"sampling is not implemented for {type(grid).__name__}")


def _points(grid_dims: list[str], points: dict[str, Any]) -> list[xr.DataArray]:
    """One DataArray per grid dim, broadcast against each other (``interp`` rules)."""
    unknown = set(points) - set(grid_dims)
    if unknown or len(points) != len(grid_dims):
        raise ValueError(f"give one coordinate per grid dim {grid_dims}; got {sorted(points)}")
    out = []
    for d in grid_dims:
        v = points[d]
        if not isinstance(v, xr.DataArray):
            dims = () if np.ndim(v) == 0 else (d,)
            v = xr.DataArray(np.asarray(v, np.float64), dims=dims, coords={d: np.asarray(v)})
        out.append(v)
    return list(xr.broadcast(*out))


def _item_positions(da: xr.DataArray, full: xr.DataArray, item_dims: list[str]) -> tuple[list[str], list[np.ndarray]]:
    """Where ``da``'s fields lie in the stored variable ``full``: the item dims kept in
    the output, and the stored positions along every item dim."""
    out_dims, positions = [], []
    for d in item_dims:
        if d in da.dims:
            if d in da.indexes and d in full.indexes:
                pos = full.indexes[d].get_indexer(da.indexes[d])
                if (pos < 0).any():
                    raise ValueError(f"{d} values of the array are not in the store")
            elif da.sizes[d] == full.sizes[d]:
                pos = np.arange(da.sizes[d])
            else:
                raise ValueError(f"cannot place the array's {d} positions in the store (no {d} index)")
            out_dims.append(d)
        elif d in da.coords and d in full.indexes:
            pos = np.atleast_1d(full.indexes[d].get_indexer([da[d].values.item()]))
            if (pos < 0).any():
                raise ValueError(f"{d}={da[d].values.item()} is not in the store")
        else:
            raise ValueError(f"the array has no {d} dim nor {d} coordinate to place it in the store")
        positions.append(np.asarray(pos, np.int64))
    return out_dims, positions


def sample(da: xr.DataArray, store: Any, points: dict[str, Any]) -> xr.DataArray:
    """See :meth:`vcinr_sci.io.accessor.VCINRDataArrayAccessor.sample`."""
    store = store if store is not None else da.encoding.get("source")
    if store is None:
        raise ValueError("unknown store: open the data with vcinr_sci.io.accessor.open_zarr or pass store=")
    try:
        arr = zarr.open_group(store, mode="r")[str(da.name)]
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.GroupNotFoundError) as e:
        raise ValueError(
            f"unknown store: {store!r} holds no Zarr array {da.name!r} ({e}); open the data with "
            "vcinr_sci.io.accessor.open_zarr or pass store="
        ) from None
    use_embedded_models(store)
    codec = codec_of(arr)
    if codec is None:
        raise CodecError(f"{da.name!r} in {store} is not coded with vcinr")
    model = codec.model()
    full = xr.open_zarr(store)[da.name]
    g = len(model.grid.shape)
    grid_dims, item_dims = list(full.dims[-g:]), list(full.dims[:-g])

    pts = _points(grid_dims, points)
    coords, nearest = point_coords(model, [np.asarray(p.values, np.float64).ravel() for p in pts])
    flat = np.ravel_multi_index(nearest, model.grid.shape)  # nearest grid point (for masks)
    if model.patcher is not None:
        per_axis = [n // p for n, p in zip(nearest, model.patcher.patch_shape)]
        patch = np.ravel_multi_index(per_axis, model.patcher.counts)
    else:
        patch = np.zeros(len(flat), np.int64)

    out_dims, positions = _item_positions(da, full, item_dims)
    ichunks = np.asarray(arr.chunks[: len(item_dims)], np.int64)
    if positions:
        combos = np.stack([m.ravel() for m in np.meshgrid(*positions, indexing="ij")], -1)
        local = np.ravel_multi_index(tuple((combos % ichunks).T), tuple(ichunks))  # field within its chunk
        chunk_of = combos // ichunks
    else:
        combos, local, chunk_of = np.zeros((1, 0), np.int64), np.zeros(1, np.int64), np.zeros((1, 0), np.int64)
    result = np.full((len(combos), len(flat)), np.nan)
    chunks, inverse = np.unique(chunk_of, axis=0, return_inverse=True)
    for k, chunk_coords in enumerate(chunks):
        rows = np.flatnonzero(inverse.reshape(-1) == k)
        raw = read_chunk(arr, tuple(int(c) for c in chunk_coords) + (0,) * g)
        if raw is None:  # never written: the array's fill value
            result[rows] = float(arr.fill_value) if arr.fill_value is not None else np.nan
            continue
        result[rows] = _sample_chunk(raw, codec, model, tuple(arr.chunks), local[rows], coords, flat, patch)
    shape = tuple(len(p) for d, p in zip(item_dims, positions) if d in out_dims) + pts[0].shape
    coords_out = {d: da[d] for d in out_dims if d in da.coords}
    for p in pts:
        coords_out.update(dict(p.coords.items()))
    return xr.DataArray(
        result.astype(full.dtype).reshape(shape), dims=(*out_dims, *pts[0].dims), coords=coords_out,
        name=da.name, attrs=dict(da.attrs),
    )


def _sample_chunk(raw: bytes, codec, model: LoadedModel, chunk_shape, fields, coords, flat, patch) -> np.ndarray:
    """Values of ``fields`` (positions within the chunk) at the points, ``(fields, points)``;
    the header must claim the array's ``chunk_shape`` (a store is untrusted)."""
    lat = decode_latents(raw, codec.model_hints(), expected_shape=chunk_shape, model_hash=codec.model_hash)
    values = np.full((len(fields), len(flat)), np.nan)
    slot = np.full(lat.num_fields * model.num_patches, -1)  # item -> row of phi (-1: no latent)
    slot[lat.active] = np.arange(len(lat.active))
    norm = model.artifact.normaliser
    for p in np.unique(patch):
        cols = np.flatnonzero(patch == p)
        s = slot[fields * model.num_patches + p]
        have = s >= 0
        if have.any():
            inr = model.evaluate_at(coords[cols], lat.phi[s[have]]) + lat.offsets[s[have], None]
            values[np.ix_(np.flatnonzero(have), cols)] = norm.denormalise(inr.astype(np.float64))
    if lat.mask is not None:  # a point whose nearest grid point is masked gives that point's value
        masked = lat.mask.reshape(lat.num_fields, -1)[np.ix_(fields, flat)]
        stored = lat.masked_values(codec.fill).reshape(lat.num_fields, -1)[np.ix_(fields, flat)]
        values = np.where(masked, stored, values)
    return values
