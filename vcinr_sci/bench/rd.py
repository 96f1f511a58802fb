"""``vcinr bench rd``: rate-distortion of the learned latent coders against uniform
quantisation of the same latents, on held-out items, from real bytes.

For one model artifact (one INR + its coders, from ``pipelines.train_coder``):

1. adapt the held-out items (the test part of the artifact's split: for a split on an
   ensemble member, whole runs the model never saw) with the encode setting the coders
   were trained on (``latents.inner_steps``);
2. for each quality level, code the latents of each *chunk* of ``--chunk-items``
   consecutive items as one string (what one stored chunk carries), decode those bytes,
   check the round trip is bit-exact, and decode the data through the INR;
3. report bits per value from the bytes written (latents alone, and with the model's
   bytes, INR + that coder, spread over the held-out values), PSNR (mean of per-item
   PSNR on the normalised scale: with ``normalisation: fixed`` that is the fixed [0, 1]
   scaling of method.md), RMSE, latitude-weighted RMSE and max abs error in the data's
   units, and the compression ratio against float32.

Levels: ``q*`` (learned coders), ``u<b>`` (COIN++ uniform quantisation at b bits with the
indices Zstd-coded) and ``u<b>-packed`` (the same indices bit-packed, no entropy coding),
plus the unquantised float32 latents for reference.

    vcinr bench rd --config configs/rd-ccsm.yaml --json out/rd.json --plot out/rd.png
    vcinr bench rd --model 1a2b3c4d5e6f7a8b --items 32
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vcinr_sci.bench.fields import index_ranges
from vcinr_sci.bench.output import pyplot, save_figure, write_json
from vcinr_sci.coding.coder import LatentCoder, coder_state
from vcinr_sci.coding.quantiser import UniformQuantiser
from vcinr_sci.coding.transform import GaussianLatentCoder
from vcinr_sci.config import load_config
from vcinr_sci.data.grids import SphericalGrid
from vcinr_sci.data.items import ItemSet, load_dataset
from vcinr_sci.errors import UsageError
from vcinr_sci.metrics import psnr_from_mse
from vcinr_sci.model.artifact import MANIFEST, ModelArtifact, find_artifact, load_artifact
from vcinr_sci.model.selection import select_artifact


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vcinr bench rd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="artifact folder or hash (looked up in $VCINR_MODEL_PATH and the cache)")
    src.add_argument("--config", help="run config: its newest artifact with coders in train.artifact_dir")
    p.add_argument("--part", default="test", choices=["test", "val"], help="held-out part (default test)")
    p.add_argument("--items", type=int, help="first N held-out items (default all)")
    p.add_argument("--chunk-items", type=int, default=32, help="items per coded string (default 32)")
    p.add_argument("--inner-steps", type=int, help="encode steps (default: the artifact's latents.inner_steps)")
    p.add_argument("--levels", help="comma-separated quality levels (default all the artifact holds)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--plot", metavar="PNG", help="also plot PSNR against bits per value")
    return p


def _resolve(args) -> Path:
    if args.model:
        return Path(args.model) if Path(args.model, MANIFEST).is_file() else find_artifact(args.model)
    return select_artifact(load_config(args.config), with_coders=True)


def _levels(artifact: ModelArtifact, wanted: str | None) -> list[tuple[str, Any]]:
    """(label, coder) pairs: learned coders, then each uniform level entropy coded and packed."""
    names = artifact.quality_levels if not wanted else [w.strip() for w in wanted.split(",") if w.strip()]
    out = []
    for name in names:
        base = name.removesuffix("-packed")
        coder = artifact.coder(base)
        if isinstance(coder, UniformQuantiser):
            packed = UniformQuantiser(coder.latent_dim, coder.bits, coder.clip_std, entropy_code=False)
            packed.mean, packed.std = coder.mean, coder.std
            if name == base:
                out.append((name, coder))
                if not wanted:
                    out.append((f"{name}-packed", packed))
            else:
                out.append((name, packed))
        else:
            out.append((name, coder))
    return out


def _nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


class Scorer:
    """Accumulates errors of reconstructed items against their targets."""

    def __init__(self, scale: float, weights: np.ndarray | None):
        self.scale, self.weights = scale, weights
        self.mse: list[float] = []
        self.sq_w, self.w, self.max_abs, self.bytes = 0.0, 0.0, 0.0, 0

    def add(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        err = (pred.double() - target.double())[..., 0]
        ok = mask[..., 0]
        err = torch.where(ok, err, torch.zeros_like(err))
        self.mse.append((err**2).sum(1) / ok.sum(1).clamp_min(1))
        self.max_abs = max(self.max_abs, float(err.abs().max()) * self.scale)
        if self.weights is not None:
            w = torch.from_numpy(self.weights).to(err) * ok
            self.sq_w += float((w * err**2).sum())
            self.w += float(w.sum())

    def result(self) -> dict[str, float]:
        mse = torch.cat(self.mse)
        out = {
            "psnr": float(psnr_from_mse(mse.clamp_min(1e-30)).mean()),
            "psnr_of_mean_mse": psnr_from_mse(max(float(mse.mean()), 1e-30)),
            "rmse": math.sqrt(float(mse.mean())) * self.scale,
            "max_abs_error": self.max_abs,
        }
        out["rmse_lat_weighted"] = math.sqrt(self.sq_w / self.w) * self.scale if self.weights is not None else None
        return out


def run(args) -> dict[str, Any]:
    path = _resolve(args)
    artifact = load_artifact(path)
    cfg = artifact.config
    model = artifact.model.eval()
    steps = args.inner_steps if args.inner_steps is not None else cfg.latents.inner_steps
    data = load_dataset(cfg.data, artifact.normaliser)
    fields = getattr(data.split, args.part)
    items: ItemSet = data.items(args.part)
    n = len(items) if args.items is None else min(args.items, len(items))
    if n == 0:
        raise ValueError(f"no {args.part} items")
    norm = artifact.normaliser
    scale = norm.hi - norm.lo  # normalised error x scale = error in data units
    weights = None
    if isinstance(data.grid, SphericalGrid) and items.num_patches == 1:
        weights = data.grid.area_weights().reshape(-1)
    num_values = n * items.points_per_item
    levels = _levels(artifact, args.levels)
    inr_bytes = _nbytes(model.state_dict())

    t0 = time.perf_counter()
    phis = []
    for s in range(0, n, args.chunk_items):
        coords, values, mask = items.batch(np.arange(s, min(s + args.chunk_items, n)))
        phis.append(model.adapt(coords, values, mask, steps))
    encode_s = time.perf_counter() - t0

    rows: list[dict[str, Any]] = []
    reference = Scorer(scale, weights)
    scorers = {name: Scorer(scale, weights) for name, _ in levels}
    exact = {name: True for name, _ in levels}
    decoded: dict[tuple, torch.Tensor] = {}
    for c, s in enumerate(range(0, n, args.chunk_items)):
        idx = np.arange(s, min(s + args.chunk_items, n))
        coords, values, mask = items.batch(idx)
        phi = phis[c]
        reference.add(model.decode(coords, phi), values, mask)
        for name, coder in levels:
            data_bytes = coder.compress(phi)
            phi_hat = coder.decompress(data_bytes, len(idx))
            exact[name] &= bool(torch.equal(phi_hat, coder.quantise(phi)))
            scorers[name].bytes += len(data_bytes)
            key = (name.removesuffix("-packed"), c)  # packed and Zstd-coded indices decode alike
            if key not in decoded:
                decoded[key] = model.decode(coords, phi_hat)
            scorers[name].add(decoded[key], values, mask)
        decoded.clear()

    unq = {"level": "float32", "kind": "unquantised", "param": None, "bytes": n * model.latent_dim * 4}
    rows.append(unq | reference.result())
    for name, coder in levels:
        sc = scorers[name]
        if isinstance(coder, LatentCoder):
            kind, param = "learned", artifact.metrics.get("coders", {}).get(name, {}).get("lambda")
        elif isinstance(coder, GaussianLatentCoder):
            kind, param = "gaussian", coder.step
        else:
            kind, param = ("uniform+zstd" if coder.entropy_code else "uniform"), coder.bits
        row = {"level": name, "kind": kind, "param": param, "bytes": sc.bytes, "bit_exact": exact[name]}
        row["coder_bytes"] = _nbytes(coder_state(coder))
        rows.append(row | sc.result())
    for row in rows:
        row["bpv"] = 8 * row["bytes"] / num_values
        row["bpv_with_model"] = 8 * (row["bytes"] + inr_bytes + row.get("coder_bytes", 0)) / num_values
        row["ratio_vs_float32"] = 32 / row["bpv"]

    fixed = cfg.data.normalisation == "fixed"
    return {
        "benchmark": "rd",
        "model": artifact.hash,
        "model_path": str(path),
        "dataset": cfg.name,
        "variable": cfg.data.variable,
        "part": args.part,
        "held_out": data.split.to_dict()["positions"][args.part],
        "split_dim": data.split.dim,
        "items": n,
        "fields": int(len(np.unique(fields[np.arange(n) // items.num_patches]))),
        "values": num_values,
        "grid": list(data.grid.shape),
        "latent_dim": model.latent_dim,
        "inner_steps": steps,
        "chunk_items": args.chunk_items,
        "inr_bytes": inr_bytes,
        # How many values the INR's bytes must be spread over to cost at most this many bpv.
        "values_to_amortise_inr": {str(b): math.ceil(8 * inr_bytes / b) for b in (0.01, 0.001)},
        "psnr_scale": (
            f"fixed range [{norm.lo}, {norm.hi}] mapped to [0, 1] (method.md)"
            if fixed
            else f"training-set min/max [{norm.lo:.6g}, {norm.hi:.6g}] mapped to [0, 1]"
        ),
        "units": "data units of the variable (RMSE, max abs error)",
        "encode_seconds": encode_s,
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    r = result
    held = index_ranges(r["held_out"])
    lines = [
        f"model {r['model'][:16]}, {r['dataset']}/{r['variable']}: {r['items']} held-out items ({r['part']}: "
        f"{r['split_dim']} {held}), grid {' x '.join(map(str, r['grid']))}, dim(phi) {r['latent_dim']}, "
        f"{r['inner_steps']} inner steps, one coded string per {r['chunk_items']} items",
        f"PSNR: mean per-item, {r['psnr_scale']}; bpv from the bytes written; "
        f"+model: INR ({r['inr_bytes']} B) + coder bytes spread over the {r['values']} held-out values",
        f"the INR alone costs <= 0.01 bpv from {r['values_to_amortise_inr']['0.01']:.3g} values on, <= 0.001 bpv "
        f"from {r['values_to_amortise_inr']['0.001']:.3g} ({r['values_to_amortise_inr']['0.001'] / (r['values'] / r['items']):.3g} items)",
        "",
        "| level | kind | lambda / bits | bpv | bpv +model | PSNR dB | RMSE | lat-w RMSE | max abs err | ratio vs f32 | exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        latw = row["rmse_lat_weighted"]
        param = "" if row["param"] is None else f"{row['param']:g}"
        lines.append(
            f"| {row['level']} | {row['kind']} | {param} | "
            f"{row['bpv']:.5f} | {row['bpv_with_model']:.3f} | {row['psnr']:.2f} | {row['rmse']:.3f} | "
            f"{'' if latw is None else format(latw, '.3f')} | {row['max_abs_error']:.2f} | {row['ratio_vs_float32']:.0f} | "
            f"{row.get('bit_exact', '')} |"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: str) -> None:
    rows = result["rows"]
    fig, axes = pyplot().subplots(1, 2, figsize=(12, 4.5))
    for ax, key, title in (
        (axes[0], "bpv", "latent bits only"),
        (axes[1], "bpv_with_model", f"with the model's bytes over {result['values']} values"),
    ):
        for kind, style in (("learned", "o-"), ("gaussian", "d-"), ("uniform+zstd", "s--"), ("uniform", "^:")):
            sel = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r[key])
            if sel:
                ax.plot([r[key] for r in sel], [r["psnr"] for r in sel], style, label=kind)
                for r in sel if kind != "uniform" else []:  # packed levels sit beside their Zstd twins
                    ax.annotate(r["level"], (r[key], r["psnr"]), fontsize=7, xytext=(3, -8), textcoords="offset points")
        ref = next(r for r in rows if r["kind"] == "unquantised")
        ax.axhline(ref["psnr"], color="grey", lw=0.8, label=f"unquantised ({ref['psnr']:.2f} dB)")
        ax.set_xscale("log")
        ax.set_xlabel("bits per value (from bytes written)")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{result['dataset']} {result['variable']}, {result['items']} held-out items, model {result['model'][:12]}",
        fontsize=10,
    )
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.chunk_items < 1:
        raise UsageError("--chunk-items must be positive")
    result = run(args)
    print(markdown(result))
    if args.json:
        write_json(args.json, result)
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
