"""Progress of a stage through a known number of tasks: done, left, and an ETA."""

from __future__ import annotations

import time
from typing import Callable


def format_duration(seconds: float) -> str:
    """``seconds`` as ``42s``, ``3m05s``, ``2h03m`` or ``3d04h``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


class Progress:
    """Counts tasks as they finish, ``done`` of ``total`` finished before this run. The
    ETA is the tasks left over the rate since this run's first task finished (which
    leaves out the start: Ray, actors, model loads), so it shows from the second on."""

    def __init__(self, total: int, done: int = 0, clock: Callable[[], float] = time.monotonic):
        self.total, self.done, self.clock = total, done, clock
        self.finished = 0  # by this run
        self.first: float | None = None  # when this run's first task finished

    def step(self) -> str:
        """Count one more task done; returns e.g. ``[12/40, 28 left, ETA 1m05s]``."""
        now = self.clock()
        self.done += 1
        self.finished += 1
        if self.first is None:
            self.first = now
        left = self.total - self.done
        if left <= 0:
            return f"[{self.done}/{self.total}, 0 left]"
        elapsed = now - self.first
        eta = format_duration(left * elapsed / (self.finished - 1)) if self.finished > 1 and elapsed > 0 else "-"
        return f"[{self.done}/{self.total}, {left} left, ETA {eta}]"

