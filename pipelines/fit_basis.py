"""Fit a linear model (``model.kind: linear``): the training mean item and leading EOFs,
and one coefficient coder per target PSNR, into a model artifact.

    python -m pipelines.fit_basis --config configs/suite-ccsm.yaml --set model.kind=linear
    vcinr fit-basis --config C --variables t2m,msl   # one model per variable

One model per variable of the run (``compress.variables``, default ``[data.variable]``;
:mod:`pipelines.run_variables`), each fitted from the config with ``data.variable`` set
to it, so that ``vcinr compress`` with the same config finds each variable's model.
For each:

1. the basis (:class:`~vcinr_sci.model.basis.LinearBasis`) from the training part of the
   split (fitted on up to ``basis.max_fit_items`` items: an exact SVD, or with
   ``basis.fit: streamed``, or ``auto`` on large data, a randomized range finder over
   blocks of items on Ray Data, :mod:`pipelines.streamed_basis`; every training item's
   coefficients give each component's deviation and lag-1 correlation);
2. per ``basis.target_psnr``, the one quantisation step whose reconstruction of the
   validation items reaches it (bisection; with no validation part, on the last tenth
   of the training part, held out of the fit: :mod:`vcinr_sci.data.holdout`), a
   :class:`~vcinr_sci.coding.coefficients.CoefficientCoder` for it, labelled ``q0``..
   from the lowest target up; components whose training deviation is under an eighth
   of the finest step (their coefficients round to 0 at every level) are dropped, so
   the model file and the FLOPs hold only components some level codes;
3. the artifact, with the unquantised test PSNR and, per level, the validation PSNR and
   bits per value of the coefficient strings in chunks of ``compress.chunk_fields``; a
   level that spends more bits than another for no more PSNR is dropped, and the
   ladder of the rest recorded (:meth:`~vcinr_sci.model.artifact.ModelArtifact.set_ladder`).

Deterministic: a rerun writes the same artifact (same hash) and skips nothing else.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from pipelines.cli_args import config_parser, load
from pipelines.run_variables import run_variables, variable_config
from pipelines.streamed_basis import fit_streamed, lazy_training_items
from vcinr_sci.coding.coefficients import CoefficientCoder, min_step
from vcinr_sci.coding.rate_control import LIMIT_GAP_DB
from vcinr_sci.config import Config
from vcinr_sci.data.holdout import tuning_split
from vcinr_sci.data.items import Dataset, ItemSet, load_dataset
from vcinr_sci.errors import ConfigError
from vcinr_sci.metrics import bits_per_value, psnr_from_mse
from vcinr_sci.model.artifact import ModelArtifact, pareto_ladder, save_artifact
from vcinr_sci.model.basis import LinearBasis, fitted_items

_MAX_STEP = 1.0  # normalised units; the data's whole range is ~1
# A component whose deviation is under this many steps rounds to 0 (|c| > step / 2 is a
# 4-sigma event) at every level: it is dropped from the model.
_PRUNE_BELOW_STEP = 0.125
_BISECTIONS = 24  # on log(step) over [finest, 1]: well under 0.1 % apart at the end
# basis.fit: auto fits exactly up to this many bytes of fitted items in float64: the
# SVD's copies then take a few GiB at most, and seconds.
_EXACT_BYTES = 2 * 2**30


def fit_variables(cfg: Config) -> dict[str, Path]:
    """:func:`fit` for each of the run's variables; returns each one's artifact folder."""
    variables = run_variables(cfg)
    out = {}
    for i, variable in enumerate(variables):
        if len(variables) > 1:
            print(f"variable {variable} ({i + 1}/{len(variables)})", flush=True)
        out[variable] = fit(variable_config(cfg, variable))
    return out


def fit(cfg: Config) -> Path:
    """Fit, score and save the linear model of ``cfg`` (its ``data.variable``); returns
    the artifact folder."""
    if cfg.model.kind != "linear":
        raise ConfigError(f"pipelines.fit_basis fits model.kind 'linear', the config says {cfg.model.kind!r}")
    if not cfg.basis.target_psnr:
        raise ConfigError("basis.target_psnr is empty: no quality level to make")
    data = load_dataset(cfg.data)
    part = tuning_split(data.split, data.source)
    print(f"data split along {data.split.describe()}", flush=True)
    print(part.note, flush=True)
    basis = fit_linear_basis(cfg, data)
    score = {"chunk_items": cfg.compress.chunk_fields, "predict": cfg.basis.predict}
    tune = Scored(basis, data.items("val", part.tune), **score)
    print(f"[2/3] {basis.num_components} components; steps for {cfg.basis.target_psnr} dB on "
          f"{len(tune.items)} held-out items", flush=True)
    steps: dict[float, float] = {}  # target -> step, distinct steps only
    limit = tune.psnr(None) - LIMIT_GAP_DB
    for target in sorted(cfg.basis.target_psnr):
        if target > limit:
            print(f"  target {target:g} dB is beyond what {basis.num_components} components reach on these items: "
                  f"aiming at {limit:.2f} dB")
        step = tune.step_for(min(float(target), limit), min_step(basis.scales))
        if step in steps.values():
            print(f"  target {target:g} dB: the same step as the level before (the model's limit); no new level")
            continue
        steps[float(target)] = step
    keep = basis.scales >= min(steps.values()) * _PRUNE_BELOW_STEP
    if not keep.all():
        print(f"  dropping {int((~keep).sum())} of {basis.num_components} components: no level codes them")
        basis = basis.subset(keep)
        tune = Scored(basis, tune.items, **score)
    test = Scored(basis, data.items("test"), **score) if len(data.split.test) else None
    artifact = ModelArtifact(None, cfg, data.grid, data.normaliser, data.split.to_dict(), {
        "components": basis.num_components,
        "test_psnr": test.psnr(None) if test else math.nan,
        "test_items": len(test.items) if test else 0,
        "inner_steps": 0,
        "latents_inner_steps": 0,
        "tuning": part.to_dict(),
    })
    artifact.set_basis(basis)
    # target -> (step, bits per value, PSNR); a level named by its target until labelled
    scored = {t: (step, tune.bits_per_value(tune.coder(step)), tune.psnr(step)) for t, step in steps.items()}
    _, dominated = pareto_ladder({f"{t:g} dB": (bpv, psnr) for t, (_, bpv, psnr) in scored.items()})
    levels: dict[str, dict] = {}
    for t, (step, bpv, psnr) in scored.items():
        if f"{t:g} dB" in dominated:
            print(f"  target {t:g} dB: step {step:.3g} -> {psnr:.2f} dB at {bpv:.4f} bits/value, "
                  f"dominated by the level for {dominated[f'{t:g} dB']}: dropped", flush=True)
            continue
        label = f"q{len(levels)}"
        artifact.add_coder(label, tune.coder(step))
        levels[label] = {"target_psnr": t, "step": step, "val_psnr": psnr, "val_bits_per_value": bpv}
        print(f"  {label}: step {step:.3g} -> {psnr:.2f} dB at {bpv:.4f} bits/value (target {t:g} dB)", flush=True)
    artifact.metrics["levels"] = levels
    artifact.set_ladder({k: (v["val_bits_per_value"], v["val_psnr"]) for k, v in levels.items()},
                        f"{len(tune.items)} tuning items ({part.to_dict()['part']}), chunks of {tune.chunk_items} items")
    path = save_artifact(artifact, cfg.train.artifact_dir)
    if test:
        print(f"held-out test PSNR {artifact.metrics['test_psnr']:.2f} dB unquantised over {len(test.items)} items")
    print(f"[3/3] model artifact {artifact.hash[:16]} -> {path}", flush=True)
    return path


def fit_linear_basis(cfg: Config, data: Dataset) -> LinearBasis:
    """The basis of ``cfg`` on the training items of ``data`` (less any tuning block),
    fitted as ``basis.fit`` says: ``auto`` is exact while the fitted items take at most
    ``_EXACT_BYTES`` in float64, streamed on Ray beyond."""
    items = lazy_training_items(data)  # nothing read yet
    fitted = len(fitted_items(len(items), cfg.basis.max_fit_items)) * items.points_per_item * 8
    how = cfg.basis.fit if cfg.basis.fit != "auto" else "exact" if fitted <= _EXACT_BYTES else "streamed"
    print(f"[1/3] fitting up to {cfg.basis.components} EOFs on {len(items)} training items "
          f"({items.points_per_item} points each), {how} ({fitted / 2**20:.0f} MiB of fitted items in float64)", flush=True)
    if how == "streamed":
        return fit_streamed(cfg, data).basis
    train = data.items("train", items.fields)  # with the data section's cache
    return LinearBasis.fit(train.values, len(train), cfg.basis.components, cfg.basis.max_fit_items)


class Scored:
    """Items (valid points, their coefficients) on which steps are scored, coded as the
    codec codes them: in chunks of ``chunk_items`` by a coefficient coder of each step."""

    def __init__(self, basis: LinearBasis, items: ItemSet, chunk_items: int, predict: bool):
        self.basis, self.items, self.chunk_items, self.predict = basis, items, max(1, chunk_items), predict
        self.values = items.values(np.arange(len(items))).astype(np.float64)
        self.valid = np.isfinite(self.values)
        self.coefficients = basis.coefficients(self.values, self.valid)

    def _chunks(self):
        for start in range(0, len(self.coefficients), self.chunk_items):
            yield self.coefficients[start : start + self.chunk_items]

    def coder(self, step: float) -> CoefficientCoder:
        return CoefficientCoder(self.basis.scales, self.basis.rho, step, self.predict)

    def psnr(self, step: float | None) -> float:
        """PSNR (dB, normalised range) of the items as decoded at ``step`` (None:
        unquantised coefficients)."""
        if step is None:
            c = self.coefficients
        else:
            coder = self.coder(step)
            c = np.concatenate([coder.quantise(chunk).numpy() for chunk in self._chunks()])
        err = np.where(self.valid, self.basis.reconstruct(c) - self.values, 0.0)
        return float(psnr_from_mse((err**2).sum() / max(1, self.valid.sum())))

    def step_for(self, target: float, finest: float) -> float:
        """The largest step in ``[finest, 1]`` whose PSNR reaches ``target`` (``finest``
        when none does; 1 when even that one does)."""
        lo, hi = math.log(finest), math.log(_MAX_STEP)
        if self.psnr(math.exp(lo)) < target:
            return math.exp(lo)
        if self.psnr(math.exp(hi)) >= target:
            return math.exp(hi)
        for _ in range(_BISECTIONS):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.psnr(math.exp(mid)) >= target else (lo, mid)
        return math.exp(lo)

    def bits_per_value(self, coder: CoefficientCoder) -> float:
        """Bits per value of the coefficient strings, chunk by chunk."""
        size = sum(len(coder.compress(chunk)) for chunk in self._chunks())
        return bits_per_value(size, self.values.size)


def main(argv: list[str] | None = None) -> int:
    args = config_parser("vcinr fit-basis", __doc__, "YAML run config with model.kind: linear", "basis.components=64",
                         variables_help="variables to fit a model for, one each").parse_args(argv)
    fit_variables(load(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
