"""The xarray accessors: writing with the codec (Zarr 2 and 3, numpy and dask), recorded
attributes, sampling the INR off the grid, error reports, a store that decodes alone in
a fresh process, the info/decompress commands, and bad input that writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from _vcinr_tiny import QUALITY, fields, five_d_fields, linear_artifact, tiny_artifact

from vcinr_sci import metrics
from vcinr_sci.errors import CodecError, UsageError
from vcinr_sci.io.accessor import open_zarr
from vcinr_sci.io.layout import ATTRS, item_chunks

pytestmark = pytest.mark.usefixtures("one_torch_thread", "isolated_model_lookup")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ds():
    """20 fields, one with NaN (conftest's ``ds`` has 8 and none)."""
    d = fields(20)
    d["air_temperature"][2, :4, :6] = np.nan
    return d


@pytest.fixture(autouse=True)
def model_on_the_path(isolated_model_lookup, model, monkeypatch):
    """Readers find the tests' model in ``$VCINR_MODEL_PATH``, as a user keeping models in
    a folder does: a store records no path of the writer's, and each test's cache starts
    empty (the stores of :func:`written` were written, and cached, before)."""
    monkeypatch.setenv("VCINR_MODEL_PATH", str(Path(model).parent))


@pytest.fixture(scope="module")
def written(model, ds, tmp_path_factory):
    """The dataset written once per format (reused by the reading tests)."""
    root = tmp_path_factory.mktemp("written")
    out = {}
    for fmt in (2, 3):
        out[fmt] = ds.vcinr.to_zarr(root / f"s{fmt}.zarr", model=model, quality=QUALITY, zarr_format=fmt, chunks={"time": 8})
    return out


@pytest.mark.parametrize("fmt", [2, 3])
def test_to_zarr_roundtrip_and_attributes(written, ds, model, fmt):
    back = open_zarr(written[fmt])
    da, ref = back.air_temperature, ds.air_temperature
    assert da.dtype == ref.dtype and da.dims == ref.dims
    nan = np.isnan(ref.values)
    np.testing.assert_array_equal(np.isnan(da.values), nan)
    attrs = da.vcinr.attrs
    assert set(attrs) == set(ATTRS) - {"vcinr_note"} | {"vcinr_note"}
    assert attrs["vcinr_codec"] == "vcinr" and attrs["vcinr_quality"] == QUALITY
    assert attrs["vcinr_model_hash"].startswith(Path(model).name)
    assert attrs["vcinr_grid_dims"] == ["latitude", "longitude"]
    # the figures recorded are those of the stored data
    ok = ~nan
    assert attrs["vcinr_rmse"] == pytest.approx(metrics.rmse(ref.values[ok], da.values[ok]), rel=1e-6)
    assert attrs["vcinr_max_abs_error"] == pytest.approx(metrics.max_abs_error(ref.values, da.values), rel=1e-6)
    assert attrs["vcinr_psnr_db"] > 15 and attrs["vcinr_bits_per_value"] < 1.0
    # no CF quantization attributes are claimed
    assert not any(k.startswith("quantization") for k in da.attrs)
    # other variables and coordinates travel unchanged
    np.testing.assert_array_equal(back.latitude.values, ds.latitude.values)
    assert (back.time.values == ds.time.values).all()


def test_formats_give_identical_chunks(written):
    a = open_zarr(written[2]).air_temperature.values
    b = open_zarr(written[3]).air_temperature.values
    np.testing.assert_array_equal(a, b)


def test_dask_input_encodes_in_parallel_chunks(model, ds, written, tmp_path):
    lazy = ds.chunk({"time": 4})  # rechunked to the zarr chunks (8) before writing
    out = lazy.vcinr.to_zarr(tmp_path / "dask.zarr", model=model, quality=QUALITY, chunks={"time": 8})
    np.testing.assert_array_equal(open_zarr(out).air_temperature.values, open_zarr(written[3]).air_temperature.values)
    # dask input with its own chunking as the default
    out2 = ds.chunk({"time": 5}).vcinr.to_zarr(tmp_path / "dask5.zarr", model=model, quality=QUALITY)
    back = open_zarr(out2).air_temperature
    assert back.encoding["chunks"] == (5, 37, 49)


def test_item_chunks_fill_the_last_item_dims_first():
    sizes = {"realization": 1, "time": 4, "level": 2}
    assert item_chunks(sizes, 8) == {"realization": 1, "time": 4, "level": 2}
    assert item_chunks(sizes, 4) == {"realization": 1, "time": 2, "level": 2}
    assert item_chunks({"member": 3, "time": 40, "level": 2}, 64) == {"member": 1, "time": 32, "level": 2}
    assert item_chunks({"time": 10, "level": 3}, 8) == {"time": 2, "level": 3}
    assert item_chunks({"time": 10, "level": 30}, 16) == {"time": 1, "level": 16}
    assert item_chunks(sizes, 8, {"level": 1, "other": 5}) == {"realization": 1, "time": 4, "level": 1}
    assert item_chunks({"time": 6}, 0) == {"time": 1}


def test_several_item_dims_share_a_chunk(model, tmp_path):
    """A (1, 4, 2, lat, lon) array is one chunk of 8 fields, not 8 chunks of one."""
    five = five_d_fields()
    out = five.vcinr.to_zarr(tmp_path / "five.zarr", model=model, quality=QUALITY, measure=False)
    back = open_zarr(out).air_temperature
    assert back.encoding["chunks"] == (1, 4, 2, 37, 49)
    assert back.shape == five.air_temperature.shape
    named = five.vcinr.to_zarr(tmp_path / "named.zarr", model=model, quality=QUALITY, chunks={"level": 1}, measure=False)
    assert open_zarr(named).air_temperature.encoding["chunks"] == (1, 4, 1, 37, 49)


def test_error_report(written, ds):
    da = open_zarr(written[3]).air_temperature
    report = da.vcinr.error_report(ds.air_temperature)
    ref, got = ds.air_temperature.values, da.values
    assert report["rmse"] == pytest.approx(metrics.rmse(ref, got), rel=1e-6)
    assert report["max_abs_error"] == pytest.approx(metrics.max_abs_error(ref, got), rel=1e-6)
    rng = da.attrs["vcinr_psnr_data_range"]
    assert report["psnr_db"] == pytest.approx(metrics.psnr(ref, got, rng), rel=1e-6)
    w = np.cos(np.deg2rad(ds.latitude.values))[:, None]
    assert report["lat_weighted_rmse"] == pytest.approx(metrics.weighted_rmse(ref, got, w), rel=1e-6)
    assert report["n_values"] == int(np.isfinite(ref).sum())
    per_var = open_zarr(written[3]).vcinr.error_report(ds)
    assert per_var["air_temperature"]["rmse"] == pytest.approx(report["rmse"])


@pytest.mark.parametrize("fmt", [2, 3])
def test_sample_matches_grid_and_goes_between(written, fmt):
    back = open_zarr(written[fmt])
    da = back.air_temperature.isel(time=[3, 0, 2])
    on_grid = da.vcinr.sample(latitude=back.latitude.values, longitude=back.longitude.values)
    assert on_grid.dims == ("time", "latitude", "longitude")
    np.testing.assert_allclose(on_grid.values, da.values, rtol=0, atol=1e-3)  # NaN points equal too
    # off the grid: finite, near the neighbouring grid values, continuous
    lat, lon = back.latitude.values, back.longitude.values
    mid = da.isel(time=[0]).vcinr.sample(latitude=(lat[20] + lat[21]) / 2, longitude=(lon[30] + lon[31]) / 2)
    corners = da.values[0, 20:22, 30:32]
    assert mid.shape == (1,) and abs(float(mid[0]) - corners.mean()) < 4 * corners.std() + 2.0
    # pointwise (DataArray) sampling and a scalar selection along time
    pts = xr.DataArray(np.arange(5), dims="station")
    track = back.air_temperature.isel(time=1).vcinr.sample(
        latitude=xr.DataArray(np.linspace(20, 50, 5), dims="station", coords={"station": pts}),
        longitude=xr.DataArray(np.linspace(230, 300, 5), dims="station"),
    )
    assert track.dims == ("station",) and np.isfinite(track.values).all()
    # a NaN grid point stays NaN when its nearest point is sampled
    gap = back.air_temperature.isel(time=[2]).vcinr.sample(latitude=lat[1] + 0.1, longitude=lon[2])
    assert np.isnan(gap.values).all()


def test_sample_needs_the_store(written, ds):
    with pytest.raises(ValueError, match="unknown store"):
        ds.air_temperature.vcinr.sample(latitude=30.0, longitude=250.0)
    s = ds.air_temperature.isel(time=[0]).vcinr.sample(store=written[3], latitude=30.0, longitude=250.0)
    assert s.shape == (1,)


def test_bad_input_writes_nothing(model, ds, tmp_path):
    target = tmp_path / "bad.zarr"

    def nothing_written():
        return not target.exists() and not list(tmp_path.glob(".bad.zarr.tmp-*"))

    with pytest.raises(CodecError, match="unsupported dtype"):
        ds.fillna(0).astype("int32").vcinr.to_zarr(target, model=model, quality=QUALITY, variables=["air_temperature"])
    assert nothing_written()
    inf = ds.copy(deep=True)
    inf["air_temperature"][5, 3, 3] = np.inf
    with pytest.raises(CodecError, match="inf"):
        inf.vcinr.to_zarr(target, model=model, quality=QUALITY)
    assert nothing_written()
    with pytest.raises(CodecError, match="inf"):  # dask input: found while encoding, store discarded
        inf.chunk({"time": 4}).vcinr.to_zarr(target, model=model, quality=QUALITY)
    assert nothing_written()
    with pytest.raises(CodecError, match="cover the model's grid"):
        ds.isel(latitude=slice(1, None)).vcinr.to_zarr(target, model=model, quality=QUALITY)
    assert nothing_written()
    shifted = ds.assign_coords(longitude=ds.longitude + 1.0)
    with pytest.raises(CodecError, match="coordinates differ"):
        shifted.vcinr.to_zarr(target, model=model, quality=QUALITY)
    with pytest.raises(CodecError, match="quality level"):
        ds.vcinr.to_zarr(target, model=model, quality="nope")
    with pytest.raises(CodecError, match="only item dims"):
        ds.vcinr.to_zarr(target, model=model, quality=QUALITY, chunks={"latitude": 10})
    assert nothing_written()
    target.mkdir()
    with pytest.raises(FileExistsError):
        ds.vcinr.to_zarr(target, model=model, quality=QUALITY)


def test_all_nan_variable(model, ds, tmp_path):
    empty = ds.copy(deep=True)
    empty["air_temperature"][:] = np.nan
    out = empty.vcinr.to_zarr(tmp_path / "nan.zarr", model=model, quality=QUALITY, chunks={"time": 8})
    back = open_zarr(out).air_temperature
    assert np.isnan(back.values).all()


def test_store_alone_decodes_in_fresh_process(model, ds, tmp_path):
    """With store_model, neither the artifact folder nor any search path is needed: in a
    new process with an empty cache, open_zarr decodes, after the store moved too. Plain
    xarray decodes with the writer's cache (the writer caches its model); without it,
    the codec alone cannot know where the store is, and its error says to use open_zarr."""
    out = ds.vcinr.to_zarr(tmp_path / "self.zarr", model=model, quality=QUALITY, store_model=True, chunks={"time": 8})
    expected = open_zarr(out).air_temperature.values
    moved = tmp_path / "moved.zarr"
    cache = tmp_path / "fresh-cache"
    script = textwrap.dedent(
        f"""
        import os, shutil, sys
        import numpy as np, xarray as xr
        from vcinr_sci.errors import ArtifactError
        try:
            xr.open_zarr(r"{out}").air_temperature.values
            raise SystemExit("decoded without the model")
        except ArtifactError as e:
            assert "vcinr_sci.io.accessor.open_zarr(store)" in str(e), e
        assert "vcinr_sci.io.accessor" in sys.modules  # the entry point imported vcinr_sci, which registers the accessors
        os.environ["VCINR_CACHE_DIR"] = r"{tmp_path / 'cache'}"  # the writer's
        np.save(r"{tmp_path}/plain.npy", xr.open_zarr(r"{out}").air_temperature.values)
        # moved, with an empty cache: the store supplies the model
        shutil.move(r"{out}", r"{moved}")
        os.environ["VCINR_CACHE_DIR"] = r"{cache}"
        from vcinr_sci.model.registry import clear_model_cache
        from vcinr_sci.io.accessor import open_zarr
        clear_model_cache(search_paths=True)
        np.save(r"{tmp_path}/moved.npy", open_zarr(r"{moved}").air_temperature.values)
        assert os.listdir(r"{cache}")
        """
    )
    env = {"PATH": "/usr/bin:/bin", "VCINR_DEVICE": "cpu", "HOME": str(tmp_path), "VCINR_CACHE_DIR": str(cache)}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=tmp_path, timeout=120)
    for name in ("plain", "moved"):
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.npy"), expected, rtol=0, atol=1e-4, equal_nan=True)


