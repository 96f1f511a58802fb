"""Coder training: the loss is measured on the data through a frozen INR and moves only
the coders; a tiny end-to-end run writes an artifact with every quality level."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vcinr_sci.coding.coder import LatentCoder
from vcinr_sci.coding.transform import GaussianLatentCoder
from vcinr_sci.config import load_config
from vcinr_sci.data.grids import RegularGrid
from vcinr_sci.data.items import load_dataset
from vcinr_sci.errors import ConfigError
from vcinr_sci.model.artifact import ModelArtifact, build_model, load_artifact, save_artifact
from vcinr_sci.model.coder_training import coder_losses, distortion_on_data, freeze, train_step
from vcinr_sci.model.meta import masked_mse
from vcinr_sci.model.training import train_in_process

pytestmark = pytest.mark.slow  # an end-to-end run of a Ray pipeline

REPO = Path(__file__).resolve().parents[1]


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_distortion_on_data_trains_coders_only():
    torch.manual_seed(0)
    cfg = load_config(REPO / "configs" / "tiny.yaml")
    grid = RegularGrid([12, 10])
    model = freeze(build_model(cfg, grid))
    d, b = cfg.model.latent_dim, 6
    coords = torch.from_numpy(grid.coords().reshape(-1, 2)).unsqueeze(0).expand(b, -1, -1).contiguous()
    values = torch.rand(b, coords.shape[1], 1)
    mask = torch.ones_like(values, dtype=torch.bool)
    mask[0, :5] = False
    phi = torch.randn(b, d)
    coders = [LatentCoder(d, dim_y=4, width=16, blocks=1) for _ in range(2)]
    for c in coders:
        c.set_stats(torch.randn(64, d))

    # One decode for all coders equals decoding each coder's latents on its own.
    phis = [torch.randn(b, d) for _ in coders]
    joint = distortion_on_data(model, coords, values, mask, phis)
    for k, p in enumerate(phis):
        torch.testing.assert_close(joint[k], masked_mse(model.decode(coords, p), values, mask))

    # The distortion is on the data: other data, other loss (phi and coders unchanged).
    torch.manual_seed(1)
    loss_a, _ = coder_losses(model, coders, [10.0, 100.0], phi, (coords, values, mask), b * coords.shape[1])
    torch.manual_seed(1)
    loss_b, _ = coder_losses(model, coders, [10.0, 100.0], phi, (coords, values + 0.3, mask), b * coords.shape[1])
    assert not torch.isclose(loss_a, loss_b)

    inr_before, coders_before = _snapshot(model), [_snapshot(c) for c in coders]
    main = torch.optim.Adam([p for c in coders for p in c.parameters_main()], lr=1e-2)
    aux = torch.optim.Adam([p for c in coders for p in c.parameters_aux()], lr=1e-2)
    for _ in range(3):
        stats = train_step(model, coders, [10.0, 100.0], main, aux, phi, (coords, values, mask), b * coords.shape[1])
    assert len(stats) == 2 and all(np.isfinite(s["loss"]) and s["bpv"] > 0 for s in stats)

    # The INR is frozen: no parameter takes gradients, none changed, none has a .grad.
    assert not any(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    for k, v in _snapshot(model).items():
        assert torch.equal(v, inr_before[k]), k
    # Every part of every coder moved: g_a, g_s, the entropy model and its quantiles.
    for coder, before in zip(coders, coders_before):
        after = _snapshot(coder)
        for prefix in ("g_a.", "g_s.", "entropy_bottleneck.matrices", "entropy_bottleneck.quantiles"):
            keys = [k for k in after if k.startswith(prefix)]
            assert keys and any(not torch.equal(after[k], before[k]) for k in keys), prefix
        assert torch.equal(after["phi_mean"], before["phi_mean"])  # statistics, not trained


def test_train_coder_end_to_end(ray_session, tmp_path):
    from pipelines.build_latents import build
    from pipelines.train_coder import fit

    cfg = load_config(
        REPO / "configs" / "tiny.yaml",
        {
            "train.storage_path": str(tmp_path / "runs"),
            "train.artifact_dir": str(tmp_path / "artifacts"),
            "latents.output_dir": str(tmp_path / "latents"),
            "latents.shard_fields": 96,
            "latents.inner_steps": 3,
            "coder.kind": "learned",
            "coder.lambdas": [1000.0, 1.0],
            "coder.dim_y": 8,
            "coder.width": 16,
            "coder.blocks": 1,
            "coder.steps": 12,
            "coder.batch_size": 16,
            "coder.points_per_step": 128,
            "coder.eval_every": 6,
            "coder.eval_items": 8,
            "coder.log_every": 6,
            "coder.checkpoint_every": 6,
            "coder.uniform_bits": [2, 8],
        },
    )
    data = load_dataset(cfg.data)
    torch.manual_seed(0)
    inr = ModelArtifact(build_model(cfg, data.grid).eval(), cfg, data.grid, data.normaliser, data.split.to_dict())
    inr_path = save_artifact(inr, cfg.train.artifact_dir)
    build(cfg, str(inr_path), quiet=True)

    out = fit(cfg, str(inr_path))
    art = load_artifact(out)
    assert art.hash != inr.hash and out != inr_path
    # Every level was measured on the validation latents; a learned coder that another
    # level beats in both bits and PSNR is dropped, the rest are q0.. from fewest bits up.
    info, dropped = art.metrics["coders"], art.metrics["dropped_coders"]
    learned = [q for q in art.quality_levels if q.startswith("q")]
    assert learned == [f"q{i}" for i in range(len(learned))] and len(learned) + len(dropped) == 2
    assert {info[q]["lambda"] for q in learned} | {d["lambda"] for d in dropped} == {1.0, 1000.0}
    assert all(d["dominated_by"] in art.quality_levels for d in dropped)
    assert {"u2", "u8"} <= set(art.quality_levels)  # the baselines stay, in the ladder or not
    assert all(info[q]["bit_exact"] for q in art.quality_levels)
    assert art.config.coder.lambdas == [1000.0, 1.0]
    _assert_monotone(art)
    # Same INR as the input artifact, bit for bit.
    for k, v in inr.model.state_dict().items():
        assert torch.equal(art.model.state_dict()[k], v), k
    # The stored coders decode their own bytes exactly.
    phi = torch.randn(5, cfg.model.latent_dim) * 0.01
    for level in art.quality_levels:
        coder = art.coder(level)
        assert torch.equal(coder.decompress(coder.compress(phi), 5), coder.quantise(phi)), level

    # The benchmark reads the new artifact: bits from bytes, a bit-exact round trip per level.
    from vcinr_sci.bench.rd import main as bench_rd

    assert bench_rd(["--model", str(out), "--items", "6", "--chunk-items", "4", "--json", str(tmp_path / "rd.json")]) == 0
    result = json.loads((tmp_path / "rd.json").read_text())
    levels = {r["level"]: r for r in result["rows"]}
    assert set(levels) == {"float32", *learned, "u2", "u2-packed", "u8", "u8-packed"}
    assert all(r["bit_exact"] for k, r in levels.items() if k != "float32")
    # Packed 2-bit indices: 2 bits per latent dim, one string per 4 items (ceil to bytes).
    d, per_item = cfg.model.latent_dim, result["values"] // 6
    assert levels["u2-packed"]["bytes"] == 2 * d * 4 // 8 + 2 * d * 2 // 8
    assert levels["u2-packed"]["bpv"] == pytest.approx(8 * levels["u2-packed"]["bytes"] / (6 * per_item))


def test_gaussian_coders_end_to_end(ray_session, tmp_path):
    """coder.kind gaussian: one transform fitted on the tiny INR's training latents, one
    level per bits target, distinct and ordered on the tuning items, spanning >= 4x in
    rate, stored and decoded from the artifact; lambdas with it are refused."""
    from pipelines.build_latents import build
    from pipelines.train_coder import fit

    cfg = load_config(REPO / "configs" / "tiny.yaml", {
        "train.storage_path": str(tmp_path / "runs"), "train.artifact_dir": str(tmp_path / "artifacts"),
        "latents.output_dir": str(tmp_path / "latents"), "latents.inner_steps": 3,
        "coder.kind": "gaussian", "coder.lambdas": [], "coder.gaussian_bits": [0.5, 1, 2, 4], "coder.metric_items": 16,
        "coder.uniform_bits": [2],
    })
    torch.manual_seed(0)
    inr, _ = train_in_process(cfg, steps=40)  # latents that matter: an untrained INR ignores them
    inr_path = save_artifact(inr, cfg.train.artifact_dir)
    build(cfg, str(inr_path), quiet=True)
    with pytest.raises(ConfigError, match="coder.lambdas"):
        fit(dataclasses.replace(cfg, coder=dataclasses.replace(cfg.coder, lambdas=[10.0])), str(inr_path))
    art = load_artifact(fit(cfg, str(inr_path)))
    info = art.metrics["coders"]
    levels = [q for q in art.quality_levels if q.startswith("q")]
    assert len(levels) >= 3  # a level past where the INR stops gaining is dropped
    points = art.metrics["ladder"]["points"]
    bits = [points[q]["bits_per_value"] for q in levels]
    psnr = [points[q]["psnr"] for q in levels]
    assert bits == sorted(bits) and psnr == sorted(psnr) and len(set(bits)) == len(bits)
    assert bits[-1] > 4 * bits[0]
    steps = [info[q]["step"] for q in levels]
    assert steps == sorted(steps, reverse=True)
    for q in levels:  # each level lands near its target bits per latent dimension
        assert info[q]["val_bits_per_dim"] == pytest.approx(info[q]["target_bits_per_dim"], rel=0.5, abs=0.3)
    phi = torch.randn(5, cfg.model.latent_dim) * 0.01
    for q in levels:
        coder = art.coder(q)
        assert isinstance(coder, GaussianLatentCoder)
        assert torch.equal(coder.decompress(coder.compress(phi), 5), coder.quantise(phi))
    _assert_monotone(art)


def _assert_monotone(art) -> None:
    """The recorded ladder: each level up spends more bits for more PSNR, and every
    other measured level is dominated by one of it."""
    ladder = art.metrics["ladder"]
    points = ladder["points"]
    assert art.ladder == ladder["levels"] and set(points) == set(art.quality_levels)
    for lo, hi in zip(art.ladder, art.ladder[1:]):
        assert points[lo]["bits_per_value"] < points[hi]["bits_per_value"] and points[lo]["psnr"] < points[hi]["psnr"]
    for level, p in points.items():
        assert (level in art.ladder) != ("dominated_by" in p)


def test_coders_without_validation_latents_or_lambdas(tiny_without_validation, tmp_path, capsys):
    """data.val_fraction 0: the end of the training part is held out of the coders'
    training and tunes them; the lambdas come from the measured slope; the stored
    ladder of the trained tiny model is monotone."""
    from pipelines.build_latents import build
    from pipelines.train_coder import fit

    _, trained, _ = tiny_without_validation  # the tiny INR meta-trained without a validation part
    cfg = load_config(
        REPO / "configs" / "tiny.yaml",
        {
            "data.val_fraction": 0,
            "train.storage_path": str(tmp_path / "runs"),
            "train.artifact_dir": str(tmp_path / "artifacts"),
            "latents.output_dir": str(tmp_path / "latents"),
            "coder.lambdas": [],
            "coder.levels": 2,
            "coder.uniform_bits": [2, 4, 8],
        },
    )
    inr_path = trained.artifact
    build(cfg, str(inr_path), quiet=True)
    art = load_artifact(fit(cfg, str(inr_path)))
    printed = capsys.readouterr().out
    assert "data.val_fraction is 0: holding out the last 22 of 216 training time positions" in printed
    assert "rate-distortion slope on 22 tuning items" in printed
    assert art.metrics["tuning"] == {"part": "held out of train", "dim": "time", "positions": list(range(194, 216))}
    assert "22 tuning items" in art.metrics["ladder"]["measured_on"]
    lambdas = [c["lambda"] for c in art.metrics["coders"].values() if "lambda" in c]
    lambdas += [d["lambda"] for d in art.metrics["dropped_coders"]]
    assert len(lambdas) >= 1 and art.config.coder.lambdas == []
    _assert_monotone(art)
