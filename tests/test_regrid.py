"""Bilinear regridding onto the papers' equiangular lat/lon grids."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from vcinr_sci.config import DataConfig
from vcinr_sci.data.items import load_dataset
from vcinr_sci.data.regrid import equiangular_lat_lon, interp_lat_lon, regrid_lat_lon
from vcinr_sci.data.sources import open_variable


def smooth_field(lat, lon, time=2):
    """A field that is smooth and periodic on the sphere: linear interpolation of it is
    accurate to second order in the grid spacing."""
    la, lo = np.deg2rad(lat)[:, None], np.deg2rad(lon)[None, :]
    base = 250 + 30 * np.cos(la) + 5 * np.sin(la) * np.cos(lo) + 3 * np.sin(2 * lo) * np.cos(la) ** 2
    data = np.stack([base + t for t in range(time)]).astype(np.float32)
    return xr.DataArray(data, dims=("time", "lat", "lon"), coords={"lat": lat, "lon": lon}, name="t")


def truth(lat, lon):
    return smooth_field(lat, lon).values


def test_equiangular_grid_includes_both_poles():
    lat, lon = equiangular_lat_lon(46, 90)
    assert lat[0] == -90 and lat[-1] == 90 and np.allclose(np.diff(lat), 4.0)
    assert lon[0] == 0 and np.allclose(np.diff(lon), 4.0) and lon[-1] == 356
    lat_d, _ = equiangular_lat_lon(181, 360, descending=True)
    assert lat_d[0] == 90 and lat_d[-1] == -90
    with pytest.raises(ValueError, match="at least 2 latitudes"):
        equiangular_lat_lon(1, 10)


@pytest.mark.parametrize("shape", [(46, 90), (181, 360)])
def test_regrid_matches_the_field_on_the_new_grid(shape):
    # A 3-degree source, north to south, like the ERA5 file.
    src = smooth_field(np.linspace(90, -90, 61), np.arange(120) * 3.0)
    out = regrid_lat_lon(src, ["lat", "lon"], shape)
    assert out.shape == (2, *shape) and out.dtype == np.float32
    assert out.lat.values[0] == 90  # the source's latitude order is kept
    err = np.abs(out.values - truth(out.lat.values, out.lon.values))
    assert err.max() < 0.25  # 3-degree spacing: second-order error of a ~40 K field
    assert "bilinear" in out.attrs["vcinr_regridded"]


def test_longitude_wraps_round_the_dateline():
    # Source longitudes -180..177.5: the target's 0 and 358 degrees need both ends.
    lon = np.arange(-180, 180, 2.5)
    src = smooth_field(np.linspace(-90, 90, 73), lon)
    out = interp_lat_lon(src, ["lat", "lon"], np.array([0.0, 45.0]), np.array([179.0, 181.0, 359.0, 0.0]))
    expected = truth(np.array([0.0, 45.0]), np.array([179.0, 181.0, 359.0, 0.0]))
    assert np.abs(out.values - expected).max() < 0.05
    assert np.all(np.isfinite(out.values))


def test_gaussian_latitudes_extrapolate_to_the_poles():
    # A Gaussian-like grid stops short of the poles; the poles must still get values.
    lat = np.degrees(np.arcsin(np.polynomial.legendre.leggauss(32)[0]))
    src = smooth_field(lat, np.arange(64) * 5.625)
    out = regrid_lat_lon(src, ["lat", "lon"], (46, 90))
    assert np.all(np.isfinite(out.values))
    assert np.abs(out.values - truth(out.lat.values, out.lon.values)).max() < 0.6


def test_regrid_is_lazy_on_dask_data():
    src = smooth_field(np.linspace(90, -90, 61), np.arange(120) * 3.0, time=4).chunk({"time": 1})
    out = regrid_lat_lon(src, ["lat", "lon"], (46, 90))
    assert out.chunks is not None  # nothing computed yet
    assert np.allclose(out.isel(time=3).values, regrid_lat_lon(src.isel(time=[3]), ["lat", "lon"], (46, 90)).values[0])


def test_regrid_needs_lat_lon_coordinates():
    bare = xr.DataArray(np.zeros((3, 4, 5), np.float32), dims=("t", "y", "x"))
    with pytest.raises(ValueError, match="coordinate values"):
        regrid_lat_lon(bare, ["y", "x"], (46, 90))
    with pytest.raises(ValueError, match="two grid dims"):
        regrid_lat_lon(bare, ["x"], (46, 90))


def test_data_config_regrid_on_real_ccsm(shared_data):
    cfg = DataConfig(paths=[str(shared_data / "ccsm_trefht_1890-1999_annual_run57.nc")], variable="TREFHT",
                     grid_dims=["lat", "lon"], split_dim="time", regrid=[46, 90])
    data = load_dataset(cfg)
    assert data.grid.shape == (46, 90)
    raw = open_variable(DataConfig(paths=cfg.paths, variable="TREFHT", grid_dims=["lat", "lon"]))
    x = data.source.load([0])
    assert np.all(np.isfinite(x))
    # Bilinear values stay within the source's range (up to polar extrapolation, a few K).
    assert float(raw[0].min()) - 5 < x.min() and x.max() < float(raw[0].max()) + 5
    with pytest.raises(ValueError, match="grid: spherical"):
        open_variable(DataConfig(paths=cfg.paths, variable="TREFHT", grid_dims=["lat", "lon"], grid="regular", regrid=[46, 90]))


def test_regional_data_is_not_stretched_onto_a_global_grid():
    regional = smooth_field(np.linspace(20, 70, 21), np.linspace(-130, -60, 29))
    with pytest.raises(ValueError, match="needs global data"):
        regrid_lat_lon(regional, ["lat", "lon"], (46, 90))
