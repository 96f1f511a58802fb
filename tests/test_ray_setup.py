"""pipelines.ray_setup: without RAY_ADDRESS a pipeline starts a new local Ray every time
(never one a killed run left behind, nor a `ray start` cluster); with it, it joins that."""

from __future__ import annotations

import pytest

from pipelines import ray_setup


@pytest.mark.parametrize("address", [None, "127.0.0.1:6379"])
def test_ensure_ray_starts_a_new_local_ray_unless_given_an_address(monkeypatch, address):
    import ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    for key in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED", "RAY_TRAIN_V2_ENABLED"):
        monkeypatch.delenv(key, raising=False)  # ensure_ray sets them: restored afterwards
    if address:
        monkeypatch.setenv("RAY_ADDRESS", address)
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray_setup.ensure_ray(2)
    (kwargs,) = calls
    assert kwargs.get("address") == (None if address else "local")  # with RAY_ADDRESS, Ray reads it
