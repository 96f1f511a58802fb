"""Connecting a pipeline to Ray: the cluster it was submitted to, or an embedded one."""

from __future__ import annotations

import os


def ensure_ray(num_cpus: int | None = None) -> None:
    """Join the cluster named by ``RAY_ADDRESS`` (as ``ray job submit`` sets it), or
    start a quiet local Ray with ``num_cpus`` CPUs (at least what the job asks for)."""
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
    ray.init(
        # A new instance every time: never a `ray start` cluster, nor the Ray processes a
        # killed run left behind (`ray stop` removes those; see the README).
        address="local",
        num_cpus=max(num_cpus or 0, os.cpu_count() or 1),
        include_dashboard=False,
        configure_logging=True,
        logging_level="WARNING",
        log_to_driver=True,
        logging_config=logging_config,
    )


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
        loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=[progress],
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )
