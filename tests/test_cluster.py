"""build_latents and compress on a multi-node Ray cluster that loses a worker node in
the middle of each job: the job finishes, every shard or chunk is written once, and the
output is bit-identical to an uninterrupted run's.

The cluster jobs run in a subprocess (tests/_cluster_jobs.py): a driver is connected to
one Ray instance per process, and this session's shared Ray (``ray_session``) stays
up for the other tests; the subprocess's cluster, its nodes and their workers end with
it. The uninterrupted reference runs use ``ray_session``, as every other pipeline test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _vcinr_tiny import QUALITY, fields, tiny_artifact

from vcinr_sci.config import Config, load_config

pytestmark = pytest.mark.slow  # an end-to-end run of Ray pipelines on a 3-node cluster

REPO = Path(__file__).resolve().parents[1]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(ray_session, tmp_path_factory):
    """The reference (uninterrupted, ``ray_session``) and cluster (node lost) outputs of
    both jobs, written to the same paths one after the other (a store records its own
    path), and the cluster run's report."""
    from pipelines.build_latents import build
    from pipelines.compress import compress

    tmp = tmp_path_factory.mktemp("cluster")
    model = str(tiny_artifact())
    latents = load_config(REPO / "configs" / "tiny.yaml")
    lc = latents.latents
    lc.output_dir, lc.shard_fields, lc.num_actors = str(tmp / "latents"), 16, 2  # 12 + 2 shards
    source = tmp / "input.nc"
    fields(48).to_netcdf(source)
    coded = Config.from_dict({
        "name": "cluster",
        "data": {"paths": [str(source)], "variable": "air_temperature", "grid_dims": ["latitude", "longitude"]},
        "compress": {"output": str(tmp / "coded" / "out.zarr"), "chunk_fields": 4, "quality": QUALITY, "num_actors": 2},
    })

    reference = tmp / "reference"
    reference.mkdir()
    root = build(latents, model, quiet=True).root
    root.rename(reference / "latents")
    store = compress(coded, model, quiet=True).store
    assert not (store.parent / f"{store.name}.progress").exists()
    store.rename(reference / "out.zarr")

    spec = {"jobs": [
        {"stage": "latents", "config": latents.to_dict(), "model": model, "watch": lc.output_dir},
        {"stage": "compress", "config": coded.to_dict(), "model": model, "watch": str(store.parent)},
    ]}
    (tmp / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, PYTHONPATH=str(REPO), VCINR_DEVICE="cpu")
    run = subprocess.run(
        [sys.executable, str(REPO / "tests" / "_cluster_jobs.py"), str(tmp / "spec.json"), str(tmp / "report.json")],
        env=env, cwd=tmp, capture_output=True, text=True, timeout=400,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    latents_report, compress_report = json.loads((tmp / "report.json").read_text())
    return {
        "latents": (reference / "latents", root, latents_report),
        "compress": (reference / "out.zarr", store, compress_report),
        "log": run.stdout + run.stderr,
    }


def _lost_a_node_mid_job(report: dict, total: int) -> None:
    assert "removed_at" in report, "no worker node held an actor once the first output appeared"
    assert report["removed_at"] < report["finished_at"]
    assert len(report["done_before_removal"]) < total, "the job was done before the node went"


def test_build_latents_survives_node_loss(runs):
    reference, root, report = runs["latents"]
    shards = [k for k in _files(reference) if k.endswith(".parquet")]
    assert len(shards) == 14
    _lost_a_node_mid_job(report, len(shards))
    summary = report["summary"]
    assert summary["skipped"] == 0 and summary["written"] <= len(shards)
    # A shard appears by rename: one version each means no shard was written twice.
    versions = {k.split("/", 1)[1]: v for k, v in report["versions"].items() if k.endswith(".parquet")}
    assert sorted(versions) == sorted(shards)
    assert {k: len(v) for k, v in versions.items() if len(v) != 1} == {}
    assert _files(root) == _files(reference)  # bit-identical, and no temporary left


def test_compress_survives_node_loss(runs):
    reference, store, report = runs["compress"]
    chunks = [k for k in _files(reference) if k.startswith("air_temperature/c/")]
    assert len(chunks) == 12
    _lost_a_node_mid_job(report, len(chunks))
    assert report["summary"]["complete"] and report["summary"]["skipped"] == 0
    # A chunk is done once its marker exists; it must not be written after that (one cut
    # short by the node loss has no marker yet, and is written again).
    versions = report["versions"]
    # Markers are written atomically: the watcher may catch a hidden ``.NAME.tmp-*``
    # sibling before its rename, which is not a marker.
    markers = {Path(k).stem: v[0][3] for k, v in versions.items()
               if ".progress/" in k and not Path(k).name.startswith(".")}
    assert len(markers) == len(chunks)
    for key in chunks:  # air_temperature/c/<time chunk>/0/0: the marker's index is the time chunk's
        done_at = markers[f"{int(key.split('/')[2]):08d}"]
        rewritten = [v for v in versions[f"{store.name}/{key}"] if v[3] > done_at]
        assert not rewritten, f"chunk {key} written again after it was done"
    assert _files(store) == _files(reference)  # bit-identical, and no temporary left
