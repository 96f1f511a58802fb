"""Data (vcinr_sci.data.sources): lazy opening, item order, splits, normalisation, NaN masks."""

from __future__ import annotations

import json
from pathlib import Path

import dask.array
import numpy as np
import pytest
import torch
import xarray as xr

from vcinr_sci import metrics
from vcinr_sci.config import DataConfig
from vcinr_sci.data.grids import RegularGrid, SphericalGrid
from vcinr_sci.data.items import load_dataset
from vcinr_sci.data.normalise import Normaliser, fit_normaliser, item_means
from vcinr_sci.data.sources import FieldSource, make_grid, make_split, open_variable, resolve_paths
from vcinr_sci.errors import ConfigError
from vcinr_sci.model.meta import masked_mse

LAT = np.array([-30.0, 0.0, 30.0, 60.0])
LON = np.array([0.0, 60.0, 120.0, 180.0, 240.0])
NT = 6


def write_nc(path: Path, values: np.ndarray, dims=("time", "lat", "lon"), name="t", extra=None) -> Path:
    coords = {"lat": LAT, "lon": LON, "time": np.arange(values.shape[dims.index("time")]) if "time" in dims else None}
    coords = {k: v for k, v in coords.items() if k in dims and v is not None}
    ds = xr.Dataset({name: (dims, values.astype(np.float32))}, coords=coords)
    for k, v in (extra or {}).items():
        ds[k] = v
    ds.to_netcdf(path, engine="netcdf4")
    return path


def field_values(seed: int, shape=(NT, LAT.size, LON.size)) -> np.ndarray:
    return (250.0 + 30.0 * np.random.default_rng(seed).random(shape)).astype(np.float32)


@pytest.fixture
def runs(tmp_path):
    """Five 'ensemble runs' written as separate files, with known values."""
    vals = [field_values(k) for k in range(5)]
    for k, v in enumerate(vals):
        write_nc(tmp_path / f"run{k}.nc", v, extra={"other": (("time",), np.arange(NT, dtype=np.float32))})
    return tmp_path, np.stack(vals)


def runs_cfg(folder: Path, **kw) -> DataConfig:
    base = dict(
        paths=[str(folder / "run*.nc")],
        variable="t",
        grid_dims=["lat", "lon"],
        concat_dim="member",
        split_dim="member",
        val_fraction=0.2,
        test_fraction=0.2,
    )
    return DataConfig(**(base | kw))


# ---------------------------------------------------------------- opening


def test_open_variable_glob_concat_dim_and_laziness(runs):
    folder, vals = runs
    da = open_variable(runs_cfg(folder))
    assert da.dims == ("member", "time", "lat", "lon")
    assert da.shape == (5, NT, LAT.size, LON.size)
    assert isinstance(da.data, dask.array.Array)  # nothing read yet
    np.testing.assert_array_equal(da.values, vals)  # files stacked in sorted order
    src = FieldSource(da, ["lat", "lon"])
    src.load([3, 1])
    assert isinstance(src.da.data, dask.array.Array)  # loading items does not load the array


def test_open_variable_puts_grid_dims_last(tmp_path):
    vals = field_values(1)
    stored = vals.transpose(1, 0, 2)  # (lat, time, lon) on disk
    write_nc(tmp_path / "f.nc", stored, dims=("lat", "time", "lon"))
    da = open_variable(DataConfig(paths=[str(tmp_path / "f.nc")], variable="t", grid_dims=["lat", "lon"]))
    assert da.dims == ("time", "lat", "lon")
    np.testing.assert_array_equal(da.values, vals)


def test_open_variable_isel(tmp_path):
    vals = field_values(2, (NT, 2, LAT.size, LON.size))
    ds = xr.Dataset({"t": (("time", "level", "lat", "lon"), vals)}, coords={"lat": LAT, "lon": LON})
    ds.to_netcdf(tmp_path / "f.nc", engine="netcdf4")
    da = open_variable(
        DataConfig(paths=[str(tmp_path / "f.nc")], variable="t", grid_dims=["lat", "lon"], isel={"level": 1})
    )
    assert da.dims == ("time", "lat", "lon")
    np.testing.assert_array_equal(da.values, vals[:, 1])


