"""A store is untrusted input: hashes that would name paths outside the cache, stored or
remote model copies that do not verify (they must never enter the cache, nor hide a good
copy later in the search order), chunks whose headers claim more than the array holds,
malformed dtype strings, and the per-chunk content digests that detect tampering."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import textwrap
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from _vcinr_tiny import QUALITY, set_model_path, tiny_artifact

from vcinr_sci.errors import ArtifactError
from vcinr_sci.io.accessor import open_zarr
from vcinr_sci.io.store import consolidate
from vcinr_sci.model.artifact import MANIFEST, WEIGHTS
from vcinr_sci.model.embedded import HASH_ATTR, MODELS_GROUP

pytestmark = pytest.mark.usefixtures("one_torch_thread", "isolated_model_lookup")


def _write(model, ds, path: Path) -> tuple[Path, np.ndarray]:
    """A store written with its model inside (its codec config points there), and what
    it decodes to."""
    out = ds.vcinr.to_zarr(path, model=model, quality=QUALITY, store_model=True, chunks={"time": 4})
    return out, open_zarr(out).air_temperature.values


def _fresh_lookup(cache: Path, monkeypatch) -> None:
    """An empty cache folder, and no model loaded or searched for by this process."""
    from vcinr_sci.model.registry import clear_model_cache

    monkeypatch.setenv("VCINR_CACHE_DIR", str(cache))
    clear_model_cache(search_paths=True)


def _stored_model(store: Path) -> zarr.Group:
    (sub,) = [g for _, g in zarr.open_group(store, mode="r+")[MODELS_GROUP].groups()]
    return sub


def _files_named(root: Path, names=(MANIFEST, WEIGHTS)) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.name in names)


# --- hashes that name paths ---------------------------------------------------------


def test_model_hash_check():
    from vcinr_sci.model.artifact import check_model_hash, model_dir_name

    h = "0123456789abcdef" * 4
    assert check_model_hash(h) == h and model_dir_name(h) == h[:16]
    assert check_model_hash(h[:8], prefix=True) == h[:8]
    for bad in ("../x", "/tmp/x", h.upper(), h[:63], h + "0", h[:60] + "../", "", None, 5, h[:7]):
        with pytest.raises(ArtifactError):
            check_model_hash(bad, prefix=True) if bad == h[:7] else check_model_hash(bad)


@pytest.mark.parametrize("attack", ["relative", "absolute"])
@pytest.mark.parametrize("opener", ["xarray", "accessor"])
def test_stored_hash_cannot_name_a_path_outside_the_cache(model, ds, tmp_path, monkeypatch, attack, opener):
    """A crafted ``vcinr_model_hash`` ("../x" or an absolute path) writes nothing outside
    the cache, through plain ``xr.open_zarr`` (the codec extracts the model its config
    points at) and through :func:`open_zarr` (which extracts every stored model)."""
    store, _ = _write(model, ds, tmp_path / "crafted.zarr")
    cache = tmp_path / "reader-cache"
    cache.mkdir()
    # the old code used the first 16 characters as the folder name: keep the target that short
    outside = tmp_path / "escaped" if attack == "relative" else Path(f"/tmp/vx{uuid.uuid4().hex[:8]}")
    claimed = "../escaped" if attack == "relative" else str(outside)
    assert len(claimed) <= 16
    _stored_model(store).attrs[HASH_ATTR] = claimed
    consolidate(store, zarr_format=3)
    _fresh_lookup(cache, monkeypatch)
    try:
        if opener == "xarray":
            with pytest.raises(ArtifactError, match="not found"):
                xr.open_zarr(store).air_temperature.values
        else:
            with pytest.warns(UserWarning, match="without a valid model hash"):
                with pytest.raises(ArtifactError, match="not found"):
                    open_zarr(store).air_temperature.values
        assert not outside.exists()
        writer_cache = tmp_path / "cache"  # where to_zarr's own check of the store decoded
        assert all(writer_cache in p.parents for p in _files_named(tmp_path))
        assert _files_named(cache) == []
    finally:
        shutil.rmtree(outside, ignore_errors=True)


# --- model copies that do not verify ------------------------------------------------


def _poison(store: Path) -> None:
    """Flip one byte of the stored weights (the hash attribute still claims the model)."""
    weights = _stored_model(store)["weights"]
    data = weights[:]
    data[-1] ^= 0xFF
    weights[:] = data


@pytest.mark.parametrize("opener", ["xarray", "accessor"])
def test_poisoned_stored_copy_never_enters_the_cache(model, ds, tmp_path, monkeypatch, opener):
    """A store whose stored weights do not match its claimed hash is refused, leaves the
    cache empty, and a good store of the same model decodes afterwards. Plain xarray
    finds a stored model through the codec config's path only: here the absolute path an
    older writer recorded, followed as the user trusts store paths."""
    good, expected = _write(model, ds, tmp_path / "good.zarr")
    poisoned, _ = _write(model, ds, tmp_path / "poisoned.zarr")
    _poison(poisoned)
    if opener == "xarray":
        monkeypatch.setenv("VCINR_TRUST_STORE_PATHS", "1")
        for store in (good, poisoned):
            set_model_path(store, str(_stored_model(store).store.root / _stored_model(store).path))
    cache = tmp_path / "reader-cache"
    _fresh_lookup(cache, monkeypatch)
    open_ = xr.open_zarr if opener == "xarray" else open_zarr
    with pytest.warns(UserWarning, match="does not match"):
        with pytest.raises(ArtifactError, match="does not match"):
            open_(poisoned).air_temperature.values
    assert _files_named(cache) == []
    _fresh_lookup(cache, monkeypatch)
    np.testing.assert_array_equal(open_(good).air_temperature.values, expected)


def test_poisoned_remote_copy_is_skipped(model, ds, tmp_path, monkeypatch):
    """A ``model_path`` URI (any fsspec filesystem; a store's, followed as the user trusts
    store paths) serving a bad copy leaves the cache empty, and the error names it; a
    good URI then works."""
    import fsspec

    monkeypatch.setenv("VCINR_TRUST_STORE_PATHS", "1")
    from vcinr_sci.codec.numcodecs import VCINRCodec

    cache = tmp_path / "reader-cache"
    fs = fsspec.filesystem("memory")
    root = f"/vcinr-{uuid.uuid4().hex[:8]}"
    for name in (MANIFEST, WEIGHTS):
        blob = Path(model, name).read_bytes()
        fs.pipe(f"{root}/good/{name}", blob)
        fs.pipe(f"{root}/bad/{name}", blob[:-1] + bytes([blob[-1] ^ 1]) if name == WEIGHTS else blob)
    codec = VCINRCodec.for_model(model, QUALITY)
    enc = codec.encode(ds.air_temperature.values[:2])
    config = codec.get_config()
    _fresh_lookup(cache, monkeypatch)
    bad = VCINRCodec.from_config({**config, "model_path": f"memory://{root}/bad"})
    with pytest.warns(UserWarning, match="does not match"):
        with pytest.raises(ArtifactError, match=f"memory://{root}/bad"):
            bad.decode(enc)
    assert _files_named(cache) == []
    _fresh_lookup(cache, monkeypatch)
    good = VCINRCodec.from_config({**config, "model_path": f"memory://{root}/good"})
    np.testing.assert_array_equal(good.decode(enc), codec.decode(enc))
    assert len(_files_named(cache)) == 2


def test_tampered_copy_does_not_hide_a_good_one(model, ds, tmp_path, monkeypatch):
    """A copy that claims the hash but fails verification, earlier in the search order,
    is skipped with a warning naming it; the good copy later in the order is used."""
    from vcinr_sci.codec.numcodecs import VCINRCodec

    tampered_root, good_root = tmp_path / "first", tmp_path / "second"
    shutil.copytree(model, tampered_root / Path(model).name)
    shutil.copytree(model, good_root / Path(model).name)
    weights = tampered_root / Path(model).name / WEIGHTS
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    monkeypatch.setenv("VCINR_MODEL_PATH", f"{tampered_root}:{good_root}")
    codec = VCINRCodec.for_model(model, QUALITY)
    enc = codec.encode(ds.air_temperature.values[:2])
    expected = codec.decode(enc)
    _fresh_lookup(tmp_path / "reader-cache", monkeypatch)
    anywhere = VCINRCodec.from_config({**codec.get_config(), "model_path": None})
    with pytest.warns(UserWarning, match=f"{tampered_root}.*does not match"):
        np.testing.assert_array_equal(anywhere.decode(enc), expected)


def test_bad_copy_in_cache_is_replaced(model, ds, tmp_path, monkeypatch):
    """A bad copy already in the cache (left by an older version) does not block a good
    stored copy: it is set aside and the verified copy takes its place."""
    good, expected = _write(model, ds, tmp_path / "good.zarr")
    cache = tmp_path / "reader-cache"
    _fresh_lookup(cache, monkeypatch)
    h = zarr.open_group(good, mode="r")["air_temperature"].attrs["vcinr_model_hash"]
    stale = cache / h[:16]
    shutil.copytree(tiny_artifact(), stale)
    (stale / WEIGHTS).write_bytes(b"not the weights")
    np.testing.assert_array_equal(open_zarr(good).air_temperature.values, expected)
    assert (stale / WEIGHTS).read_bytes() != b"not the weights"


# --- claimed sizes and malformed headers --------------------------------------------


def _legacy_resign(buf: bytes) -> bytes:
    """Recompute a format 1 or 2 chunk's header CRC: a crafted chunk a CRC cannot tell
    from a real one."""
    b = bytearray(buf)
    header_len = struct.unpack_from("<H", b, 6)[0]
    struct.pack_into("<I", b, 8, zlib.crc32(b[12:header_len], zlib.crc32(b[:8])))
    return bytes(b)


_BOMB_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np, zarr
    from vcinr_sci.codec.numcodecs import VCINRCodec
    from vcinr_sci.codec.zarr3 import VCINRZarrCodec
    artifact, store, fields = sys.argv[1], sys.argv[2], int(sys.argv[3])
    codec = VCINRCodec.for_model(artifact, "u6")
    x = np.full((4, 37, 49), np.nan, np.float32)  # all NaN: a header and no payload
    x[1] = 280.0
    normal, empty = codec.encode(x), codec.encode(np.full_like(x, np.nan))
    arr = zarr.create_array(store, shape=x.shape, chunks=x.shape, dtype=x.dtype,
                            serializer=VCINRZarrCodec(codec=codec), compressors=None, fill_value=np.nan)
    arr[:] = x
    codec.decode(normal), arr[:]  # warm: the model and every code path loaded
    from dataclasses import replace
    from vcinr_sci.codec.container import read_raw_header, seal
    raw, end = read_raw_header(empty)
    bomb = seal(replace(raw, shape=(fields, *raw.shape[1:])).pack() + empty[end:])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcome = {}
    def attempt(name, f):
        try:
            f()
            outcome[name] = "decoded"
        except Exception as e:
            outcome[name] = type(e).__name__ + ": " + str(e)[:200]
    attempt("numcodecs", lambda: codec.decode(bomb))
    attempt("numcodecs_out", lambda: codec.decode(bomb, out=np.empty_like(x)))
    import asyncio
    from zarr.core.buffer import default_buffer_prototype
    key = arr.metadata.encode_chunk_key((0, 0, 0))
    asyncio.run(arr.store_path.store.set(key, default_buffer_prototype().buffer.from_bytes(bomb)))
    attempt("zarr3", lambda: zarr.open_array(store, mode="r")[:])
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    print(json.dumps({"outcome": outcome, "growth": growth, "bomb_bytes": len(bomb)}))
    """
)


