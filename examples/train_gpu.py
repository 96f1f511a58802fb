"""Meta-train the INR of each data bundle for a fixed wall time on a lent GPU machine.

    python3 examples/train_gpu.py gpu_data/suite-era5-uk.npz gpu_data/suite-ccsm.npz --budget-s 210 --out "$OUT"

The machine (``examples/train_gpu.sh``) has torch, numpy, PyYAML, xarray and safetensors,
but no compressai, Zarr, numcodecs, Ray, netCDF4 or dask. So this imports the library's
modules without its package ``__init__`` (which registers the Zarr codec), reads the data
from bundles (:mod:`pipelines.gpu_bundle`) and runs the library's own model (MetaSGD over
the INR of ``model``), batches, outer steps and evaluation (:mod:`vcinr_sci.model.steps`),
as ``pipelines/meta_train.py``'s workers do, until ``--budget-s`` or ``meta.steps``.

Per bundle it writes to ``--out``: ``NAME.safetensors`` (the trained state dict) and
``NAME.json`` (the config as trained, ``meta.steps`` the steps run; the curve; the
machine). The curve has one point every ``--eval-every-s``: steps, seconds, train PSNR
(post-adaptation, as meta_train logs it), ms a step, and the PSNR of ``meta.eval_items``
tuning items after ``meta.eval_inner_steps`` steps; at the end, the test items' PSNR too.
Evaluation runs in IEEE float32 (:func:`~vcinr_sci.model.device.full_float32`), as the
codec decodes; training matmuls in TF32 unless ``--matmul ieee``. The JSON is rewritten
after every point, so a run cut short still leaves its curve.
``python -m pipelines.import_gpu_run OUT`` makes artifacts of the results on the CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import traceback
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def bare_package() -> None:
    """Make ``vcinr_sci``'s modules importable without running ``vcinr_sci/__init__.py``
    (it imports zarr, and with zarr 3 the accessor, the codec and compressai: none of
    them is on the training machine, and training needs none of them). A no-op where
    the package is already imported."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if "vcinr_sci" not in sys.modules:
        package = types.ModuleType("vcinr_sci")
        package.__path__ = [str(ROOT / "vcinr_sci")]
        sys.modules["vcinr_sci"] = package


bare_package()

from safetensors.torch import save_file  # noqa: E402

from pipelines.gpu_bundle import Bundle, read_bundle  # noqa: E402
from vcinr_sci.metrics import psnr_from_mse  # noqa: E402
from vcinr_sci.model.device import default_device, full_float32  # noqa: E402
from vcinr_sci.model.inr import build_inr, centred_targets  # noqa: E402
from vcinr_sci.model.meta import MetaSGD  # noqa: E402
from vcinr_sci.model.steps import evaluate, outer_step, sample_batch, seed_everything  # noqa: E402


def set_training_matmul(mode: str) -> None:
    """CUDA float32 matmuls of the training steps in ``tf32`` or ``ieee``; evaluation sets
    IEEE for itself (no effect on the CPU)."""
    torch.backends.cuda.matmul.fp32_precision = mode


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


