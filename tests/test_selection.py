"""Artifact selection (vcinr_sci.model.selection), one way for every stage: stored
configs are compared through the config dataclasses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _vcinr_tiny import QUALITY, linear_artifact, tiny_artifact

from vcinr_sci.config import load_config
from vcinr_sci.errors import ArtifactError
from vcinr_sci.model.artifact import MANIFEST
from vcinr_sci.model.selection import select_artifact

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _config(artifact_dir: Path):
    overrides = {"data.patch_shape": None, "data.subtract_item_mean": False, "train.artifact_dir": str(artifact_dir)}
    return load_config(CONFIGS / "tiny.yaml", overrides)


def test_an_artifact_written_before_a_defaulted_field_is_chosen_by_every_stage(tmp_path):
    """Issue 12, bug 2: compress compared raw stored configs, so an artifact whose stored
    config predates a defaulted field was missed by compress, found by build_latents."""
    root = tmp_path / "artifacts"
    old = root / "old"
    shutil.copytree(tiny_artifact(), old)
    manifest = json.loads((old / MANIFEST).read_text())
    del manifest["config"]["data"]["subtract_item_mean"]  # as written before the field existed
    (old / MANIFEST).write_text(json.dumps(manifest))
    cfg = _config(root)
    assert select_artifact(cfg, with_coders=True, require_coders=True, quality=QUALITY) == old  # compress
    assert select_artifact(cfg) == old  # build_latents, train_coder
    with pytest.raises(ArtifactError, match="level 'nope'"):
        select_artifact(cfg, with_coders=True, require_coders=True, quality="nope")


def test_another_configs_artifact_is_not_chosen(tmp_path):
    root = tmp_path / "artifacts"
    shutil.copytree(tiny_artifact(), root / "a")
    cfg = _config(root)
    other = _config(root)
    other.meta.inner_steps += 1
    assert select_artifact(cfg) == root / "a"
    with pytest.raises(ArtifactError, match="made from this config's data/model/meta: run pipelines.meta_train"):
        select_artifact(other)


def test_a_linear_config_chooses_its_linear_model_by_its_basis_section(tmp_path):
    root = tmp_path / "artifacts"
    shutil.copytree(tiny_artifact(), root / "inr")
    shutil.copytree(linear_artifact(), root / "linear")
    linear = load_config(CONFIGS / "tiny.yaml", {"model.kind": "linear", "basis.components": 16,
                                                  "basis.target_psnr": [30, 40], "train.artifact_dir": str(root)})
    assert select_artifact(linear, with_coders=True, require_coders=True) == root / "linear"
    assert select_artifact(_config(root)) == root / "inr"
    linear.basis.components = 8  # another basis: not this model
    with pytest.raises(ArtifactError, match="data/model/basis: run pipelines.fit_basis"):
        select_artifact(linear)
