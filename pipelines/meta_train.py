"""Meta-learn the shared INR on Ray Train, then write the model artifact.

    python -m pipelines.meta_train --config configs/demo.yaml

Runs a ``TorchTrainer`` (DDP over ``train.num_workers`` workers, GPUs when
``train.use_gpu``). Checkpoints every ``train.checkpoint_every`` steps; a rerun with the
same config resumes from the last checkpoint (the run is named by the config's hash),
and a dead worker restarts from it (``FailureConfig``). A run whose config differs from a
finished run's only by more ``meta.steps`` goes on from that run's last checkpoint (a warm
start, recorded in the artifact's ``metrics.training``). Locally it starts an embedded
Ray; under ``ray job submit`` it joins the cluster.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.train
import torch
from ray.train.torch import prepare_model

from pipelines.cli_args import config_parser, load
from pipelines.ray_setup import ensure_ray, torch_trainer, use_assigned_cpus
from vcinr_sci.config import Config
from vcinr_sci.data.holdout import tuning_split, tuning_split_of
from vcinr_sci.errors import ConfigError
from vcinr_sci.metrics import psnr_from_mse
from vcinr_sci.model.artifact import ModelArtifact, build_model, load_artifact, save_artifact
from vcinr_sci.model.training import (
    evaluate,
    global_batch_size,
    outer_step,
    sample_batch,
    seed_everything,
    set_output_scale,
    training_data,
)

CHECKPOINT_FILE = "state.pt"
DONE_FILE = "vcinr-done.json"  # written by the driver once the artifact exists


@dataclass
class TrainOutcome:
    artifact: Path
    metrics: dict  # the last report of rank 0 (step, PSNRs, start_step of the last attempt)


def _digest(cfg: Config, *, steps: bool) -> str:
    d = cfg.to_dict()
    # a hybrid's INR learns what its linear model (data and basis sections) leaves
    sections = ("name", "data", "model", "meta", "train") + (("basis",) if cfg.model.kind == "hybrid" else ())
    trained = {k: d[k] for k in sections}
    if not steps:
        trained["meta"] = {k: v for k, v in trained["meta"].items() if k != "steps"}
    return hashlib.sha256(json.dumps(trained, sort_keys=True).encode()).hexdigest()


def run_id(cfg: Config) -> str:
    """Stable name of a run: the same data/model/meta/train config resumes the same run
    (later stages' sections do not change what meta-training does)."""
    return f"{cfg.name}-{_digest(cfg, steps=True)[:10]}"


def warm_start(cfg: Config, storage: Path) -> dict | None:
    """The finished run under ``storage`` that this one can go on from: the same config
    but for fewer ``meta.steps`` (the most such steps), as its done file records it
    (``run``, ``step``, ``checkpoint``); None when there is none. Training from its last
    checkpoint to ``meta.steps`` is the longer run itself (batches are drawn by step, the
    optimiser's state is in the checkpoint), so a longer recipe need not start again."""
    family = _digest(cfg, steps=False)
    best = None
    for done_file in storage.glob(f"*/{DONE_FILE}"):
        try:
            done = json.loads(done_file.read_text())
        except (OSError, ValueError):
            continue
        step, checkpoint = done.get("metrics", {}).get("step"), done.get("checkpoint")
        if done.get("family") != family or not isinstance(step, int) or not checkpoint:
            continue
        if step < cfg.meta.steps and (best is None or step > best["step"]) and (Path(checkpoint) / CHECKPOINT_FILE).is_file():
            best = {"run": done_file.parent.name, "step": step, "checkpoint": checkpoint}
    return best


def train_loop(loop_config: dict) -> None:
    """Body of each Ray Train worker."""
    cfg = Config.from_dict(loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    threads = use_assigned_cpus()
    seed_everything(cfg.train.seed)  # same init on every worker; each takes its share of the batch
    device = ray.train.torch.get_device()
    data = _dataset(cfg, loop_config.get("linear"))
    part = tuning_split(data.split, data.source)
    train_items, val_items = data.items("train", part.train), data.items("val", part.tune)
    global_items = global_batch_size(train_items, cfg)  # meta.batch_size, shared out among the workers
    model = build_model(cfg, data.grid)
    state, start = None, 0
    checkpoint, warm = ray.train.get_checkpoint(), loop_config.get("warm_start")
    if checkpoint:  # this run's own: a restart after a failure or a kill
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / CHECKPOINT_FILE, weights_only=True, map_location="cpu")
    elif warm:  # a shorter run's last checkpoint: go on from there
        state = torch.load(Path(warm["checkpoint"]) / CHECKPOINT_FILE, weights_only=True, map_location="cpu")
    if state is not None:
        model.load_state_dict(state["model"])
        start = int(state["step"])
    else:
        set_output_scale(model, train_items, cfg)
    ddp_model = prepare_model(model)  # DDP when world > 1; moves to the worker's device
    model = ddp_model.module if hasattr(ddp_model, "module") else ddp_model  # type: ignore[assignment]
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.meta.outer_lr)
    if state is not None:
        optimiser.load_state_dict(state["optimiser"])

    t_last, losses = time.perf_counter(), []
    for step in range(start + 1, cfg.meta.steps + 1):
        ddp_model.train()
        batch = sample_batch(train_items, cfg, step, rank, world, device)
        losses.append(outer_step(ddp_model, optimiser, batch, cfg.meta.grad_clip, world, global_items))
        last = step == cfg.meta.steps
        if step % cfg.train.log_every and step % cfg.meta.eval_every and step % cfg.train.checkpoint_every and not last:
            continue
        now = time.perf_counter()
        mse = sum(losses) / len(losses)
        metrics = {
            "step": step,
            "start_step": start,
            "train_psnr": psnr_from_mse(max(mse, 1e-12)),
            "step_time_s": (now - t_last) / len(losses),
            "torch_threads": threads,
        }
        t_last, losses = now, []
        if rank == 0 and (step % cfg.meta.eval_every == 0 or last):
            model.eval()
            ev = evaluate(model, val_items, cfg.meta.eval_inner_steps, cfg.meta.eval_items, device=device)
            metrics["val_psnr"] = ev.psnr
        ckpt = None
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0 and (step % cfg.train.checkpoint_every == 0 or last):
                torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "step": step}, Path(tmp) / CHECKPOINT_FILE)
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)


