"""Shared fixtures: one quiet local Ray for the whole session, and the real-data folder."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


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
def shared_data():
    """The real data folder (``$VCINR_DATA_DIR`` or ``../shared/data``); skips when absent."""
    from vcinr_sci.data import shared_data_dir

    path = shared_data_dir()
    if path is None:
        pytest.skip("real data not found: set VCINR_DATA_DIR or place it in ../shared/data")
    return path
