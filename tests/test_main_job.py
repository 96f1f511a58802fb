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
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| q0 |" in printed
    store = tmp_path / "out" / "tiny-q0.zarr"
    ds = xr.open_zarr(store)  # the codec is found through its entry point
    da = ds["air_temperature"]
    assert da.attrs["vcinr_quality"] == "q0"
    assert 0 < da.attrs["vcinr_bits_per_value"] < 1.0
    values = da.values
    assert values.shape == (24, 37, 49) and (values > 200).all() and (values < 340).all()
    assert (tmp_path / "out" / "tiny-q0.png").stat().st_size > 10_000