def test_open_variable_combines_files_split_along_time(tmp_path):
    """netCDF and Zarr inputs split along time, named in any order, are combined by
    their time coordinates, lazily; a file without the variable is not read."""
    vals = field_values(3, (3 * NT, LAT.size, LON.size))
    ds = xr.Dataset({"t": (("time", "lat", "lon"), vals)}, coords={"time": np.arange(3 * NT), "lat": LAT, "lon": LON})
    ds.isel(time=slice(0, NT)).to_netcdf(tmp_path / "b.nc")
    ds.isel(time=slice(NT, 2 * NT)).to_zarr(tmp_path / "c.zarr")
    ds.isel(time=slice(2 * NT, None)).to_netcdf(tmp_path / "a.nc")
    write_nc(tmp_path / "other.nc", field_values(4), name="u")
    cfg = DataConfig(paths=[str(tmp_path / "*.nc"), str(tmp_path / "c.zarr")], variable="t", grid_dims=["lat", "lon"])
    da = open_variable(cfg)
    assert isinstance(da.data, dask.array.Array)
    np.testing.assert_array_equal(da.time.values, np.arange(3 * NT))
    np.testing.assert_array_equal(da.values, vals)


def test_open_variable_errors(runs, tmp_path):
    folder, _ = runs
    with pytest.raises(ValueError, match="concat_dim"):
        open_variable(runs_cfg(folder, concat_dim=None))
    with pytest.raises(ConfigError, match=r"data.paths: variable 'tas' not in .*run0\.nc.*\['other', 't'\]"):
        open_variable(runs_cfg(folder, variable="tas"))
    with pytest.raises(KeyError, match=r"grid dims \['latitude'\] not in 't'.*\['member', 'time', 'lat', 'lon'\]"):
        open_variable(runs_cfg(folder, grid_dims=["latitude", "lon"]))
    with pytest.raises(FileNotFoundError, match="no data file matches"):
        open_variable(runs_cfg(folder, paths=[str(tmp_path / "nothing*.nc")]))
    with pytest.raises(ValueError, match="paths is empty"):
        open_variable(DataConfig(variable="t", grid_dims=["lat", "lon"]))
    with pytest.raises(ValueError, match="grid_dims is empty"):
        open_variable(runs_cfg(folder, grid_dims=[]))


def test_resolve_paths_expands_data_dir_variable(tmp_path, monkeypatch):
    write_nc(tmp_path / "a.nc", field_values(0))
    monkeypatch.setenv("VCINR_DATA_DIR", str(tmp_path))
    assert resolve_paths(["${VCINR_DATA_DIR}/*.nc"]) == [str(tmp_path / "a.nc")]
    assert resolve_paths(["$VCINR_DATA_DIR/a.nc"]) == [str(tmp_path / "a.nc")]


def test_iris_sample_data_resolves():
    (path,) = resolve_paths(["iris-sample-data:A1B_north_america.nc"])
    assert Path(path).is_file()
    da = open_variable(
        DataConfig(
            paths=["iris-sample-data:A1B_north_america.nc"],
            variable="air_temperature",
            grid_dims=["latitude", "longitude"],
        )
    )
    assert da.dims == ("time", "latitude", "longitude")
    assert da.shape == (240, 37, 49)
    assert isinstance(da.data, dask.array.Array)


# ---------------------------------------------------------------- items


def test_field_source_item_order_matches_xarray(runs):
    folder, vals = runs
    da = open_variable(runs_cfg(folder))
    src = FieldSource(da, ["lat", "lon"])
    assert len(src) == 5 * NT
    assert src.item_dims == ["member", "time"] and src.grid_shape == (LAT.size, LON.size)
    flat = da.values.reshape(-1, LAT.size, LON.size)
    idx = np.array([17, 0, 29, 6, 17])  # unsorted, repeated
    got = src.load(idx)
    assert got.dtype == np.float32 and got.shape == (5, LAT.size, LON.size)
    np.testing.assert_array_equal(got, flat[idx])
    # field i is (member, time) = divmod(i, NT), C order over the item dims
    np.testing.assert_array_equal(got[0], vals[17 // NT, 17 % NT])
    assert src.key(17) == {"member": 17 // NT, "time": str(17 % NT)}
    assert src.load([]).shape == (0, LAT.size, LON.size)
    with pytest.raises(IndexError):
        src.load([30])
    with pytest.raises(IndexError):
        src.load([-1])


def test_field_source_rejects_integer_data():
    da = xr.DataArray(np.zeros((2, 3, 4), np.int16), dims=("time", "lat", "lon"), name="n")
    with pytest.raises(TypeError, match="float"):
        FieldSource(da, ["lat", "lon"])


def test_make_grid_kinds(runs):
    folder, _ = runs
    da = open_variable(runs_cfg(folder))
    g = make_grid(da, ["lat", "lon"], "spherical")
    assert isinstance(g, SphericalGrid) and g.shape == (LAT.size, LON.size)
    np.testing.assert_array_equal(g.lat, LAT)
    r = make_grid(da, ["lat", "lon"], "regular")
    assert isinstance(r, RegularGrid) and r.shape == (LAT.size, LON.size)
    with pytest.raises(ValueError, match="two dims"):
        make_grid(da, ["lat"], "spherical")
    with pytest.raises(ValueError, match="unknown grid kind"):
        make_grid(da, ["lat", "lon"], "healpix")


# ---------------------------------------------------------------- split


def test_make_split_holds_out_whole_members(runs):
    folder, _ = runs
    cfg = runs_cfg(folder)
    src = FieldSource(open_variable(cfg), cfg.grid_dims)
    split = make_split(src, cfg)
    assert split.positions == {"train": [0, 1, 2], "val": [3], "test": [4]}
    assert split.to_dict() == {"dim": "member", "positions": split.positions}
    member_of = lambda idx: {src.key(i)["member"] for i in idx}  # noqa: E731
    assert member_of(split.train) == {0, 1, 2}
    assert member_of(split.val) == {3} and member_of(split.test) == {4}
    # every time step of a held-out run is held out
    assert len(split.train) == 3 * NT and len(split.val) == NT and len(split.test) == NT
    everything = np.concatenate([split.train, split.val, split.test])
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(src)))
    # deterministic
    again = make_split(FieldSource(open_variable(cfg), cfg.grid_dims), cfg)
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(again, part), getattr(split, part))


