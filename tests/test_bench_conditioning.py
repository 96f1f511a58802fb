"""Smoke test of ``vcinr bench conditioning`` (vcinr_sci.bench.conditioning) on real data."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from vcinr_sci.bench import conditioning


@pytest.mark.shared_data
def test_quick_run_writes_all_rows(shared_data, tmp_path, capsys):
    out = tmp_path / "conditioning.json"
    rc = conditioning.main(["--quick", "--dims", "4,8", "--data-dir", str(shared_data), "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["conditioning"], r["latent_dim"]) for r in rows] == [
        ("gated", 4), ("shift", 4), ("gated", 8), ("shift", 8)
    ]
    for r in rows:
        assert math.isfinite(r["psnr_inner"]) and math.isfinite(r["psnr_encode"])
        assert r["parameters"] > r["modulation_parameters"] > 0
        assert r["step_wall_s"] > 0
    # the gating network adds parameters over the shift map at equal SIREN size
    assert rows[0]["parameters"] > rows[1]["parameters"]
    # the held-out run is a whole ensemble member, never seen in training
    split = result["split"]
    assert split["dim"] == "member" and set(split["positions"]["test"]).isdisjoint(split["positions"]["train"])
    printed = capsys.readouterr().out
    assert "| conditioning | dim(phi) |" in printed and printed.count("| gated |") == 2


def test_missing_data_folder_is_a_clear_error(tmp_path, capsys):
    rc = conditioning.main(["--quick", "--data-dir", str(tmp_path / "nowhere")])
    assert rc == 2
    assert "real data not found" in capsys.readouterr().err


def test_outer_lr_per_conditioning():
    assert conditioning.parse_lrs("1e-3") == {"gated": 1e-3, "shift": 1e-3}
    assert conditioning.parse_lrs("gated=1e-3,shift=3e-4") == {"gated": 1e-3, "shift": 3e-4}
    with pytest.raises(argparse.ArgumentTypeError):
        conditioning.parse_lrs("gated=1e-3")
