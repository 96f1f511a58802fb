"""The error-bounded mode (vcinr_sci.coding.bound through the codec): every valid point within
the bound for random fields, bounds, NaN masks, fill values and edge chunks; decoders
that differ from the encoder (perturbed INR, another thread count); exact fallback;
the chunk format's residual section; configs, attributes and ``vcinr info``; every chunk
of real datasets written through xarray."""

from __future__ import annotations

import json
import math
import struct
import sys
import threading

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from _vcinr_tiny import QUALITY, fields, tiny_artifact
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vcinr_sci.codec.container import decode_container, encode_container
from vcinr_sci.codec.core import decode_latents
from vcinr_sci.codec.numcodecs import VCINRCodec
from vcinr_sci.codec.zarr3 import VCINRZarrCodec
from vcinr_sci.coding import bound, residual_format
from vcinr_sci.errors import ChunkFormatError, CodecError
from vcinr_sci.io.accessor import open_zarr
from vcinr_sci.io.layout import BOUND_ATTRS
from vcinr_sci.model.artifact import load_artifact
from vcinr_sci.model.device import full_float32
from vcinr_sci.model.kinds import INR_DEVICE_ULPS
from vcinr_sci.model.loaded import LoadedModel

pytestmark = pytest.mark.usefixtures("one_torch_thread", "isolated_model_lookup")


@pytest.fixture(scope="module")
def artifact_path():
    return tiny_artifact()


@pytest.fixture(scope="module")
def data():
    return fields(24).air_temperature.values  # (24, 37, 49) float32, real HadCM3 fields


def bound_of(codec: VCINRCodec, x: np.ndarray) -> float:
    """The absolute bound the codec promises for chunk ``x`` (its valid points)."""
    valid = ~np.isnan(x) if codec.fill is None or math.isnan(codec.fill) else ~(np.isnan(x) | (x == codec.fill))
    return codec.bound.absolute(x[valid].astype(np.float64))


def assert_within(x: np.ndarray, y: np.ndarray, bound: float, fill: float | None = None) -> None:
    """Every valid point within ``bound``, NaN and fill points exactly where they were."""
    assert y.shape == x.shape and y.dtype == x.dtype
    np.testing.assert_array_equal(np.isnan(y), np.isnan(x))
    masked = np.isnan(x) if fill is None else np.isnan(x) | (x == fill)
    if fill is not None:
        np.testing.assert_array_equal(y[x == fill], x[x == fill])
    err = np.abs(y[~masked].astype(np.float64) - x[~masked].astype(np.float64))
    assert err.size == 0 or err.max() <= bound, f"max error {err.max()} > bound {bound}"


# ---------------------------------------------------------------------------- properties


