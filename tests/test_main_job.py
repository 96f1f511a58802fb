"""The README's main job, end to end on the tiny config: train, latents, coders, Zarr."""

from __future__ import annotations

from pathlib import Path

import pytest
import xarray as xr

from pipelines.main_job import main

pytestmark = pytest.mark.slow  # an end-to-end run of a Ray pipeline

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_main_job_end_to_end(ray_session, tmp_path, capsys):
    rc = main(
        [
            "--config", str(CONFIGS / "tiny.yaml"),
            "--set", f"train.storage_path={tmp_path / 'runs'}",
            "--set", f"train.artifact_dir={tmp_path / 'artifacts'}",
            "--set", f"latents.output_dir={tmp_path / 'latents'}",
            "--out", str(tmp_path / "out"),
            "--kinds", "inr,linear,hybrid",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    # One store per level of each model's ladder (learned or uniform, whichever won), a
    # row of one table each.
    for kind in ("inr", "linear", "hybrid"):
        stores = sorted((tmp_path / "out").glob(f"tiny-{kind}-*.zarr"))
        assert stores and all(f"| {kind} | air_temperature | {s.name[len(kind) + 6:-5]} |" in printed for s in stores)
        assert f"  {kind} model of air_temperature: " in printed
    store = sorted((tmp_path / "out").glob("tiny-inr-*.zarr"))[0]
    ds = xr.open_zarr(store)  # the codec is found through its entry point
    da = ds["air_temperature"]
    level = da.attrs["vcinr_quality"]
    assert store.name == f"tiny-inr-{level}.zarr"
    assert 0 < da.attrs["vcinr_bits_per_value"] < 1.0
    values = da.values
    assert values.shape == (24, 37, 49) and (values > 200).all() and (values < 340).all()
    assert sum(p.stat().st_size > 10_000 for p in (tmp_path / "out").glob("tiny-*.png")) == 1


def test_report_table_without_latitudes():
    # A `grid: regular` config has no latitude-weighted RMSE; the report used to crash on it.
    from pipelines.main_job import report_table

    row = {"model": "linear", "variable": "tas", "quality": "q0", "bits_per_value": 0.05, "ratio_vs_float32": 640.0, "psnr_db": 38.1,
           "rmse": 0.6, "lat_weighted_rmse": None, "max_abs_error": 2.9}
    table = report_table([row, row | {"quality": "q1", "lat_weighted_rmse": 0.55}])
    assert "| linear | tas | q0 | 0.0500 | 640 | 38.10 | 0.600 | - | 2.900 |" in table
    assert "| 0.550 |" in table