class ProgressPrinter(ray.train.UserCallback):
    """One line per logging interval on the driver: step, PSNR and step time."""

    def after_report(self, run_context, metrics, checkpoint):
        m = metrics[0]
        line = f"step {m['step']:>6}  train PSNR {m['train_psnr']:6.2f} dB  {m['step_time_s'] * 1e3:7.1f} ms/step"
        if "val_psnr" in m:
            line += f"  val PSNR {m['val_psnr']:6.2f} dB"
        print(line + ("  [checkpoint]" if checkpoint else ""), flush=True)


def _dataset(cfg: Config, linear: str | None):
    """The data the INR learns (:func:`training_data`; ``linear``: a hybrid's linear model's folder)."""
    return training_data(cfg, load_artifact(linear) if linear else None)


def fit(cfg: Config, linear: Path | None = None) -> TrainOutcome:
    """Meta-train per ``cfg`` (resuming if a checkpoint exists) and write the artifact;
    for a hybrid, the INR on what ``linear`` (its linear model's artifact) leaves."""
    linear = Path(linear).resolve() if linear else None  # workers have their own working folder
    _dataset(cfg, str(linear) if linear else None)  # a hybrid without its linear model fails before Ray starts
    storage = Path(cfg.train.storage_path).resolve()
    done_file = storage / run_id(cfg) / DONE_FILE
    if done_file.is_file():  # finished before: the same config gives the same artifact
        done = json.loads(done_file.read_text())
        if Path(done["artifact"]).is_dir():
            print(f"run {run_id(cfg)} finished before; model artifact {done['artifact']}")
            return TrainOutcome(Path(done["artifact"]), done["metrics"])
    if cfg.meta.batch_size < cfg.train.num_workers:
        raise ConfigError(f"meta.batch_size ({cfg.meta.batch_size}) is shared out among train.num_workers "
                          f"({cfg.train.num_workers}): it must be at least that many")
    m = cfg.meta
    if m.latent_noise < 0 or m.latent_rate < 0 or (m.latent_rate and not m.latent_noise):
        raise ConfigError(f"meta.latent_noise ({m.latent_noise}) and meta.latent_rate ({m.latent_rate}) must be >= 0, "
                          "and a rate term needs the noise (its rate is that of the noisy latents)")
    if m.latent_noise and m.batch_size < 2 * cfg.train.num_workers:
        raise ConfigError(f"meta.latent_noise scales the noise by the latents' spread over a worker's batch: "
                          f"meta.batch_size ({m.batch_size}) must be at least 2 per worker")
    print(tuning_split_of(cfg.data).note, flush=True)  # refuses a split with nothing to evaluate on
    warm = warm_start(cfg, storage)
    if warm is not None:
        print(f"going on from run {warm['run']} at step {warm['step']} (its last checkpoint) to step {cfg.meta.steps}")
    ensure_ray(cfg.train.num_workers * cfg.train.cpus_per_worker)
    trainer = torch_trainer(
        train_loop,
        {"config": cfg.to_dict(), "warm_start": warm, "linear": str(linear) if linear else None},
        name=run_id(cfg),
        storage_path=str(storage),
        num_workers=cfg.train.num_workers,
        use_gpu=cfg.train.use_gpu,
        cpus_per_worker=cfg.train.cpus_per_worker,
        max_failures=cfg.train.max_failures,
        progress=ProgressPrinter(),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / CHECKPOINT_FILE, weights_only=True, map_location="cpu")
    provenance = {"run": run_id(cfg), "warm_start": warm and {"run": warm["run"], "step": warm["step"]}}
    outcome = TrainOutcome(write_artifact(cfg, state["model"], provenance, linear), dict(result.metrics or {}))
    done_file.write_text(json.dumps({"artifact": str(outcome.artifact.resolve()), "metrics": outcome.metrics,
                                     "family": _digest(cfg, steps=False), "checkpoint": result.checkpoint.path}))
    return outcome


