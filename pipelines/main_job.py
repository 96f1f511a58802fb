"""The main job, end to end on one config, for each kind of model (``--kinds``, by
default all three, so that one table shows what each buys).

    python -m pipelines.main_job --config configs/demo.yaml [--kinds inr,linear,hybrid]

1. meta-train the shared INR (Ray Train),
2. adapt every training/validation field to its latent (Ray Data, latent shards),
3. train one latent coder per lambda (Ray Train) and store them in the model artifact,
   (a linear model, ``model.kind: linear``, replaces 1-3 by ``pipelines.fit_basis``:
   the training mean and EOFs, one coefficient coder per target PSNR; a hybrid,
   ``pipelines.fit_hybrid``: the linear model, then 1-3 on what its leading EOFs leave),
4. compress the held-out test fields into a local Zarr store at each level of each
   model's ladder (the ``vcinr`` codec, through the xarray accessor), with the model
   stored inside,
5. reopen each store with xarray, print one table of size, bits per value and errors
   (a row per model and level), and draw the original, reconstruction and error of one
   field at the best level to a PNG.

Every stage skips what an earlier run finished, so a rerun after a kill resumes.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

from pipelines import build_latents, fit_basis, fit_hybrid, meta_train, train_coder
from pipelines.cli_args import config_parser, load
from vcinr_sci.config import Config
from vcinr_sci.data.sources import open_variable
from vcinr_sci.io.accessor import open_zarr
from vcinr_sci.model.artifact import load_artifact


def held_out(cfg: Config, split: dict) -> xr.DataArray:
    """The test fields of the model's split, as an xarray variable."""
    da = open_variable(cfg.data)
    return da.isel({split["dim"]: split["positions"]["test"]})


KINDS = ("inr", "linear", "hybrid")


def compress_and_report(cfg: Config, artifact_path: Path, out_dir: Path) -> list[dict]:
    art = load_artifact(artifact_path)
    reference = held_out(art.config, art.split).load()
    rows = []
    for level in art.ladder:
        store = out_dir / f"{cfg.name}-{cfg.model.kind}-{level}.zarr"
        reference.to_dataset().vcinr.to_zarr(store, model=art, quality=level, store_model=True, mode="w")
        decoded = open_zarr(store)[reference.name]
        report = decoded.vcinr.error_report(reference, data_range=art.normaliser.hi - art.normaliser.lo)
        stored = decoded.vcinr.attrs
        rows.append(
            {
                "model": cfg.model.kind,
                "quality": level,
                "store": str(store),
                "bits_per_value": stored["vcinr_bits_per_value"],
                "ratio_vs_float32": stored["vcinr_compression_ratio"],
                **report,
            }
        )
    return rows


def report_table(rows: list[dict]) -> str:
    """The held-out figures per quality level as a markdown table ("-" where a figure
    does not apply: no latitude-weighted RMSE on a grid without latitudes)."""

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [
        "| model | quality | bits/value | ratio vs float32 | PSNR (dB) | RMSE | lat-weighted RMSE | max abs error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['quality']} | {num(r['bits_per_value'], '.4f')} | {num(r['ratio_vs_float32'], '.0f')} | "
            f"{num(r['psnr_db'], '.2f')} | {num(r['rmse'], '.3f')} | {num(r['lat_weighted_rmse'], '.3f')} | "
            f"{num(r['max_abs_error'], '.3f')} |"
        )
    return "\n".join(lines)


