"""Latent coders compared on the SAME latents (issue 24): the model's stored levels (the
learned factorised coders q*, the uniform quantisers u*), uniform quantisers u2..u8, and
the Gaussian transform coder (:mod:`vcinr_sci.coding.transform`) at a ladder of steps
(``klt 0.5sd``: a step of half the leading component's deviation),
plain KLT and in the INR's data-space metric. With ``--learned``, also three learned
transform coders trained here on the same latents at the same lambdas (chosen from the
data's slope as ``pipelines.train_coder`` chooses them): the factorised prior
(``fact``, the project's ``LatentCoder``), compressai's scale hyperprior (``hyper``) and
its mean-scale hyperprior (``mshyper``, :mod:`vcinr_sci.bench.latent_hyperprior`).

    python examples/bench_latent_coders.py --config configs/suite-era5-uk.yaml \
        --set model.kind=hybrid --model out/suite/artifacts/HASH [--linear out/suite/artifacts/HASH] [--learned]

Held-out fields: the config's test part, latents adapted as the codec adapts them, coded
in strings of ``compress.chunk_fields`` consecutive fields. Per coder: bits per value,
per field and per latent dimension, PSNR (normalised range). For a hybrid's INR (its
items are what the mean and leading EOFs leave) also the dB gained over the linear part
alone, dB per latent bit, and the bits the linear model (``--linear``, measured on the
same fields at its levels) spends on the same gain, read off its rate-distortion curve.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import torch

from pipelines.cli_args import load
from pipelines.train_coder import choose_lambdas, load_parts
from vcinr_sci.bench.latent_hyperprior import HyperpriorLatentCoder, train_coders
from vcinr_sci.coding.coder import LatentCoder
from vcinr_sci.coding.quantiser import UniformQuantiser
from vcinr_sci.coding.transform import fit_transform
from vcinr_sci.data.items import ItemSet, load_dataset
from vcinr_sci.metrics import bits_per_value, psnr_from_mse
from vcinr_sci.model.artifact import load_artifact
from vcinr_sci.model.coder_training import latent_metric, operating_point
from vcinr_sci.model.latents import latents_dir
from vcinr_sci.model.registry import default_inner_steps, prepare_model


def adapt(model, items: ItemSet, steps: int, batch: int = 32) -> torch.Tensor:
    """The items' latents after ``steps`` inner steps, as the encoder finds them."""
    out = []
    for s in range(0, len(items), batch):
        coords, values, mask = items.batch(np.arange(s, min(s + batch, len(items))))
        out.append(model.adapt(coords, values, mask, steps))
    return torch.cat(out)


def linear_curve(path: str, part: str, chunk_fields: int) -> list[tuple[float, float]]:
    """(bits per value, PSNR) of the linear model at ``path`` at each of its levels on
    the fields of ``part``, coded in chunks of ``chunk_fields`` fields as the codec does."""
    artifact = load_artifact(path)
    model = prepare_model(artifact)
    items = load_dataset(artifact.config.data, artifact.normaliser).items(part)
    values = items.values(np.arange(len(items))).astype(np.float32)
    valid = np.isfinite(values)
    values = np.where(valid, values, 0.0).astype(np.float32)
    curve = []
    for level in artifact.ladder:
        nbytes, se = 0, 0.0
        for start in range(0, len(values), chunk_fields * items.num_patches):
            idx = np.arange(start, min(start + chunk_fields * items.num_patches, len(values)))
            # the items have the mean field out already, where the model has one
            string, decoded = model.round_trip(idx % items.num_patches, values[idx], valid[idx], 0, level)
            nbytes, se = nbytes + len(string), se + float(np.square(np.where(valid[idx], decoded - values[idx], 0)).sum())
        curve.append((bits_per_value(nbytes, values.size), psnr_from_mse(se / valid.sum())))
    return sorted(curve)


def bits_at(curve: list[tuple[float, float]], psnr: float) -> float:
    """Bits per value the curve needs for ``psnr`` (log bits linear in PSNR between its
    points; NaN outside them)."""
    bpv, db = np.array([c[0] for c in curve]), np.array([c[1] for c in curve])
    if not db.min() <= psnr <= db.max():
        return math.nan
    return float(np.exp(np.interp(psnr, db, np.log(bpv))))