def test_chunk_claiming_more_fields_is_refused_before_allocating(model, tmp_path):
    """A CRC-valid, header-only chunk claiming 40,000 fields (72 M values, ~870 MB to
    decode) is refused by the numcodecs face (no output buffer: the cap; with one: its
    size) and by the Zarr-3 face (the array's chunk shape), and the process's peak RSS
    grows by far less than the claimed chunk."""
    env = {"PATH": "/usr/bin:/bin", "VCINR_DEVICE": "cpu", "HOME": str(tmp_path),
           "VCINR_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", _BOMB_SCRIPT, str(model), str(tmp_path / "a.zarr"), "40000"],
        env=env, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["bomb_bytes"] < 200
    for face, outcome in result["outcome"].items():
        assert outcome.startswith("ChunkFormatError"), (face, outcome)
    assert "more than a chunk may hold" in result["outcome"]["numcodecs"]
    assert result["growth"] < 100 * 2**20, result


def test_claimed_size_checks():
    from vcinr_sci.codec.container import ChunkHeader, check_claimed_size

    h = ChunkHeader("0" * 64, (3, 4, 5), "<f4", 3, "q", 1)
    check_claimed_size(h, (3, 4, 5))
    check_claimed_size(h, None, 3 * 4 * 5 * 4)
    check_claimed_size(h)
    from vcinr_sci.errors import ChunkFormatError

    with pytest.raises(ChunkFormatError, match="array's chunks are"):
        check_claimed_size(h, (2, 4, 5))
    with pytest.raises(ChunkFormatError, match="output buffer"):
        check_claimed_size(h, None, 100)
    big = ChunkHeader("0" * 64, (2**40, 4, 5), "<f4", 2**40, "q", 1)
    with pytest.raises(ChunkFormatError, match="VCINR_MAX_CHUNK_VALUES"):
        check_claimed_size(big)


