"""The tiny config end to end through Ray Train's TorchTrainer, with resume."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch

from pipelines.meta_train import fit, run_id
from vcinr_sci.config import load_config
from vcinr_sci.errors import ConfigError
from vcinr_sci.model.artifact import load_artifact

pytestmark = pytest.mark.slow  # an end-to-end run of a Ray pipeline

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _tiny(root: Path):
    """The tiny config, its runs and artifacts under ``root``."""
    cfg = load_config(CONFIGS / "tiny.yaml")
    cfg.train.storage_path = str(root / "runs")
    cfg.train.artifact_dir = str(root / "artifacts")
    return cfg


@pytest.fixture
def tiny(tmp_path):
    return _tiny(tmp_path)


def _two_cpus(cfg):
    cfg.train.cpus_per_worker = 2  # (tests run with OMP_NUM_THREADS=1)
    return cfg


@pytest.fixture(scope="module")
def trained(ray_session, tmp_path_factory):
    """The tiny config (one worker of 2 CPUs) trained from step 0: checked as it is, and
    the reference of a run that went on from a shorter one."""
    cfg = _two_cpus(_tiny(tmp_path_factory.mktemp("trained")))
    return cfg, fit(cfg)


def test_tiny_trains_and_writes_a_loadable_artifact(trained):
    tiny, out = trained
    assert out.metrics["torch_threads"] == 2  # the worker's torch threads: its CPUs
    assert out.metrics["step"] == tiny.meta.steps
    assert out.metrics["start_step"] == 0
    art = load_artifact(out.artifact)
    assert out.artifact.name == art.hash[:16]
    assert art.config.to_dict() == tiny.to_dict()
    assert art.split["dim"] == "time" and art.split["positions"]["test"]
    assert art.metrics["training"]["warm_start"] is None
    # Even 20 steps take the held-out items well past predicting the mean (~14 dB).
    assert art.metrics["test_psnr"] > 17.0


def test_without_a_validation_part_evaluates_on_held_out_training_fields(tiny_without_validation):
    # It used to fail at the first evaluation ("no items to evaluate"), after three Ray retries.
    tiny, out, printed = tiny_without_validation
    assert "data.val_fraction is 0: holding out the last 22 of 216 training time positions" in printed
    assert out.metrics["step"] == tiny.meta.steps and out.metrics["val_psnr"] > 15.0
    art = load_artifact(out.artifact)
    assert art.metrics["tuning"] == {"part": "held out of train", "dim": "time", "positions": list(range(194, 216))}


def _kill_a_train_worker_after_checkpoint(run_dir: Path, done: threading.Event) -> list[int]:
    """SIGKILL one of this session's Ray Train workers once the controller has
    registered a checkpoint (its snapshot, which a restart restores from, is on disk);
    returns the pids of the workers then running, the killed one first."""
    while not done.is_set():
        if (run_dir / "checkpoint_manager_snapshot.json").is_file():
            workers = [p.pid for p in psutil.Process().children(recursive=True) if "RayTrainWorker" in " ".join(p.cmdline()[:1])]
            if workers:
                os.kill(workers[0], signal.SIGKILL)
                return workers
        time.sleep(0.02)
    return []


def test_killed_worker_resumes_from_last_checkpoint(ray_session, tiny, monkeypatch):
    # Two DDP workers (one CPU each), one of them killed mid-run. The controller polls
    # the workers (and so registers their checkpoints) every 0.2 s instead of 2 s, so
    # that a short run is still training when the kill comes; tiny steps (2 items of 64
    # points) keep a loaded machine's share of the run short.
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # passed on to the controller
    tiny.train.num_workers = 2
    tiny.meta.steps, tiny.meta.batch_size, tiny.meta.points_per_step = 200, 2, 64
    tiny.train.checkpoint_every, tiny.train.max_failures = 5, 1
    tiny.meta.eval_every, tiny.train.log_every = 10_000, 100
    run_dir = Path(tiny.train.storage_path) / run_id(tiny)
    done, workers = threading.Event(), []
    killer = threading.Thread(target=lambda: workers.extend(_kill_a_train_worker_after_checkpoint(run_dir, done)))
    killer.start()
    try:
        out = fit(tiny)
    finally:
        done.set()
        killer.join()
    assert len(workers) == 2, f"not one of 2 running workers killed: {workers}"
    assert out.metrics["step"] == tiny.meta.steps
    start = out.metrics["start_step"]
    assert start > 0 and start % tiny.train.checkpoint_every == 0, f"the restarted workers began at {start}, not a checkpoint"

    # A rerun of a finished config trains nothing and returns the same artifact.
    again = fit(tiny)
    assert again.metrics == out.metrics
    assert again.artifact == out.artifact.resolve()


def test_more_steps_go_on_from_a_finished_run(trained, tmp_path):
    """A run that differs from a finished one only by more meta.steps starts from that
    run's last checkpoint, records it, and ends where the longer run from step 0 ends
    (batches are drawn by step; the optimiser's state travels in the checkpoint)."""
    from safetensors.torch import load_file

    reference, fresh = trained
    tiny = _two_cpus(_tiny(tmp_path))  # the reference's config, its runs elsewhere
    tiny.meta.steps = 10
    short = fit(tiny)
    tiny.meta.steps = reference.meta.steps  # 20
    longer = fit(tiny)
    assert longer.metrics["start_step"] == 10
    training = load_artifact(longer.artifact).metrics["training"]
    assert training["warm_start"]["step"] == 10 and training["warm_start"]["run"] != training["run"]
    assert load_artifact(short.artifact).metrics["training"]["warm_start"] is None

    assert fresh.metrics["start_step"] == 0
    warm_weights, fresh_weights = load_file(longer.artifact / "weights.safetensors"), load_file(fresh.artifact / "weights.safetensors")
    assert warm_weights.keys() == fresh_weights.keys()
    for name, w in warm_weights.items():
        assert torch.equal(w, fresh_weights[name]), name


@pytest.mark.parametrize("meta, words", [
    ({"latent_rate": 1e-3}, "needs the noise"),
    ({"latent_noise": -1.0}, "must be >= 0"),
    ({"latent_noise": 1.0, "batch_size": 1}, "at least 2 per worker"),
])
def test_latent_noise_and_rate_settings_are_checked_before_training(tiny, meta, words):
    """A rate term without noise, a negative width, or batches too small for the
    latents' spread: a ConfigError naming the keys, before Ray or a run starts."""
    for key, value in meta.items():
        setattr(tiny.meta, key, value)
    with pytest.raises(ConfigError, match=f"meta.latent_noise.*{words}"):
        fit(tiny)
    assert not any(Path(tiny.train.storage_path).glob("*/*"))