def test_make_split_along_time_and_errors(runs):
    folder, _ = runs
    cfg = runs_cfg(folder, split_dim="time", val_fraction=0.0, test_fraction=0.3)
    src = FieldSource(open_variable(cfg), cfg.grid_dims)
    split = make_split(src, cfg)
    assert split.positions["test"] == [4, 5] and split.positions["val"] == []
    assert {src.key(i)["time"] for i in split.test} == {"4", "5"}
    assert len(split.test) == 5 * 2
    with pytest.raises(KeyError, match="split_dim 'lat' is not an item dim"):
        make_split(src, runs_cfg(folder, split_dim="lat"))
    with pytest.raises(ValueError, match="no training items"):
        make_split(src, runs_cfg(folder, split_dim="time", val_fraction=0.5, test_fraction=0.5))


def test_split_after_isel_records_and_prints_coordinate_values(runs):
    """Positions count within the selection; the coordinate values say which fields."""
    folder, _ = runs
    cfg = runs_cfg(folder, split_dim="time", isel={"time": [1, 2, 3, 4, 5]})
    src = FieldSource(open_variable(cfg), cfg.grid_dims)
    split = make_split(src, cfg)
    assert split.positions == {"train": [0, 1, 2], "val": [3], "test": [4]}
    assert split.coords == {"train": [1, 2, 3], "val": [4], "test": [5]}
    assert {src.key(i)["time"] for i in split.test} == {"5"}
    assert split.to_dict()["coords"] == split.coords
    assert split.describe() == "time: train [1, 2, 3] (3), val [4] (1), test [5] (1)"
    # a model recorded before coordinate values were still matches; another selection does not
    assert split.matches({"dim": "time", "positions": split.positions})
    assert split.matches(json.loads(json.dumps(split.to_dict())))
    shifted = make_split(FieldSource(open_variable(runs_cfg(folder, split_dim="time", isel={"time": [0, 1, 2, 3, 4]})),
                                     cfg.grid_dims), cfg)
    assert shifted.positions == split.positions and not shifted.matches(split.to_dict())
    # a dim without coordinate values: positions, said to be positions
    member = make_split(src, runs_cfg(folder))
    assert member.coords == {} and "coords" not in member.to_dict()
    assert member.describe().startswith("member positions: train [0, 1, 2] (3)")


# ---------------------------------------------------------------- normalisation


def test_fit_normaliser_uses_training_items_only(runs):
    folder, vals = runs
    cfg = runs_cfg(folder)
    src = FieldSource(open_variable(cfg), cfg.grid_dims)
    split = make_split(src, cfg)
    norm = fit_normaliser(src, split.train, cfg, block=4)  # several blocks
    assert norm.lo == pytest.approx(float(vals[:3].min()))
    assert norm.hi == pytest.approx(float(vals[:3].max()))
    assert norm.hi < float(vals.max()) or norm.lo > float(vals.min())  # held-out runs not seen
    x = np.array([norm.lo, norm.hi, 0.5 * (norm.lo + norm.hi)])
    np.testing.assert_allclose(norm.normalise(x), [0.0, 1.0, 0.5])
    np.testing.assert_allclose(norm.denormalise(norm.normalise(x)), x)
    assert Normaliser.from_dict(norm.to_dict()) == norm


