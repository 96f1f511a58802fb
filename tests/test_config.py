"""Configs: values are checked and converted against the dataclass field types."""

from __future__ import annotations

from pathlib import Path

import pytest

from vcinr_sci.config import Config, load_config, parse_overrides
from vcinr_sci.data.sources import resolve_paths
from vcinr_sci.errors import ConfigError, VCINRError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    assert isinstance(load_config(path), Config)


def test_command_line_numbers_become_numbers():
    # YAML 1.1 reads 3e-4 and 1e3 as strings; they used to reach the optimiser as such.
    cfg = load_config(CONFIGS / "tiny.yaml", parse_overrides(["meta.outer_lr=3e-4", "coder.lambdas=[1e3, 10]"]))
    assert cfg.meta.outer_lr == pytest.approx(3e-4) and isinstance(cfg.meta.outer_lr, float)
    assert cfg.coder.lambdas == [1000.0, 10.0] and all(isinstance(v, float) for v in cfg.coder.lambdas)


def test_optional_fields_take_none_or_their_type():
    cfg = load_config(CONFIGS / "tiny.yaml", parse_overrides(["meta.points_per_step=null", "data.regrid=[46, 90]"]))
    assert cfg.meta.points_per_step is None and cfg.data.regrid == [46, 90]


@pytest.mark.parametrize(
    "override, key",
    [
        ("meta.steps=ten", "config.meta.steps"),
        ("meta.steps=2.5", "config.meta.steps"),
        ("train.use_gpu=sometimes", "config.train.use_gpu"),
        ("coder.lambdas=5", "config.coder.lambdas"),
        ("coder.lambdas=[1, x]", "config.coder.lambdas[1]"),
        ("model.conditioning=film", "config.model.conditioning"),
        ("data.normalisation=zscore", "config.data.normalisation"),
        ("compress.chunks={time: many}", "config.compress.chunks.time"),
    ],
)
def test_a_wrong_value_names_its_key(override, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")) as err:
        load_config(CONFIGS / "tiny.yaml", parse_overrides([override]))
    assert isinstance(err.value, (VCINRError, ValueError))


def test_unknown_key_and_missing_file_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        Config.from_dict({"meta": {"stpes": 3}})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["meta.steps"])


def test_a_config_extends_another_section_by_section(tmp_path):
    base = load_config(CONFIGS / "tiny.yaml")
    (tmp_path / "sub").mkdir()
    child = tmp_path / "sub" / "child.yaml"
    child.write_text(f"extends: {CONFIGS / 'tiny.yaml'}\nname: child\nmeta:\n  steps: 7\ncoder:\n  lambdas: [5]\n")
    grandchild = tmp_path / "grandchild.yaml"  # a relative path, from the file's own folder
    grandchild.write_text("extends: sub/child.yaml\nmeta:\n  outer_lr: 0.5\n")
    cfg = load_config(grandchild, parse_overrides(["meta.batch_size=3"]))
    assert cfg.name == "child" and cfg.meta.steps == 7 and cfg.meta.outer_lr == 0.5 and cfg.meta.batch_size == 3
    assert cfg.coder.lambdas == [5.0]  # a list is replaced whole
    # every key the files do not set is the base's
    assert cfg.model == base.model and cfg.data.paths == base.data.paths
    assert cfg.meta.inner_steps == base.meta.inner_steps and cfg.coder.steps == base.coder.steps
    child.write_text("extends: ../grandchild.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(grandchild)
    child.write_text("extends: absent.yaml\n")
    with pytest.raises(ConfigError, match="absent.yaml.*extended by"):
        load_config(grandchild)


def test_environment_variables_are_expanded_in_every_path(tmp_path, monkeypatch):
    """``${OUT}`` in train.artifact_dir made a folder named ``${OUT}``: only data.paths
    expanded variables."""
    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = load_config(CONFIGS / "tiny.yaml", parse_overrides([
        "train.artifact_dir=${OUT}/artifacts", "train.storage_path=$OUT/runs",
        "latents.output_dir=~/latents", "compress.output=${OUT}/a.zarr",
        "data.paths=['${OUT}/*.nc']",
    ]))
    assert cfg.train.artifact_dir == f"{tmp_path}/artifacts" and cfg.train.storage_path == f"{tmp_path}/runs"
    assert cfg.latents.output_dir == f"{tmp_path}/home/latents" and cfg.compress.output == f"{tmp_path}/a.zarr"
    # the data paths stay as written (a model's stored config names its data alike everywhere)...
    assert cfg.data.paths == ["${OUT}/*.nc"]
    # ...and are expanded when the data are opened
    (tmp_path / "x.nc").touch()
    assert resolve_paths(cfg.data.paths) == [str(tmp_path / "x.nc")]


@pytest.mark.parametrize("key", ["train.artifact_dir", "train.storage_path", "latents.output_dir", "compress.output"])
def test_an_unset_variable_in_a_path_names_the_key_and_the_variable(key, monkeypatch):
    monkeypatch.delenv("VCINR_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match=rf"config\.{key}: environment variable 'VCINR_NOT_SET'"):
        load_config(CONFIGS / "tiny.yaml", parse_overrides([f"{key}=${{VCINR_NOT_SET}}/out"]))


def test_an_unset_variable_in_the_data_paths_names_the_key_and_the_variable(monkeypatch):
    monkeypatch.delenv("VCINR_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match=r"config\.data\.paths\[1\]: environment variable 'VCINR_NOT_SET'"):
        resolve_paths(["iris-sample-data:A1B_north_america.nc", "$VCINR_NOT_SET/a.nc"])


def test_an_unset_variable_in_the_compress_paths_names_that_key(monkeypatch):
    from pipelines.compress import open_source

    monkeypatch.delenv("VCINR_NOT_SET", raising=False)
    cfg = load_config(CONFIGS / "tiny.yaml", parse_overrides(["compress.paths=['${VCINR_NOT_SET}/a.nc']"]))
    with pytest.raises(ConfigError, match=r"config\.compress\.paths\[0\]: environment variable 'VCINR_NOT_SET'"):
        open_source(cfg, cfg.data.variable)
