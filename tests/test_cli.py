"""The ``vcinr`` console script: the one place that turns errors into exit codes; every
verb names itself in its usage; a store it cannot open is one line, not a traceback; a
reader that goes away (``| head -1``) ends it quietly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from vcinr_sci.cli import BENCHMARKS, COMMANDS, main

REPO = Path(__file__).resolve().parents[1]


def test_usage_error_exits_2_with_its_message(capsys):
    assert main(["bench", "conditioning", "--conditionings", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vcinr: vcinr bench conditioning: unknown conditioning(s) ['nope']")


@pytest.mark.parametrize("verb", [*COMMANDS, *(f"bench {b}" for b in BENCHMARKS)])
def test_every_verb_names_itself_and_cites_configs_that_exist(verb, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*verb.split(), "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: vcinr {verb} "), out[:80]  # was "usage: vcinr [-h] --config ..."
    for cited in re.findall(r"configs/[\w.-]+\.yaml", out):
        assert (REPO / cited).is_file(), f"vcinr {verb} --help cites {cited}"


def plain_store(path: Path) -> Path:
    """A small Zarr 3 group: one plain array, no digest record."""
    group = zarr.open_group(path, mode="w")
    group.create_array("x", shape=(64,), chunks=(8,), dtype="f4")[:] = np.arange(64, dtype="f4")
    return path


def with_codec_config(store: Path, config: dict) -> Path:
    """``store`` with its array's codecs replaced by a vcinr codec of ``config``."""
    meta_path = store / "x" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["codecs"] = [{"name": "vcinr", "configuration": config}]
    meta_path.write_text(json.dumps(meta))
    return store


@pytest.mark.parametrize("verb", ["info", "verify"])
@pytest.mark.parametrize(
    "config, says",
    [
        ({"model_hash": "ab", "quality": "q0", "grid": {"type": "regular", "axes": [[0, 1]]}}, "model_hash must be"),
        ({"model_hash": "a" * 64, "quality": "q0"}, "lacks ['grid']"),
        ({"model_hash": "a" * 64, "quality": "q0", "grid": {"type": "regular", "axes": [[0, 1]]}, "model_path": 7},
         "invalid vcinr codec config"),
    ],
)
def test_a_bad_codec_config_is_one_line_not_a_traceback(verb, config, says, tmp_path, capsys):
    store = with_codec_config(plain_store(tmp_path / "s.zarr"), config)
    assert main([verb, str(store)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"vcinr {verb}: {store}: ") and says in err


def test_info_names_a_stored_model_whose_hash_attribute_is_invalid(tmp_path, capsys):
    store = plain_store(tmp_path / "s.zarr")
    zarr.open_group(store, mode="a").require_group("_vcinr_models").require_group("deadbeef").attrs[
        "vcinr_model_hash"] = "not a hash"
    assert main(["info", str(store)]) == 0
    out = capsys.readouterr().out  # said "models stored ...: none" and nothing else
    assert "models stored in the store (_vcinr_models): none" in out
    assert "not used, their vcinr_model_hash attribute is not a model hash: deadbeef" in out


@pytest.mark.parametrize("args", [["verify", "{store}"], ["info", "{store}", "--json"]])
def test_a_reader_that_went_away_ends_the_command_quietly(args, tmp_path):
    """``vcinr verify STORE | head -1`` ended in a BrokenPipeError traceback. Here the
    reader closes its end before the command writes anything."""
    store = plain_store(tmp_path / "s.zarr")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vcinr_sci.cli", *(a.format(store=store) for a in args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and err == ""  # 128 + SIGPIPE, as a tool the signal ends
