"""The main job, end to end on one config, for each kind of model asked for (``--kinds``,
default the config's ``model.kind``; the demo asks for all three, so that one table shows
what each buys).

    python -m pipelines.main_job --config configs/demo.yaml [--kinds inr,linear,hybrid] [--variables A,B]

For each kind and each variable of the run (``compress.variables``, default
``[data.variable]``; the input may be a list or glob of files, see ``data.paths``):

1. meta-train the shared INR (Ray Train),
2. adapt every training/validation field to its latent (Ray Data, latent shards),
3. train one latent coder per lambda (Ray Train) and store them in the model artifact,
   (a linear model, ``model.kind: linear``, replaces 1-3 by ``pipelines.fit_basis``:
   the training mean and EOFs, one coefficient coder per target PSNR; a hybrid,
   ``pipelines.fit_hybrid``: the linear model, then 1-3 on what its leading EOFs leave);

then, per kind, for every level of the ladder that each variable's model has:

4. compress the held-out test fields of every variable, each with its own model, into
   one local Zarr store per level (``pipelines.compress`` on Ray Data, the models stored
   inside),
5. reopen each store with xarray, print size, bits per value and errors per variable,
   and draw the original, reconstruction and error of one field of each variable at
   its best level to a PNG.

Every stage skips what an earlier run finished, so a rerun after a kill resumes.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

from pipelines import build_latents, compress, fit_basis, fit_hybrid, meta_train, train_coder
from pipelines.cli_args import config_parser, load
from pipelines.run_variables import run_variables, variable_config
from vcinr_sci.config import Config
from vcinr_sci.data.sources import open_variable
from vcinr_sci.errors import ConfigError
from vcinr_sci.io.accessor import open_zarr
from vcinr_sci.model.artifact import ModelArtifact, load_artifact


def held_out(cfg: Config, split: dict) -> xr.DataArray:
    """The test fields of the model's split, as an xarray variable."""
    da = open_variable(cfg.data)
    return da.isel({split["dim"]: split["positions"]["test"]})


def common_levels(arts: dict[str, ModelArtifact]) -> list[str]:
    """The levels of the first variable's ladder that every variable's model has."""
    first = next(iter(arts.values()))
    return [q for q in first.ladder if all(q in a.ladder for a in arts.values())]


def held_out_job(cfg: Config, coded: dict[str, Path], split: dict, level: str, store: Path) -> Config:
    """The compress job of the held-out test fields: every variable with its model
    (``coded``), at ``level``, into ``store``."""
    isel = cfg.data.isel | {split["dim"]: split["positions"]["test"]}
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, isel=isel),
        compress=dataclasses.replace(cfg.compress, paths=[], variables=list(coded), output=str(store), quality=level,
                                     models={v: str(p) for v, p in coded.items()}, store_model=True, measure=True),
    )


KINDS = ("inr", "linear", "hybrid")


def compress_and_report(cfg: Config, coded: dict[str, Path], out_dir: Path) -> list[dict]:
    """One store per common level (:func:`common_levels`) of every variable's held-out
    test fields, each variable coded with its model (``coded``, of ``cfg``'s kind); a
    row of figures per variable and level."""
    arts = {v: load_artifact(p) for v, p in coded.items()}
    split = next(iter(arts.values())).split
    if any(a.split != split for a in arts.values()):
        raise ConfigError(f"the models of {list(arts)} hold out different test fields: one store cannot hold them")
    levels = common_levels(arts)
    if not levels:
        raise ConfigError(f"the models of {list(arts)} have no level of their ladders in common")
    references = {v: held_out(a.config, a.split).load() for v, a in arts.items()}
    rows = []
    for level in levels:
        store = out_dir / f"{cfg.name}-{cfg.model.kind}-{level}.zarr"
        compress.compress(held_out_job(cfg, coded, split, level, store), replace=True)
        decoded = open_zarr(store)
        for v, art in arts.items():
            report = decoded[v].vcinr.error_report(references[v], data_range=art.normaliser.hi - art.normaliser.lo)
            stored = decoded[v].vcinr.attrs
            rows.append(
                {
                    "model": cfg.model.kind,
                    "variable": v,
                    "quality": level,
                    "store": str(store),
                    "bits_per_value": stored["vcinr_bits_per_value"],
                    "ratio_vs_float32": stored["vcinr_compression_ratio"],
                    **report,
                }
            )
    return rows


