"""``vcinr decompress``: a corrupt chunk is named in one line and leaves no output (nor
a temporary one), an existing output survives a failed overwrite, and
``--skip-bad-chunks`` writes NaN for exactly that chunk and counts it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import xarray as xr
from _vcinr_tiny import QUALITY, fields, tiny_artifact

from vcinr_sci.io.accessor import open_zarr
from vcinr_sci.io.decompress import main

pytestmark = pytest.mark.usefixtures("one_torch_thread", "isolated_model_lookup")

CHUNK_KEYS = {2: "1.0.0", 3: "c/1/0/0"}  # the second chunk along time


@pytest.fixture(autouse=True)
def model_on_the_path(isolated_model_lookup, monkeypatch):
    """Readers find the model in ``$VCINR_MODEL_PATH``: a store records no path of the
    writer's, and each test's cache starts empty (the stores of :func:`good` were
    written, and their model cached, before)."""
    monkeypatch.setenv("VCINR_MODEL_PATH", str(tiny_artifact().parent))


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A store per Zarr format (4 chunks of 4 fields) and its decoded values."""
    root = tmp_path_factory.mktemp("stores")
    out = {}
    for fmt in (2, 3):
        store = fields(16).vcinr.to_zarr(
            root / f"s{fmt}.zarr", model=tiny_artifact(), quality=QUALITY, zarr_format=fmt, chunks={"time": 4}
        )
        out[fmt] = (store, open_zarr(store).air_temperature.values)
    return out


def corrupted(store, fmt, tmp_path):
    """A copy of ``store`` whose second chunk has one byte flipped."""
    copy = tmp_path / f"bad{fmt}.zarr"
    shutil.copytree(store, copy)
    chunk = copy / "air_temperature" / CHUNK_KEYS[fmt]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    return copy


def read(path):
    with (xr.open_dataset(path) if path.suffix == ".nc" else xr.open_zarr(path)) as ds:
        return ds.air_temperature.values


@pytest.mark.parametrize("fmt", [2, 3])
@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_corrupt_chunk_is_named_and_leaves_nothing(good, fmt, suffix, tmp_path, capsys):
    store, values = good[fmt]
    bad = corrupted(store, fmt, tmp_path)
    out = tmp_path / f"out{suffix}"
    assert main([str(bad), str(out)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'air_temperature'" in err and "chunk (1, 0, 0)" in err and CHUNK_KEYS[fmt] in err and "checksum" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [bad.name]  # no output, no temporary

    # an existing output is kept when the overwrite fails
    assert main([str(store), str(out)]) == 0
    assert main([str(bad), str(out), "--overwrite"]) != 0
    np.testing.assert_array_equal(read(out), values)


@pytest.mark.parametrize("fmt", [2, 3])
def test_skip_bad_chunks_writes_nan_there_only(good, fmt, tmp_path, capsys):
    store, values = good[fmt]
    bad = corrupted(store, fmt, tmp_path)
    out = tmp_path / "out.nc"
    assert main([str(bad), str(out)]) != 0
    capsys.readouterr()
    assert main([str(bad), str(out), "--skip-bad-chunks"]) == 0  # the failed run left nothing to refuse
    captured = capsys.readouterr()
    assert "1 bad chunk(s) written as NaN" in captured.out and CHUNK_KEYS[fmt] in captured.err
    decoded = read(out)
    assert np.isnan(decoded[4:8]).all()
    np.testing.assert_array_equal(decoded[:4], values[:4])
    np.testing.assert_array_equal(decoded[8:], values[8:])


@pytest.mark.parametrize("fmt", [2, 3])
def test_netcdf_output_without_warnings(good, fmt, tmp_path, recwarn):
    """Zarr 3 reads arrays as explicitly little-endian (``<f4``): netCDF4 warned
    "endian-ness of dtype and endian kwarg do not match" for each such variable."""
    store, values = good[fmt]
    out = tmp_path / "out.nc"
    assert main([str(store), str(out)]) == 0
    assert [str(w.message) for w in recwarn] == []
    with xr.open_dataset(out) as ds:
        np.testing.assert_array_equal(ds.air_temperature.values, values)
        assert all(v.dtype.byteorder in "=|" for v in ds.variables.values())
