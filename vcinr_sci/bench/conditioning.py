"""``vcinr bench conditioning``: GatedSiren (VC-INR soft gating) vs ShiftSiren (Functa /
COIN++ shifts) meta-trained with equal budgets.

For each latent size dim(phi), both conditionings are meta-trained in-process
(:mod:`vcinr_sci.model.training`, no Ray) on the same batches: same number of outer steps, same
batch size and grid points per step, same SIREN width and depth, same inner steps, same
seed. The gating network adds parameters: the table reports each model's count.

Data: the global CCSM 2 m temperature fields (``TREFHT``, annual means 1890-1999, six
ensemble runs, 64 x 128 Gaussian grid, spherical coordinates) of the real data folder.
The runs are stacked along ``member``; the split holds out whole runs: four train, one
validation (for tuning, ``--eval-split val``) and one test (the default score).

Scores: mean per-field PSNR on the min/max-normalised [0, 1] scale (training-set range,
211.6 .. 303.2 K, so 1 dB ~ a factor 1.12 in RMSE and 40 dB ~ 0.92 K RMSE), after the
meta-learned number of inner steps (3) and after more encode steps (``--encode-steps``).

Reading the table: the training mean field alone (climatology, printed as a reference)
scores ~41.0 dB on the held-out run, and the best linear k-dim code (PCA oracle) 46-52 dB.
At the default budget (300 outer steps, ~17 CPU-minutes for all 8 runs) every model is only
1-2 dB above climatology, so the ranking is not settled; use ``--steps 900`` or more for a
decisive comparison. Outer lr 3e-4 is the default for both conditionings: at 1e-3 the shift
model diverged at dim(phi) 16 and 32 and the gated model's inner loop froze at dim 128
(LayerNorm on phi makes the model scale-invariant in phi: once an inner step inflates
|phi|, later steps, of relative size alpha / |phi|^2, no longer move it).

    vcinr bench conditioning                      # default budget: ~17 CPU-min, 1 thread
    vcinr bench conditioning --quick --json out.json   # smoke test, seconds
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vcinr_sci.bench.output import device_name, resolve_device, write_json
from vcinr_sci.config import Config, DataConfig, MetaConfig, ModelConfig, TrainConfig
from vcinr_sci.data.items import load_dataset
from vcinr_sci.data.sources import DATA_DIR_ENV, shared_data_dir
from vcinr_sci.errors import UsageError
from vcinr_sci.metrics import psnr_from_mse
from vcinr_sci.model.artifact import build_model
from vcinr_sci.model.training import evaluate, outer_step, sample_batch, seed_everything

CONDITIONINGS = ("gated", "shift")
FILE_GLOB = "ccsm_trefht_1890-1999_annual_run*.nc"

# Default budget, sized for ~15-20 minutes for all 8 runs on a 2-core CPU (one thread).
DEFAULTS: dict[str, Any] = dict(
    dims=[16, 32, 64, 128],
    steps=300,
    width=64,
    depth=4,
    batch_size=16,
    points_per_step=1024,
    outer_lr="gated=3e-4,shift=3e-4",
    inner_steps=3,
    encode_steps=10,
    eval_items=32,
)
EVAL_BATCH = 16  # held-out fields adapted at once (bounds evaluation memory)
QUICK: dict[str, Any] = dict(steps=2, width=16, depth=2, batch_size=4, points_per_step=256, eval_items=4, mod_width=16)


def data_config(folder: Path) -> DataConfig:
    """The benchmark's data: CCSM TREFHT, whole ensemble runs held out."""
    return DataConfig(
        paths=[str(folder / FILE_GLOB)],
        variable="TREFHT",
        grid_dims=["lat", "lon"],
        grid="spherical",
        concat_dim="member",
        split_dim="member",
        val_fraction=1 / 6,  # 6 runs: 4 train, 1 validation, 1 test
        test_fraction=1 / 6,
    )


