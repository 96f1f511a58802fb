"""Ends an embedded local Ray when the driver that started it ends, even by SIGKILL.

:func:`pipelines.ray_setup.ensure_ray` starts this file as a script (``python
ray_watchdog.py TOKEN``, in a session of its own so a terminal's Ctrl-C does not stop
it first) with its stdin the read end of a pipe whose write end only the driver holds.
While the driver lives, the watchdog notes every few seconds the Ray processes: the
driver's children started with ``VCINR_RAY_OWNER=TOKEN`` in their environment (the
driver sets it while ``ray.init`` starts the GCS, raylet, dashboard and monitors) and
all their descendants (the raylet's workers and agents). When the driver exits or is
killed the kernel closes the pipe, the read returns, and the watchdog kills those still
alive. Ray's own fate sharing ends the GCS and raylet with the driver, but its dashboard
and runtime-env agents stay about a minute longer (measured on Ray 2.60: 2 of 11
processes alive 40 s after a ``kill -9``, none after 70 s). Linux only (``/proc``).
"""

from __future__ import annotations

import os
import select
import sys

import psutil

OWNER_ENV = "VCINR_RAY_OWNER"
REFRESH_S = 2.0  # the agents start during ray.init; a worker started later ends by itself with its raylet


def _started_with(pid: int, entry: bytes) -> bool:
    """Whether process ``pid`` was started with the environment entry ``entry``. Read
    from ``/proc``, for Ray's Python processes retitle themselves over the start of
    that block, where psutil's parser stops."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return entry in f.read().split(b"\0")
    except OSError:
        return False


def track(driver: psutil.Process, entry: bytes, tracked: set[psutil.Process]) -> None:
    """Add to ``tracked`` the driver's children started with ``entry`` and all their
    descendants (a psutil process is its pid and start time: a reused pid is another)."""
    try:
        roots = [p for p in driver.children() if p in tracked or _started_with(p.pid, entry)]
    except psutil.Error:  # the driver is gone: keep what was seen
        return
    for root in roots:
        tracked.add(root)
        try:
            tracked.update(root.children(recursive=True))
        except psutil.Error:
            continue


def main() -> None:
    (token,) = sys.argv[1:]
    entry = f"{OWNER_ENV}={token}".encode()
    driver = psutil.Process(os.getppid())
    tracked: set[psutil.Process] = set()
    while True:
        track(driver, entry, tracked)
        if select.select([sys.stdin], [], [], REFRESH_S)[0] and not os.read(sys.stdin.fileno(), 1 << 16):
            break  # EOF: the driver is gone (it never writes)
    procs = list(tracked)
    for proc in procs:
        try:
            proc.kill()  # psutil checks the pid still names the process it saw (its start time)
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


if __name__ == "__main__":
    main()