class Run:
    """One bundle's training: the model, its optimiser, and the curve as it grows."""

    def __init__(self, bundle: Bundle, device: torch.device):
        self.bundle, self.device, self.cfg = bundle, device, bundle.config
        if self.cfg.model.kind == "linear":
            raise SystemExit(f"{self.cfg.name}: model.kind linear has no INR to train")
        seed_everything(self.cfg.train.seed)  # as meta_train: the same initial model
        # as vcinr_sci.model.artifact.build_model (not importable here: it imports the coders)
        self.model = MetaSGD(build_inr(bundle.grid.coord_dim, self.cfg.model, centred=centred_targets(self.cfg),
                                       grid=bundle.grid), self.cfg.meta).to(device)
        self.optimiser = torch.optim.Adam(self.model.parameters(), lr=self.cfg.meta.outer_lr)
        self.step, self.curve, self.losses = 0, [], []  # losses: train MSEs since the last point
        self.started = time.perf_counter()
        self.last_point = (self.started, 0)  # (time, step) of the last curve point

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def train_step(self) -> None:
        self.step += 1
        self.model.train()
        batch = sample_batch(self.bundle.train, self.cfg, self.step, device=self.device)
        self.losses.append(outer_step(self.model, self.optimiser, batch, self.cfg.meta.grad_clip))

    def score(self, items, max_items: int | None) -> float:
        self.model.eval()
        with full_float32():
            return evaluate(self.model, items, self.cfg.meta.eval_inner_steps, max_items, device=self.device).psnr

    def add_point(self, test: bool = False) -> None:
        """Score the model at this step: a new curve point (train PSNR and ms a step since
        the last one, val PSNR), unless this step has one; with ``test``, the test items'
        PSNR too."""
        if not self.curve or self.curve[-1]["step"] != self.step:
            (t_last, s_last), now = self.last_point, time.perf_counter()
            steps = self.step - s_last
            self.curve.append({
                "step": self.step, "elapsed_s": round(now - self.started, 2),
                "train_psnr": psnr_from_mse(max(sum(self.losses) / len(self.losses), 1e-12)) if self.losses else None,
                "step_ms": round((now - t_last) / steps * 1e3, 2) if steps else None,
                "val_psnr": self.score(self.bundle.tune, self.cfg.meta.eval_items)})
            self.losses, self.last_point = [], (time.perf_counter(), self.step)  # evaluation time is not step time
        point = self.curve[-1]
        if test:
            point["test_psnr"] = self.score(self.bundle.test, None)
        line = f"{self.cfg.name}  step {self.step:>6}  {point['elapsed_s']:7.1f} s"
        line += "" if point["train_psnr"] is None else f"  train {point['train_psnr']:6.2f} dB"
        line += f"  val {point['val_psnr']:6.2f} dB" + (f"  test {point['test_psnr']:6.2f} dB" if test else "")
        print(line + ("" if point["step_ms"] is None else f"  {point['step_ms']:.1f} ms/step"), flush=True)

    def record(self, out: Path, matmul: str, budget_s: float, done: bool) -> None:
        """The config as trained (``meta.steps`` = steps run), the curve and the machine."""
        cfg = dataclasses.replace(self.cfg, meta=dataclasses.replace(self.cfg.meta, steps=self.step))
        doc = {"config": cfg.to_dict(), "bundle": {k: self.bundle.manifest[k] for k in ("linear_artifact", "linear_hash",
                                                                                       "tuning")}
               | {"sha256": self.bundle.sha256},
               "run": {"machine": machine(self.device), "torch": torch.__version__, "matmul": matmul,
                       "budget_s": budget_s, "wall_s": round(self.elapsed(), 2), "steps": self.step, "finished": done,
                       "parameters": sum(p.numel() for p in self.model.parameters())},
               "curve": self.curve}
        (out / f"{self.cfg.name}.json").write_text(json.dumps(doc, indent=1))


def train(path: Path, out: Path, budget_s: float, eval_every_s: float, matmul: str, device: torch.device) -> None:
    run = Run(read_bundle(path), device)
    print(f"{run.cfg.name}: width {run.cfg.model.width}, depth {run.cfg.model.depth}, latent {run.cfg.model.latent_dim}, "
          f"{sum(p.numel() for p in run.model.parameters()):,} parameters; {len(run.bundle.train)} training items of "
          f"{run.bundle.train.points_per_item} points; {budget_s:.0f} s on {machine(device)} ({matmul})", flush=True)
    run.add_point()
    run.record(out, matmul, budget_s, done=False)
    while run.step < run.cfg.meta.steps and run.elapsed() < budget_s:
        run.train_step()
        if time.perf_counter() - run.last_point[0] >= eval_every_s:
            run.add_point()
            run.record(out, matmul, budget_s, done=False)
    run.add_point(test=True)
    state = {k: v.detach().cpu().contiguous() for k, v in run.model.state_dict().items()}
    save_file(state, str(out / f"{run.cfg.name}.safetensors"))
    run.record(out, matmul, budget_s, done=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundles", nargs="+", type=Path, help="data bundles (python -m pipelines.gpu_bundle), trained in order")
    p.add_argument("--out", type=Path, required=True, help="folder of the results")
    p.add_argument("--budget-s", type=float, default=210.0, help="wall seconds of training per bundle (default 210)")
    p.add_argument("--eval-every-s", type=float, default=20.0, help="seconds between curve points (default 20)")
    p.add_argument("--matmul", choices=("tf32", "ieee"), default="tf32", help="CUDA float32 matmuls while training")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    device = default_device()
    set_training_matmul(args.matmul)
    failed = []
    for path in args.bundles:
        try:
            train(path, args.out, args.budget_s, args.eval_every_s, args.matmul, device)
        except (RuntimeError, ValueError):  # e.g. out of GPU memory: the next bundle still gets its turn
            traceback.print_exc()
            failed.append(path.name)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