def test_info_and_decompress_commands(written, ds, tmp_path, capsys):
    from vcinr_sci.cli import main

    assert main(["info", str(written[3])]) == 0
    text = capsys.readouterr().out
    hash_ = open_zarr(written[3]).air_temperature.attrs["vcinr_model_hash"]
    assert hash_ in text and "quality u6" in text and "psnr_db" in text and "bits/value" in text
    assert main(["info", str(written[2]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    (entry,) = [a for a in info["arrays"] if a["name"] == "air_temperature"]
    assert entry["codec"]["model_hash"] == hash_ and entry["vcinr_attrs"]["vcinr_quality"] == QUALITY
    assert entry["stored_bytes"] < entry["raw_bytes"] / 50
    nc = tmp_path / "plain.nc"
    assert main(["decompress", str(written[3]), str(nc)]) == 0
    plain = xr.open_dataset(nc)
    np.testing.assert_array_equal(plain.air_temperature.values, open_zarr(written[3]).air_temperature.values)
    assert plain.air_temperature.attrs["vcinr_codec"] == "vcinr"
    plain.close()


@pytest.mark.parametrize("subtract_item_mean", [False, True])
def test_patched_model_roundtrip_and_sample(ds, tmp_path, subtract_item_mean):
    """A model whose items are 16 x 16 patches: a patch without valid points gets no
    latent; sampling picks each point's patch (and, with stored item means, its mean)."""
    from vcinr_sci.codec.core import decode_latents

    patched = tiny_artifact([16, 16], subtract_item_mean)
    d = ds.copy(deep=True)
    d["air_temperature"][0, :16, :16] = np.nan  # one whole patch of field 0
    out = d.vcinr.to_zarr(tmp_path / "patched.zarr", model=patched, quality=QUALITY, chunks={"time": 4})
    back = open_zarr(out)
    da = back.air_temperature
    np.testing.assert_array_equal(np.isnan(da.values), np.isnan(d.air_temperature.values))
    assert da.attrs["vcinr_psnr_db"] > 10
    raw = (Path(out) / "air_temperature" / "c" / "0" / "0" / "0").read_bytes()
    lat = decode_latents(raw)
    assert len(lat.active) == 4 * 12 - 1
    assert np.any(lat.offsets) == subtract_item_mean  # stored per patch, or none at all
    on_grid = da.isel(time=[0, 1]).vcinr.sample(latitude=back.latitude.values, longitude=back.longitude.values)
    np.testing.assert_allclose(on_grid.values, da.isel(time=[0, 1]).values, rtol=0, atol=1e-3)


def test_plain_xarray_encoding(model, ds, tmp_path):
    """The codec objects work directly in xarray's encoding (no accessor)."""
    from vcinr_sci.codec.numcodecs import VCINRCodec
    from vcinr_sci.codec.zarr3 import VCINRZarrCodec

    codec = VCINRCodec.for_model(model, QUALITY, fill_value="NaN")
    enc3 = {"air_temperature": {"serializer": VCINRZarrCodec(codec=codec), "compressors": None, "chunks": (10, 37, 49)}}
    enc2 = {"air_temperature": {"compressors": [codec], "filters": None, "chunks": (10, 37, 49)}}
    for fmt, enc in ((3, enc3), (2, enc2)):
        ds.to_zarr(tmp_path / f"plain{fmt}.zarr", zarr_format=fmt, encoding=enc)
        back = xr.open_zarr(tmp_path / f"plain{fmt}.zarr").air_temperature.values
        ok = np.isfinite(ds.air_temperature.values)
        np.testing.assert_array_equal(np.isnan(back), ~ok)
        assert metrics.rmse(ds.air_temperature.values[ok], back[ok]) < 5.0


@pytest.mark.parametrize("where,key", [("attrs", "_FillValue"), ("attrs", "missing_value"), ("encoding", "_FillValue")])
def test_declared_fill_values_come_back_missing(model, ds, tmp_path, where, key):
    """A source declaring its fill value (CF attribute, or encoding as xarray keeps it)
    is written: those points come back NaN, and nothing warns about them."""
    filled = ds.copy(deep=True)
    da = filled["air_temperature"]
    fill = np.isnan(da.values)
    fill[3, 5:9, 10:20] = True
    da.values[fill] = -9999.0
    getattr(da, where)[key] = np.float32(-9999.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = filled.vcinr.to_zarr(tmp_path / "fill.zarr", model=model, quality=QUALITY, chunks={"time": 10})
    assert not [w for w in caught if "far outside" in str(w.message)]
    back = open_zarr(out).air_temperature
    np.testing.assert_array_equal(np.isnan(back.values), fill)
    assert key not in back.attrs
    assert back.attrs["vcinr_max_abs_error"] < 100.0  # measured at the real points only


def test_undeclared_fill_value_warns(model, ds, tmp_path):
    filled = ds.copy(deep=True)
    filled["air_temperature"][3, 5:9, 10:20] = -9999.0
    with pytest.warns(UserWarning, match=r"'air_temperature': 40 of [\d,]+ values \(0\.\d+%\) lie far outside") as w:
        filled.vcinr.to_zarr(tmp_path / "undeclared.zarr", model=model, quality=QUALITY, chunks={"time": 10}, measure=False)
    (message,) = [str(x.message) for x in w if "far outside" in str(x.message)]
    assert "most extreme -9999" in message and "_FillValue" in message


@pytest.mark.parametrize("kind", ["inr", "linear"])
@pytest.mark.parametrize("fill", [1e20, 1e30])
@pytest.mark.parametrize("bound", [None, 0.5])
def test_an_undeclared_huge_fill_is_coded_as_data(model, ds, tmp_path, kind, fill, bound):
    """As the README says, an undeclared fill value is data: it is coded (warned of),
    not refused. A bare ValueError came from the linear model's coefficients at 1e20
    and the INR's adaptation at 1e30. With a bound, every valid point (the fill's
    included) comes back within it."""
    artifact, quality = (model, QUALITY) if kind == "inr" else (linear_artifact(), "q1")
    filled = ds.isel(time=slice(0, 8)).copy(deep=True)
    filled["air_temperature"][3, 5:9, 10:20] = fill
    with pytest.warns(UserWarning, match="lie far outside"):
        out = filled.vcinr.to_zarr(tmp_path / "huge.zarr", model=artifact, quality=quality, max_abs_error=bound)
    back = open_zarr(out).air_temperature.values.astype(np.float64)
    source = filled.air_temperature.values.astype(np.float64)
    valid = np.isfinite(source)
    np.testing.assert_array_equal(np.isnan(back), ~valid)
    assert np.isfinite(back[valid]).all()
    if bound is not None:
        assert np.abs(back - source)[valid].max() <= bound


def test_an_empty_array_is_a_usage_error(model, ds, tmp_path):
    empty = ds.isel(time=slice(0, 0))
    with pytest.raises(UsageError, match=r"'air_temperature' has no values \(sizes \{'time': 0, "):
        empty.vcinr.to_zarr(tmp_path / "empty.zarr", model=model, quality=QUALITY)
    assert not (tmp_path / "empty.zarr").exists()
    with pytest.raises(UsageError, match="no values"):
        empty.air_temperature.vcinr.error_report(empty.air_temperature)


def test_integer_variables_are_named_with_their_dtype(model, ds, tmp_path):
    ints = ds.fillna(0).astype("int16")
    with pytest.raises(CodecError, match=r"'air_temperature' \(int16\) do, but vcinr codes float16, float32 or float64"):
        ints.vcinr.to_zarr(tmp_path / "ints.zarr", model=model, quality=QUALITY)


def test_moved_store_points_to_open_zarr(model, ds, tmp_path, monkeypatch):
    """Plain xarray on a store carrying its model, moved, read where the model is in no
    cache or search path: the error says how to read it (open_zarr finds the model inside)."""
    from vcinr_sci.errors import ArtifactError
    from vcinr_sci.model.registry import clear_model_cache

    out = ds.vcinr.to_zarr(tmp_path / "here.zarr", model=model, quality=QUALITY, store_model=True, measure=False)
    moved = tmp_path / "there.zarr"
    out.rename(moved)
    clear_model_cache(search_paths=True)
    monkeypatch.delenv("VCINR_MODEL_PATH")
    monkeypatch.setenv("VCINR_CACHE_DIR", str(tmp_path / "reader-cache"))
    with pytest.raises(ArtifactError, match=r"model inside the store: open it with vcinr_sci\.io\.accessor\.open_zarr"):
        xr.open_zarr(moved).air_temperature.values
    assert np.isfinite(open_zarr(moved).air_temperature.values).any()


def test_lookup_errors_tell_hashes_apart(model, tmp_path):
    """A model sharing the first 16 hex digits with the one asked for is named in full."""
    from vcinr_sci.errors import ArtifactError
    from vcinr_sci.model.artifact import load_artifact
    from vcinr_sci.model.registry import get_model

    present = load_artifact(model).hash
    missing = present[:16] + ("0" if present[16] != "0" else "1") + present[17:]
    with pytest.raises(ArtifactError) as err:
        get_model(missing, [model])
    assert f"model {missing} not found" in str(err.value) and f"holds model {present}" in str(err.value)


def test_sample_refuses_a_chunk_that_claims_another_shape(model, ds, tmp_path):
    # A CRC-valid chunk of 8 fields placed where the array holds 4: sampling must not read
    # fields the array does not have (a store is untrusted input).
    from vcinr_sci.errors import ChunkFormatError

    small = ds.vcinr.to_zarr(tmp_path / "s4.zarr", model=model, quality=QUALITY, zarr_format=2, chunks={"time": 4})
    large = ds.vcinr.to_zarr(tmp_path / "s8.zarr", model=model, quality=QUALITY, zarr_format=2, chunks={"time": 8})
    (Path(small) / "air_temperature" / "0.0.0").write_bytes((Path(large) / "air_temperature" / "0.0.0").read_bytes())
    back = open_zarr(small).air_temperature.isel(time=[1])
    with pytest.raises(ChunkFormatError):
        back.vcinr.sample(latitude=30.0, longitude=250.0)
