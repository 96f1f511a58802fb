"""Fit or train the latent coders and save them in a new model artifact (one artifact =
one INR + several coders).

    python -m pipelines.train_coder --config configs/rd-ccsm.yaml [--model HASH_OR_PATH]

``coder.kind: gaussian`` (the default): one linear transform of the latents, fitted on
the training latents in the INR's data-space metric, and per-component Gaussian tables at
one step per level, the steps chosen on the tuning latents for ``coder.gaussian_bits``
bits per latent dimension (:mod:`vcinr_sci.coding.transform`); no training, seconds.
``coder.kind: learned``: the learned transform coders below, one per lambda.

Reads the latent shards of the model's INR (``pipelines.build_latents``, parts train
and, for tuning, val; without val latents the end of the training part is held out of
training instead, :mod:`vcinr_sci.data.holdout`). Each coder minimises ``bits per value
+ lambda * MSE`` where the MSE is measured on the DATA, through the frozen INR (the
paper's equation 5): ``MSE(f(c; theta, g_s(z + u)), y)`` with uniform noise ``u`` in
training. The INR's parameters never change (``requires_grad`` off, not in any
optimiser). Adam on ``g_a``, ``g_s`` and the entropy model with a cosine learning-rate
decay, a second Adam on the bottleneck's quantiles (its aux loss); every
``coder.eval_every`` steps the RD loss on the tuning latents (rounded, not noisy) is
measured and the best state is kept. The lambdas are shared out over
``coder.num_workers`` Ray Train workers; each worker trains its coders together (one
INR decode for all of them per step).

With ``coder.lambdas`` empty, ``coder.levels`` lambdas are chosen first from the data:
uniform quantisers of 1-8 bits are measured on the tuning items and the lambdas read off
the slope of their rate-distortion curve, from the coarsest one's distortion to near the
unquantised latents' (:func:`~vcinr_sci.model.coder_training.lambdas_from_slope`).

At the end the CDF tables are built on the CPU, the COIN++ uniform quantisers ``u<b>``
(``coder.uniform_bits``, entropy coded) are added, and every level is measured on the
tuning items (bits of its strings of ``compress.chunk_fields`` fields, PSNR of the data
decoded through the INR). A learned coder that another level beats in both is dropped;
the others are labelled ``q0..qN`` from fewest bits up, and the ladder of non-dominated
levels is recorded in the artifact (``metrics.ladder``). Checkpoints every
``coder.checkpoint_every`` steps: a rerun of the same config resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import ray.train
import torch

from pipelines.cli_args import config_parser, load
from pipelines.ray_setup import ensure_ray, torch_trainer, use_assigned_cpus
from vcinr_sci.coding.coder import LatentCoder, coder_spec, coder_state, load_coder
from vcinr_sci.coding.coefficients import min_step
from vcinr_sci.coding.quantiser import UniformQuantiser
from vcinr_sci.coding.transform import GaussianLatentCoder, fit_transform
from vcinr_sci.config import CoderConfig, Config
from vcinr_sci.data.holdout import TuningSplit, tuning_split
from vcinr_sci.data.items import Dataset, ItemSet, load_dataset
from vcinr_sci.errors import ConfigError, LatentsError
from vcinr_sci.metrics import psnr_from_mse
from vcinr_sci.model.artifact import ModelArtifact, load_artifact, pareto_ladder, save_artifact
from vcinr_sci.model.coder_training import (
    PROBE_BITS,
    TOP_GAP_DB,
    cosine_schedule,
    decoded_mse,
    evaluate_coders,
    freeze,
    lambdas_from_slope,
    latent_metric,
    operating_point,
    sample_coder_batch,
    train_step,
)
from vcinr_sci.model.latents import LatentTable, latents_dir, read_manifest, read_shards
from vcinr_sci.model.selection import select_artifact

STATE_FILE = "coders-rank{rank}.pt"
FINAL_FILE = "final-rank{rank}.pt"


def assigned(lambdas: list[float], rank: int, world: int) -> list[tuple[int, float]]:
    """(index in ascending lambda order, lambda) of the coders worker ``rank`` trains."""
    order = sorted(lambdas)
    return [(i, lam) for i, lam in enumerate(order) if i % world == rank]


# ---------------------------------------------------------------- Ray Train worker


def load_parts(data: Dataset, root: Path) -> tuple[TuningSplit, LatentTable, LatentTable]:
    """The tuning split of ``data`` and the latents to train on and to tune on: the
    validation latents, or, when ``root`` has none, those of the training fields that
    :func:`~vcinr_sci.data.holdout.tuning_split` holds out (taken out of training)."""
    manifest = read_manifest(root)
    has_val = manifest["parts"].get("val", 0) > 0  # a split without a val part plans 0 fields of it
    part = tuning_split(data.split, data.source, "" if has_val or not len(data.split.val)
                        else "no validation latents (latents.parts lacks val)")
    train = read_shards(root, "train")
    val = read_shards(root, "val") if has_val else _rows(train, part.tuning_rows(train.field))
    if not has_val:
        train = _rows(train, ~part.tuning_rows(train.field))
    for name, table, fields in (("train", train, part.train), ("val", val, part.tune)):
        if len(table) != len(fields) * manifest["num_patches"]:
            raise LatentsError(f"{root}: {len(table)} {name} latents for {len(fields)} fields")
    return part, train, val


def _rows(table: LatentTable, rows: np.ndarray) -> LatentTable:
    return dataclasses.replace(
        table, phi=table.phi[rows], psnr=table.psnr[rows], part_item=table.part_item[rows], item=table.item[rows],
        field=table.field[rows], patch=table.patch[rows], keys=[k for k, r in zip(table.keys, rows) if r],
    )


def train_loop(loop_config: dict) -> None:
    """Body of each Ray Train worker."""
    cc = CoderConfig(**loop_config["coder"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    threads = use_assigned_cpus()
    torch.manual_seed(cc.seed + rank)
    device = ray.train.torch.get_device()
    artifact = load_artifact(loop_config["artifact"])
    model = freeze(artifact.model.to(device))
    data = load_dataset(artifact.config.data, artifact.normaliser, artifact.linear_part())
    part, train, val = load_parts(data, Path(loop_config["latents"]))
    train_items, val_items = data.items("train", part.train), data.items("val", part.tune)
    eval_idx = np.unique(np.linspace(0, len(val) - 1, min(cc.eval_items, len(val))).round().astype(np.int64))
    val_phi = torch.from_numpy(val.phi)

    mine = assigned(cc.lambdas, rank, world)
    lambdas = [lam for _, lam in mine]
    train_phi = torch.from_numpy(train.phi)
    coders = []
    for _ in mine:
        coder = LatentCoder(train.phi.shape[1], cc.dim_y, cc.width, cc.blocks)
        coder.set_stats(train_phi)
        coders.append(coder.to(device))
    main_params = [p for c in coders for p in c.parameters_main()]
    aux_params = [p for c in coders for p in c.parameters_aux()]
    optimiser = torch.optim.Adam(main_params or [torch.nn.Parameter(torch.zeros(1))], lr=cc.lr)
    aux_optimiser = torch.optim.Adam(aux_params or [torch.nn.Parameter(torch.zeros(1))], lr=cc.aux_lr)
    schedule = cosine_schedule(optimiser, cc)
    best = [None] * len(coders)
    best_eval = [None] * len(coders)
    start = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE.format(rank=rank), weights_only=True, map_location="cpu")
        for coder, s in zip(coders, state["coders"]):
            coder.load_state_dict(s)
        optimiser.load_state_dict(state["optimiser"])
        aux_optimiser.load_state_dict(state["aux_optimiser"])
        schedule.load_state_dict(state["schedule"])
        best, best_eval, start = state["best"], state["best_eval"], int(state["step"])

    ref_psnr = float(np.mean(val.psnr[eval_idx]))  # of the unquantised latents, from the shards

    P = train_items.points_per_item
    num_values = min(cc.batch_size, len(train)) * P
    t_last, window = time.perf_counter(), []
    for step in range(start + 1, cc.steps + 1):
        if coders:
            idx, points = sample_coder_batch(np.random.default_rng([cc.seed, step, rank]), cc, len(train), P)
            batch = tuple(t.to(device) for t in train_items.batch(idx, points))
            window.append(train_step(model, coders, lambdas, optimiser, aux_optimiser, train_phi[idx].to(device), batch, num_values))
            schedule.step()
        last = step == cc.steps
        if step % cc.log_every and step % cc.eval_every and step % cc.checkpoint_every and not last:
            continue
        now = time.perf_counter()
        metrics = {
            "step": step, "rank": rank, "step_time_s": (now - t_last) / max(1, len(window)), "torch_threads": threads,
            "ref_psnr": ref_psnr, "coders": [],
        }
        for k, (index, lam) in enumerate(mine):
            m = {"index": index, "lambda": lam}
            if window:
                m["train_loss"] = float(np.mean([w[k]["loss"] for w in window]))
                m["train_bpv"] = float(np.mean([w[k]["bpv"] for w in window]))
            metrics["coders"].append(m)
        t_last, window = now, []
        if step % cc.eval_every == 0 or last:
            for k, ev in enumerate(evaluate_coders(model, coders, lambdas, val_phi, val_items, eval_idx, device=device)):
                metrics["coders"][k] |= {f"val_{name}": v for name, v in ev.items()}
                if best_eval[k] is None or ev["loss"] < best_eval[k]["loss"]:
                    best_eval[k] = ev | {"step": step}
                    best[k] = {n: t.detach().cpu().clone() for n, t in coders[k].state_dict().items()}
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if step % cc.checkpoint_every == 0 or last:
                state = {
                    "coders": [c.state_dict() for c in coders],
                    "optimiser": optimiser.state_dict(),
                    "aux_optimiser": aux_optimiser.state_dict(),
                    "schedule": schedule.state_dict(),
                    "best": best,
                    "best_eval": best_eval,
                    "step": step,
                }
                torch.save(state, Path(tmp) / STATE_FILE.format(rank=rank))
                if last:
                    torch.save(_finalise(coders, mine, best, best_eval), Path(tmp) / FINAL_FILE.format(rank=rank))
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)


def _finalise(coders, mine, best, best_eval) -> list[dict]:
    """Each coder at its best validation state, CDF tables built on the CPU."""
    out = []
    for coder, (index, lam), state, ev in zip(coders, mine, best, best_eval):
        coder = coder.cpu()
        if state is not None:
            coder.load_state_dict(state)
        coder.eval()
        coder.update()
        out.append({"index": index, "lambda": lam, "spec": json.dumps(coder_spec(coder)), "state": coder_state(coder), "val": ev or {}})
    return out


class ProgressPrinter(ray.train.UserCallback):
    """One line per coder per logging interval on the driver."""

    def after_report(self, run_context, metrics, checkpoint):
        for m in sorted(metrics, key=lambda m: m["rank"]):
            for c in m["coders"]:
                line = f"step {m['step']:>6}  lambda {c['lambda']:<8g}"
                if "train_loss" in c:
                    line += f"  train loss {c['train_loss']:.5f} bpv {c['train_bpv']:.5f}"
                if "val_loss" in c:
                    line += f"  | val loss {c['val_loss']:.5f} bpv {c['val_bpv']:.5f} PSNR {c['val_psnr']:6.2f} dB"
                print(line + f"  {m['step_time_s'] * 1e3:6.0f} ms/step", flush=True)
        if checkpoint:
            ref = metrics[0]["ref_psnr"]
            print(f"step {metrics[0]['step']:>6}  [checkpoint]  (unquantised latents: val PSNR {ref:.2f} dB)", flush=True)


# ---------------------------------------------------------------- driver


def run_id(cfg: Config, cc: CoderConfig, root: Path) -> str:
    body = {"inr": root.name, "latents": str(root.resolve()), "coder": dataclasses.asdict(cc)}
    return f"{cfg.name}-coder-{hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:10]}"


@torch.no_grad()
def measure(coder, phi: torch.Tensor) -> tuple[int, bool]:
    """Bytes of ``phi`` coded as one string, and whether it decodes bit-exactly."""
    data = coder.compress(phi)
    exact = bool(torch.equal(coder.decompress(data, len(phi)), coder.quantise(phi)))
    return len(data), exact


def choose_lambdas(cfg: Config, model, train: LatentTable, val: LatentTable, items: ItemSet) -> list[float]:
    """``coder.levels`` lambdas from the slope of the uniform quantisers' measured
    rate-distortion points on the tuning items (:func:`lambdas_from_slope`)."""
    cc = cfg.coder
    phi_train, phi_val = torch.from_numpy(train.phi), torch.from_numpy(val.phi)
    chunk = max(1, cfg.compress.chunk_fields) * items.num_patches
    points = []
    for bits in PROBE_BITS:
        q = UniformQuantiser(phi_train.shape[1], bits, clip_std=cc.uniform_clip_std, entropy_code=True)
        q.fit(phi_train)
        points.append(operating_point(model, q, phi_val, items, chunk))
    floor = decoded_mse(model, phi_val, items)
    lambdas = lambdas_from_slope(points, floor, cc.levels)
    if len(lambdas) < cc.levels:
        print(f"the tuning items' rate-distortion range gives {len(lambdas)} distinct lambda(s), not {cc.levels}: "
              f"the uniform quantisers come within {TOP_GAP_DB} dB of the unquantised latents at few bits")
    probes = ", ".join(f"u{b} {bpv:.4f} bpv {psnr_from_mse(m):.2f} dB" for b, (bpv, m) in zip(PROBE_BITS, points))
    print(f"rate-distortion slope on {len(items)} tuning items: {probes}; unquantised {psnr_from_mse(floor):.2f} dB "
          f"-> lambdas {[float(f'{lam:.3g}') for lam in lambdas]}", flush=True)
    return lambdas


def fit(cfg: Config, model: str | None = None) -> Path:
    """Train the coders of ``cfg.coder`` on the model's latents; returns the new artifact."""
    if cfg.coder.kind == "gaussian" and cfg.coder.lambdas:
        raise ConfigError(f"coder.lambdas {cfg.coder.lambdas} are for coder.kind 'learned'; coder.kind is "
                          "'gaussian' (its levels come from coder.gaussian_bits)")
    path = select_artifact(cfg, model)
    artifact = load_artifact(path)
    root = latents_dir(cfg.latents.output_dir, artifact, cfg.latents.inner_steps)
    data = load_dataset(artifact.config.data, artifact.normaliser, artifact.linear_part())
    part, train, val = load_parts(data, root)  # fail here, before Ray starts, if the latents are not built
    print(part.note, flush=True)
    val_items = data.items("val", part.tune)
    if cfg.coder.kind == "gaussian":
        levels = gaussian_levels(cfg, artifact.model, data.items("train", part.train), train, val, val_items)
        return write_coders(cfg, artifact, levels, train, val, val_items, part)
    cc = dataclasses.replace(cfg.coder, lambdas=cfg.coder.lambdas or choose_lambdas(cfg, artifact.model, train, val, val_items))
    workers = max(1, min(cc.num_workers, len(cc.lambdas)))
    ensure_ray(workers * cc.cpus_per_worker)
    trainer = torch_trainer(
        train_loop,
        {"coder": dataclasses.asdict(cc), "artifact": str(path.resolve()), "latents": str(root.resolve())},
        name=run_id(cfg, cc, root),
        storage_path=str(Path(cfg.train.storage_path).resolve()),
        num_workers=workers,
        use_gpu=cc.use_gpu,
        cpus_per_worker=cc.cpus_per_worker,
        max_failures=cfg.train.max_failures,
        progress=ProgressPrinter(),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    trained = []
    with result.checkpoint.as_directory() as d:
        for f in sorted(Path(d).glob(FINAL_FILE.format(rank="*"))):
            trained += torch.load(f, weights_only=True, map_location="cpu")
    if len(trained) != len(cc.lambdas):
        raise RuntimeError(f"{len(trained)} coders came back for {len(cc.lambdas)} lambdas")
    levels = {f"lambda {t['lambda']:.4g} (#{t['index']})":
              (load_coder(json.loads(t["spec"]), t["state"]), {"lambda": t["lambda"]} | {f"val_{k}": v for k, v in t["val"].items()})
              for t in sorted(trained, key=lambda t: t["lambda"])}
    return write_coders(cfg, artifact, levels, train, val, val_items, part)


def gaussian_levels(cfg: Config, model, train_items: ItemSet, train: LatentTable, val: LatentTable,
                    items: ItemSet) -> dict[str, tuple[GaussianLatentCoder, dict]]:
    """``coder.kind: gaussian``: one transform fitted on the training latents, in the INR's
    data-space metric measured on ``coder.metric_items`` of them
    (:func:`~vcinr_sci.model.coder_training.latent_metric`), and per
    ``coder.gaussian_bits`` target the step whose strings of the tuning latents come
    closest to it (bisection; bits fall as the step grows). Levels named by their
    targets; targets that land on one step are merged."""
    cc = cfg.coder
    phi_train = torch.from_numpy(train.phi)
    metric = None
    if cc.metric_items > 0:
        pick = np.unique(np.linspace(0, len(train) - 1, min(cc.metric_items, len(train))).round().astype(np.int64))
        metric = latent_metric(freeze(model), phi_train, train_items, pick)
    # rows in field order per patch, so that consecutive rows are consecutive fields
    order = np.lexsort((train.field, train.patch))
    follows = np.r_[False, (np.diff(train.field[order]) == 1) & (np.diff(train.patch[order]) == 0)]
    base = fit_transform(train.phi[order], 1.0, metric, follows)
    phi_val = torch.from_numpy(val.phi)
    chunk = max(1, cfg.compress.chunk_fields) * items.num_patches
    per_dim = lambda coder: 8 * sum(len(coder.compress(phi_val[s : s + chunk]))  # noqa: E731
                                    for s in range(0, len(phi_val), chunk)) / phi_val.numel()
    lo, hi = math.log(min_step(base.coefficients.scales)), math.log(4 * float(base.coefficients.scales.max()))
    levels: dict[str, tuple[GaussianLatentCoder, dict]] = {}
    steps: set[float] = set()
    for target in sorted(cc.gaussian_bits):
        a, b = lo, hi
        for _ in range(24):  # the step to about 0.2 % (the bits are a step function of it)
            mid = (a + b) / 2
            a, b = (mid, b) if per_dim(base.at_step(math.exp(mid))) > target else (a, mid)
        step = math.exp(b)
        if step in steps:
            continue
        steps.add(step)
        coder = base.at_step(step)
        levels[f"gaussian {target:g} bits/dim"] = (coder, {"step": step, "target_bits_per_dim": target,
                                                           "val_bits_per_dim": per_dim(coder),
                                                           "metric": metric is not None})
    print(f"Gaussian latent coder: transform on {len(train)} training latents "
          f"({'data-space metric from ' + str(cc.metric_items) + ' items' if metric is not None else 'plain KLT'}), "
          f"steps {[float(f'{s:.3g}') for s in sorted(steps, reverse=True)]}", flush=True)
    return levels


def write_coders(
    cfg: Config, artifact: ModelArtifact, levels: dict[str, tuple], train: LatentTable, val: LatentTable,
    items: ItemSet, part: TuningSplit,
) -> Path:
    """Measure every coder of ``levels`` (name -> coder, what to record of it) and the
    uniform quantisers on the tuning items (bits of their chunks, PSNR of the decoded
    data); keep the uniform ones and the others no other level dominates
    (:func:`pareto_ladder`), labelled ``q0..`` from fewest bits up, in a copy of
    ``artifact`` with the ladder recorded; save it as a new artifact."""
    cc = cfg.coder
    phi_train, phi_val = torch.from_numpy(train.phi), torch.from_numpy(val.phi)
    chunk = max(1, cfg.compress.chunk_fields) * items.num_patches
    coders = {name: coder for name, (coder, _) in levels.items()}
    info = {name: dict(record) for name, (_, record) in levels.items()}
    points = {}
    for bits in cc.uniform_bits:
        q = UniformQuantiser(phi_train.shape[1], bits, clip_std=cc.uniform_clip_std, entropy_code=True)
        q.fit(phi_train)
        coders[f"u{bits}"], info[f"u{bits}"] = q, {"bits": bits}
    for name, coder in coders.items():
        _, exact = measure(coder, phi_val)
        if not exact:
            raise RuntimeError(f"coder {name} does not decode bit-exactly")
        bpv, mse = operating_point(artifact.model, coder, phi_val, items, chunk)
        points[name] = (bpv, psnr_from_mse(mse))
        info[name] |= {"val_bpv_bytes": bpv, "val_psnr_coded": points[name][1], "bit_exact": exact}
    _, dominated = pareto_ladder(points)
    learned = sorted((n for n in levels if n not in dominated), key=lambda n: points[n])
    label = {n: f"q{i}" for i, n in enumerate(learned)} | {n: n for n in coders if n not in levels}

    artifact.extra.pop("coders", None)  # a new set replaces any coders the input held
    artifact.extra_tensors = {k: v for k, v in artifact.extra_tensors.items() if not k.startswith("coders.")}
    artifact.config = dataclasses.replace(artifact.config, latents=cfg.latents, coder=cfg.coder)
    for name, level in label.items():
        artifact.add_coder(level, coders[name])
    dropped = [info[n] | {"dominated_by": label.get(dominated[n], dominated[n])} for n in coders if n not in label]
    artifact.metrics = dict(artifact.metrics) | {
        "coders": {label[n]: info[n] for n in label},
        "dropped_coders": dropped,
        "latents_inner_steps": cfg.latents.inner_steps,
        "tuning": part.to_dict(),
    }
    ladder = artifact.set_ladder({label[n]: points[n] for n in label},
                                 f"{len(items)} tuning items ({part.to_dict()['part']}), strings of {chunk} latents")
    print(f"{'level':<13} {'val bpv (bytes)':>16} {'val PSNR':>9} {'best step':>9}  ladder")
    for name in sorted(coders, key=lambda n: points[n]):
        bpv, psnr = points[name]
        where = "yes" if label.get(name) in ladder else f"no: dominated by {label.get(dominated[name], dominated[name])}"
        shown = label.get(name, "-") + (f" ({name})" if name in levels else "")
        print(f"{shown:<13} {bpv:>16.5f} {psnr:>8.2f} {info[name].get('val_step', '-'):>9}  {where}")
    out = save_artifact(artifact, cfg.train.artifact_dir)
    print(f"quality levels {artifact.quality_levels}; ladder {ladder}")
    print(f"model artifact {artifact.hash[:16]} -> {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = config_parser("vcinr fit-coder", __doc__, "YAML run config (its latents and coder sections)", "coder.steps=500",
                      model_help="artifact folder or hash (default: the newest artifact of this config)")
    args = p.parse_args(argv)
    fit(load(args), args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