def test_fixed_normalisation_and_errors(runs):
    folder, _ = runs
    cfg = runs_cfg(folder, normalisation="fixed", fixed_range=[202.66, 320.93])
    src = FieldSource(open_variable(cfg), cfg.grid_dims)
    norm = fit_normaliser(src, np.arange(3), cfg)
    assert (norm.lo, norm.hi) == (202.66, 320.93)
    with pytest.raises(ValueError, match="fixed_range"):
        fit_normaliser(src, np.arange(3), runs_cfg(folder, normalisation="fixed"))
    with pytest.raises(ValueError, match="unknown normalisation"):
        fit_normaliser(src, np.arange(3), runs_cfg(folder, normalisation="zscore"))
    for lo, hi in [(1.0, 1.0), (2.0, 1.0), (0.0, np.inf), (np.nan, 1.0)]:
        with pytest.raises(ValueError, match="hi > lo"):
            Normaliser(lo, hi)


# ---------------------------------------------------------------- NaN masks


@pytest.fixture
def masked(tmp_path):
    vals = field_values(7)
    vals[:, 1, 2] = np.nan  # a "land" point in every field
    vals[2, 3, :] = np.nan  # one field loses a whole row
    vals[4] = np.nan  # one field is all missing
    path = write_nc(tmp_path / "masked.nc", vals)
    cfg = DataConfig(paths=[str(path)], variable="t", grid_dims=["lat", "lon"], val_fraction=0.0, test_fraction=0.0)
    return cfg, vals


@pytest.mark.parametrize("cache_limit_mb", [2048.0, 0.0])  # cached and lazily read
@pytest.mark.parametrize("patch_shape", [None, [3, 2]])
def test_itemset_masks_nans(masked, cache_limit_mb, patch_shape):
    cfg, vals = masked
    cfg.cache_limit_mb, cfg.patch_shape = cache_limit_mb, patch_shape
    ds = load_dataset(cfg)
    assert ds.normaliser.lo == pytest.approx(float(np.nanmin(vals)))
    assert ds.normaliser.hi == pytest.approx(float(np.nanmax(vals)))
    items = ds.items("train")
    assert (items._cache is None) == (cache_limit_mb == 0.0)
    n = len(items)
    coords, values, mask = items.batch(np.arange(n))
    assert values.dtype == torch.float32 and mask.dtype == torch.bool
    assert values.shape == mask.shape == (n, items.points_per_item, 1)
    assert coords.shape == (n, items.points_per_item, 3)
    # back on the grid: mask False exactly at the NaNs, zeros there, normalised values elsewhere
    m = items.to_fields(mask[..., 0].numpy())
    v = items.to_fields(values[..., 0].numpy())
    np.testing.assert_array_equal(m, np.isfinite(vals))
    assert (v[~m] == 0).all()
    np.testing.assert_allclose(v[m], ds.normaliser.normalise(vals[m]), rtol=1e-6)
    assert np.isfinite(values.numpy()).all()
    # the raw (un-masked) item values keep the NaNs
    np.testing.assert_array_equal(np.isnan(items.to_fields(items.values(np.arange(n)))), np.isnan(vals))


@pytest.mark.parametrize("cache_limit_mb", [2048.0, 0.0])
@pytest.mark.parametrize("patch_shape", [None, [3, 2]])
def test_itemset_subtracts_item_means(masked, cache_limit_mb, patch_shape):
    cfg, vals = masked
    cfg.cache_limit_mb, cfg.patch_shape = cache_limit_mb, patch_shape
    plain = load_dataset(cfg).items("train")
    cfg.subtract_item_mean = True
    centred = load_dataset(cfg).items("train")
    idx = np.arange(len(plain))[::-1]  # any order
    raw, values, offsets = plain.values(idx), centred.values(idx), centred.offsets(idx)
    assert not plain.offsets(idx).any()
    # each item's mean over its valid points, float16-representable; 0 for an all-NaN item
    empty = np.isnan(raw).all(axis=1)
    assert empty.any() and (offsets[empty] == 0).all()
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(offsets[~empty], np.nanmean(raw[~empty], axis=1), atol=5e-4)
    np.testing.assert_array_equal(offsets.astype(np.float16).astype(np.float32), offsets)
    np.testing.assert_array_equal(values, raw - offsets[:, None])  # NaNs where they were
    with np.errstate(all="ignore"):
        assert np.abs(np.nanmean(values[~empty], axis=1)).max() < 5e-4


