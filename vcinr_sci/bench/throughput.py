"""``vcinr bench throughput``: how fast the INR meta-trains, encodes and decodes (or a
linear model encodes and decodes), and how far that is from the machine's limit.

For a config (an untrained model of its sizes: timing does not depend on the weights) or
a trained artifact, on the config's real held-out fields:

- outer step: one MetaSGD meta-training step at the config's batch size, points per step
  and inner steps (second order unless the config says first order), seconds per step;
- encode: ``adapt`` of a batch of fields (the codec's inner steps), values per second;
- decode: the INR evaluated on every grid point of a batch of fields, values per second.

For a linear model (``--model`` of ``model.kind: linear``) encode is the least-squares
projection and decode the reconstruction, ``2 K`` FLOPs per value each (``K``
components, counted from the shapes: numpy runs them, float64); ``codec encode`` and
``codec decode`` rows time the whole codec on the same fields, chunk bytes included.

Each is also given as FLOPs per value, counted by torch's ``FlopCounterMode`` from the
shapes of the matrix products the model runs (elementwise sine, sigmoid and LayerNorm are
not counted), and as the fraction of the machine's matrix-multiply rate that it achieves,
measured in the same run with a large square product in the same dtype. That fraction,
not an absolute time, is the number to improve.

    vcinr bench throughput --config configs/demo.yaml
    vcinr bench throughput --config configs/era5-paper.yaml --set data.regrid=[181,360] --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from vcinr_sci.bench.output import device_name, resolve_device, write_json
from vcinr_sci.config import load_config, parse_overrides
from vcinr_sci.data.items import load_dataset
from vcinr_sci.errors import UsageError
from vcinr_sci.model.artifact import build_model, load_artifact
from vcinr_sci.model.training import outer_step, sample_batch, seed_everything


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], Any], device: torch.device, min_time: float = 1.0, max_calls: int = 50) -> float:
    """Median wall time of ``fn`` after one warm-up call, over at least ``min_time`` s."""
    fn()
    synchronize(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_time and len(times) < max_calls):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def count_flops(fn: Callable[[], Any]) -> int:
    """Matrix-product FLOPs of one call of ``fn`` (forward and any backward it runs)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def encode_flops(model, coords: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, steps: int) -> int:
    """FLOPs of one encode (``steps`` inner steps) of a batch. The start latent is made a
    non-leaf tensor: the FLOP counter's backward hooks refuse ``autograd.grad`` of a leaf,
    which is what ``adapt`` takes when the weights are frozen."""

    def encode():
        start = model.phi0.detach().expand(target.shape[0], -1).clone().requires_grad_(True) * 1.0
        with torch.enable_grad():
            model.inner_loop(coords, target, mask, steps, create_graph=False, phi=start)

    return count_flops(encode)


def matmul_rate(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None) -> float:
    """FLOP/s of a large ``n x n @ n x n`` product in ``dtype`` on ``device``."""
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2.0 * n**3 / seconds_per_call(lambda: a @ b, device, min_time=0.5)


@dataclass
class Cost:
    """One kernel of work: how many values it handled and what it cost."""

    what: str
    values: int  # grid values handled per call
    seconds: float  # per call
    flops: int  # matrix-product FLOPs per call

    @property
    def values_per_s(self) -> float:
        return self.values / self.seconds

    @property
    def flops_per_value(self) -> float:
        return self.flops / self.values

    def fraction_of(self, peak: float) -> float:
        return self.flops / self.seconds / peak

    def row(self, peak: float) -> dict[str, Any]:
        return dict(
            asdict(self),
            values_per_s=self.values_per_s,
            mb_per_s=self.values_per_s * 4 / 1e6,
            flops_per_value=self.flops_per_value,
            achieved_flop_s=self.flops / self.seconds,
            fraction_of_matmul=self.fraction_of(peak),
        )


def measure(fn: Callable[[], Any], what: str, values: int, device: torch.device, min_time: float,
            flops: int | None = None) -> Cost:
    return Cost(what, values, seconds_per_call(fn, device, min_time), count_flops(fn) if flops is None else flops)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vcinr bench throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="run config YAML (sizes, data, inner steps)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. data.regrid=[181,360] (repeatable)")
    p.add_argument("--model", help="a trained model artifact folder (default: an untrained model of the config's sizes)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda when present)")
    p.add_argument("--items", type=int, default=8, help="fields per encode / decode call (default 8)")
    p.add_argument("--quality", help="a linear model's level for the codec rows (default: its first)")
    p.add_argument("--encode-steps", type=int, help="inner steps at encode (default: the config's latents.inner_steps)")
    p.add_argument("--no-outer-step", action="store_true", help="skip timing the meta-training step")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds to time each kernel for (default 1)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", metavar="PATH", help="also write the rows and settings as JSON")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device, "vcinr bench throughput")
    cfg = load_config(args.config, parse_overrides(args.overrides))
    seed_everything(cfg.train.seed)
    artifact = load_artifact(args.model) if args.model else None
    data = load_dataset(cfg.data, artifact.normaliser if artifact else None)
    part = "test" if len(data.split.test) else "train"
    items = data.items(part, getattr(data.split, part)[: args.items])
    peak = matmul_rate(device, torch.float64 if artifact and artifact.model is None else torch.float32)
    if artifact is not None and artifact.model is None:
        costs = _linear_costs(artifact, items, data.source.load(items.fields), args)
        model_info: dict[str, Any] = {"kind": "linear", "components": artifact.metrics.get("components")}
    else:
        model = (artifact.model if artifact and artifact.model is not None else build_model(cfg, data.grid))
        assert model is not None
        costs = _inr_costs(model.to(device), cfg, data, items, device, args)
        model_info = {"kind": "inr", "conditioning": cfg.model.conditioning, "latent_dim": cfg.model.latent_dim,
                      "width": cfg.model.width, "depth": cfg.model.depth,
                      "parameters": sum(p.numel() for p in model.parameters())}
    return {
        "benchmark": "throughput",
        "device": str(device),
        "device_name": device_name(device),
        "matmul_flop_s": peak,
        "dtype": "float64" if model_info["kind"] == "linear" else "float32",
        # fp32_precision: the legacy allow_tf32 flag raises once full_float32 has set it
        "tf32": bool(device.type == "cuda" and torch.backends.cuda.matmul.fp32_precision == "tf32"),
        "grid": list(data.grid.shape),
        "items": len(items),
        "model": model_info,
        "batch_size": cfg.meta.batch_size,
        "points_per_step": cfg.meta.points_per_step,
        "rows": [c.row(peak) for c in costs],
        "config": cfg.to_dict(),
    }


