"""Connecting a pipeline to Ray: the cluster it was submitted to, or an embedded one."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import uuid
from pathlib import Path

from pipelines.ray_watchdog import OWNER_ENV

_watchdog_pipe: int | None = None  # write end of the pipe the watchdog waits on (see _start_watchdog)


def ensure_ray(num_cpus: int | None = None) -> None:
    """Join the cluster named by ``RAY_ADDRESS`` (as ``ray job submit`` sets it), or
    start a quiet local Ray with ``num_cpus`` CPUs (at least what the job asks for),
    whose every process ends with this one (:mod:`pipelines.ray_watchdog`)."""
    import ray

    if ray.is_initialized():
        return
    # Token auth is on by default in Ray 2.60; a local, loopback-only Ray needs none.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # Ray's own INFO logs would drown the progress lines.
    logging_config = ray.LoggingConfig(encoding="TEXT", log_level="ERROR")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True, logging_config=logging_config)
        return
    token = _start_watchdog()
    os.environ[OWNER_ENV] = token  # inherited by the processes ray.init starts, and theirs
    try:
        ray.init(
            # A new instance every time: never a `ray start` cluster, nor another run's Ray.
            address="local",
            num_cpus=max(num_cpus or 0, os.cpu_count() or 1),
            include_dashboard=False,
            configure_logging=True,
            logging_level="WARNING",
            log_to_driver=True,
            logging_config=logging_config,
            runtime_env={"worker_process_setup_hook": _address_own_cluster},
        )
    finally:
        del os.environ[OWNER_ENV]  # not for the driver's other children


def _start_watchdog() -> str:
    """Start :mod:`pipelines.ray_watchdog` on a pipe only this process holds open;
    returns its token. A previous watchdog of this process (its Ray was shut down, or
    ensure_ray would not start another) is let go: it ends what is left of its Ray."""
    global _watchdog_pipe
    token = f"{os.getpid()}-{uuid.uuid4().hex}"
    read_end, write_end = os.pipe()  # not inheritable: no Ray process holds it open
    try:
        subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("ray_watchdog.py")), token],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        os.close(read_end)
    if _watchdog_pipe is not None:
        os.close(_watchdog_pipe)  # the previous watchdog ends its Ray (shut down already) and exits
    _watchdog_pipe = write_end
    return token


def _address_own_cluster() -> None:
    """Run in every worker of an embedded Ray: name that Ray in ``RAY_ADDRESS``, where Ray
    code that looks the cluster up looks first. Ray Train's placement-group cleaner
    queries the state API without an address; with other Rays on the machine its lookup
    failed ("Found multiple active Ray instances") in a traceback."""
    import ray

    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)


def use_assigned_cpus() -> int:
    """Give torch, in this Ray worker or actor, as many threads as the CPUs Ray assigned
    to it (at least 1: a GPU actor may hold none), and the codec the same through
    ``$VCINR_NUM_THREADS``; returns that count. Explicit, because Ray derives
    ``OMP_NUM_THREADS`` from the CPUs only where the environment leaves it unset (a
    driver started with ``OMP_NUM_THREADS=1`` gives every worker one thread), and the
    codec would otherwise use its one-thread default."""
    import ray
    import torch

    from vcinr_sci.threads import THREADS_ENV

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)
    threads = max(1, int(cpus))
    torch.set_num_threads(threads)
    os.environ[THREADS_ENV] = str(threads)
    return threads


def quiet_train_reports() -> None:
    """In a Ray Train worker, drop Ray Train's INFO line per ``ray.train.report``
    ("Reporting training result N: TrainingReport(...)"), which the driver printed
    beside the progress lines. Its logger is named by its file, outside ``ray.train``,
    so RunConfig's LoggingConfig misses it, and the worker's root logger passes INFO to
    the driver. Its warnings and errors still pass."""
    import logging

    from ray.train.v2._internal.execution import context

    context.logger.setLevel(logging.WARNING)


def _without_report_lines(loop):
    """``loop``, run after :func:`quiet_train_reports`."""

    @functools.wraps(loop)
    def run(loop_config: dict):
        quiet_train_reports()
        return loop(loop_config)

    return run


def torch_trainer(
    loop,
    loop_config: dict,
    *,
    name: str,
    storage_path: str,
    num_workers: int,
    use_gpu: bool,
    cpus_per_worker: int,
    max_failures: int,
    progress,
):
    """A ``TorchTrainer`` as every pipeline here runs one: named (a rerun resumes),
    restarted from its last checkpoint when a worker dies, quiet but for ``progress``."""
    import ray.train
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        _without_report_lines(loop),
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
        ),
        # Ray Train v2's RunConfig takes logging_config; the stubs describe v1's
        run_config=RunConfig(  # type: ignore[call-arg]
            name=name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=[progress],
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )


def run_actor_pool(
    actor_cls,
    tasks: list[dict],
    constructor_kwargs: dict,
    *,
    num_actors: int,
    cpus_per_actor: int,
    want_gpu: bool,
    section: str,
    say,
):
    """Run the Ray Data callable class ``actor_cls`` over ``tasks`` (one task per batch)
    on a pool of at most ``num_actors`` actors, as every Ray Data stage here does: Ray
    joined or started, GPU actors when ``want_gpu`` and the cluster has a GPU (else CPU
    actors, said through ``say``), progress bars off (the stage prints one line per
    row). The actor is built with ``constructor_kwargs`` plus ``use_gpu``; returns the
    iterator of result rows."""
    import ray
    import ray.data

    ensure_ray(num_actors * cpus_per_actor)
    use_gpu = bool(want_gpu and ray.cluster_resources().get("GPU", 0) > 0)
    if want_gpu and not use_gpu:
        say(f"{section}.use_gpu is set but the cluster has no GPU: CPU actors")
    _quiet_data_context(ordered=False)
    ds = ray.data.from_items(tasks, override_num_blocks=len(tasks)).map_batches(
        actor_cls,
        fn_constructor_kwargs={**constructor_kwargs, "use_gpu": use_gpu},
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=max(1, min(num_actors, len(tasks)))),
        **({"num_gpus": 1} if use_gpu else {"num_cpus": cpus_per_actor}),
    )
    return ds.iter_rows()


def run_task_pool(fn, tasks: list[dict], fn_kwargs: dict, *, num_tasks: int, cpus_per_task: int):
    """Run the Ray Data function ``fn(batch, **fn_kwargs)`` over ``tasks`` (one task per
    batch), at most ``num_tasks`` at once, Ray joined or started, progress bars off;
    returns the iterator of result rows in the order of ``tasks``. Tasks, not actors: a
    stage that maps several times over its data reuses the warm worker processes (their
    imports, whatever they cached), and Ray Data reruns a task whose worker died."""
    import ray.data

    ensure_ray(num_tasks * cpus_per_task)
    _quiet_data_context(ordered=True)
    ds = ray.data.from_items(tasks, override_num_blocks=len(tasks)).map_batches(
        fn,
        fn_kwargs=fn_kwargs,
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.TaskPoolStrategy(size=max(1, min(num_tasks, len(tasks)))),
        num_cpus=cpus_per_task,
    )
    return ds.iter_rows()


def _quiet_data_context(ordered: bool) -> None:
    """Ray Data without progress bars or its INFO lines; rows in the order of their
    inputs when ``ordered``."""
    import logging

    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = ordered
    logging.getLogger("ray.data").setLevel(logging.ERROR)
