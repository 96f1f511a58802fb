"""pipelines.compress on Ray Data: an interrupted run (here: a run limited to 2 chunks,
plus a chunk left half-written as a kill would) is completed by a rerun that joins the
running cluster the way ``ray job submit`` entrypoints do, without rewriting finished
chunks; each actor loads the model once; a complete store is left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from _vcinr_tiny import QUALITY, fields, five_d_fields, tiny_artifact

from vcinr_sci import metrics
from vcinr_sci.config import Config

pytestmark = pytest.mark.slow  # an end-to-end run of a Ray pipeline

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def job(tmp_path):
    source = tmp_path / "input.nc"
    fields(40).to_netcdf(source)
    raw = {
        "name": "tiny-compress",
        "data": {"paths": [str(source)], "variable": "air_temperature", "grid_dims": ["latitude", "longitude"]},
        "compress": {"output": str(tmp_path / "out.zarr"), "chunk_fields": 8, "quality": QUALITY, "num_actors": 1},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    return Config.from_dict(raw), path, source


# A chunk write through Zarr's local store, killed (as on a lost node) after the bytes
# went to their temporary name and before the rename: leaves what Zarr itself leaves.
KILLED_MID_WRITE = """
import os, pathlib, signal, sys
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore
pathlib.Path.replace = lambda self, target: os.kill(os.getpid(), signal.SIGKILL)
sync(LocalStore(sys.argv[1]).set(sys.argv[2], default_buffer_prototype().buffer.from_bytes(b"VCINR half")))
"""


def _chunk_files(store: Path) -> dict[str, tuple[int, bytes]]:
    root = store / "air_temperature" / "c"
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}


def test_resume_after_interruption(ray_session, job, tmp_path, monkeypatch):
    from pipelines.compress import COMPLETE_ATTR, WriteChunks, compress, progress_dir
    from pipelines.ray_setup import run_actor_pool

    monkeypatch.setenv("VCINR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VCINR_DEVICE", "cpu")
    cfg, cfg_path, source = job
    model = str(tiny_artifact())
    store = Path(cfg.compress.output)

    first = compress(cfg, model, limit=2, quiet=True)
    assert not first.complete and first.written == 2
    assert set(first.model_loads.values()) == {1}  # one load per actor, reused for every chunk
    done = _chunk_files(store)
    assert len(done) == 2 and len(list((progress_dir(store) / "air_temperature").glob("*.json"))) == 2
    # a chunk the kill cut short: bytes present, no marker
    cut = store / "air_temperature" / "c" / "4" / "0" / "0"
    cut.parent.mkdir(parents=True, exist_ok=True)
    cut.write_bytes(b"VCINR\x01 cut short")
    # a writer killed mid-write leaves Zarr's temporary file
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(store), "air_temperature/c/3/0/0"])
    assert killed.returncode == -signal.SIGKILL and len(list(store.rglob("*.partial"))) == 1
    # Ray retries a task that finished on a node lost before its result came back: a
    # chunk with a marker is not written again.
    retried = list(run_actor_pool(WriteChunks, [{"variable": "air_temperature", "chunk": 0}],
                                  {"config": cfg.to_dict(), "store": str(store),
                                   "artifact_paths": {"air_temperature": model}},
                                  num_actors=1, cpus_per_actor=1, want_gpu=False, section="compress", say=print))

    # the rerun joins the running cluster, as an entrypoint under `ray job submit` does
    env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address, PYTHONPATH=str(REPO))
    run = subprocess.run(
        [sys.executable, "-m", "pipelines.compress", "--config", str(cfg_path), "--model", model],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "5 chunks of 1 variable(s), 2 complete, 3 to write" in run.stdout and "store complete" in run.stdout
    assert "[5/5, 0 left]" in run.stdout and ", 1 left, ETA " in run.stdout  # chunks done, left, and an ETA

    after = _chunk_files(store)
    assert len(after) == 5, sorted(after)  # no temporary left beside the chunks
    for key, (mtime, data) in done.items():
        assert after[key] == (mtime, data), f"finished chunk {key} was rewritten"
    assert [bool(r["skipped"]) for r in retried] == [True]  # and said so
    assert not progress_dir(store).exists()

    import xarray as xr
    import zarr

    from vcinr_sci.io.accessor import open_zarr
    from vcinr_sci.io.info import store_info

    assert zarr.open_group(store, mode="r").attrs[COMPLETE_ATTR] is True
    back = open_zarr(store).air_temperature
    ref = xr.open_dataset(source).air_temperature
    assert back.shape == ref.shape and np.isfinite(back.values).all()
    attrs = back.vcinr.attrs
    assert attrs["vcinr_quality"] == QUALITY and attrs["vcinr_model_hash"] == first.model_hashes["air_temperature"]
    assert attrs["vcinr_rmse"] == pytest.approx(metrics.rmse(ref.values, back.values), rel=1e-5)
    assert attrs["vcinr_max_abs_error"] == pytest.approx(metrics.max_abs_error(ref.values, back.values), rel=1e-5)
    assert "forecast_period" in back.coords and np.array_equal(back.forecast_period.values, ref.forecast_period.values)
    assert store_info(store)["embedded_models"] == [first.model_hashes["air_temperature"]]
    from vcinr_sci.io.integrity import verify_digests

    digests = verify_digests(store)  # the finished store records every chunk's SHA-256
    assert digests.ok and digests.checked >= 5

    again = compress(cfg, model, quiet=True)
    assert again.complete and again.written == 0
    assert _chunk_files(store) == after


def test_foreign_store_refused(job, tmp_path):
    from pipelines.compress import compress

    cfg, _, _ = job
    Path(cfg.compress.output).mkdir()
    (Path(cfg.compress.output) / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    with pytest.raises(FileExistsError, match="not written by this job"):
        compress(cfg, str(tiny_artifact()), quiet=True)


@pytest.mark.parametrize(
    "chunk_fields, named, expected",
    [(8, {}, (1, 4, 2)), (16, {}, (1, 4, 2)), (4, {}, (1, 2, 2)), (8, {"level": 1}, (1, 4, 1))],
)
def test_chunks_span_every_item_dim(tmp_path, chunk_fields, named, expected):
    """chunk_fields fills the last item dims first, then the outer ones; named dims keep
    their size (the layout is created before any chunk is written: limit=0)."""
    import zarr

    from pipelines.compress import compress

    source = tmp_path / "five.nc"
    five_d_fields().to_netcdf(source)
    raw = {
        "data": {"paths": [str(source)], "variable": "air_temperature", "grid_dims": ["latitude", "longitude"]},
        "compress": {"output": str(tmp_path / "out.zarr"), "chunk_fields": chunk_fields, "chunks": named,
                     "quality": QUALITY},
    }
    summary = compress(Config.from_dict(raw), str(tiny_artifact()), limit=0, quiet=True)
    assert not summary.complete
    assert zarr.open_group(tmp_path / "out.zarr", mode="r")["air_temperature"].chunks == (*expected, 37, 49)