@pytest.mark.parametrize("text", [",f4", "f4,", "O,O", "[f4", "V99"])
def test_malformed_dtype_string_refused(text):
    """A CRC-valid format-1 header (format 3 stores a dtype code, not text) whose dtype
    text numpy cannot (or should not) parse is refused with ChunkFormatError, never a
    SyntaxError from numpy's dtype parser."""
    import numcodecs

    from vcinr_sci.codec.container import decode_container
    from vcinr_sci.errors import ChunkFormatError

    golden = Path(__file__).resolve().parent / "golden"
    case = json.loads((golden / "cases.json").read_text())["v1_uniform"]
    codec = numcodecs.get_codec(case["config"] | {"model_path": str(golden / "models" / case["model"])})
    b = bytearray((golden / "v1_uniform.vcinr").read_bytes())
    ndim = b[46]
    at = 81 + 8 * ndim
    assert bytes(b[at : at + 3]) == b"<f4"
    b[at : at + 3] = text.encode()
    crafted = _legacy_resign(bytes(b))
    with pytest.raises(ChunkFormatError, match="dtype"):
        decode_container(crafted)
    with pytest.raises(ChunkFormatError, match="dtype"):
        codec.decode(crafted)


@pytest.mark.parametrize("ndim", [65, 200, 255])
def test_legacy_header_with_too_many_dims_refused(ndim):
    """A CRC-valid format-1 header claiming more dims than numpy arrays have (its ndim
    is a byte) is a ChunkFormatError, not numpy's ValueError from deep in the decoder."""
    import numcodecs

    from vcinr_sci.codec.container import decode_container
    from vcinr_sci.errors import ChunkFormatError

    golden = Path(__file__).resolve().parent / "golden"
    case = json.loads((golden / "cases.json").read_text())["v1_uniform"]
    codec = numcodecs.get_codec(case["config"] | {"model_path": str(golden / "models" / case["model"])})
    b = bytearray((golden / "v1_uniform.vcinr").read_bytes())
    old, header_len = b[46], struct.unpack_from("<H", b, 6)[0]
    extra = struct.pack("<Q", 1) * (ndim - old)  # leading dims of 1: the same number of values
    b = b[:81] + extra + b[81:]
    b[46] = ndim
    struct.pack_into("<H", b, 6, header_len + len(extra))
    crafted = _legacy_resign(bytes(b))
    for decode in (decode_container, codec.decode):
        with pytest.raises(ChunkFormatError, match="numpy's limit"):
            decode(crafted)


