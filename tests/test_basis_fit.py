"""The streamed linear basis fit: against the exact SVD on real data, in blocks of any
size, and on Ray Data with its sums kept per pass (a rerun resumes; a killed worker's
block is summed again)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from vcinr_sci.config import load_config
from vcinr_sci.errors import ArtifactError
from vcinr_sci.model.artifact import load_artifact
from vcinr_sci.model.basis import LinearBasis
from vcinr_sci.model.basis_fit import BlockPass, StreamedBasisFit, fit_in_blocks

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _items(config: str):
    """Training and validation items of a suite dataset, as fit_basis splits them."""
    from vcinr_sci.data.holdout import tuning_split
    from vcinr_sci.data.items import load_dataset

    data = load_dataset(load_config(CONFIGS / config, {"model.kind": "linear"}).data)
    part = tuning_split(data.split, data.source)
    return data.items("train", part.train), data.items("val", part.tune)


def _psnr(basis: LinearBasis, values: np.ndarray) -> float:
    valid = np.isfinite(values)
    err = np.where(valid, basis.reconstruct(basis.coefficients(values, valid)) - values, 0.0)
    return float(-10 * np.log10((err**2).sum() / valid.sum()))


@pytest.mark.parametrize(("config", "components"), [("suite-era5-uk.yaml", 16), ("suite-era5-uk.yaml", 128),
                                                    ("suite-era5-uk.yaml", 256), ("suite-ostia.yaml", 32)])
def test_streamed_fit_matches_the_exact_svd_on_real_data(shared_data, config, components):
    """ERA5 UK: 563 hourly fields of 1,617 points, the probe (256 + 64 columns) well short
    of the items at 256 components; OSTIA: land NaN, off the support."""
    train, val = _items(config)
    exact = LinearBasis.fit(train.values, len(train), components)
    streamed = fit_in_blocks(train.values, len(train), components, block_items=100)
    assert streamed.num_components == exact.num_components
    held_out = val.values(np.arange(len(val))).astype(np.float64)
    assert abs(_psnr(streamed, held_out) - _psnr(exact, held_out)) <= 0.05
    c = streamed.components.astype(np.float64)
    assert np.abs(c @ c.T - np.eye(len(c))).max() < 1e-5
    assert np.array_equal(np.abs(c).sum(axis=0) > 0, np.abs(exact.components).sum(axis=0) > 0)  # the same support
    assert np.array_equal(streamed.mean, exact.mean)
    np.testing.assert_allclose(streamed.scales[:8], exact.scales[:8], rtol=1e-4)  # the leading deviations


def low_rank_items(n=60, p=200, seed=0):
    rng = np.random.default_rng(seed)
    modes = rng.normal(size=(5, p))
    return rng.normal(size=p) + rng.normal(size=(n, 5)) * np.array([5.0, 3, 2, 1, 0.5]) @ modes


@pytest.mark.parametrize("block_items", [1, 7, 60])
def test_streamed_fit_drops_null_directions_and_sums_blocks_of_any_size(block_items):
    x = low_rank_items()
    exact = LinearBasis.fit(lambda i: x[i], len(x), max_components=8)
    streamed = fit_in_blocks(lambda i: x[i], len(x), 8, oversample=4, block_items=block_items)
    assert streamed.num_components == exact.num_components == 5
    assert np.allclose(np.abs(streamed.components @ exact.components.T), np.eye(5), atol=1e-4)  # the same EOFs
    # deviations and lag-1 correlations from sums joined across blocks, as the exact fit has them
    np.testing.assert_allclose(streamed.scales, exact.scales, rtol=1e-4)
    np.testing.assert_allclose(streamed.rho, exact.rho, atol=1e-4)


def test_streamed_fit_refuses_bad_items_and_bad_sums():
    x = low_rank_items().astype(np.float32)
    fit = StreamedBasisFit(len(x), x.shape[1], 4)
    x[3, 5] = np.inf
    with pytest.raises(ValueError, match="inf"):
        BlockPass(fit.next_pass, fit.inputs()).sums(x)
    with pytest.raises(ArtifactError, match="sums"):
        fit.finish({"sum": np.zeros(x.shape[1])})
    with pytest.raises(ArtifactError, match="summed 10 items"):
        fit.finish({"sum": np.zeros(x.shape[1]), "count": np.zeros(x.shape[1], np.int64), "items": np.array([10])})


# ---------------------------------------------------------------------- on Ray


def _tiny(tmp_path: Path, fit: str):
    overrides = {"model.kind": "linear", "basis.components": 32, "basis.target_psnr": [35, 40], "basis.fit": fit,
                 "basis.block_items": 64, "train.artifact_dir": str(tmp_path / f"art-{fit}"),
                 "train.storage_path": str(tmp_path / "runs")}
    return load_config(CONFIGS / "tiny.yaml", overrides)


def test_streamed_fit_on_ray_matches_exact_resumes_and_survives_a_killed_worker(ray_session, tmp_path, capsys, monkeypatch):
    from pipelines import fit_basis, streamed_basis

    exact = load_artifact(fit_basis.fit(_tiny(tmp_path, "exact")))
    streamed = load_artifact(fit_basis.fit(_tiny(tmp_path, "streamed")))
    # 192 training fields, 32 EOFs from a 96-column probe: the held-out PSNR at every level
    assert streamed.basis.num_components == exact.basis.num_components
    assert abs(streamed.metrics["test_psnr"] - exact.metrics["test_psnr"]) <= 0.05
    assert streamed.quality_levels == exact.quality_levels
    for q, level in exact.metrics["levels"].items():
        assert abs(streamed.metrics["levels"][q]["val_psnr"] - level["val_psnr"]) <= 0.05
    sums = sorted(p.name for p in (tmp_path / "runs" / "basis-fit").glob("*/*.npz"))
    assert sums == ["00-moments.npz", "01-range-1.npz", "02-range-2.npz", "03-range-3.npz", "04-coefficients.npz"]

    # A rerun takes every pass's sums from the run folder: the same artifact, no data read.
    capsys.readouterr()
    again = fit_basis.fit(_tiny(tmp_path, "streamed"))
    assert capsys.readouterr().out.count("sums taken from") == 5
    assert load_artifact(again).hash == streamed.hash

    # The driver killed after range-1: the rerun sums the other passes again; in range-2
    # a worker dies on its first block, Ray Data restarts it and sums that block again.
    folder = next((tmp_path / "runs" / "basis-fit").iterdir())
    for name in sums[2:]:
        (folder / name).unlink()
    marker = tmp_path / "died"

    def dies_once(batch, **kwargs):
        if kwargs["name"] == "range-2" and not marker.exists():
            marker.touch()
            os._exit(1)
        return block_sums(batch, **kwargs)

    block_sums = streamed_basis.block_sums
    monkeypatch.setattr(streamed_basis, "block_sums", dies_once)
    resumed = fit_basis.fit(_tiny(tmp_path, "streamed"))
    out = capsys.readouterr().out
    assert marker.exists() and out.count("sums taken from") == 2 and out.count("items summed") == 3
    assert load_artifact(resumed).hash == streamed.hash
