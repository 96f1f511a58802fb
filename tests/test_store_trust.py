"""Where a reader looks for a model, and what it lets a store decide.

A bad copy never blocks a good one: a damaged copy stored in the store, in the cache or
on ``$VCINR_MODEL_PATH`` is skipped for the next, and when none is good one
:class:`ArtifactError` names each place and why, never the files' bytes.

The reader goes nowhere the user did not allow: by default no network request and no
read outside the store, the cache and the model path, whatever the store's codec config
names (a URL, ``../outside``, an absolute path) or links to (a symlink out of the store);
with ``$VCINR_TRUST_STORE_PATHS=1`` the store's path is followed as before. Opens and
connections are seen by an audit hook (:func:`sys.addaudithook`), which sees every file
open and socket connect of the process, whichever library makes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import xarray as xr
import zarr
from _vcinr_tiny import QUALITY, set_model_path

from vcinr_sci.errors import ArtifactError, ChunkFormatError, ConfigError, StoreError
from vcinr_sci.io.accessor import open_zarr
from vcinr_sci.model.artifact import MANIFEST, WEIGHTS
from vcinr_sci.model.embedded import MODELS_GROUP
from vcinr_sci.model.registry import add_model_search_path, clear_model_cache
from vcinr_sci.trust import trust_store_paths

pytestmark = pytest.mark.usefixtures("one_torch_thread", "isolated_model_lookup")

_EVENTS: list[tuple[str, tuple]] | None = None


def _audit(event: str, args: tuple) -> None:
    if _EVENTS is not None and event in ("open", "socket.connect", "socket.getaddrinfo"):
        _EVENTS.append((event, args))


sys.addaudithook(_audit)  # cannot be removed: it records only inside _recorded()


@contextlib.contextmanager
def _recorded() -> Iterator[list[tuple[str, tuple]]]:
    global _EVENTS
    _EVENTS = events = []
    try:
        yield events
    finally:
        _EVENTS = None


def _opened(events) -> list[Path]:
    return [Path(os.fsdecode(args[0])).resolve() for e, args in events if e == "open" and isinstance(args[0], (str, bytes))]


def _network(events) -> list[tuple]:
    return [(e, args[1:]) for e, args in events if e != "open"]


@pytest.fixture
def store(model, ds, tmp_path):
    """A store carrying its model, and what it decodes to."""
    out = ds.vcinr.to_zarr(tmp_path / "s.zarr", model=model, quality=QUALITY, store_model=True, chunks={"time": 4})
    return out, open_zarr(out).air_temperature.values


def _fresh_reader(tmp_path: Path, monkeypatch, model_path: Path | None = None) -> Path:
    """A reader with an empty cache, no model in memory, and ``model_path`` (if given) as
    ``$VCINR_MODEL_PATH``; returns its cache folder."""
    cache = tmp_path / "reader-cache"
    monkeypatch.setenv("VCINR_CACHE_DIR", str(cache))
    if model_path is not None:
        monkeypatch.setenv("VCINR_MODEL_PATH", str(model_path))
    clear_model_cache(search_paths=True)
    return cache


def _stored_file(store: Path, array: str) -> Path:
    (prefix,) = [p.name for p in (store / MODELS_GROUP).iterdir() if p.is_dir()]
    (chunk,) = [p for p in (store / MODELS_GROUP / prefix / array).rglob("*") if p.is_file() and p.name != "zarr.json"]
    return chunk


def _damage_stored(store: Path) -> None:
    """Cut the stored weights' one Zstd chunk in half: it no longer decompresses."""
    chunk = _stored_file(store, "weights")
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])


def _damaged_copy(model: Path, root: Path, damage: str) -> Path:
    """A copy of the artifact under ``root`` (named as in a cache or model folder),
    damaged: a flipped weights byte, the weights missing, or a manifest that is no JSON
    (holding a marker no error may quote)."""
    folder = root / model.name
    shutil.copytree(model, folder)
    if damage == "flipped":
        blob = bytearray((folder / WEIGHTS).read_bytes())
        blob[-1] ^= 0xFF
        (folder / WEIGHTS).write_bytes(bytes(blob))
    elif damage == "missing":
        (folder / WEIGHTS).unlink()
    else:
        (folder / MANIFEST).write_bytes(b"SECRET-MARKER {not json")
    return folder


# --- a bad copy never blocks a good one ------------------------------------------------


def test_damaged_stored_copy_and_good_path_copy(model, store, tmp_path, monkeypatch):
    """The stored model's Zstd chunk is damaged (it raised a bare RuntimeError): the
    stored copy is skipped with a warning and the copy on the model path decodes."""
    out, expected = store
    _damage_stored(out)
    cache = _fresh_reader(tmp_path, monkeypatch, model_path=model.parent)
    with pytest.warns(UserWarning, match="not using a stored model.*'weights' cannot be read"):
        np.testing.assert_array_equal(open_zarr(out).air_temperature.values, expected)
    assert not cache.exists() or not any(cache.iterdir())  # the damaged copy never entered it


@pytest.mark.parametrize("damage", ["flipped", "missing", "not_json"])
def test_damaged_cache_copy_and_good_stored_copy(model, store, tmp_path, monkeypatch, damage):
    out, expected = store
    cache = _fresh_reader(tmp_path, monkeypatch)
    _damaged_copy(model, cache, damage)
    np.testing.assert_array_equal(open_zarr(out).air_temperature.values, expected)
    assert (cache / model.name / WEIGHTS).read_bytes() == (model / WEIGHTS).read_bytes()  # replaced


@pytest.mark.parametrize("damage", ["flipped", "missing", "not_json"])
def test_damaged_path_copy_and_good_stored_copy(model, store, tmp_path, monkeypatch, damage):
    """The damaged copy is looked at first (a search path added before the store's)."""
    out, expected = store
    bad = _damaged_copy(model, tmp_path / "models", damage)
    _fresh_reader(tmp_path, monkeypatch, model_path=bad.parent)
    add_model_search_path(bad.parent)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        np.testing.assert_array_equal(open_zarr(out).air_temperature.values, expected)
    if damage != "not_json":  # a manifest naming no model claims nothing: nothing to skip
        assert any(str(bad) in str(w.message) and "skipped a bad copy" in str(w.message) for w in record)


