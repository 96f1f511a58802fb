"""Run pipeline jobs on a local multi-node Ray cluster and remove a worker node in the
middle of each; run as a script by tests/test_cluster.py:

    python tests/_cluster_jobs.py SPEC.json REPORT.json

SPEC holds a list of jobs, each ``{"stage": "latents" | "compress", "config": {...},
"model": PATH, "watch": FOLDER}``. The cluster is Ray's own test cluster
(``ray.cluster_utils.Cluster``): a head node without CPUs (the driver's node, never
removed) and two worker nodes of 1 CPU each, so a pool of 2 actors holds one on each.
While a job runs, a watcher thread records every file under its ``watch`` folder
(inode, mtime, size) each time it changes, and once the first finished output appears
(a latent shard, or a chunk's progress marker) removes the worker node of one of the
pool's actors. Between jobs a fresh node replaces the removed one. REPORT gets, per
job, the pipeline's summary, what was done when the node went, and every version of
every file the watcher saw.

The tiny jobs finish in well under a second once the first output is out, faster than
the watcher can find an actor's node on a loaded machine; a worker setup hook
(``_pace_outputs``) makes each shard or chunk take at least ``PACE_S`` so the node is
always lost mid-job. It delays, and changes no byte.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

POLL_S = 0.02
PACE_S = 0.4  # the least time one shard or chunk takes in a worker (see _pace_outputs)
# What counts as a finished output, per stage (relative to the watched folder).
DONE_GLOB = {"latents": "*/*/shard-*.parquet", "compress": "*.progress/*/*.json"}


def _versions(root: Path, seen: dict[str, list[list]]) -> None:
    """Add each file's current (inode, mtime, size) under ``root`` to ``seen`` if new,
    with the time it was first seen."""
    now = time.monotonic()
    for p in root.rglob("*"):
        try:
            st = p.stat()
        except FileNotFoundError:  # a temporary renamed or removed meanwhile
            continue
        if not p.is_file():
            continue
        sig = [st.st_ino, st.st_mtime_ns, st.st_size]
        versions = seen.setdefault(str(p.relative_to(root)), [])
        if not versions or versions[-1][:3] != sig:
            versions.append([*sig, now])


def _actor_node(cluster):
    """A worker node that hosts an actor of the running Ray Data pool (its raylet's child)."""
    import psutil

    for node in list(cluster.worker_nodes):
        raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
        for p in raylet.children(recursive=True):
            try:
                if "MapWorker" in " ".join(p.cmdline()):
                    return node
            except psutil.NoSuchProcess:
                continue
    return None


def _pace_outputs() -> None:
    """Ray worker setup hook: each latent shard and each compressed chunk starts
    ``PACE_S`` late, so the pool is still at work when the watcher sees the first."""
    import functools

    from pipelines.build_latents import EncodeShards
    from pipelines.compress import WriteChunks

    for cls, name in ((EncodeShards, "_encode"), (WriteChunks, "_write")):
        original = getattr(cls, name)

        @functools.wraps(original)
        def paced(*args, _original=original, **kwargs):
            time.sleep(PACE_S)
            return _original(*args, **kwargs)

        setattr(cls, name, paced)


def _watch(cluster, root: Path, done_glob: str, stop: threading.Event, out: dict) -> None:
    seen: dict[str, list[list]] = {}
    out["versions"] = seen
    while not stop.is_set():
        _versions(root, seen)
        if "removed_at" not in out:
            done = sorted(str(p.relative_to(root)) for p in root.glob(done_glob))
            node = _actor_node(cluster) if done else None
            if node is not None:
                cluster.remove_node(node)
                out["removed_at"] = time.monotonic()
                out["done_before_removal"] = done
        time.sleep(POLL_S)
    _versions(root, seen)


def run_job(cluster, job: dict) -> dict:
    from vcinr_sci.config import Config

    cfg = Config.from_dict(job["config"])
    report: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(cluster, Path(job["watch"]), DONE_GLOB[job["stage"]], stop, report))
    watcher.start()
    try:
        if job["stage"] == "latents":
            from pipelines.build_latents import build

            s = build(cfg, job["model"])
            report["summary"] = {"written": s.written, "skipped": s.skipped, "root": str(s.root)}
        else:
            from pipelines.compress import compress

            c = compress(cfg, job["model"])
            report["summary"] = {"written": c.written, "skipped": c.skipped, "complete": c.complete}
    finally:
        report["finished_at"] = time.monotonic()
        stop.set()
        watcher.join()
    return report


def main(spec_path: str, report_path: str) -> int:
    import ray
    from ray.cluster_utils import Cluster

    spec = json.loads(Path(spec_path).read_text())
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        # Cluster.connect() with the pacing hook for every worker of this job.
        ray.init(address=cluster.address, runtime_env={"worker_process_setup_hook": _pace_outputs})
        reports = []
        for i, job in enumerate(spec["jobs"]):
            if i:  # a replacement for the node the last job lost
                cluster.add_node(num_cpus=1)
            reports.append(run_job(cluster, job))
        Path(report_path).write_text(json.dumps(reports))
    finally:
        ray.shutdown()
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
