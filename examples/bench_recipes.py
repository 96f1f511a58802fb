"""Meta-training recipes side by side under one wall-clock budget (issue 20, item 4): which
settings buy the most held-out PSNR per CPU second on a dataset.

    python examples/bench_recipes.py --config configs/suite-era5-uk.yaml --set model.kind=hybrid \
        --linear out/suite/artifacts/HASH --budget-s 180 \
        --variant base: --variant first-order:meta.first_order=true \
        --variant wide:model.width=128,model.depth=3

Each ``--variant NAME:KEY=VALUE,...`` is the config with those overrides (``NAME:`` alone:
the config itself). Every variant trains from the same seed in this process (no Ray, no
checkpoints: the loop of ``pipelines.meta_train``, outer steps until ``--budget-s`` of
training time), is scored on the tuning fields (the validation part, or the block held
out of training) at ``--evals`` points of its budget and, at the end, on the test
fields, adapted with ``latents.inner_steps`` as the encoder adapts them. Evaluation time
is not counted in the budget. For a hybrid (``--linear``: its linear model) the INR
learns what the mean and the leading EOFs leave, and the table also gives the gain
over the linear part alone (zero latents). Unquantised latents: the recipe's ceiling,
before any latent coder.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pipelines.cli_args import load
from vcinr_sci.config import Config, load_config, parse_overrides
from vcinr_sci.data.holdout import tuning_split
from vcinr_sci.metrics import psnr_from_mse
from vcinr_sci.model.artifact import ModelArtifact, load_artifact
from vcinr_sci.model.training import evaluate, outer_step, sample_batch, start_in_process, training_data


def variant_config(args: argparse.Namespace, spec: str) -> tuple[str, Config]:
    """``NAME:KEY=VALUE,...`` -> (name, the config with ``--set`` and those overrides)."""
    name, _, sets = spec.partition(":")
    extra = [s for s in sets.split(",") if s.strip()]
    return name or "base", load_config(args.config, parse_overrides(args.set + extra))


def run_variant(cfg: Config, linear: ModelArtifact | None, budget_s: float, evals: int) -> dict:
    """Train ``cfg``'s INR for ``budget_s`` seconds; its curve and held-out scores."""
    data = training_data(cfg, linear)
    part = tuning_split(data.split, data.source)
    train, tune, test = data.items("train", part.train), data.items("val", part.tune), data.items("test")
    model, optimiser = start_in_process(cfg, data, train)
    curve, trained_s, step = [], 0.0, 0
    for k in range(1, evals + 1):
        while trained_s < budget_s * k / evals:
            t0 = time.perf_counter()
            model.train()
            outer_step(model, optimiser, sample_batch(train, cfg, step), cfg.meta.grad_clip)
            trained_s += time.perf_counter() - t0
            step += 1
        model.eval()
        curve.append((step, evaluate(model, tune, cfg.meta.eval_inner_steps).psnr))
    model.eval()
    test_psnr = evaluate(model, test, cfg.latents.inner_steps).psnr
    values = test.values(np.arange(len(test))).astype(np.float64)
    zero = float(np.mean([psnr_from_mse(max(float(np.nanmean(v * v)), 1e-12)) for v in values]))
    return {"steps": step, "s_per_step": trained_s / max(step, 1), "curve": curve, "test": test_psnr, "zero": zero}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="applied to every variant")
    p.add_argument("--linear", help="a hybrid's linear model (artifact folder): the INR learns what it leaves")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...", help="repeatable")
    p.add_argument("--budget-s", type=float, default=180.0, help="training seconds per variant")
    p.add_argument("--evals", type=int, default=3, help="tuning-field scores along each budget")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load(args)
    linear = load_artifact(args.linear) if args.linear else None
    print(f"{cfg.name}: {args.budget_s:.0f} s of training a variant, {args.threads} threads; PSNR mean of "
          f"per-field PSNR (normalised range), tuning fields at {cfg.meta.eval_inner_steps} inner steps, test "
          f"fields at {cfg.latents.inner_steps}, unquantised latents", flush=True)
    marks = " ".join(f"tune@{k}/{args.evals}" for k in range(1, args.evals + 1))
    print(f"{'variant':<16} {'steps':>6} {'s/step':>7} {marks}  {'test':>6} {'gain':>6}", flush=True)
    for spec in args.variant or ["base:"]:
        name, vcfg = variant_config(args, spec)
        r = run_variant(vcfg, linear, args.budget_s, args.evals)
        tune = " ".join(f"{psnr:>{len(f'tune@{k}/{args.evals}')}.2f}" for k, (_, psnr) in enumerate(r["curve"], 1))
        gain = f"{r['test'] - r['zero']:>+6.2f}" if linear is not None else f"{'-':>6}"
        print(f"{name:<16} {r['steps']:>6} {r['s_per_step']:>7.3f} {tune}  {r['test']:>6.2f} {gain}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