def learned_coders(cfg, model, data, part, train, val, hyper_dim: int) -> dict[str, object]:
    """Factorised, scale- and mean-scale-hyperprior coders, one per lambda each, trained
    together on the training latents (``cfg.coder``'s steps, batch and schedule)."""
    cc = cfg.coder
    lambdas = cc.lambdas or choose_lambdas(cfg, model, train, val, data.items("val", part.tune))
    phi = torch.from_numpy(train.phi)
    d = phi.shape[1]
    families = {
        "fact": lambda: LatentCoder(d, cc.dim_y, cc.width, cc.blocks),
        "hyper": lambda: HyperpriorLatentCoder(d, cc.dim_y, hyper_dim, cc.width, cc.blocks, mean_scale=False),
        "mshyper": lambda: HyperpriorLatentCoder(d, cc.dim_y, hyper_dim, cc.width, cc.blocks, mean_scale=True),
    }
    coders = {f"{name} {lam:.3g}": make() for name, make in families.items() for lam in lambdas}
    for coder in coders.values():
        coder.set_stats(phi)
    train_coders(model, list(coders.values()), [lam for _ in families for lam in lambdas], phi,
                 data.items("train", part.train), cc)
    return coders


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--model", required=True, help="artifact folder of the INR with its trained coders")
    p.add_argument("--linear", help="a hybrid's linear model (artifact folder), for the EOF comparison")
    p.add_argument("--metric-items", type=int, default=128, help="training items the data-space metric is measured on")
    p.add_argument("--learned", action="store_true",
                   help="also train factorised, scale-hyperprior and mean-scale-hyperprior coders (coder.steps each)")
    p.add_argument("--hyper-dim", type=int, default=8, help="channels of the hyperprior's side information z")
    args = p.parse_args(argv)
    cfg = load(args)
    artifact = load_artifact(args.model)
    if artifact.basis is not None and artifact.model is not None and "hybrid" in artifact.metrics:
        sys.exit(f"{args.model} is a hybrid model: give the INR artifact with its latent coders, the one "
                 f"pipelines.fit_hybrid's stage 3 wrote (the hybrid's metrics name its linear model, "
                 f"{artifact.metrics['hybrid'].get('linear_model', '?')[:16]}, for --linear)")
    model = artifact.model.eval().requires_grad_(False)
    data = load_dataset(artifact.config.data, artifact.normaliser, artifact.linear_part())
    part, train, val = load_parts(data, latents_dir(cfg.latents.output_dir, artifact, cfg.latents.inner_steps))
    test = data.items("test")
    phi = adapt(model, test, default_inner_steps(artifact))
    chunk = max(1, cfg.compress.chunk_fields) * test.num_patches
    d, per_item = phi.shape[1], test.points_per_item
    values = test.values(np.arange(len(test)))
    base_psnr = psnr_from_mse(float(np.nanmean(np.square(values))))  # the INR's items are residuals: 0 is the linear part alone

    phi_train = torch.from_numpy(train.phi)
    order = np.lexsort((train.field, train.patch))
    follows = np.r_[False, (np.diff(train.field[order]) == 1) & (np.diff(train.patch[order]) == 0)]
    pick = np.unique(np.linspace(0, len(train) - 1, min(args.metric_items, len(train))).round().astype(np.int64))
    metric = latent_metric(model, phi_train, data.items("train", part.train), pick)
    coders: dict[str, object] = {q: artifact.coder(q) for q in artifact.quality_levels}
    for bits in range(2, 9):
        if f"u{bits}" not in coders:
            q = UniformQuantiser(d, bits, clip_std=cfg.coder.uniform_clip_std, entropy_code=True)
            q.fit(phi_train)
            coders[f"u{bits}"] = q
    for name, h in (("klt", None), ("klt-metric", metric)):
        base = fit_transform(train.phi[order], 1.0, h, follows)
        top = float(base.coefficients.scales[0])
        for j in np.arange(-3, 7.5, 0.5):  # steps from 8x to 1/128 of the leading component's deviation
            coders[f"{name} {2.0**-j:.3g}sd"] = base.at_step(top * 2.0**-j)
    if args.learned:
        coders |= learned_coders(cfg, model, data, part, train, val, args.hyper_dim)

    linear = linear_curve(args.linear, "test", cfg.compress.chunk_fields) if args.linear else []
    unquantised = model.decode(test.batch(np.arange(len(test)))[0], phi).numpy()[..., 0]
    print(f"{len(test)} held-out fields ({test.points_per_item} points, {d} latent dims), strings of {chunk} latents; "
          f"unquantised latents {psnr_from_mse(float(np.nanmean(np.square(unquantised - values)))):.2f} dB, "
          f"zero latents (the linear part alone, for a hybrid's INR) {base_psnr:.2f} dB")
    if linear:
        print("linear model on the same fields: " + ", ".join(f"{b:.4f} bpv {q:.2f} dB" for b, q in linear))
    head = f"{'coder':<20} {'bits/value':>10} {'bits/field':>10} {'bits/dim':>8} {'PSNR':>7} {'gain dB':>7} {'dB/bit':>7}"
    print(head + (f" {'EOF bits/field same gain':>24} {'latent/EOF':>10}" if linear else ""))
    for name, coder in coders.items():
        bpv, mse = operating_point(model, coder, phi, test, chunk)
        psnr = psnr_from_mse(mse)
        bits_field = bpv * test.points_per_item  # per item: a field when it is one patch
        gain = psnr - base_psnr
        line = (f"{name:<20} {bpv:>10.5f} {bits_field:>10.1f} {bits_field / d:>8.3f} "
                f"{psnr:>7.2f} {gain:>7.2f} {gain / bits_field:>7.4f}")
        if linear:
            eof = (bits_at(linear, psnr) - bits_at(linear, base_psnr)) * per_item
            line += f" {eof:>24.1f} {bits_field / eof if eof > 0 else math.nan:>10.2f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