def test_item_means_refuse_what_float16_cannot_hold():
    assert item_means(np.array([[0.25, np.nan, 0.75]]))[0] == 0.5
    with pytest.raises(ValueError, match="beyond float16.*may hold an undeclared fill value"):
        item_means(np.full((2, 3), 1e6))


def test_itemset_points_subset(masked):
    cfg, vals = masked
    items = load_dataset(cfg).items("train")
    pts = np.array([0, 7, 19])
    c_all, v_all, m_all = items.batch(np.array([0, 2]))
    c, v, m = items.batch(np.array([0, 2]), pts)
    assert v.shape == (2, 3, 1)
    torch.testing.assert_close(c, c_all[:, pts])
    torch.testing.assert_close(v, v_all[:, pts])
    assert torch.equal(m, m_all[:, pts])
    assert not m[0, 1, 0]  # point 7 = (1, 2) is the land point


def test_losses_and_metrics_ignore_nans(masked):
    cfg, vals = masked
    items = load_dataset(cfg).items("train")
    _, target, mask = items.batch(np.arange(len(items)))
    pred = target + 0.01
    pred[~mask] = 123.0  # whatever a model predicts where there is no data
    per_item = masked_mse(pred, target, mask)
    np.testing.assert_allclose(per_item[[0, 1, 2, 3, 5]].numpy(), 1e-4, rtol=1e-3)
    assert per_item[4] == 0.0  # an all-missing item costs nothing (and is not NaN)
    ref = np.where(mask.numpy(), target.numpy(), np.nan)
    assert metrics.mse(ref, pred.numpy()) == pytest.approx(1e-4, rel=1e-3)
    assert metrics.max_abs_error(ref, pred.numpy()) == pytest.approx(0.01, rel=1e-3)


# ---------------------------------------------------------------- real data


@pytest.mark.shared_data
def test_ostia_masked_sst(shared_data):
    cfg = DataConfig(
        paths=[str(shared_data / "ostia_sst_monthly_masked.nc")],
        variable="surface_temperature",
        grid_dims=["latitude", "longitude"],
    )
    ds = load_dataset(cfg)
    assert ds.grid.shape == (18, 432) and len(ds.source) == 54
    assert np.isfinite([ds.normaliser.lo, ds.normaliser.hi]).all()
    assert 260.0 < ds.normaliser.lo < ds.normaliser.hi < 320.0  # sea water in K
    items = ds.items("test")
    _, values, mask = items.batch(np.arange(len(items)))
    frac_missing = 1.0 - mask.float().mean().item()
    assert 0.2 < frac_missing < 0.32
    raw = ds.source.load(ds.split.test)
    np.testing.assert_array_equal(items.to_fields(mask[..., 0].numpy()), np.isfinite(raw))
    assert (values[~mask] == 0).all()


@pytest.mark.shared_data
def test_ccsm_runs_hold_out_whole_runs(shared_data):
    cfg = DataConfig(
        paths=[str(shared_data / "ccsm_trefht_1890-1999_annual_run*.nc")],
        variable="TREFHT",
        grid_dims=["lat", "lon"],
        concat_dim="member",
        split_dim="member",
        val_fraction=1 / 6,
        test_fraction=1 / 6,
    )
    ds = load_dataset(cfg)
    assert ds.source.item_dims == ["member", "time"] and ds.source.item_shape == (6, 110)
    assert isinstance(ds.grid, SphericalGrid) and ds.grid.shape == (64, 128)
    assert ds.split.positions == {"train": [0, 1, 2, 3], "val": [4], "test": [5]}
    assert {ds.source.key(i)["member"] for i in ds.split.test} == {5}
    assert len(ds.split.test) == 110 and len(ds.split.train) == 440
    # the held-out run is the last file in sorted order: run67
    with xr.open_dataset(shared_data / "ccsm_trefht_1890-1999_annual_run67.nc") as run67:
        np.testing.assert_array_equal(ds.source.load(ds.split.test[[0, 109]]), run67["TREFHT"].values[[0, 109]])


def test_undecodable_time_units_are_left_raw(shared_data):
    # CCSM's monthly TS file says "days since 0000-00-00" in a 365_day calendar.
    cfg = DataConfig(paths=[str(shared_data / "ccsm_b003_ts_monthly_100.nc")], variable="TS", grid_dims=["lat", "lon"])
    with pytest.warns(UserWarning, match="time coordinates left undecoded"):
        da = open_variable(cfg)
    assert da.shape == (100, 64, 128) and np.issubdtype(da["time"].dtype, np.floating)
