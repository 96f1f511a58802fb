"""The tiny config end to end through Ray Train's TorchTrainer, with resume."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from pipelines.meta_train import fit, run_id
from vcinr_sci.config import load_config
from vcinr_sci.model.artifact import load_artifact

pytestmark = pytest.mark.slow  # an end-to-end run of a Ray pipeline

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture
def tiny(tmp_path):
    cfg = load_config(CONFIGS / "tiny.yaml")
    cfg.train.storage_path = str(tmp_path / "runs")
    cfg.train.artifact_dir = str(tmp_path / "artifacts")
    return cfg


def test_tiny_trains_and_writes_a_loadable_artifact(ray_session, tiny):
    tiny.train.cpus_per_worker = 2  # (tests run with OMP_NUM_THREADS=1)
    out = fit(tiny)
    assert out.metrics["torch_threads"] == 2  # the worker's torch threads: its CPUs
    assert out.metrics["step"] == tiny.meta.steps
    assert out.metrics["start_step"] == 0
    art = load_artifact(out.artifact)
    assert out.artifact.name == art.hash[:16]
    assert art.config.to_dict() == tiny.to_dict()
    assert art.split["dim"] == "time" and art.split["positions"]["test"]
    # Even 20 steps take the held-out items well past predicting the mean (~14 dB).
    assert art.metrics["test_psnr"] > 17.0


def _kill_train_worker_after_checkpoint(run_dir: Path, done: threading.Event) -> list[int]:
    """SIGKILL this session's Ray Train worker once a checkpoint has been on disk long
    enough for the controller to register it (it polls every 2 s); returns the pids."""
    seen = None
    while not done.is_set():
        if seen is None and list(run_dir.glob("checkpoint_*")):
            seen = time.monotonic()
        if seen is not None and time.monotonic() - seen > 3.0:
            workers = [p for p in psutil.Process().children(recursive=True) if "RayTrainWorker" in " ".join(p.cmdline()[:1])]
            for p in workers:
                os.kill(p.pid, signal.SIGKILL)
            if workers:
                return [p.pid for p in workers]
        time.sleep(0.1)
    return []


def test_killed_worker_resumes_from_last_checkpoint(ray_session, tiny):
    # Long enough that the worker is still training 3 s after its first checkpoint, even
    # on a quiet machine (a tiny step takes a few ms there).
    tiny.meta.steps, tiny.train.checkpoint_every, tiny.train.max_failures = 1500, 10, 1
    tiny.meta.eval_every, tiny.train.log_every = 10_000, 500
    run_dir = Path(tiny.train.storage_path) / run_id(tiny)
    done, killed = threading.Event(), []
    killer = threading.Thread(target=lambda: killed.extend(_kill_train_worker_after_checkpoint(run_dir, done)))
    killer.start()
    try:
        out = fit(tiny)
    finally:
        done.set()
        killer.join()
    assert killed, "the worker finished before it could be killed"
    assert out.metrics["step"] == tiny.meta.steps
    start = out.metrics["start_step"]
    assert start > 0 and start % tiny.train.checkpoint_every == 0, f"the restarted worker began at {start}, not a checkpoint"

    # A rerun of a finished config trains nothing and returns the same artifact.
    again = fit(tiny)
    assert again.metrics == out.metrics
    assert again.artifact == out.artifact.resolve()