def report_table(rows: list[dict]) -> str:
    """The held-out figures per model kind, variable and quality level as a markdown
    table ("-" where a figure does not apply: no latitude-weighted RMSE on a grid
    without latitudes)."""

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [
        "| model | variable | quality | bits/value | ratio vs float32 | PSNR (dB) | RMSE | lat-weighted RMSE | max abs error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['variable']} | {r['quality']} | {num(r['bits_per_value'], '.4f')} | "
            f"{num(r['ratio_vs_float32'], '.0f')} | {num(r['psnr_db'], '.2f')} | {num(r['rmse'], '.3f')} | "
            f"{num(r['lat_weighted_rmse'], '.3f')} | {num(r['max_abs_error'], '.3f')} |"
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
    if cfg.coder.kind == "gaussian":
        print(f"[3/5] fitting the Gaussian latent coder ({cfg.coder.gaussian_bits} bits per latent dimension)", flush=True)
    else:
        lambdas = cfg.coder.lambdas or f"{cfg.coder.levels}, from the data's rate-distortion slope"
        print(f"[3/5] training latent coders (lambdas {lambdas})", flush=True)
    s = time.perf_counter()
    coded = train_coder.fit(cfg, model=str(inr))
    stage("coders", s)
    return coded


def train(cfg: Config, stage) -> dict[str, Path]:
    """Stages 1-3 for ``cfg``'s kind of model, a model per variable: variable -> the
    artifact with its quality levels."""
    variables = run_variables(cfg)
    s = time.perf_counter()
    if cfg.model.kind == "linear":
        print(f"[1-3/5] fitting a linear model per variable (up to {cfg.basis.components} EOFs, levels for "
              f"{cfg.basis.target_psnr} dB)", flush=True)
        coded = fit_basis.fit_variables(cfg)
    elif cfg.model.kind == "hybrid":
        print(f"[1-3/5] fitting a hybrid model per variable (the linear model, an INR on what its "
              f"{cfg.model.residual_components} leading EOFs leave, hybrid levels)", flush=True)
        coded = {v: fit_hybrid.fit(variable_config(cfg, v)) for v in variables}
    else:
        return {v: train_inr(variable_config(cfg, v), stage) for v in variables}
    stage(f"fit {cfg.model.kind}", s)
    return coded


def main(argv: list[str] | None = None) -> int:
    p = config_parser("python -m pipelines.main_job", __doc__, "YAML run config (configs/*.yaml)", "meta.steps=50",
                      variables_help="variables to model and compress into each store, each with its own model")
    p.add_argument("--out", default="out", help="folder for the Zarr stores and the figures (default: out)")
    p.add_argument("--kinds", default="",
                   help=f"models to train and compare, comma-separated among {', '.join(KINDS)} "
                        "(default: the config's model.kind; the demo compares all three)")
    args = p.parse_args(argv)
    base = load(args)
    kinds = [k.strip() for k in (args.kinds or base.model.kind).split(",") if k.strip()]
    if not kinds or set(kinds) - set(KINDS):
        p.error(f"--kinds takes a comma-separated list among {', '.join(KINDS)}, got {args.kinds!r}")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    times: dict[str, float] = {}

    def stage(name: str, start: float) -> None:
        times[name] = times.get(name, 0.0) + time.perf_counter() - start

    rows, models = [], {}
    for kind in kinds:
        cfg = dataclasses.replace(base, model=dataclasses.replace(base.model, kind=kind))
        print(f"\n== {kind} model", flush=True)
        coded = train(cfg, stage)
        print(f"[4/5] compressing the held-out fields into Zarr, one store per level of the {kind} models' ladders",
              flush=True)
        s = time.perf_counter()
        rows += compress_and_report(cfg, coded, out_dir)
        stage(f"compress+report {kind}", s)
        models[kind] = coded

    print("\n[5/5] held-out test fields reopened with xarray")
    for kind, coded in models.items():
        for v, path in coded.items():
            art = load_artifact(path)
            how = "closed form" if art.model is None else f"{art.metrics['inner_steps']} inner steps"
            print(f"  {kind} model of {v}: {art.hash[:16]}, unquantised {art.metrics['test_psnr']:.2f} dB ({how}); "
                  f"PSNR over its normalisation range [{art.normaliser.lo:.2f}, {art.normaliser.hi:.2f}]")
    print(report_table(rows))
    print("errors in the data's units; bytes are the chunks as stored (the models stored once beside them are not counted).")
    for v in run_variables(base):
        best = max((r for r in rows if r["variable"] == v), key=lambda r: r["psnr_db"])
        art = load_artifact(models[best["model"]][v])
        reference = held_out(art.config, art.split).load()
        figure = out_dir / f"{base.name}-{v}-{best['model']}-{best['quality']}.png"
        plot_field(reference, open_zarr(best["store"])[v], figure,
                   f"{base.name}: {v}, first held-out field, {best['model']} model, quality {best['quality']} "
                   f"({best['bits_per_value']:.3f} bits/value, {best['psnr_db']:.1f} dB)")
        print(f"figure: {figure}")
    print("stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f"; total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
