"""``vcinr bench scale``'s parts: the tiled input holds every copy of the fields, the
memory sampler finds every process of a tree and its peak, Ray's processes are told
apart. (The benchmark itself runs the pipeline at several sizes: minutes, not a test.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr

from vcinr_sci.bench.scale import TreeMemory, config_fields, process_kind, write_tiled
from vcinr_sci.config import load_config

REPO = Path(__file__).resolve().parents[1]


def test_tiled_file_holds_every_copy_rotated(tmp_path):
    cfg = load_config(REPO / "configs" / "tiny.yaml")
    source, base = config_fields(cfg)
    info = write_tiled(cfg, 3, tmp_path / "tiled.nc")
    with xr.open_dataset(tmp_path / "tiled.nc") as ds:
        tiled = ds[cfg.data.variable]
        assert tiled.dims == ("time", *cfg.data.grid_dims)
        assert all(np.array_equal(tiled[d].values, source[d].values) for d in cfg.data.grid_dims)
        values = tiled.values
    assert info["fields"] == 3 * len(base) and values.shape == (3 * len(base), *base.shape[1:])
    for k in range(3):
        assert np.array_equal(values[k * len(base) : (k + 1) * len(base)], np.roll(base, k, axis=0))


def test_tree_memory_finds_a_grandchild_and_its_peak():
    """A child that starts a grandchild holding 80 MB: both are seen, each with its own
    peak, and the sum at one sample counts both."""
    hold = "b = bytearray(b'x') * 80_000_000; import time; time.sleep(2)"
    child = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {hold!r}])"])
    memory = TreeMemory(child.pid, interval=0.02).start()
    child.wait()
    memory.stop()
    seen = memory.processes()
    assert {p["kind"] for p in seen} == {"driver", "Ray agents"}  # the root, and a process that is no Ray worker
    grandchild = next(p for p in seen if p["kind"] != "driver")
    assert "bytearray" in grandchild["cmdline"] and grandchild["peak_anon_mb"] > 75
    assert memory.by_kind()["driver"]["peak_anon_mb"] < 75 < memory.peak_total / 1e6


def test_ray_processes_are_told_apart():
    assert process_kind(["ray::MapWorker(MapBatches(WriteChunks))"], "python") == "actors"
    assert process_kind(["ray::IDLE"], "python") == "other Ray workers"
    assert process_kind(["ray::_StatsActor"], "python") == "other Ray workers"
    assert process_kind(["ray::DashboardAgent"], "python") == "Ray agents"
    assert process_kind(["/x/ray/core/src/ray/raylet/raylet", "--node_ip_address=1"], "raylet") == "raylet"
    assert process_kind(["/x/gcs_server"], "gcs_server") == "gcs_server"
