"""The tiny config end to end through Ray Train's TorchTrainer, with resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.meta_train import KILL_AT_STEP_ENV, fit, run_id
from vcinr_sci.config import load_config
from vcinr_sci.model.artifact import load_artifact

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


def test_killed_worker_resumes_from_last_checkpoint(ray_session, tiny, monkeypatch):
    tiny.meta.steps, tiny.train.checkpoint_every, tiny.train.max_failures = 20, 10, 1
    monkeypatch.setenv(KILL_AT_STEP_ENV, "15")  # after the step-10 checkpoint
    out = fit(tiny)
    run_dir = Path(tiny.train.storage_path) / run_id(tiny)
    assert (run_dir / "killed-at-15").exists(), "the worker was never killed"
    assert out.metrics["step"] == 20
    assert out.metrics["start_step"] == 10, "the restarted worker did not resume from step 10"

    # A rerun of a finished config trains nothing and returns the same artifact.
    monkeypatch.delenv(KILL_AT_STEP_ENV)
    again = fit(tiny)
    assert again.metrics == out.metrics
    assert again.artifact == out.artifact.resolve()
