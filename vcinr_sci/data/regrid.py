"""Bilinear regridding of lat/lon fields onto an equiangular global grid.

The papers' ERA5 grids are equiangular with both poles included: 46 x 90 (4 degrees) and
181 x 360 (1 degree). :func:`regrid_lat_lon` builds such a grid of any size from any
lat/lon field, lazily (xarray + scipy interpolation, item by item when the data is
dask-backed), so a model or a benchmark can be run on the papers' grids from whatever
resolution is at hand. Longitude is periodic; latitudes beyond the source's outermost
rows (Gaussian grids stop short of the poles) are extrapolated linearly from the last two
rows. Bilinear interpolation smooths: a field regridded to a finer grid holds no more
detail than its source.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import xarray as xr


def equiangular_lat_lon(n_lat: int, n_lon: int, descending: bool = False, lon0: float = 0.0):
    """Latitudes from pole to pole (both included) and ``n_lon`` longitudes from ``lon0``."""
    if n_lat < 2 or n_lon < 1:
        raise ValueError(f"a global grid needs at least 2 latitudes and 1 longitude, got {n_lat} x {n_lon}")
    lat = np.linspace(-90.0, 90.0, n_lat)
    lon = lon0 + np.arange(n_lon) * (360.0 / n_lon)
    return (lat[::-1] if descending else lat), lon


def regrid_lat_lon(da: xr.DataArray, grid_dims: Sequence[str], shape: Sequence[int]) -> xr.DataArray:
    """``da`` bilinearly interpolated onto an equiangular ``shape = (n_lat, n_lon)`` grid.

    The latitude order (north to south or south to north) and the first longitude of the
    source are kept, so the result reads like its source.
    """
    if len(shape) != 2:
        raise ValueError(f"regridding needs a shape [n_lat, n_lon], got {shape}")
    src_lat, src_lon = _source_axes(da, grid_dims)
    lon_sorted = np.sort(src_lon)
    gaps = np.diff(np.concatenate([lon_sorted, lon_sorted[:1] + 360.0]))
    if np.ptp(src_lat) < 150.0 or gaps.max() > 2.0 * np.median(gaps) + 1e-9:
        raise ValueError(
            f"regridding onto a global grid needs global data; {grid_dims} cover latitudes "
            f"{src_lat.min():.1f}..{src_lat.max():.1f} and longitudes with a {gaps.max():.1f}-degree gap"
        )
    lat, lon = equiangular_lat_lon(int(shape[0]), int(shape[1]), src_lat[0] > src_lat[-1], float(src_lon[0]))
    out = interp_lat_lon(da, grid_dims, lat, lon)
    out.attrs["vcinr_regridded"] = f"bilinear to {shape[0]} x {shape[1]} equiangular"
    return out


def _source_axes(da: xr.DataArray, grid_dims: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    if len(grid_dims) != 2:
        raise ValueError(f"regridding needs two grid dims (lat, lon), got {list(grid_dims)}")
    if any(d not in da.coords for d in grid_dims):
        raise ValueError(f"regridding needs coordinate values for {list(grid_dims)}")
    return da[grid_dims[0]].values.astype(np.float64), np.mod(da[grid_dims[1]].values.astype(np.float64), 360.0)


def interp_lat_lon(da: xr.DataArray, grid_dims: Sequence[str], lat: np.ndarray, lon: np.ndarray) -> xr.DataArray:
    """``da`` bilinearly interpolated onto the points ``lat x lon`` (degrees), lazily."""
    lat_dim, lon_dim = grid_dims
    _, src_lon = _source_axes(da, grid_dims)
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    # Periodic longitude: sort on [0, 360) and wrap one column round each side.
    order = np.argsort(src_lon, kind="stable")
    da = da.isel({lon_dim: order}).assign_coords({lon_dim: src_lon[order]})
    wrapped = xr.concat(
        [
            da.isel({lon_dim: [-1]}).assign_coords({lon_dim: [src_lon[order][-1] - 360.0]}),
            da,
            da.isel({lon_dim: [0]}).assign_coords({lon_dim: [src_lon[order][0] + 360.0]}),
        ],
        dim=lon_dim,
    )
    if wrapped.chunks is not None:  # interpolation needs each field whole along the grid dims
        wrapped = wrapped.chunk({lat_dim: -1, lon_dim: -1})
    out = wrapped.sortby(lat_dim).interp(
        {lat_dim: np.unique(lat), lon_dim: np.unique(np.mod(lon, 360.0))},
        method="linear",
        kwargs={"fill_value": "extrapolate"},  # to the poles past a Gaussian grid's last row
    )
    out = out.sel({lat_dim: lat, lon_dim: np.mod(lon, 360.0)}).assign_coords({lat_dim: lat, lon_dim: lon})
    out.attrs = dict(da.attrs)
    return out.astype(da.dtype)
