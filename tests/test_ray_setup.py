"""pipelines.ray_setup: without RAY_ADDRESS a pipeline starts a new local Ray every time
(never one a killed run left behind, nor a `ray start` cluster), which ends with the
driver however it ends; with it, it joins that. Ray Train's own per-report lines stay off."""

from __future__ import annotations

import pytest

from pipelines import ray_setup


@pytest.mark.parametrize("address", [None, "127.0.0.1:6379"])
def test_ensure_ray_starts_a_new_local_ray_unless_given_an_address(monkeypatch, address):
    import ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(ray_setup, "_start_watchdog", lambda: "token")
    for key in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED", "RAY_TRAIN_V2_ENABLED"):
        monkeypatch.delenv(key, raising=False)  # ensure_ray sets them: restored afterwards
    if address:
        monkeypatch.setenv("RAY_ADDRESS", address)
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray_setup.ensure_ray(2)
    (kwargs,) = calls
    assert kwargs.get("address") == (None if address else "local")  # with RAY_ADDRESS, Ray reads it


DRIVER = """
import json, os, time
import ray
from pipelines.ray_setup import ensure_ray

ensure_ray(1)

@ray.remote(num_cpus=0)
class Probe:
    def address(self):
        return os.environ.get("RAY_ADDRESS")

@ray.remote(num_cpus=0)
class Parent:
    def detached_address(self):  # as Ray Train's controller starts its placement-group cleaner
        return ray.get(Probe.options(lifetime="detached").remote().address.remote())

seen = ray.get(Parent.remote().detached_address.remote())
print(json.dumps({"seen": seen, "own": ray.get_runtime_context().gcs_address}), flush=True)
time.sleep(300)
"""


def _alive(proc) -> bool:
    import psutil

    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow  # starting Ray: 20 s on a loaded 2-core machine
def test_a_killed_driver_takes_its_local_ray_along():
    """kill -9 of a driver that started its own Ray (as ``vcinr compress`` does) leaves
    none of the processes it started (they stayed about a minute: the dashboard and
    runtime-env agents). And the workers of that Ray, a detached actor's included, name
    it in RAY_ADDRESS, where Ray Train's placement-group cleaner looks it up."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import psutil

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], env=env, stdout=subprocess.PIPE, text=True)
    started: list[psutil.Process] = []
    try:
        line = driver.stdout.readline()
        assert line, f"the driver ended first (status {driver.wait()})"
        addresses = json.loads(line)
        started = psutil.Process(driver.pid).children(recursive=True)
        assert len(started) >= 5  # watchdog, GCS, raylet, agents, workers
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 10
        while (alive := [p for p in started if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not alive, [p.name() for p in alive]
        assert addresses["seen"] == addresses["own"]
    finally:
        driver.kill()
        for p in started:
            try:
                p.kill()
            except psutil.Error:
                pass


def test_train_workers_drop_ray_trains_report_lines():
    import logging

    from ray.train.v2._internal.execution import context

    level = context.logger.level
    calls = []
    try:
        ray_setup._without_report_lines(calls.append)({"x": 1})
        assert calls == [{"x": 1}]
        assert not context.logger.isEnabledFor(logging.INFO) and context.logger.isEnabledFor(logging.WARNING)
    finally:
        context.logger.setLevel(level)