def plot_field(reference: xr.DataArray, decoded: xr.DataArray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref, dec = reference.isel({d: 0 for d in reference.dims[:-2]}), decoded.isel({d: 0 for d in decoded.dims[:-2]})
    err = dec - ref
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), constrained_layout=True)
    lo, hi = float(ref.min()), float(ref.max())
    lim = float(np.nanmax(np.abs(err.values)))
    for ax, field, name, kw in (
        (axes[0], ref, "original", {"vmin": lo, "vmax": hi, "cmap": "viridis"}),
        (axes[1], dec, "reconstruction", {"vmin": lo, "vmax": hi, "cmap": "viridis"}),
        (axes[2], err, "error", {"vmin": -lim, "vmax": lim, "cmap": "RdBu_r"}),
    ):
        im = ax.pcolormesh(field[field.dims[1]], field[field.dims[0]], field.values, shading="auto", **kw)
        ax.set_title(name)
        ax.set_xlabel(field.dims[1])
        ax.set_ylabel(field.dims[0])
        fig.colorbar(im, ax=ax, label=reference.attrs.get("units", ""))
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train_inr(cfg: Config, stage) -> Path:
    """Stages 1-3 for an INR: meta-train, latents, coders; the artifact with coders."""
    print(f"[1/5] meta-training a {cfg.model.conditioning} INR on {cfg.data.variable} ({cfg.meta.steps} outer steps)", flush=True)
    s = time.perf_counter()
    inr = meta_train.fit(cfg).artifact
    stage("meta-train", s)
    print(f"[2/5] adapting fields to latents ({cfg.latents.inner_steps} inner steps)", flush=True)
    s = time.perf_counter()
    build_latents.build(cfg, model=str(inr))
    stage("latents", s)
    lambdas = cfg.coder.lambdas or f"{cfg.coder.levels}, from the data's rate-distortion slope"
    print(f"[3/5] training latent coders (lambdas {lambdas})", flush=True)
    s = time.perf_counter()
    coded = train_coder.fit(cfg, model=str(inr))
    stage("coders", s)
    return coded


def train(cfg: Config, stage) -> Path:
    """Stages 1-3 for ``cfg``'s kind of model; the artifact with its quality levels."""
    s = time.perf_counter()
    if cfg.model.kind == "linear":
        print(f"[1-3/5] fitting the linear model (up to {cfg.basis.components} EOFs, levels for "
              f"{cfg.basis.target_psnr} dB)", flush=True)
        coded = fit_basis.fit(cfg)
    elif cfg.model.kind == "hybrid":
        print(f"[1-3/5] fitting the hybrid model (the linear model, an INR on what its {cfg.model.residual_components} "
              "leading EOFs leave, hybrid levels)", flush=True)
        coded = fit_hybrid.fit(cfg)
    else:
        return train_inr(cfg, stage)
    stage(f"fit {cfg.model.kind}", s)
    return coded


def main(argv: list[str] | None = None) -> int:
    p = config_parser("python -m pipelines.main_job", __doc__, "YAML run config (configs/*.yaml)", "meta.steps=50")
    p.add_argument("--out", default="out", help="folder for the Zarr stores and the figure (default: out)")
    p.add_argument("--kinds", default=",".join(KINDS),
                   help=f"models to train and compare, comma-separated among {', '.join(KINDS)} (default: all)")
    args = p.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds or set(kinds) - set(KINDS):
        p.error(f"--kinds takes a comma-separated list among {', '.join(KINDS)}, got {args.kinds!r}")
    base = load(args)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    times = {}
    rows, models = [], []

    def stage(name: str, start: float) -> None:
        times[name] = time.perf_counter() - start

    for kind in kinds:
        cfg = dataclasses.replace(base, model=dataclasses.replace(base.model, kind=kind))
        print(f"\n== {kind} model", flush=True)
        coded = train(cfg, stage)
        print(f"[4/5] compressing the held-out fields into Zarr, one store per level of the {kind} model's ladder",
              flush=True)
        s = time.perf_counter()
        rows += compress_and_report(cfg, coded, out_dir)
        stage(f"compress+report {kind}", s)
        models.append(load_artifact(coded))

    print("\n[5/5] held-out test fields reopened with xarray")
    for art in models:
        how = "closed form" if art.model is None else f"{art.metrics['inner_steps']} inner steps"
        print(f"  {art.config.model.kind} model {art.hash[:16]}: unquantised {art.metrics['test_psnr']:.2f} dB ({how})")
    print(report_table(rows))
    art = models[0]
    print(f"PSNR over the normalisation range [{art.normaliser.lo:.2f}, {art.normaliser.hi:.2f}]; "
          "errors in the data's units; bytes are the chunks as stored (the model stored once beside them is not counted).")
    best = max(rows, key=lambda r: r["psnr_db"])
    reference = held_out(art.config, art.split).load()
    figure = out_dir / f"{base.name}-{best['model']}-{best['quality']}.png"
    plot_field(reference, open_zarr(best["store"])[reference.name], figure,
               f"{base.name}: first held-out field, {best['model']} model, quality {best['quality']} "
               f"({best['bits_per_value']:.3f} bits/value, {best['psnr_db']:.1f} dB)")
    print(f"figure: {figure}")
    print("stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f"; total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
