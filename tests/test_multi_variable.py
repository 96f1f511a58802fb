"""Many files, many variables, one store: ``vcinr fit-basis`` fits a linear model per
variable from netCDF files split along time, and one ``vcinr compress`` run codes every
variable with its own model into one Zarr store that xarray opens with every variable,
its coordinates and attributes intact; with clear errors for a variable missing from the
files, files whose grids disagree, variables that disagree, and a model on another grid."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from _vcinr_tiny import data_path

from pipelines.compress import compress, model_choices
from pipelines.fit_basis import fit_variables
from pipelines.run_variables import run_variables
from vcinr_sci import metrics
from vcinr_sci.config import Config
from vcinr_sci.errors import CodecError, ConfigError, UsageError

N_TIME = 48
FILES = 3
TARGET_DB = 30.0


def archive() -> xr.Dataset:
    """Two real variables on one grid: the A1B run's 1.5 m temperature in K (its first
    years) and the E1 run's in degrees C (its last years, after the scenarios part; a
    different range, so each needs its own normalisation)."""
    a1b = xr.open_dataset(data_path()).isel(time=slice(0, N_TIME))
    e1 = xr.open_dataset(data_path().replace("A1B", "E1")).isel(time=slice(-N_TIME, None))
    celsius = (e1.air_temperature - 273.15).assign_attrs(units="degC", long_name="E1 temperature")
    celsius = celsius.drop_vars(["forecast_period", "forecast_reference_time", "height"])  # A1B's apply
    ds = a1b[["air_temperature"]].assign(e1_celsius=celsius.assign_coords(time=a1b.time))
    ds.attrs["title"] = "two-variable test archive"
    return ds.load()


def write_files(ds: xr.Dataset, folder, stem: str = "part") -> list:
    """``ds`` split along time into FILES netCDF files (written in reverse order: the
    files are combined by their coordinates, not by name)."""
    bounds = np.linspace(0, ds.sizes["time"], FILES + 1).astype(int)
    paths = [folder / f"{stem}{k}.nc" for k in range(FILES)]
    for k in reversed(range(FILES)):
        ds.isel(time=slice(bounds[k], bounds[k + 1])).to_netcdf(paths[k])
    return paths


def run_config(tmp_path, paths: list[str], **compress) -> Config:
    raw = {
        "name": "multi",
        "data": {"paths": paths, "variable": "air_temperature", "grid_dims": ["latitude", "longitude"]},
        "model": {"kind": "linear"},
        "basis": {"components": 8, "target_psnr": [TARGET_DB]},
        "train": {"artifact_dir": str(tmp_path / "artifacts")},
        "compress": {"variables": ["air_temperature", "e1_celsius"], "output": str(tmp_path / "out.zarr"),
                     "chunk_fields": 16, "num_actors": 1} | compress,
    }
    return Config.from_dict(raw)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The archive in 3 files, and a linear model per variable fitted from them."""
    tmp = tmp_path_factory.mktemp("multi")
    ds = archive()
    write_files(ds, tmp)
    cfg = run_config(tmp, [str(tmp / "part*.nc")])
    return ds, cfg, fit_variables(cfg)


@pytest.mark.slow  # an end-to-end run of the compress pipeline on Ray
def test_one_run_codes_every_variable_of_several_files_into_one_store(ray_session, fitted, capsys):
    ds, cfg, models = fitted
    capsys.readouterr()
    summary = compress(cfg)  # each variable's model found by its config
    printed = capsys.readouterr().out
    assert summary.complete and summary.written == 6  # 48 fields / 16 a chunk, per variable
    from vcinr_sci.model.artifact import load_artifact

    hashes = {v: load_artifact(p).hash for v, p in models.items()}
    assert summary.model_hashes == hashes and len(set(hashes.values())) == 2
    assert "[6/6, 0 left]" in printed and ", 1 left, ETA " in printed

    back = xr.open_zarr(summary.store)  # the codec and the stored models found by entry point and cache
    assert sorted(back.data_vars) == ["air_temperature", "e1_celsius"]
    assert back.attrs["title"] == ds.attrs["title"] and back.attrs["Conventions"] == ds.attrs["Conventions"]
    for name in ("time", "latitude", "longitude", "forecast_period"):
        np.testing.assert_array_equal(back[name].values, ds[name].values)
    for v in ("air_temperature", "e1_celsius"):
        ref, dec = ds[v], back[v]
        assert dec.dims == ref.dims and dec.attrs["units"] == ref.attrs["units"]
        assert dec.attrs["vcinr_model_hash"] == hashes[v]
        values = dec.values
        assert np.isfinite(values).all()
        # the store's recorded error is the true one, and each variable reaches its model's level
        assert dec.attrs["vcinr_rmse"] == pytest.approx(metrics.rmse(ref.values, values), rel=1e-4)
        assert dec.attrs["vcinr_max_abs_error"] == pytest.approx(metrics.max_abs_error(ref.values, values), rel=1e-4)
        span = float(np.ptp(ref.values))
        assert metrics.rmse(ref.values, values) < span * 10 ** (-(TARGET_DB - 3) / 20)


