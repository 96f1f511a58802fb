"""pipelines.progress: chunks done and left, and an ETA from this run's own rate."""

from __future__ import annotations

from pipelines.progress import Progress, format_duration


def test_eta_from_the_rate_after_the_first_task():
    times = iter([100.0, 110.0, 130.0, 150.0])  # when each task finished
    progress = Progress(total=10, done=4, clock=lambda: next(times))
    assert progress.step() == "[5/10, 5 left, ETA -]"  # no rate from one task
    assert progress.step() == "[6/10, 4 left, ETA 40s]"  # 1 task in 10 s
    assert progress.step() == "[7/10, 3 left, ETA 45s]"  # 2 in 30 s
    assert progress.step() == "[8/10, 2 left, ETA 33s]"  # 3 in 50 s


def test_last_task_and_durations():
    progress = Progress(total=1, clock=lambda: 0.0)
    assert progress.step() == "[1/1, 0 left]"
    assert [format_duration(s) for s in (0.4, 59, 61, 3599, 3660, 90061)] == ["0s", "59s", "1m01s", "59m59s", "1h01m", "1d01h"]