def test_dtype_code_outside_the_table_refused(model, ds):
    """Format 3's dtype is a code; a CRC-valid chunk with an unknown code is refused."""
    from dataclasses import replace

    from vcinr_sci.codec.container import read_raw_header, seal
    from vcinr_sci.codec.numcodecs import VCINRCodec
    from vcinr_sci.errors import ChunkFormatError

    codec = VCINRCodec.for_model(model, QUALITY)
    enc = codec.encode(ds.air_temperature.values[:1])
    raw, end = read_raw_header(enc)
    for code in (0, 7, 15):
        with pytest.raises(ChunkFormatError, match=f"unknown dtype code {code}"):
            codec.decode(seal(replace(raw, flags=raw.flags & 0x0F | code << 4).pack() + enc[end:]))


# --- integrity against tampering ----------------------------------------------------


def test_digests_name_a_forged_chunk(model, ds, tmp_path, capsys):
    """A forged chunk with valid CRCs decodes silently to other values; the SHA-256
    digests recorded at write time name it, and a record rewritten by the forger is
    caught by the root digest kept apart from the store."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    from vcinr_sci.cli import main
    from vcinr_sci.codec.numcodecs import codec_of
    from vcinr_sci.io.integrity import record_digests, verify_digests

    store, expected = _write(model, ds, tmp_path / "s.zarr")  # 2 chunks of 4 fields
    first = verify_digests(store)
    assert first.ok and first.checked >= 2
    arr = zarr.open_group(store, mode="r+")["air_temperature"]
    forged = codec_of(arr).encode_array(np.ascontiguousarray(expected[4:8][::-1]))
    key = arr.metadata.encode_chunk_key((1, 0, 0))
    sync((arr.store_path / key).set(default_buffer_prototype().buffer.from_bytes(forged)))
    decoded = open_zarr(store).air_temperature.values  # no error: CRCs cannot tell
    np.testing.assert_array_equal(decoded[:4], expected[:4])
    assert not np.allclose(decoded[4:], expected[4:])

    report = verify_digests(store)
    assert not report.ok and report.mismatched == {"air_temperature": [(1, 0, 0)]}
    assert main(["verify", str(store)]) == 1
    assert "air_temperature: 1 chunk(s) differ from the record: (1, 0, 0)" in capsys.readouterr().out
    record_digests(store)  # the forger rewrites the record too
    assert verify_digests(store).ok
    assert not verify_digests(store, expected_root=first.root).ok
    assert main(["verify", str(store), "--expect", first.root]) == 1


# --- crafted rANS strings (issue 22) ------------------------------------------------

_CRAFTED_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    import numcodecs
    import fuzz_decoder
    from vcinr_sci.errors import VCINRError
    for name in sys.argv[2:]:
        chunk, config = getattr(fuzz_decoder, name)()
        codec = numcodecs.get_codec(config)
        for _ in range(3):
            try:
                codec.decode(chunk)
                print(name, "decoded", flush=True)
            except VCINRError as e:
                print(name, "refused", type(e).__name__, flush=True)
    """
)


def test_crafted_rans_strings_are_refused_cleanly(tmp_path):
    """The issue's two strings, decoded in a subprocess (a segfault must not take the
    test run down; one process for both: each start loads torch and the codec): a
    linear-model chunk claiming 256 fields with the coefficient string ``00`` + eight
    ``0xff``, and a bounded chunk whose rANS correction has the histogram ``[1, 65535]``
    and an 8-byte symbol string. Each is refused with the project's error, every time
    (never a crash, never garbage that changes from run to run)."""
    root = Path(__file__).resolve().parents[1]
    env = {"PATH": "/usr/bin:/bin", "VCINR_DEVICE": "cpu", "HOME": str(tmp_path), "PYTHONPATH": str(root),
           "VCINR_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    crafted = ["crafted_linear", "crafted_histogram"]
    run = subprocess.run([sys.executable, "-c", _CRAFTED_SCRIPT, str(root / "examples"), *crafted], env=env,
                         cwd=root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.returncode, run.stdout, run.stderr[-2000:])
    lines = [line.split(" ", 2)[:2] for line in run.stdout.splitlines()]
    assert lines == [[name, "refused"] for name in crafted for _ in range(3)], run.stdout