def parse_lrs(text: str) -> dict[str, float]:
    """``1e-3`` (both) or ``gated=1e-3,shift=3e-4`` -> {conditioning: lr}."""
    out: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" in part:
            name, value = (s.strip() for s in part.split("=", 1))
            if name not in CONDITIONINGS:
                raise argparse.ArgumentTypeError(f"unknown conditioning {name!r} in --outer-lr (gated | shift)")
            out[name] = float(value)
        else:
            out.update({c: float(part) for c in CONDITIONINGS})
    missing = [c for c in CONDITIONINGS if c not in out]
    if missing:
        raise argparse.ArgumentTypeError(f"--outer-lr gives no rate for {missing}")
    return out


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.replace(",", " ").split()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vcinr bench conditioning",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", metavar="PATH", help="also write the rows and settings as JSON")
    p.add_argument("--dims", type=_int_list, help=f"latent sizes, e.g. 16,32 (default {DEFAULTS['dims']})")
    p.add_argument("--conditionings", default="gated,shift", help="which to run (default gated,shift)")
    p.add_argument("--steps", type=int, help=f"outer steps per model (default {DEFAULTS['steps']})")
    p.add_argument("--width", type=int, help=f"SIREN width (default {DEFAULTS['width']})")
    p.add_argument("--depth", type=int, help=f"SIREN sine layers (default {DEFAULTS['depth']})")
    p.add_argument("--batch-size", type=int, help=f"fields per outer step (default {DEFAULTS['batch_size']})")
    p.add_argument("--points-per-step", type=int,
                   help=f"random grid points per field per outer step, 0 = all 8192 (default {DEFAULTS['points_per_step']})")
    p.add_argument("--outer-lr", type=parse_lrs, metavar="LR|gated=LR,shift=LR",
                   help=f"Adam outer learning rate, one for both or per conditioning (default {DEFAULTS['outer_lr']})")
    p.add_argument("--inner-lr-init", type=float,
                   help="MetaSGD's initial per-dimension inner step size alpha (default: MetaConfig's)")
    p.add_argument("--inner-steps", type=int, help=f"MetaSGD inner steps in training (default {DEFAULTS['inner_steps']})")
    p.add_argument("--encode-steps", type=int, help=f"the second, longer encode (default {DEFAULTS['encode_steps']})")
    p.add_argument("--eval-items", type=int,
                   help=f"held-out fields scored, evenly spaced over the run, 0 = all 110 (default {DEFAULTS['eval_items']})")
    p.add_argument("--eval-split", choices=["test", "val"], default="test",
                   help="held-out run to score: test (default) or val (use val when tuning)")
    p.add_argument("--mod-width", type=int, help="gating network width (default: ModelConfig's)")
    p.add_argument("--gate-rank", type=int, help="rank of the gates U V^T (default: ModelConfig's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a shared 2-core machine more threads spin and run slower)")
    p.add_argument("--device", default="cpu",
                   help="torch device for training and scoring: cpu (default), cuda, cuda:1, or auto")
    p.add_argument("--data-dir", help=f"real data folder (default ${DATA_DIR_ENV} or ../shared/data)")
    p.add_argument("--quick", action="store_true", help="tiny budget for smoke tests (seconds)")
    return p