@st.composite
def chunks(draw, data):
    n = draw(st.integers(1, 3))
    start = draw(st.integers(0, len(data) - n))
    x = data[start : start + n].astype(np.float64)
    x = x * draw(st.sampled_from([1.0, 1e-3, 50.0])) + draw(st.sampled_from([0.0, -280.0, 1e4]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    x[rng.random(x.shape) < draw(st.sampled_from([0.0, 0.02, 0.4, 1.0]))] = np.nan
    fill = draw(st.sampled_from([None, -999.0]))
    if fill is not None:
        x[rng.random(x.shape) < 0.05] = fill
    x = x.astype(draw(st.sampled_from(["<f4", ">f4", "<f8", "<f2"])))
    finite = x[np.isfinite(x) & (x != (fill if fill is not None else np.nan))].astype(np.float64)
    spread = float(finite.max() - finite.min()) if finite.size else 1.0
    frac = 10.0 ** draw(st.floats(-6, -1))
    kind = draw(st.sampled_from(["abs", "rel", "both"]))
    bounds = {
        "max_abs_error": frac * max(spread, 1e-3) if kind != "rel" else None,
        "max_rel_error": frac * draw(st.sampled_from([0.5, 1.0])) if kind != "abs" else None,
    }
    return x, fill, bounds


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_roundtrip_within_bound_property(artifact_path, data, draw):
    x, fill, bounds = draw.draw(chunks(data))
    codec = VCINRCodec.for_model(artifact_path, QUALITY, fill_value=fill, **bounds)
    enc = codec.encode(x)
    y = codec.decode(enc)
    assert_within(x, y, bound_of(codec, x), fill)
    residual = decode_container(enc).residual
    if residual is not None:
        info = bound.read_info(residual)
        assert info.bound == pytest.approx(bound_of(codec, x), rel=1e-12)
        assert info.mode == codec.bound.mode
        assert bound.MARGIN_FRACTION * info.bound <= info.margin


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(5, 11),
    chunk=st.integers(2, 4),
    fmt=st.sampled_from([2, 3]),
    fill=st.sampled_from([np.nan, -1.0]),
    rel=st.sampled_from([1e-4, 1e-3, 1e-2]),
)
def test_zarr_edge_chunks_within_bound(artifact_path, data, tmp_path_factory, n, chunk, fmt, fill, rel):
    """An array whose first dim is not a multiple of the chunk size: the partial last
    chunk (padded with the fill value by Zarr) keeps the bound too."""
    path = tmp_path_factory.mktemp("edge") / "a.zarr"
    x = data[:n].copy()
    x[n - 1, 5:15, 5:25] = np.nan
    if not math.isnan(fill):
        x[0, :3, :3] = fill
    codec = VCINRCodec.for_model(artifact_path, QUALITY, fill_value=fill, max_rel_error=rel)
    kwargs = {"serializer": VCINRZarrCodec(codec=codec), "compressors": None} if fmt == 3 else {"compressors": codec}
    a = zarr.create_array(path, shape=x.shape, chunks=(chunk, 37, 49), dtype="f4", fill_value=fill, zarr_format=fmt, **kwargs)
    a[:] = x
    y = zarr.open_array(path, mode="r")[:]
    for start in range(0, n, chunk):  # the bound is per chunk (rel: of that chunk's range)
        part = x[start : start + chunk]
        assert_within(part, y[start : start + chunk], bound_of(codec, part), None if math.isnan(fill) else fill)


# ---------------------------------------------------------------------------- decoders that differ


def _device_allowance(x: np.ndarray) -> float:
    """The largest INR difference (normalised units) the margin is built to absorb."""
    return INR_DEVICE_ULPS * float(np.finfo(np.float32).eps) * max(1.0, float(np.abs(x).max()))


@pytest.mark.parametrize("subtract_item_mean", [False, True])
@pytest.mark.parametrize("rel", [1e-4, 1e-3, 1e-2])
def test_bound_holds_for_a_decoder_whose_inr_differs(data, monkeypatch, rel, subtract_item_mean):
    """The decoder's INR output pushed by the full device allowance, in the worst
    direction at every point (alternating signs), still meets the bound; at the tightest
    bound, where the allowance sets the margin, four times the allowance breaks it. Also
    with stored item means (added after the INR runs), on fields warmer than any training
    one; their margin also covers the means' size, so 4x does not break it there."""
    codec = VCINRCodec.for_model(tiny_artifact(subtract_item_mean=subtract_item_mean), QUALITY, max_rel_error=rel)
    x = data[:4] + (25.0 if subtract_item_mean else 0.0)
    x[1, :6, :] = np.nan
    enc = codec.encode(x)
    exact = codec.decode(enc)
    evaluate = LoadedModel.evaluate
    times = [1.0]

    def perturbed(self, items, phi):
        out = evaluate(self, items, phi)
        signs = np.where(np.arange(out.size).reshape(out.shape) % 2, 1.0, -1.0).astype(np.float32)
        return out + signs * np.float32(times[0] * _device_allowance(out))

    monkeypatch.setattr(LoadedModel, "evaluate", perturbed)
    y = codec.decode(enc)
    assert not np.array_equal(y, exact)  # the perturbation did reach the output
    assert_within(x, y, bound_of(codec, x))
    if rel == 1e-4 and not subtract_item_mean:
        assert bound.read_info(decode_container(enc).residual).margin > bound.MARGIN_FRACTION * bound_of(codec, x)
        times[0] = 4.0
        with pytest.raises(AssertionError, match="max error"):
            assert_within(x, codec.decode(enc), bound_of(codec, x))


def test_margin_counts_stored_means_once(data):
    """On fields far above the training range (large stored means) the INR's margin is
    the one it always had: 256 float32 ulps of max |INR's own output| + max |mean| (the
    linear model's own margin changes nothing here), computed from the decoded latents,
    not with the means counted twice."""
    b = 0.1  # K: the device term (about 0.02 here) sets the margin
    path = tiny_artifact(subtract_item_mean=True)
    codec = VCINRCodec.for_model(path, QUALITY, max_abs_error=b)
    norm = load_artifact(path).normaliser
    # 15 normalisation ranges above: within the 16 the encoder lets the model see unclipped
    x = data[:3] + np.float32(15 * (norm.hi - norm.lo))
    x[1, :6, :] = np.nan
    enc = codec.encode(x)
    info = bound.read_info(decode_container(enc).residual)
    lat = decode_latents(enc)
    own = lat.model.evaluate(lat.active, lat.phi)  # (items, points): the INR before the means
    own = np.where(np.isnan(x).reshape(own.shape), 0.0, own)
    norm = lat.model.artifact.normaliser
    means = float(np.abs(lat.offsets).max())
    assert means > 10  # the means dominate the INR's output scale
    scale = (norm.hi - norm.lo) * max(1.0, float(np.abs(own).max()) + means)
    eps32 = float(np.finfo(np.float32).eps)
    ulp = float(np.spacing(np.float32(np.abs(x[~np.isnan(x)]).max() + b)))
    expected = max(b * bound.MARGIN_FRACTION, 256 * eps32 * scale + ulp)
    assert expected > b * bound.MARGIN_FRACTION  # the device term sets it, not the floor
    assert info.margin == pytest.approx(expected, rel=1e-5)
    assert info.step > 0  # quantised, not every point stored exactly
    assert_within(x, codec.decode(enc), b)


def test_bound_holds_with_another_thread_count(artifact_path, data):
    codec = VCINRCodec.for_model(artifact_path, QUALITY, max_rel_error=1e-4)
    x = data[:6].copy()
    enc = codec.encode(x)  # one thread (module fixture)
    torch.set_num_threads(2)
    try:
        y = codec.decode(enc)
    finally:
        torch.set_num_threads(1)
    assert_within(x, y, bound_of(codec, x))


def test_full_float32_guard_sets_and_restores(artifact_path):
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    matmul.fp32_precision = "tf32"  # a caller that asked for TF32
    try:
        inside = []
        barrier = threading.Barrier(3)

        def worker():
            with full_float32():
                barrier.wait()  # all three inside at once
                inside.append(matmul.fp32_precision)
                barrier.wait()

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert inside == ["ieee"] * 3
        assert matmul.fp32_precision == "tf32"  # restored once the last one left
    finally:
        matmul.fp32_precision = before


# ---------------------------------------------------------------------------- fallback, dtypes, bad input


@pytest.mark.parametrize("dtype", ["<f8", "<f4"])
def test_margin_over_half_the_bound_quantises_finer(dtype):
    """A margin of 0.7 b: q with step 2 (b - m) = 0.6 b, every point within b - m (float64
    has no rounding misses; float32 at values ~1 only a few), not every point stored;
    only m >= b stores them all."""
    rng = np.random.default_rng(0)
    x = (1 + 0.01 * rng.standard_normal(10_000)).astype(dtype)
    xhat = x.astype(np.float64) + 0.02 * rng.standard_normal(x.size)
    b = 1e-4
    q, step, outliers = bound.quantise(x, xhat, b, 0.7 * b)
    assert step == pytest.approx(0.6 * b) and np.abs(q).max() > 100
    assert outliers.mean() < (0.01 if dtype == "<f4" else 1e-9)
    err = np.abs(bound.corrected(xhat, q, step, x.dtype).astype(np.float64) - x)[~outliers]
    assert err.max() <= 0.3 * b
    q, step, outliers = bound.quantise(x, xhat, b, b)
    assert step == 0 and outliers.all()


def test_bound_too_tight_for_float32_stores_exactly(artifact_path, data):
    x = data[:2].copy()  # ~250-300 K: a float32 ulp there is 3e-5
    codec = VCINRCodec.for_model(artifact_path, QUALITY, max_abs_error=1e-6)
    enc = codec.encode(x)
    np.testing.assert_array_equal(codec.decode(enc), x)
    info = bound.read_info(decode_container(enc).residual)
    assert info.step == 0 and info.margin >= info.bound / 2
    # a rel bound on a constant chunk is 0: exact too
    rel = VCINRCodec.for_model(artifact_path, QUALITY, max_rel_error=1e-3)
    for dtype in (np.float32, np.float64):  # float64 too: np.dtype(None) == float64 once hid its outliers
        flat = np.full((1, 37, 49), 271.5, dtype)
        np.testing.assert_array_equal(rel.decode(rel.encode(flat)), flat)


def test_abs_and_rel_take_the_smaller(artifact_path, data):
    x = data[:2]
    spread = float(x.max() - x.min())
    both = VCINRCodec.for_model(artifact_path, QUALITY, max_abs_error=1.0, max_rel_error=1e-3)
    assert both.bound.mode == "abs_and_rel" and bound_of(both, x) == pytest.approx(1e-3 * spread)
    assert_within(x, both.decode(both.encode(x)), 1e-3 * spread)


def test_inf_refused(artifact_path, data):
    codec = VCINRCodec.for_model(artifact_path, QUALITY, max_abs_error=0.1)
    x = data[:2].copy()
    x[0, 3, 3] = -np.inf
    with pytest.raises(CodecError, match="inf"):
        codec.encode(x)


@pytest.mark.parametrize(
    "bounds",
    [{"max_abs_error": 0.0}, {"max_abs_error": -1.0}, {"max_rel_error": math.nan}, {"max_rel_error": math.inf},
     {"max_abs_error": "0.1"}, {"max_abs_error": True}],
)
def test_bad_bounds_refused(artifact_path, bounds):
    with pytest.raises(CodecError, match="positive"):
        VCINRCodec.for_model(artifact_path, QUALITY, **bounds)


def test_config_round_trips_and_old_configs_load(artifact_path):
    codec = VCINRCodec.for_model(artifact_path, QUALITY, max_rel_error=1e-3)
    config = json.loads(json.dumps(codec.get_config(), allow_nan=False))
    assert config["max_rel_error"] == 1e-3 and "max_abs_error" not in config
    again = VCINRCodec.from_config(config)
    assert again == codec and again.bound == codec.bound
    z = VCINRZarrCodec(codec=codec)
    assert VCINRZarrCodec.from_dict(json.loads(json.dumps(z.to_dict()))).codec.bound == codec.bound
    plain = VCINRCodec.for_model(artifact_path, QUALITY)
    assert plain.bound is None and not {"max_abs_error", "max_rel_error"} & set(plain.get_config())


# ---------------------------------------------------------------------------- chunk format


def test_versions_and_damaged_residuals(artifact_path, data):
    x = data[:3].copy()
    x[0, :4, :4] = np.nan
    plain = VCINRCodec.for_model(artifact_path, QUALITY).encode(x)
    assert plain[2] == 3 and not plain[7] & 1 << 2 and decode_container(plain).residual is None  # no residual flag
    codec = VCINRCodec.for_model(artifact_path, QUALITY, max_rel_error=1e-3)
    enc = codec.encode(x)
    assert enc[2] == 3 and enc[7] & 1 << 2  # format 3, residual flag set
    header, mask, payload, residual = decode_container(enc)
    with pytest.raises(ChunkFormatError, match="checksum mismatch"):
        codec.decode(enc[:-1] + bytes([enc[-1] ^ 1]))
    with pytest.raises(ChunkFormatError, match="checksum mismatch"):
        codec.decode(enc[:-3])
    # well-checksummed but malformed sections (a faulty writer): clear errors, no array
    n_field = residual_format.HEAD.size - 4 - 1 - 8  # offset of the u64 count of valid points
    wrong_n = bytearray(residual)
    struct.pack_into("<Q", wrong_n, n_field, 5)
    for bad in (residual[:-2], residual + b"\0", residual[:10], bytes(wrong_n), b"\x07" + residual[1:]):
        with pytest.raises(ChunkFormatError, match="residual"):
            codec.decode(encode_container(header, mask, payload, bad))


# ---------------------------------------------------------------------------- xarray, zarr, info


def _check_every_chunk(store, name: str, reference: np.ndarray, bound_for) -> int:
    """Compare each stored chunk of ``name`` with ``reference``; returns the chunk count."""
    arr = zarr.open_group(store, mode="r")[name]
    step = arr.chunks[0]
    count = 0
    for start in range(0, arr.shape[0], step):
        ref = reference[start : start + step]
        assert_within(ref, arr[start : start + step], bound_for(ref))
        count += 1
    return count


@pytest.mark.parametrize("fmt", [2, 3])
def test_real_dataset_every_chunk_within_bound(artifact_path, tmp_path, fmt):
    from vcinr_sci.cli import main as cli_main

    ds = fields(20)
    ds["air_temperature"][3, :5, :7] = np.nan
    out = ds.vcinr.to_zarr(tmp_path / "b.zarr", model=artifact_path, quality=QUALITY, zarr_format=fmt,
                           chunks={"time": 6}, max_abs_error=0.05)
    ref = ds.air_temperature.values
    assert _check_every_chunk(out, "air_temperature", ref, lambda _: 0.05) == 4  # 6 + 6 + 6 + 2 (edge)
    da = open_zarr(out).air_temperature
    assert da.attrs["vcinr_error_bound_mode"] == "abs" and da.attrs["vcinr_error_bound_abs"] == 0.05
    assert "vcinr_error_bound_rel" not in da.attrs and set(BOUND_ATTRS) & set(da.attrs) == {"vcinr_error_bound_abs"}
    assert da.attrs["vcinr_max_abs_error"] <= 0.05
    assert cli_main(["info", str(out)]) == 0


def test_info_shows_the_guarantee(artifact_path, tmp_path, capsys):
    from vcinr_sci.io.info import store_info

    ds = fields(4)
    bounded_store = ds.vcinr.to_zarr(tmp_path / "r.zarr", model=artifact_path, quality=QUALITY, max_rel_error=1e-3)
    plain_store = ds.vcinr.to_zarr(tmp_path / "p.zarr", model=artifact_path, quality=QUALITY, measure=False)
    (entry,) = [a for a in store_info(bounded_store)["arrays"] if a["name"] == "air_temperature"]
    assert entry["error_bound"] == {"mode": "rel", "max_abs_error": None, "max_rel_error": 1e-3}
    assert entry["vcinr_attrs"]["vcinr_error_bound_rel"] == 1e-3
    (entry,) = [a for a in store_info(plain_store)["arrays"] if a["name"] == "air_temperature"]
    assert entry["error_bound"] is None and entry["vcinr_attrs"]["vcinr_error_bound_mode"] == "none"
    from vcinr_sci.cli import main as cli_main

    cli_main(["info", str(bounded_store)])
    assert "|error| <= 0.001 x each chunk's value range at every valid point (rel)" in capsys.readouterr().out
    with pytest.raises(CodecError, match="positive"):
        ds.vcinr.to_zarr(tmp_path / "x.zarr", model=artifact_path, quality=QUALITY, max_abs_error=-1)
    assert not (tmp_path / "x.zarr").exists()


def test_shared_ostia_every_chunk_within_bound(shared_data, tmp_path):
    """Real SST with a NaN land mask (26 % of points), a model trained on its grid in
    seconds, rel bounds on both Zarr formats: every chunk checked."""
    from vcinr_sci.bench.residual import tiny_model

    path = tiny_model(str(shared_data / "ostia_sst_monthly_masked.nc"), "surface_temperature",
                      ["latitude", "longitude"], steps=4)
    ds = xr.open_dataset(shared_data / "ostia_sst_monthly_masked.nc")[["surface_temperature"]].isel(time=slice(0, 10)).load()
    ref = ds.surface_temperature.values
    for fmt, rel in ((2, 1e-3), (3, 1e-2)):
        out = ds.vcinr.to_zarr(tmp_path / f"o{fmt}.zarr", model=path, quality="u6", zarr_format=fmt,
                               chunks={"time": 4}, max_rel_error=rel, measure=False)

        def bound_for(chunk, rel=rel):
            return rel * float(np.nanmax(chunk) - np.nanmin(chunk))

        assert _check_every_chunk(out, "surface_temperature", ref, bound_for) == 3


@pytest.mark.parametrize("section", ["gaps", "table", "raw"])
def test_residual_sections_are_size_checked_before_decompressing(section):
    # A CRC-valid chunk can carry a Zstd frame that inflates to any size: the size it
    # declares is checked against what the section may hold before anything is allocated.
    import tracemalloc

    from numcodecs import Zstd

    from vcinr_sci.coding import rans, residual_format
    from vcinr_sci.errors import ChunkFormatError

    bomb = Zstd(level=1).encode(np.zeros(64 * 1024**2, np.uint8))
    call = {
        "gaps": lambda: residual_format.outlier_index(bomb, 10),
        "table": lambda: rans.rans_decode(bomb, b"", 0, 10),
        "raw": lambda: residual_format.unpack_raw(bomb, np.dtype("<f4"), 10),
    }[section]
    tracemalloc.start()
    try:
        with pytest.raises(ChunkFormatError, match="declares"):
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024**2


# ---------------------------------------------------------------------------- correction coders


def _method_of(enc: bytes) -> int:
    return residual_format.parse_section(decode_container(enc).residual)[1]


@pytest.mark.parametrize("methods", [("rans",), ("sperr",), ("rans", "sperr")], ids=["rans", "sperr", "pick"])
@pytest.mark.parametrize("kind", ["smooth", "noise"])
@pytest.mark.parametrize("rel", [1e-4, 1e-3, 1e-2])
def test_every_correction_coder_keeps_the_bound(artifact_path, data, monkeypatch, methods, kind, rel):
    """Each coder the encoder can choose (held to it), and the per-chunk pick, keep the
    bound at every point, on real fields and on noise the INR cannot follow; NaN and
    fill-value points come back exactly."""
    monkeypatch.setattr(bound, "RESIDUAL_METHODS", methods)
    x = data[:4].copy()
    if kind == "noise":
        x = (x.mean() + x.std() * np.random.default_rng(0).standard_normal(x.shape)).astype(np.float32)
    x[1, :6, :] = np.nan
    x[2, 10:14, 20:30] = -999.0
    codec = VCINRCodec.for_model(artifact_path, QUALITY, fill_value=-999.0, max_rel_error=rel)
    enc = codec.encode(x)
    assert_within(x, codec.decode(enc), bound_of(codec, x), -999.0)
    if methods == ("sperr",):
        assert _method_of(enc) == residual_format.SPERR
    elif methods == ("rans",):
        assert _method_of(enc) in (residual_format.PLAIN, residual_format.LORENZO)


def _chunk_parts(artifact_path, x, rel):
    """What the encoder hands to encode_residual for chunk ``x`` (no mask)."""
    codec = VCINRCodec.for_model(artifact_path, QUALITY)
    lat = decode_latents(codec.encode(x))
    norm = lat.model.artifact.normaliser
    inr = lat.inr_normalised().reshape(-1)
    xhat = norm.denormalise(inr.astype(np.float64))
    device = lat.model.reconstruction_margin(lat.phi, inr, lat.offsets)
    return np.ones(x.shape, bool), xhat, bound.ErrorBound(max_rel_error=rel), device


@pytest.mark.parametrize("rel", [1e-4, 1e-2])
def test_pick_stores_the_smaller_section(artifact_path, data, rel):
    x = data[:4].copy()
    kept, xhat, spec, scale = _chunk_parts(artifact_path, x, rel)
    sizes = {m: len(bound.encode_residual(x, kept, xhat, spec, scale, (m,))) for m in ("rans", "sperr")}
    assert len(bound.encode_residual(x, kept, xhat, spec, scale)) == min(sizes.values())


def _sperr_section(artifact_path, data) -> tuple[bytes, np.ndarray, np.ndarray]:
    x = data[:3].copy()
    kept, xhat, spec, scale = _chunk_parts(artifact_path, x, 1e-3)
    section = bound.encode_residual(x, kept, xhat, spec, scale, ("sperr",))
    return section, kept, xhat


def _with_stream(section: bytes, stream: bytes) -> bytes:
    """``section`` with its SPERR stream (the second part) replaced, lengths consistent."""
    head = residual_format.HEAD.size
    parts = residual_format.parse_section(section)[3]
    parts[1] = stream
    return section[:head] + b"".join(residual_format.LEN.pack(len(p)) + p for p in parts)


def test_damaged_sperr_streams_are_refused(artifact_path, data):
    """A SPERR stream cut short (SPERR itself would decode it, coarser), extended, or with
    a header that claims more bits or bit planes than it can hold: a ChunkFormatError
    before SPERR's decoder runs. (Damage to the coded bits themselves is the residual
    CRC's to catch: see test_versions_and_damaged_residuals.)"""
    section, kept, xhat = _sperr_section(artifact_path, data)
    stream = residual_format.parse_section(section)[3][1]
    assert bound.apply_residual(_with_stream(section, stream), kept, xhat, np.dtype("f4")).shape == xhat.shape
    planes = bytearray(stream)
    planes[17] = 65
    bits = bytearray(stream)
    bits[18 + 7] ^= 0x40  # the SPECK stream's u64 bit count, a high byte
    step = bytearray(stream)
    step[9:17] = struct.pack("<d", -1.0)
    damaged = [stream[:-1], stream[: len(stream) // 2], stream[:20], stream[:5], stream + b"\0", b"",
               bytes(planes), bytes(bits), bytes(step)]
    for bad in damaged:
        with pytest.raises(ChunkFormatError, match="SPERR"):
            bound.apply_residual(_with_stream(section, bad), kept, xhat, np.dtype("f4"))


def test_sperr_constant_field_streams_must_claim_the_grid(artifact_path, data):
    """A constant field's SPERR stream is its 17-byte header alone: flags, the u64 number
    of values (SPERR sizes its output by it: a crafted 2**64 - 1 aborted the process with
    std::length_error, found by examples/fuzz_decoder.py) and the f64 value. Only the
    grid's own count and a finite value reach SPERR."""
    section, kept, xhat = _sperr_section(artifact_path, data)
    grid = kept.size

    def constant(count: int, value: float) -> bytes:
        return bytes([0x81]) + struct.pack("<Qd", count, value)

    ok = bound.apply_residual(_with_stream(section, constant(grid, 0.0)), kept, xhat, np.dtype("f4"))
    np.testing.assert_array_equal(ok, xhat.astype(np.float32))
    for bad in (constant(2**64 - 1, 0.0), constant(grid + 1, 0.0), constant(0, 0.0), constant(grid, math.nan),
                constant(grid, math.inf)):
        with pytest.raises(ChunkFormatError, match="SPERR constant-field stream"):
            bound.apply_residual(_with_stream(section, bad), kept, xhat, np.dtype("f4"))


def test_sperr_chunk_with_a_flipped_bit_is_refused(artifact_path, data, monkeypatch):
    monkeypatch.setattr(bound, "RESIDUAL_METHODS", ("sperr",))
    codec = VCINRCodec.for_model(artifact_path, QUALITY, max_rel_error=1e-3)
    enc = codec.encode(data[:3])
    assert _method_of(enc) == residual_format.SPERR
    for pos in (len(enc) - 1, len(enc) - 200):
        bad = bytearray(enc)
        bad[pos] ^= 0x10
        with pytest.raises(ChunkFormatError, match="checksum mismatch"):
            codec.decode(bytes(bad))


def test_sperr_decoder_without_imagecodecs_names_the_package(artifact_path, data, monkeypatch):
    section, kept, xhat = _sperr_section(artifact_path, data)
    monkeypatch.setitem(sys.modules, "imagecodecs", None)  # import imagecodecs now fails
    with pytest.raises(CodecError, match="imagecodecs"):
        bound.apply_residual(section, kept, xhat, np.dtype("f4"))


def test_correction_option_chooses_the_coder_and_round_trips_in_the_config(artifact_path, data):
    """correction='sperr' codes every chunk's correction with SPERR (lower MSE at the same
    bound); it is in the config only when not the default, and an unknown one is refused."""
    plain = VCINRCodec.for_model(artifact_path, QUALITY, max_rel_error=1e-3)
    sperr = VCINRCodec.for_model(artifact_path, QUALITY, max_rel_error=1e-3, correction="sperr")
    assert "correction" not in plain.get_config() and sperr.get_config()["correction"] == "sperr"
    again = VCINRCodec.from_config(sperr.get_config())
    enc = again.encode(data[:3])
    assert _method_of(enc) == residual_format.SPERR
    out = again.decode(enc).reshape(data[:3].shape)
    span = float(np.nanmax(data[:3]) - np.nanmin(data[:3]))
    assert np.nanmax(np.abs(out - data[:3])) <= 1e-3 * span
    with pytest.raises(CodecError, match="correction must be one of"):
        VCINRCodec.for_model(artifact_path, QUALITY, correction="zfp")