def write_artifact(cfg: Config, state_dict: dict, provenance: dict | None = None, linear: Path | None = None) -> Path:
    """Score the trained model on the held-out test items and save the artifact (its
    metrics record the run and any warm start, ``provenance``; a hybrid's holds its
    linear model's basis, ``linear``)."""
    data = _dataset(cfg, str(linear) if linear else None)
    model = build_model(cfg, data.grid)
    model.load_state_dict(state_dict)
    model.eval()
    test = evaluate(model, data.items("test"), cfg.meta.eval_inner_steps)
    metrics = {"test_psnr": test.psnr, "test_items": test.items, "inner_steps": cfg.meta.eval_inner_steps,
               "tuning": tuning_split(data.split, data.source).to_dict(), "training": provenance or {}}
    artifact = ModelArtifact(model, cfg, data.grid, data.normaliser, data.split.to_dict(), metrics)
    if linear is not None:
        artifact.set_basis(load_artifact(linear).basis)  # type: ignore[arg-type]  # checked by _dataset
    path = save_artifact(artifact, cfg.train.artifact_dir)
    print(f"data split along {data.split.describe()}")
    print(f"held-out test PSNR {test.psnr:.2f} dB over {test.items} items ({cfg.meta.eval_inner_steps} inner steps)")
    print(f"model artifact {artifact.hash[:16]} -> {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    args = config_parser("vcinr train", __doc__, "YAML run config (configs/*.yaml)", "meta.steps=50").parse_args(argv)
    fit(load(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