def _resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset options from QUICK (with --quick) then DEFAULTS."""
    for key, value in DEFAULTS.items():
        if getattr(args, key, None) is None:
            setattr(args, key, QUICK.get(key, value) if args.quick else value)
    if args.mod_width is None and args.quick:
        args.mod_width = QUICK["mod_width"]
    if isinstance(args.outer_lr, str):
        args.outer_lr = parse_lrs(args.outer_lr)
    args.conditionings = [c.strip() for c in args.conditionings.split(",") if c.strip()]
    bad = [c for c in args.conditionings if c not in CONDITIONINGS]
    if bad or not args.conditionings:
        raise UsageError(f"vcinr bench conditioning: unknown conditioning(s) {bad} (gated | shift)")
    args.device = str(resolve_device(args.device, "vcinr bench conditioning"))
    if min(args.dims, default=0) < 1 or args.steps < 0 or args.width < 1 or args.depth < 2:
        raise UsageError("vcinr bench conditioning: dims and width must be positive, depth >= 2, steps >= 0")
    return args


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _eval_subset(data, split: str, n: int) -> np.ndarray:
    fields = getattr(data.split, split)
    if n and n < len(fields):
        fields = fields[np.unique(np.linspace(0, len(fields) - 1, n).round().astype(int))]
    return fields


def references(train_items, eval_items, dims: list[int]) -> dict[str, Any]:
    """PSNRs that need no INR, to read the table against: the training mean field
    (climatology: what a model that ignores its latent can reach) and the mean field plus
    the projection of each held-out anomaly on the top-k principal components of the
    training anomalies (the best linear k-dim code, with k = dim(phi); an oracle, since
    it projects the held-out field itself)."""
    train = train_items.values(np.arange(len(train_items))).astype(np.float64)
    held = eval_items.values(np.arange(len(eval_items))).astype(np.float64)
    if np.isnan(train).any() or np.isnan(held).any():
        return {}
    mean = train.mean(0)

    def psnr(pred):
        return float(np.mean(psnr_from_mse(np.maximum(((held - pred) ** 2).mean(1), 1e-12))))

    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    pca = {}
    for k in dims:
        basis = vt[: min(k, len(vt))]
        pca[k] = psnr(mean + ((held - mean) @ basis.T) @ basis)
    return {"climatology_psnr": psnr(mean), "pca_psnr": pca}


def run_one(args, data, train_items, eval_items, conditioning: str, dim: int) -> dict[str, Any]:
    """Meta-train one model and score it on the held-out fields."""
    model_kw: dict[str, Any] = dict(conditioning=conditioning, latent_dim=dim, width=args.width, depth=args.depth)
    if args.mod_width is not None:
        model_kw["mod_width"] = args.mod_width
    if args.gate_rank is not None:
        model_kw["gate_rank"] = args.gate_rank
    cfg = Config(
        name=f"bench-conditioning-{conditioning}-{dim}",
        data=data.cfg,
        model=ModelConfig(**model_kw),
        meta=MetaConfig(
            inner_steps=args.inner_steps,
            **({"inner_lr_init": args.inner_lr_init} if args.inner_lr_init is not None else {}),
            outer_lr=args.outer_lr[conditioning],
            batch_size=args.batch_size,
            steps=args.steps,
            points_per_step=args.points_per_step or None,
        ),
        train=TrainConfig(seed=args.seed),
    )
    seed_everything(args.seed)
    model = build_model(cfg, data.grid).to(args.device)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.meta.outer_lr)
    n_inr = sum(p.numel() for p in model.inr.parameters())
    n_mod = sum(p.numel() for n, p in model.inr.named_parameters() if n.startswith(("to_gates", "to_shifts")))

    model.train()
    losses: list[float] = []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for step in range(1, cfg.meta.steps + 1):
        losses.append(outer_step(model, optimiser, sample_batch(train_items, cfg, step, device=args.device), cfg.meta.grad_clip))
        if not math.isfinite(losses[-1]):
            break
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    done = max(len(losses), 1)
    tail = losses[-max(1, len(losses) // 10):] or [float("nan")]
    train_mse = float(np.mean(tail))

    model.eval()
    ev_k = evaluate(model, eval_items, cfg.meta.inner_steps, batch_size=EVAL_BATCH, device=args.device)
    ev_more = evaluate(model, eval_items, args.encode_steps, batch_size=EVAL_BATCH, device=args.device)
    return {
        "conditioning": conditioning,
        "latent_dim": dim,
        "parameters": n_inr + model.phi0.numel() + model.alpha.numel(),
        "inr_parameters": n_inr,
        "modulation_parameters": n_mod,
        "outer_lr": cfg.meta.outer_lr,
        "inner_lr_init": cfg.meta.inner_lr_init,
        "steps": len(losses),
        "train_psnr_last10pct": psnr_from_mse(max(train_mse, 1e-12)) if math.isfinite(train_mse) else float("nan"),
        "psnr_inner": ev_k.psnr,
        "psnr_encode": ev_more.psnr,
        "inner_steps": cfg.meta.inner_steps,
        "encode_steps": args.encode_steps,
        "eval_items": ev_k.items,
        "step_wall_s": wall / done,
        "step_cpu_s": cpu / done,
        "train_wall_s": wall,
        "peak_rss_mb": _peak_rss_mb(),
        "config": cfg.to_dict(),
    }


def format_table(rows: list[dict[str, Any]], split: str) -> str:
    k = rows[0]["inner_steps"] if rows else 3
    e = rows[0]["encode_steps"] if rows else 10
    head = (
        f"| conditioning | dim(phi) | parameters (modulation) | {split} PSNR, {k} steps (dB) | "
        f"{split} PSNR, {e} steps (dB) | train PSNR (dB) | s / outer step (wall) | CPU s / step |"
    )
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        lines.append(
            f"| {r['conditioning']} | {r['latent_dim']} | {r['parameters']:,} ({r['modulation_parameters']:,}) | "
            f"{r['psnr_inner']:.2f} | {r['psnr_encode']:.2f} | {r['train_psnr_last10pct']:.2f} | "
            f"{r['step_wall_s']:.3f} | {r['step_cpu_s']:.3f} |"
        )
    return "\n".join(lines)


def save_results(args, data, rows: list[dict[str, Any]], ref: dict[str, Any]) -> None:
    out = {
        "benchmark": "conditioning",
        "device_name": device_name(args.device),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "split": data.split.to_dict(),
        "normaliser": data.normaliser.to_dict(),
        "rows": rows,
        "references": ref,
        "peak_rss_mb": _peak_rss_mb(),
    }
    write_json(args.json, out)


def main(argv: list[str] | None = None) -> int:
    args = _resolve(build_parser().parse_args(argv))
    folder = Path(args.data_dir) if args.data_dir else shared_data_dir()
    if folder is None or not folder.is_dir() or not sorted(folder.glob(FILE_GLOB)):
        where = folder if folder is not None else f"${DATA_DIR_ENV} or ../shared/data beside the checkout"
        print(
            f"vcinr bench conditioning: real data not found: need {FILE_GLOB} in {where}. "
            f"Set {DATA_DIR_ENV} or pass --data-dir.",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(args.threads)

    data = load_dataset(data_config(folder))
    train_items = data.items("train")
    eval_items = data.items(args.eval_split, _eval_subset(data, args.eval_split, args.eval_items))
    runs = {k: [int(p) for p in v] for k, v in data.split.positions.items()}
    print(
        f"CCSM TREFHT 64 x 128, spherical; member split {runs} (train {len(train_items)} fields); "
        f"scoring {len(eval_items)} {args.eval_split} fields; width {args.width} depth {args.depth}, "
        f"{args.steps} outer steps x batch {args.batch_size} x {args.points_per_step or 'all'} points, "
        f"outer lr {args.outer_lr}, device {device_name(args.device)}, {args.threads} CPU thread(s)",
        flush=True,
    )
    ref = references(train_items, eval_items, args.dims)
    rows = []
    for dim in args.dims:
        for cond in args.conditionings:
            row = run_one(args, data, train_items, eval_items, cond, dim)
            rows.append(row)
            if args.json:  # after every model, so a long run that is stopped keeps what it did
                save_results(args, data, rows, ref)
            print(
                f"  {cond:5s} dim {dim:4d}: {args.eval_split} PSNR {row['psnr_inner']:.2f} dB ({args.inner_steps} steps), "
                f"{row['psnr_encode']:.2f} dB ({args.encode_steps} steps); {row['step_wall_s']:.3f} s/step wall, "
                f"{row['step_cpu_s']:.3f} CPU s/step; peak RSS {row['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    print()
    print(format_table(rows, args.eval_split))
    if ref:
        print(
            f"\nReferences on the same fields: training mean field (climatology) {ref['climatology_psnr']:.2f} dB; "
            "mean + top-k PCA of the training anomalies (linear oracle) "
            + ", ".join(f"k={k}: {v:.2f}" for k, v in ref["pca_psnr"].items())
            + " dB."
        )
    print(
        f"\nPSNR: mean per-field, [0, 1] = training min/max ({data.normaliser.lo:.2f} .. {data.normaliser.hi:.2f} K); "
        f"train PSNR: outer loss (after {args.inner_steps} inner steps) over the last 10% of outer steps. "
        f"Peak RSS {_peak_rss_mb():.0f} MB."
    )
    if args.json:
        save_results(args, data, rows, ref)
    return 0


if __name__ == "__main__":
    sys.exit(main())
