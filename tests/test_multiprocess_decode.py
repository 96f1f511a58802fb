"""Decoding a vcinr-coded store in several processes gives the bytes one process gives:
with dask's multiprocessing scheduler (through xarray) and with a pool of spawned
processes each reading its chunk through zarr. The processes start bare (spawn: no model
in memory, no search path) and each model is new to them; the codec alone does not know
where the store is, so they find the model in the cache folder they share with the
writer, which cached it (and this process's open_zarr, which extracted it from the
store). Two processes installing one model into the cache at once keep each other's
good copy (the second test)."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from _vcinr_tiny import QUALITY, fields, linear_artifact, tiny_artifact

CHUNK = 4  # fields per chunk: 24 fields make 6 chunks


def _decode_chunk(store: str, start: int) -> tuple[int, bytes]:
    """In a worker process: one chunk of the store, read (decoded) through zarr."""
    import zarr

    return os.getpid(), zarr.open_array(store, path="air_temperature", mode="r")[start : start + CHUNK].tobytes()


def _use_cache(folder: str) -> None:
    os.environ["VCINR_CACHE_DIR"] = folder


@pytest.fixture(scope="module")
def spawned_pool(tmp_path_factory):
    """Two spawned worker processes, shared by this module's tests (each start costs
    seconds: torch and the codec are imported anew), and the cache folder they use."""
    cache = str(tmp_path_factory.mktemp("pool-cache"))
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"), initializer=_use_cache,
                             initargs=(cache,)) as pool:
        yield pool, cache


@pytest.mark.parametrize("kind", ["linear", "inr"])
def test_decode_in_processes_gives_the_same_bytes(kind, tmp_path, isolated_model_lookup, one_torch_thread,
                                                  spawned_pool, monkeypatch):
    import dask
    import xarray as xr

    from vcinr_sci.io.accessor import open_zarr

    spawned_pool, cache = spawned_pool
    monkeypatch.setenv("VCINR_CACHE_DIR", cache)  # the machine's cache, shared with the workers

    model, quality = (linear_artifact(), "q1") if kind == "linear" else (tiny_artifact(), QUALITY)
    ds = fields(24)
    store = ds.vcinr.to_zarr(tmp_path / "coded.zarr", model=model, quality=quality, store_model=True,
                             chunks={"time": CHUNK}, measure=False)

    one = open_zarr(store).air_temperature.values  # this process: the model extracted from the store
    ref = ds.air_temperature.values
    assert np.isfinite(one).all() and np.sqrt(np.mean((one - ref) ** 2)) < 0.25 * (ref.max() - ref.min())

    starts = range(0, len(one), CHUNK)
    results = list(spawned_pool.map(_decode_chunk, [str(store)] * len(starts), starts))
    with dask.config.set(scheduler="processes", pool=spawned_pool):  # dask's multiprocessing scheduler
        by_dask = xr.open_zarr(store).air_temperature.values
    assert os.getpid() not in {pid for pid, _ in results}
    assert b"".join(chunk for _, chunk in results) == one.tobytes()
    assert by_dask.dtype == one.dtype and by_dask.tobytes() == one.tobytes()


def test_a_copy_installed_meanwhile_by_another_process_is_kept(tmp_path, monkeypatch):
    """The interleaving of two processes extracting one stored model: this one finds no
    copy in the cache, the other installs its (good) copy, then this one goes on. The
    good copy stays in place (it was set aside as bad, leaving the other process's
    users without a model until this one's copy arrived)."""
    from vcinr_sci.model import artifact as artifact_module
    from vcinr_sci.model.artifact import MANIFEST, WEIGHTS, install_artifact, load_artifact

    folder = linear_artifact()
    manifest, weights = (folder / MANIFEST).read_bytes(), (folder / WEIGHTS).read_bytes()
    model_hash = load_artifact(folder).hash
    cache = tmp_path / "cache"
    real_check = artifact_module.is_verified_artifact
    calls = []

    def other_process_installs_after_the_first_check(target, h):
        found = real_check(target, h)
        calls.append(found)
        if len(calls) == 1:
            monkeypatch.setattr(artifact_module, "is_verified_artifact", real_check)
            install_artifact(manifest, weights, h, cache)  # the other process, done meanwhile
            monkeypatch.setattr(artifact_module, "is_verified_artifact", other_process_installs_after_the_first_check)
        return found

    monkeypatch.setattr(artifact_module, "is_verified_artifact", other_process_installs_after_the_first_check)
    target = install_artifact(manifest, weights, model_hash, cache)
    assert calls[0] is False and real_check(target, model_hash)
    assert [p.name for p in cache.iterdir()] == [target.name]  # nothing set aside
