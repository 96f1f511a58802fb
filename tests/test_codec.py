"""The vcinr codec: round trips (numcodecs, Zarr 2 and 3, a fresh process), dtypes, NaN
and fill values, edge chunks, the chunking rule, model lookup, and a clear error for
every kind of bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr
from _vcinr_tiny import LEARNED, QUALITY, fields, other_artifact, tiny_artifact

from vcinr_sci.codec.container import decode_container, encode_container
from vcinr_sci.codec.core import decode_chunk, decode_latents
from vcinr_sci.codec.numcodecs import VCINRCodec
from vcinr_sci.codec.zarr3 import VCINRZarrCodec
from vcinr_sci.errors import ArtifactError, ChunkFormatError, CodecError
from vcinr_sci.model.artifact import load_artifact
from vcinr_sci.model.registry import clear_model_cache, model_cache_stats

pytestmark = pytest.mark.usefixtures("one_torch_thread", "isolated_model_lookup")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def artifact_path():
    return tiny_artifact()


@pytest.fixture(scope="module")
def data():
    return fields(24).air_temperature.values  # (24, 37, 49) float32, no NaN


@pytest.fixture
def codec(artifact_path):
    return VCINRCodec.for_model(artifact_path, QUALITY)


def test_roundtrip_numcodecs(codec, data):
    x = data[:8].copy()
    x[0, :3, :4] = np.nan
    enc = codec.encode(x)
    y = codec.decode(enc)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert np.isnan(y[0, :3, :4]).all() and np.isfinite(y[0, 3:]).all()
    ok = np.isfinite(x)
    rmse = np.sqrt(np.mean((y[ok] - x[ok]) ** 2))
    assert rmse < 0.1 * (np.nanmax(x) - np.nanmin(x))
    assert len(enc) < x.nbytes / 50
    header = decode_container(enc).header
    assert header.model_hash == codec.model_hash[:16] and header.quality == QUALITY  # the chunk holds a prefix
    assert header.num_items == 8 and header.shape == x.shape and header.inner_steps == codec.inner_steps
    # decode into a caller's buffer, and decode is deterministic
    out = np.empty_like(x)
    codec.decode(enc, out=out)
    np.testing.assert_array_equal(out, y)


def test_learned_coder_level(artifact_path, data):
    """The entropy-coded path (LatentCoder, compressai's rANS) through the codec."""
    codec = VCINRCodec.for_model(artifact_path, LEARNED)
    x = data[:6].copy()
    x[1, 10:12, :] = np.nan
    enc = codec.encode(x)
    y = codec.decode(enc)
    assert y.dtype == x.dtype and np.array_equal(np.isnan(y), np.isnan(x))
    assert decode_container(enc).header.quality == LEARNED
    bad = bytearray(enc)
    bad[-1] ^= 1
    with pytest.raises(ChunkFormatError):
        codec.decode(bytes(bad))


def test_item_mean_model_follows_any_offset(artifact_path, data):
    """A model trained with ``data.subtract_item_mean`` stores each field's mean (2 bytes)
    and codes the rest: a field shifted beyond every training field decodes as well as
    the field itself, where the plain model cannot follow the shift."""
    x = data[:8].copy()
    x[0, :3, :4] = np.nan
    ok = np.isfinite(x)

    def rmse_after_shift(codec, shift):
        return np.sqrt(np.mean((codec.decode(codec.encode(x + shift))[ok] - shift - x[ok]) ** 2))

    path = tiny_artifact(subtract_item_mean=True)
    codec = VCINRCodec.for_model(path, QUALITY)
    enc = codec.encode(x)
    lat = decode_latents(enc)
    norm = load_artifact(path).normaliser
    with np.errstate(all="ignore"):
        means = np.nanmean(norm.normalise(x.astype(np.float64)).reshape(8, -1), axis=1)
    np.testing.assert_allclose(lat.offsets, means, atol=5e-4)
    np.testing.assert_array_equal(lat.offsets.astype(np.float16), lat.offsets)
    payload = decode_container(enc).payload
    assert payload[1 : 1 + 16] == lat.offsets.astype("<f2").tobytes()
    base = rmse_after_shift(codec, 0.0)
    for shift in (20.0, -40.0):  # K; the training fields span about 60 K
        assert rmse_after_shift(codec, shift) == pytest.approx(base, rel=0.01)
    plain = VCINRCodec.for_model(artifact_path, QUALITY)
    assert rmse_after_shift(plain, 20.0) > 3 * rmse_after_shift(plain, 0.0)
    # a payload cut inside the stored means is refused, even with valid CRCs
    short = encode_container(decode_container(enc).header, np.isnan(x), payload[:9])
    with pytest.raises(ChunkFormatError, match="stored means"):
        codec.decode(short)


def test_config_is_json_and_registered(codec):
    config = codec.get_config()
    text = json.dumps(config, allow_nan=False)  # strict JSON
    again = numcodecs.get_codec(json.loads(text))
    assert isinstance(again, VCINRCodec) and again == codec
    assert set(config) == {"id", "model_hash", "model_path", "quality", "grid", "inner_steps", "fill_value"}
    assert zarr.registry.get_codec_class("vcinr") is VCINRZarrCodec
    z = VCINRZarrCodec(codec=codec)
    assert VCINRZarrCodec.from_dict(json.loads(json.dumps(z.to_dict()))) == z


@pytest.mark.parametrize("dtype", ["<f2", ">f4", "<f8"])
def test_float_dtypes_come_back(codec, data, dtype):
    x = data[:2].astype(dtype)
    y = codec.decode(codec.encode(x))
    assert y.dtype == np.dtype(dtype) and y.shape == x.shape
    assert np.sqrt(np.mean((y.astype("f8") - x.astype("f8")) ** 2)) < 5.0


@pytest.mark.parametrize("dtype", ["i2", "i4", "u1", "bool", "c8"])
def test_non_float_dtypes_refused(codec, data, dtype):
    with pytest.raises(CodecError, match="unsupported dtype"):
        codec.encode(data[:2].astype(dtype))


def test_inf_refused(codec, data):
    x = data[:2].copy()
    x[1, 5, 5] = np.inf
    with pytest.raises(CodecError, match="inf"):
        codec.encode(x)


def test_all_nan_chunk_stores_no_payload(codec, data):
    x = np.full((3, 37, 49), np.nan, np.float32)
    enc = codec.encode(x)
    container = decode_container(enc)
    assert container.payload == b"" and len(enc) < 200
    y = codec.decode(enc)
    assert y.shape == x.shape and np.isnan(y).all()


def test_fill_value_and_nan_both_exact(artifact_path, data):
    codec = VCINRCodec.for_model(artifact_path, QUALITY, fill_value=-999.0)
    x = data[:3].copy()
    x[0, :2, :] = -999.0
    x[1, 5:9, 5:9] = np.nan
    x[2] = -999.0  # a whole field of fill: no latent for it
    x[2, 0, 0] = np.nan
    enc = codec.encode(x)
    y = codec.decode(enc)
    np.testing.assert_array_equal(y[x == -999.0], -999.0)
    assert np.isnan(y[np.isnan(x)]).all()
    assert np.isnan(y).sum() == np.isnan(x).sum() and (y == -999.0).sum() == (x == -999.0).sum()
    assert len(decode_latents(enc).active) == 2
    # all masked, mixed: still exact
    z = np.full((1, 37, 49), -999.0, np.float32)
    z[0, 3, 3] = np.nan
    w = codec.decode(codec.encode(z))
    assert np.isnan(w[0, 3, 3]) and (w == -999.0).sum() == z.size - 1


def test_chunk_must_cover_grid(codec, data):
    with pytest.raises(CodecError, match="does not cover the model's grid"):
        codec.encode(data[:2, :36, :])
    with pytest.raises(CodecError, match="does not cover the model's grid"):
        codec.encode(data[:2, :, :48])
    with pytest.raises(CodecError, match="does not cover the model's grid"):
        codec.encode(data[0, :, :].ravel()[:100])  # a flat buffer that is not whole fields
    # a flat buffer of whole fields is accepted (format 2 may hand one over)
    assert codec.decode(codec.encode(data[:2].ravel())).shape == (2, 37, 49)


def test_grid_description_checked(artifact_path, data):
    art = load_artifact(artifact_path)
    grid = art.grid.to_dict()
    grid["lat"] = [v + 1.0 for v in grid["lat"]]
    codec = VCINRCodec(art.hash, QUALITY, grid, 3, str(artifact_path))
    with pytest.raises(CodecError, match="grid"):
        codec.encode(data[:1])


def test_unknown_quality_refused(artifact_path, data):
    art = load_artifact(artifact_path)
    codec = VCINRCodec(art.hash, "q9", art.grid.to_dict(), 3, str(artifact_path))
    with pytest.raises(CodecError, match="no quality level 'q9'"):
        codec.encode(data[:1])


@pytest.mark.parametrize("damage", ["flip_payload", "flip_header", "truncate", "trailing", "version", "magic", "empty"])
def test_corrupt_bytes_refused(codec, data, damage):
    enc = bytearray(codec.encode(data[:2]))
    if damage == "flip_payload":
        enc[-3] ^= 0x10
    elif damage == "flip_header":
        enc[12] ^= 0x01  # in the model hash prefix
    elif damage == "truncate":
        enc = enc[: len(enc) - 5]
    elif damage == "trailing":
        enc += b"\0"
    elif damage == "version":
        enc[2] = 9
    elif damage == "magic":
        enc[0:5] = b"NOPE!"
    elif damage == "empty":
        enc = bytearray()
    with pytest.raises(ChunkFormatError) as err:
        codec.decode(bytes(enc))
    if damage == "version":
        assert "unknown vcinr format version 9" in str(err.value)


def test_missing_model(codec, data, tmp_path):
    enc = codec.encode(data[:1])
    clear_model_cache(search_paths=True)
    gone = VCINRCodec.from_config({**codec.get_config(), "model_path": str(tmp_path / "nowhere")})
    with pytest.raises(ArtifactError, match="not found"):
        gone.decode(enc)
    with pytest.raises(ArtifactError, match="not found"):
        gone.encode(data[:1])


def test_hash_mismatch_refused(codec, data, tmp_path, monkeypatch):
    """A model_path (trusted: else a config's path is not followed) holding another model,
    or a tampered copy, is refused."""
    enc = codec.encode(data[:1])
    clear_model_cache(search_paths=True)
    monkeypatch.setenv("VCINR_TRUST_STORE_PATHS", "1")
    other = other_artifact()
    wrong = VCINRCodec.from_config({**codec.get_config(), "model_path": str(other)})
    with pytest.raises(ArtifactError, match="refused"):
        wrong.decode(enc)
    # a copy whose files were altered claims the hash but fails verification
    tampered = tmp_path / "tampered"
    shutil.copytree(codec.model_path, tampered)
    weights = tampered / "weights.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    bad = VCINRCodec.from_config({**codec.get_config(), "model_path": str(tampered)})
    with pytest.raises(ArtifactError, match="does not match"):
        bad.decode(enc)


def test_model_search_path_env(codec, data, monkeypatch):
    enc = codec.encode(data[:1])
    clear_model_cache(search_paths=True)
    monkeypatch.setenv("VCINR_MODEL_PATH", str(Path(codec.model_path).parent))
    anywhere = VCINRCodec.from_config({**codec.get_config(), "model_path": None})
    assert anywhere.decode(enc).shape == (1, 37, 49)


def test_chunk_of_another_model_refused(codec, data):
    """A chunk holds a prefix of its model's hash; it must agree with the full hash the
    codec config names (which the model is then loaded by)."""
    enc = codec.encode(data[:1])
    other = VCINRCodec.for_model(other_artifact(), QUALITY)
    assert other.model_hash[:16] != codec.model_hash[:16]
    with pytest.raises(ChunkFormatError, match=f"written with model {codec.model_hash[:16]}, .* {other.model_hash}"):
        other.decode(enc)
    with pytest.raises(ChunkFormatError, match="written with model"):
        decode_latents(enc, model_hash=other.model_hash)


def test_decode_without_config_finds_the_model_by_prefix(codec, data, monkeypatch):
    enc = codec.encode(data[:2])
    expected = codec.decode(enc)
    clear_model_cache(search_paths=True)
    monkeypatch.setenv("VCINR_MODEL_PATH", str(Path(codec.model_path).parent))
    np.testing.assert_array_equal(decode_chunk(enc), expected)
    assert model_cache_stats()["models"] == [codec.model_hash]  # cached by its full hash
    np.testing.assert_array_equal(decode_chunk(enc), expected)  # the cached model, by prefix


def test_model_loaded_once(artifact_path, data):
    clear_model_cache()
    before = model_cache_stats()["loads"]
    codec = VCINRCodec.from_config(VCINRCodec.for_model(artifact_path, QUALITY).get_config())
    for i in range(3):
        codec.decode(codec.encode(data[i : i + 2]))
    assert model_cache_stats()["loads"] - before == 1


@pytest.mark.parametrize("fmt", [2, 3])
def test_zarr_roundtrip_with_edge_chunk(codec, data, tmp_path, fmt):
    path = tmp_path / f"a{fmt}.zarr"
    x = data[:20].copy()
    x[19, 10:20, 10:20] = np.nan
    kwargs = {"serializer": VCINRZarrCodec(codec=codec), "compressors": None} if fmt == 3 else {"compressors": codec}
    a = zarr.create_array(path, shape=x.shape, chunks=(8, 37, 49), dtype="f4", fill_value=np.nan, zarr_format=fmt, **kwargs)
    a[:] = x
    b = zarr.open_array(path, mode="r")
    y = b[:]
    ok = np.isfinite(x)
    assert np.isnan(y[~ok]).all() and np.sqrt(np.mean((y[ok] - x[ok]) ** 2)) < 5.0
    np.testing.assert_array_equal(y[:8], codec.decode(codec.encode(x[:8])))
    # the last chunk holds 4 fields and 4 fill-padded ones: only 4 get latents
    key = b.metadata.encode_chunk_key((2, 0, 0))
    raw = (path / key).read_bytes()
    lat = decode_latents(raw)
    assert lat.header.shape == (8, 37, 49) and len(lat.active) == 4
    # partial reads decode whole chunks and select
    np.testing.assert_array_equal(b[17:19, 3], y[17:19, 3])


def test_zarr3_refuses_bad_chunks_before_writing(codec, tmp_path):
    path = tmp_path / "bad.zarr"
    with pytest.raises(CodecError, match="does not cover the model's grid"):
        zarr.create_array(path, shape=(8, 37, 49), chunks=(4, 20, 49), dtype="f4", serializer=VCINRZarrCodec(codec=codec), compressors=None)
    with pytest.raises(CodecError, match="unsupported dtype"):
        zarr.create_array(path, shape=(8, 37, 49), chunks=(4, 37, 49), dtype="i4", serializer=VCINRZarrCodec(codec=codec), compressors=None)
    assert not any(p.is_file() and p.name != "zarr.json" for p in path.rglob("*")) if path.exists() else True


def test_zarr3_takes_array_fill_value(codec, data, tmp_path):
    path = tmp_path / "fill.zarr"
    a = zarr.create_array(
        path, shape=(4, 37, 49), chunks=(4, 37, 49), dtype="f4", fill_value=-1.0,
        serializer=VCINRZarrCodec(codec=codec), compressors=None,
    )
    x = data[:4].copy()
    x[0, :5, :5] = -1.0
    a[:] = x
    meta = json.loads((path / "zarr.json").read_text())
    assert meta["codecs"][0]["configuration"]["fill_value"] == -1.0
    y = zarr.open_array(path)[:]
    np.testing.assert_array_equal(y[0, :5, :5], -1.0)


def test_decode_in_fresh_process(codec, data, tmp_path):
    """Bytes written here decode in a new process that imports nothing of vcinr_sci: the
    entry points find the codec, the config's model_path finds the model."""
    expected = {}
    for fmt in (2, 3):
        path = tmp_path / f"fresh{fmt}.zarr"
        kwargs = {"serializer": VCINRZarrCodec(codec=codec), "compressors": None} if fmt == 3 else {"compressors": codec}
        a = zarr.create_array(path, shape=(6, 37, 49), chunks=(3, 37, 49), dtype="f4", zarr_format=fmt, **kwargs)
        a[:] = data[:6]
        expected[fmt] = a[:]
    script = textwrap.dedent(
        f"""
        import numpy as np, zarr, sys
        assert "vcinr_sci" not in sys.modules
        for fmt in (2, 3):
            np.save(r"{tmp_path}/out%d.npy" % fmt, zarr.open_array(r"{tmp_path}/fresh%d.zarr" % fmt, mode="r")[:])
        """
    )
    env = {"VCINR_CACHE_DIR": str(tmp_path / "cache2"), "PATH": "/usr/bin:/bin", "VCINR_DEVICE": "cpu"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=tmp_path, timeout=120)
    for fmt in (2, 3):
        np.testing.assert_allclose(np.load(tmp_path / f"out{fmt}.npy"), expected[fmt], rtol=0, atol=1e-4)


def test_default_inner_steps_come_from_the_coders_training(artifact_path):
    from vcinr_sci.model.registry import default_inner_steps

    art = load_artifact(artifact_path)
    art.metrics = {k: v for k, v in art.metrics.items() if k != "latents_inner_steps"}
    assert default_inner_steps(art) == art.config.latents.inner_steps
    art.metrics["latents_inner_steps"] = 7
    assert default_inner_steps(art) == 7
    for bad in ("7", 7.5, True, -1):  # used to fall back silently to the config's value
        art.metrics["latents_inner_steps"] = bad
        with pytest.raises(ArtifactError, match="latents_inner_steps"):
            default_inner_steps(art)
