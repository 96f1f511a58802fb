"""Latent shards: atomic writing, reading, and a resumed build after a simulated failure."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from vcinr_sci.config import load_config
from vcinr_sci.data.items import load_dataset
from vcinr_sci.errors import LatentsError
from vcinr_sci.model.artifact import ModelArtifact, build_model, save_artifact
from vcinr_sci.model.latents import (
    complete_shards,
    missing_shards,
    plan_shards,
    read_shards,
    shard_path,
    shard_table,
    write_manifest,
    write_shard,
)

REPO = Path(__file__).resolve().parents[1]


def _manifest(parts: dict[str, int], shard_fields: int = 4, dim: int = 3) -> dict:
    return {"inr_key": "ab" * 32, "dataset": "d", "variable": "v", "inner_steps": 3, "shard_fields": shard_fields,
            "latent_dim": dim, "num_patches": 1, "parts": parts}


def _write(root: Path, part: str, index: int, start: int, stop: int, dim: int = 3) -> np.ndarray:
    n = stop - start
    phi = np.random.default_rng(index).normal(size=(n, dim)).astype(np.float32)
    pos = np.arange(start, stop)
    table = shard_table(phi, np.full(n, 30.0), dataset="d", variable="v", part=part, part_item=pos,
                        field=pos + 100, patch=np.zeros(n), item=pos + 100, keys=[{"time": int(i)} for i in pos])
    write_shard(shard_path(root, part, index), table)
    return phi


def test_shards_write_read_and_incomplete_ones(tmp_path, monkeypatch):
    write_manifest(tmp_path, _manifest({"train": 10}))
    assert plan_shards(10, 4) == [(0, 0, 4), (1, 4, 8), (2, 8, 10)]
    phis = [_write(tmp_path, "train", i, s, e) for i, s, e in plan_shards(10, 4)]
    table = read_shards(tmp_path, "train")
    np.testing.assert_array_equal(table.phi, np.concatenate(phis))
    np.testing.assert_array_equal(table.part_item, np.arange(10))
    assert table.field[0] == 100 and table.keys[9] == '{"time": 9}' and table.variable == "v"

    # A writer killed mid-write leaves only a temporary name: not complete, never read.
    def crash(tbl, where, **kw):
        Path(where).write_bytes(b"PAR1 half a parquet file")
        raise KeyboardInterrupt("killed")

    os.remove(shard_path(tmp_path, "train", 1))
    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path, "train", 1, 4, 8)
    monkeypatch.undo()
    assert not shard_path(tmp_path, "train", 1).exists()
    (tmp_path / "train" / ".tmp-shard-00001.parquet-dead").write_bytes(b"PAR1 leftover of a killed process")
    # A final name whose content is not Parquet (copied or truncated by other means) is not trusted.
    shard_path(tmp_path, "train", 2).write_bytes(b"truncated")
    assert sorted(complete_shards(tmp_path, "train")) == [0]
    assert missing_shards(tmp_path, "train", 10, 4) == [(1, 4, 8), (2, 8, 10)]
    with pytest.raises(LatentsError, match=r"shards \[1, 2\] of 3 are missing"):
        read_shards(tmp_path, "train")
    assert len(read_shards(tmp_path, "train", require_complete=False)) == 4


def test_manifest_refuses_another_plan_but_adds_parts(tmp_path):
    write_manifest(tmp_path, _manifest({"train": 10}))
    with pytest.raises(LatentsError, match="shard_fields"):
        write_manifest(tmp_path, _manifest({"train": 10}, shard_fields=5))
    with pytest.raises(LatentsError, match="parts.train"):
        write_manifest(tmp_path, _manifest({"train": 11}))
    assert write_manifest(tmp_path, _manifest({"val": 2}))["parts"] == {"train": 10, "val": 2}
    with pytest.raises(LatentsError, match="no part 'test'"):
        read_shards(tmp_path, "test")


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory):
    """An untrained tiny INR saved as an artifact (the shard mechanics do not need a trained one)."""
    cfg = load_config(REPO / "configs" / "tiny.yaml")
    data = load_dataset(cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg, data.grid).eval()
    artifact = ModelArtifact(model, cfg, data.grid, data.normaliser, data.split.to_dict())
    return save_artifact(artifact, tmp_path_factory.mktemp("artifacts")), cfg


def test_build_latents_resumes_after_failure(ray_session, tiny_artifact, tmp_path, monkeypatch):
    from pipelines import build_latents
    from pipelines.build_latents import build

    path, cfg = tiny_artifact
    cfg.latents.output_dir = str(tmp_path)
    cfg.latents.shard_fields = 64  # train: 192 fields -> 3 shards; val: 24 -> 1
    cfg.latents.inner_steps = 2
    cfg.latents.num_actors = 2
    first = build(cfg, str(path), quiet=True)
    assert (first.written, first.skipped) == (4, 0)
    train = read_shards(first.root, "train")
    assert train.phi.shape == (192, cfg.model.latent_dim) and np.isfinite(train.psnr).all()

    # The shard's latents are what MetaSGD.adapt gives for those items.
    from vcinr_sci.model.artifact import load_artifact

    art = load_artifact(path)
    data = load_dataset(art.config.data, art.normaliser)
    coords, values, mask = data.items("train").batch(np.array([70, 71]))
    phi = art.model.adapt(coords, values, mask, steps=2)
    np.testing.assert_allclose(train.phi[70:72], phi.numpy(), rtol=1e-4, atol=1e-5)
    assert train.keys[70] == '{"time": "%s"}' % data.source.key(int(data.split.train[70]))["time"]

    # Simulated failure: shard 1 lost, a killed writer's half file left behind.
    lost = shard_path(first.root, "train", 1)
    lost.unlink()
    (lost.parent / f".tmp-{lost.name}-dead").write_bytes(b"PAR1 half")
    kept = {p: p.stat().st_mtime_ns for p in first.root.rglob("shard-*.parquet")}
    with pytest.raises(LatentsError):
        read_shards(first.root, "train")

    def pool_that_loses_a_writer(*args, **kwargs):  # as a node lost during this run would
        (lost.parent / f".tmp-{lost.name}-lost-node").write_bytes(b"PAR1 half")
        return run_actor_pool(*args, **kwargs)

    run_actor_pool = build_latents.run_actor_pool
    monkeypatch.setattr(build_latents, "run_actor_pool", pool_that_loses_a_writer)
    second = build(cfg, str(path), quiet=True)
    assert (second.written, second.skipped) == (1, 3)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished shards untouched
    assert not list(first.root.rglob(".tmp-*"))
    again = read_shards(first.root, "train")
    np.testing.assert_allclose(again.phi, train.phi, rtol=1e-5, atol=1e-6)
    assert build(cfg, str(path), quiet=True).written == 0