@pytest.mark.slow
def test_main_job_writes_every_variable_into_each_store(ray_session, fitted, tmp_path, capsys):
    """The main job on several files and both variables: a linear model per variable,
    then one store per level with every variable's held-out fields."""
    import yaml

    from pipelines.main_job import main

    ds, cfg, _ = fitted
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    assert main(["--config", str(config), "--set", f"train.artifact_dir={tmp_path / 'artifacts'}",
                 "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    back = xr.open_zarr(tmp_path / "out" / "multi-linear-q0.zarr")
    test_years = ds.time.values[-5:]  # the last tenth of the 48 fields
    for v in ("air_temperature", "e1_celsius"):
        assert back[v].shape == (5, 37, 49) and np.array_equal(back[v].time.values, test_years)
        assert f"| linear | {v} | q0 |" in printed
        assert (tmp_path / "out" / f"multi-{v}-linear-q0.png").stat().st_size > 10_000


def test_a_variable_missing_from_the_files_is_named(fitted, tmp_path):
    _, cfg, _ = fitted
    bad = run_config(tmp_path, cfg.data.paths, variables=["air_temperature", "precip"])
    with pytest.raises(ConfigError, match=r"variable 'precip' not in any of the 3 files .*\['air_temperature', "):
        compress(bad, quiet=True)


def test_files_whose_grids_disagree_are_refused(tmp_path):
    ds = archive()
    paths = write_files(ds, tmp_path)
    with xr.open_dataset(paths[2]) as part:
        moved = part.load()
    moved.assign_coords(latitude=moved.latitude + 0.5).to_netcdf(paths[2])
    cfg = run_config(tmp_path, [str(tmp_path / "part*.nc")])
    with pytest.raises(ConfigError, match=r"part2\.nc: its 'latitude' coordinates differ from those of .*part0\.nc"):
        fit_variables(cfg)


def test_a_model_on_another_grid_is_refused(fitted, tmp_path):
    ds, cfg, models = fitted
    small = ds.isel(latitude=slice(0, 30))
    write_files(small, tmp_path, "small")
    other = run_config(tmp_path, [str(tmp_path / "small*.nc")])
    spec = ",".join(f"{v}={p}" for v, p in models.items())
    with pytest.raises(CodecError, match=r"variable 'air_temperature' and its model [0-9a-f]{16} .*grid"):
        compress(other, spec, quiet=True)
    assert not (tmp_path / "out.zarr").exists()


def test_variables_that_disagree_on_a_shared_coordinate_are_refused(fitted, tmp_path):
    """A file per variable (as archives often are): each variable is read from its own
    files, but the two name different heights, which one store cannot hold."""
    ds, cfg, models = fitted
    write_files(ds[["air_temperature"]].assign_coords(height=1.5), tmp_path, "t")
    write_files(ds[["e1_celsius"]].assign_coords(height=10.0), tmp_path, "c")
    split = run_config(tmp_path, [str(tmp_path / "t*.nc"), str(tmp_path / "c*.nc")])
    spec = ",".join(f"{v}={p}" for v, p in models.items())
    with pytest.raises(UsageError, match="disagree on a coordinate they share.*height"):
        compress(split, spec, quiet=True)


def test_model_choices(fitted, tmp_path):
    _, cfg, _ = fitted
    variables = run_variables(cfg)
    assert model_choices(cfg, None, variables) == {"air_temperature": None, "e1_celsius": None}
    assert model_choices(cfg, "abcdef12", variables) == {"air_temperature": "abcdef12", "e1_celsius": "abcdef12"}
    assert model_choices(cfg, "e1_celsius=abcdef12", variables) == {"air_temperature": None, "e1_celsius": "abcdef12"}
    with pytest.raises(UsageError, match=r"--model names \['tas'\]"):
        model_choices(cfg, "tas=abcdef12", variables)
    with pytest.raises(UsageError, match="VAR=MODEL"):
        model_choices(cfg, "e1_celsius=", variables)
    named = run_config(tmp_path, cfg.data.paths, models={"rain": "abcdef12"})
    with pytest.raises(ConfigError, match=r"compress.models names \['rain'\]"):
        model_choices(named, None, variables)
    with pytest.raises(ConfigError, match="more than once"):
        run_variables(run_config(tmp_path, cfg.data.paths, variables=["a", "a"]))