def _inr_costs(model, cfg, data, items, device: torch.device, args: argparse.Namespace) -> list[Cost]:
    """Outer step (unless skipped), encode and decode of an INR, FLOPs counted by torch."""
    coords, target, mask = (t.to(device) for t in items.batch(np.arange(len(items))))
    values = int(mask.sum())
    steps = args.encode_steps or cfg.latents.inner_steps
    costs: list[Cost] = []
    if not args.no_outer_step:
        model.train()
        optimiser = torch.optim.Adam(model.parameters(), lr=cfg.meta.outer_lr)
        batch = sample_batch(data.items("train"), cfg, step=1, device=device)
        costs.append(measure(lambda: outer_step(model, optimiser, batch, cfg.meta.grad_clip),
                             "meta-train outer step", int(batch[2].sum()), device, args.min_time))
    model.eval()
    phi = model.adapt(coords, target, mask, steps)
    costs.append(measure(lambda: model.adapt(coords, target, mask, steps), f"encode ({steps} inner steps)",
                         values, device, args.min_time, encode_flops(model, coords, target, mask, steps)))
    costs.append(measure(lambda: model.decode(coords, phi), "decode", values, device, args.min_time))
    return costs


def _linear_costs(artifact, items, fields: np.ndarray, args: argparse.Namespace) -> list[Cost]:
    """A linear model's projection and reconstruction, then the whole codec (quality
    ``args.quality``, default the first) on the same fields; FLOPs from the shapes (2 K
    per value)."""
    from vcinr_sci.codec.core import decode_chunk, encode_chunk
    from vcinr_sci.model.registry import register_model

    cpu, min_time = torch.device("cpu"), args.min_time
    basis = artifact.basis
    values = items.values(np.arange(len(items)))
    valid = np.isfinite(values)
    n = int(valid.sum())
    flops = 2 * basis.num_components * values.size
    c = basis.coefficients(values, valid)
    costs = [
        measure(lambda: basis.coefficients(values, valid), "encode (least squares)", n, cpu, min_time, flops),
        measure(lambda: basis.reconstruct(c), "decode (mean + c @ EOFs)", n, cpu, min_time, flops),
    ]
    loaded = register_model(artifact)
    level = args.quality or artifact.quality_levels[0]
    if level not in artifact.quality_levels:
        raise UsageError(f"vcinr bench throughput: model {artifact.hash[:16]} has no level {level!r}; "
                         f"it has {artifact.quality_levels}")
    x = fields.astype(np.float32)
    chunk = encode_chunk(x, loaded, level, 0)
    costs.append(measure(lambda: encode_chunk(x, loaded, level, 0), f"codec encode ({level}, {len(chunk)} bytes)",
                         n, cpu, min_time, flops))
    costs.append(measure(lambda: decode_chunk(chunk), "codec decode", n, cpu, min_time, flops))
    return costs


def format_table(out: dict[str, Any]) -> str:
    lines = [
        "| work | values / call | s / call | values / s | MB/s (float32) | FLOPs / value | TFLOP/s | fraction of matmul |",
        "|" + "---|" * 8,
    ]
    for r in out["rows"]:
        lines.append(
            f"| {r['what']} | {r['values']:,} | {r['seconds']:.4f} | {r['values_per_s']:.3g} | {r['mb_per_s']:.3g} | "
            f"{r['flops_per_value']:,.0f} | {r['achieved_flop_s'] / 1e12:.3g} | {r['fraction_of_matmul']:.2%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = run(args)
    m = out["model"]
    grid = f"grid {' x '.join(map(str, out['grid']))}, {out['items']} fields per encode/decode call"
    if m["kind"] == "linear":
        print(f"{out['device_name']}: linear model, {m['components']} EOFs; {grid}")
    else:
        print(
            f"{out['device_name']}: {m['conditioning']} SIREN width {m['width']} depth {m['depth']}, dim(phi) "
            f"{m['latent_dim']}, {m['parameters']:,} parameters; {grid}; meta-train batch {out['batch_size']} x "
            f"{out['points_per_step'] or 'all'} points"
        )
    print(format_table(out))
    print(
        f"\nMatrix-multiply reference: {out['matmul_flop_s'] / 1e12:.3g} TFLOP/s ({out['dtype']}"
        f"{', TF32 allowed' if out['tf32'] else ''}) on a large square product. FLOPs count matrix products only."
    )
    if args.json:
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