def test_no_good_copy_one_clear_error(model, store, tmp_path, monkeypatch):
    """Stored, cached and path copies all damaged: one ArtifactError naming each and why,
    quoting no file's bytes."""
    out, _ = store
    _damage_stored(out)
    path_copy = _damaged_copy(model, tmp_path / "models", "flipped")
    cache = _fresh_reader(tmp_path, monkeypatch, model_path=path_copy.parent)
    cache_copy = _damaged_copy(model, cache, "not_json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ArtifactError) as err:
            open_zarr(out).air_temperature.values
    text = str(err.value)
    assert "not found (no good copy)" in text
    assert f"stored in {out}" in text and "'weights' cannot be read" in text
    assert f"{path_copy}: content hash" in text and "does not match" in text
    assert f"{cache_copy}: refused, no readable {MANIFEST}" in text
    assert "SECRET-MARKER" not in text


# --- the reader goes nowhere the user did not allow --------------------------------------


@pytest.mark.parametrize("opener", ["accessor", "xarray"])
def test_store_url_is_not_requested(model, store, tmp_path, monkeypatch, opener):
    """A store whose model_path is a URL: opened with default settings, 0 connections
    (the model comes from the store itself, or for plain xarray the model path)."""
    out, expected = store
    set_model_path(out, "http://127.0.0.1:9/x")
    _fresh_reader(tmp_path, monkeypatch, model_path=model.parent if opener == "xarray" else None)
    open_ = open_zarr if opener == "accessor" else xr.open_zarr
    with _recorded() as events:
        np.testing.assert_array_equal(open_(out).air_temperature.values, expected)
    assert _network(events) == []


def test_store_url_is_requested_when_trusted(model, store, tmp_path, monkeypatch):
    """The same store with the opt-in: the URL is requested, as before (so the test above
    would see a request)."""
    out, _ = store
    set_model_path(out, "http://127.0.0.1:9/x")
    _fresh_reader(tmp_path, monkeypatch)
    monkeypatch.setenv("VCINR_TRUST_STORE_PATHS", "1")
    with _recorded() as events, pytest.raises(ArtifactError, match="not found"):
        xr.open_zarr(out).air_temperature.values
    assert any(e == "socket.connect" for e, _ in _network(events))


@pytest.mark.parametrize("how", ["relative", "absolute"])
@pytest.mark.parametrize("opener", ["accessor", "xarray"])
def test_store_path_outside_is_not_read(model, store, tmp_path, monkeypatch, how, opener):
    """model_path ``../outside/<model>`` (from the store's folder) or an absolute path
    outside it: with default settings nothing outside the store, the cache and the model
    path is opened, and the error without another copy says how to opt in; with
    ``$VCINR_TRUST_STORE_PATHS=1`` the outside copy is used, as before."""
    out, expected = store
    outside = tmp_path / "outside"
    shutil.copytree(model, outside / model.name)
    set_model_path(out, f"../outside/{model.name}" if how == "relative" else str(outside / model.name))
    monkeypatch.chdir(out)  # where a relative path was followed from
    models = tmp_path / "models"
    shutil.copytree(model, models / model.name)
    cache = _fresh_reader(tmp_path, monkeypatch, model_path=models if opener == "xarray" else None)
    open_ = open_zarr if opener == "accessor" else xr.open_zarr
    with _recorded() as events:
        np.testing.assert_array_equal(open_(out).air_temperature.values, expected)
    allowed = [out.resolve(), cache.resolve(), models.resolve()]
    mine = [p for p in _opened(events) if tmp_path.resolve() in p.parents]
    assert mine and all(any(root in p.parents for root in allowed) for p in mine), mine

    if opener == "xarray":
        _fresh_reader(tmp_path, monkeypatch)
        monkeypatch.delenv("VCINR_MODEL_PATH")
        with pytest.raises(ArtifactError, match="not followed, as the store named them.*VCINR_TRUST_STORE_PATHS=1"):
            xr.open_zarr(out).air_temperature.values
        _fresh_reader(tmp_path, monkeypatch)
        monkeypatch.setenv("VCINR_TRUST_STORE_PATHS", "1")
        np.testing.assert_array_equal(xr.open_zarr(out).air_temperature.values, expected)


@pytest.mark.parametrize("where", ["model", "data"])
def test_symlink_out_of_the_store_is_not_followed(model, store, tmp_path, monkeypatch, where):
    """A stored model file or a data chunk that is a symlink out of the store: open_zarr
    refuses the store naming the link, having opened nothing outside; with the opt-in it
    follows the link. Plain xarray (zarr reads the link) gets an error that quotes none
    of the file's bytes."""
    out, expected = store
    link = _stored_file(out, "weights") if where == "model" else out / "air_temperature" / "c" / "0" / "0" / "0"
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "target"
    shutil.copyfile(link, target)  # the same bytes: followed, it decodes
    link.unlink()
    link.symlink_to(target)
    _fresh_reader(tmp_path, monkeypatch, model_path=model.parent)
    with _recorded() as events, pytest.raises(StoreError, match=r"symlink\(s\) lead out of the store.*" + link.name):
        open_zarr(out)
    assert not [p for p in _opened(events) if outside.resolve() in p.parents]

    monkeypatch.setenv("VCINR_TRUST_STORE_PATHS", "1")
    np.testing.assert_array_equal(open_zarr(out).air_temperature.values, expected)

    if where == "data":
        target.write_text("root:x:0:0:root:/root:/bin/bash\n")
        with pytest.raises(ChunkFormatError) as err:
            xr.open_zarr(out).air_temperature.values
        assert "root" not in str(err.value)


@pytest.mark.parametrize("store_model", [True, False])
@pytest.mark.parametrize("fmt", [2, 3])
def test_written_metadata_holds_no_path_of_the_writer(model, ds, tmp_path, store_model, fmt):
    out = ds.vcinr.to_zarr(tmp_path / "w.zarr", model=model, quality=QUALITY, store_model=store_model,
                           zarr_format=fmt, chunks={"time": 4}, measure=False)
    names = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}
    texts = [p.read_text() for p in out.rglob("*") if p.name in names]
    assert texts
    for text in texts:
        assert str(tmp_path) not in text and str(model) not in text
    arr = zarr.open_group(out, mode="r")["air_temperature"]
    from vcinr_sci.codec.numcodecs import codec_of

    expected = f"{MODELS_GROUP}/{model.name}" if store_model else None
    assert codec_of(arr).model_path == expected
    assert json.loads(json.dumps(codec_of(arr).get_config()))["model_path"] == expected


@pytest.mark.parametrize("value", ["yes", "true", "2", " 1"])
def test_trust_flag_other_than_0_or_1_is_refused(value, monkeypatch):
    """$VCINR_TRUST_STORE_PATHS is 1 or 0 (or unset): any other value is a ConfigError
    naming it, not a guess at what the user meant."""
    for ok, trusted in (("", False), ("0", False), ("1", True)):
        monkeypatch.setenv("VCINR_TRUST_STORE_PATHS", ok)
        assert trust_store_paths() is trusted
    monkeypatch.setenv("VCINR_TRUST_STORE_PATHS", value)
    with pytest.raises(ConfigError, match="VCINR_TRUST_STORE_PATHS must be 1"):
        trust_store_paths()
