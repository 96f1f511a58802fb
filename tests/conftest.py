"""Shared fixtures: one quiet local Ray for the whole session, the real-data folder, the
tiny model and 8 of its fields, and one Ray Train fit that two test files check."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
from _vcinr_tiny import fields, tiny_artifact

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray Train's controller polls its workers every 2 s by default, so each fit ends up to 2 s
# after its workers did; the suite runs many short fits (set before Ray starts).
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


@pytest.fixture(scope="session", autouse=True)
def private_model_cache(tmp_path_factory):
    """Models that tests extract from stores go to a folder of the session's, never the
    user's ``~/.cache/vcinr`` (set before Ray starts, so its workers inherit it)."""
    before = os.environ.get("VCINR_CACHE_DIR")
    os.environ["VCINR_CACHE_DIR"] = str(tmp_path_factory.mktemp("model-cache"))
    yield
    if before is None:
        os.environ.pop("VCINR_CACHE_DIR", None)
    else:
        os.environ["VCINR_CACHE_DIR"] = before


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray shared by every test that needs one (starting Ray costs seconds)."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        object_store_memory=512 * 1024**2,
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def model():
    """The tiny model artifact's folder (tests/_vcinr_tiny.py: built once per process)."""
    return tiny_artifact()


@pytest.fixture(scope="module")
def ds():
    """The tiny data's first 8 fields, as a Dataset (one per module: a test may edit it)."""
    return fields(8)


@pytest.fixture(scope="session")
def tiny_without_validation(ray_session, tmp_path_factory):
    """The tiny config with ``data.val_fraction: 0``, meta-trained through Ray Train
    (``max_failures: 0``: a failure shows at once, not after retries), its outcome and
    what the fit printed: the meta-training and coder-training tests share this fit (tens
    of seconds)."""
    from pipelines.meta_train import fit
    from vcinr_sci.config import load_config

    root = tmp_path_factory.mktemp("tiny-without-validation")
    cfg = load_config(REPO / "configs" / "tiny.yaml", {
        "data.val_fraction": 0, "train.max_failures": 0,
        "train.storage_path": str(root / "runs"), "train.artifact_dir": str(root / "artifacts"),
    })
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        outcome = fit(cfg)
    return cfg, outcome, printed.getvalue()


@pytest.fixture(scope="session")
def shared_data():
    """The real data folder (``$VCINR_DATA_DIR`` or ``../shared/data``); skips when absent."""
    from vcinr_sci.data.sources import shared_data_dir

    path = shared_data_dir()
    if path is None:
        pytest.skip("real data not found: set VCINR_DATA_DIR or place it in ../shared/data")
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core machine: a second intra-op thread only adds
    contention (measured 4 ms vs 400 ms per training step under load)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def isolated_model_lookup(tmp_path, monkeypatch):
    """No model is found except where a test puts it: an empty cache folder, no
    ``$VCINR_MODEL_PATH``, and the per-process model cache cleared before and after."""
    from vcinr_sci.model.registry import clear_model_cache

    monkeypatch.setenv("VCINR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("VCINR_MODEL_PATH", raising=False)
    clear_model_cache(search_paths=True)
    yield
    clear_model_cache(search_paths=True)
