"""``vcinr bench throughput`` and ``vcinr bench cross-device``: FLOP counts that match the
layer sizes, and a run of each on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _vcinr_tiny import linear_artifact, tiny_artifact

from vcinr_sci.bench import cross_device, throughput
from vcinr_sci.config import ModelConfig
from vcinr_sci.errors import UsageError
from vcinr_sci.model.inr import build_inr

REPO = Path(__file__).resolve().parents[1]


def test_flop_count_matches_the_layer_sizes():
    cfg = ModelConfig(conditioning="shift", latent_dim=8, width=16, depth=3)
    inr = build_inr(3, cfg)
    items, points = 4, 100
    coords, phi = torch.rand(items, points, 3), torch.rand(items, 8)
    flops = throughput.count_flops(lambda: inr(coords, phi))
    per_point = 2 * (3 * 16 + 2 * 16 * 16 + 16 * 1)  # sine layers and head
    per_item = 2 * 8 * 16 * 3  # phi -> a shift for every sine layer
    assert flops == items * (points * per_point + per_item)


def test_gated_decode_costs_more_than_shift_per_value():
    kw = dict(latent_dim=8, width=16, depth=3, mod_width=16)
    coords, phi = torch.rand(2, 50, 3), torch.rand(2, 8)
    gated = throughput.count_flops(lambda: build_inr(3, ModelConfig(conditioning="gated", **kw))(coords, phi))
    shift = throughput.count_flops(lambda: build_inr(3, ModelConfig(conditioning="shift", **kw))(coords, phi))
    assert gated > shift


def test_throughput_of_a_linear_model(tmp_path, capsys):
    model = linear_artifact()
    out = tmp_path / "tp.json"
    rc = throughput.main(["--config", str(REPO / "configs/tiny.yaml"), "--set", "model.kind=linear", "--model", str(model),
                          "--items", "4", "--min-time", "0", "--threads", "1", "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["model"]["kind"] == "linear" and result["dtype"] == "float64"
    assert [r["what"].split(" (")[0] for r in result["rows"]] == ["encode", "decode", "codec encode", "codec decode"]
    k = result["model"]["components"]
    for r in result["rows"]:
        assert r["flops_per_value"] == pytest.approx(2 * k) and r["seconds"] > 0
    assert "linear model, 16 EOFs" in capsys.readouterr().out


def test_throughput_on_tiny_config(tmp_path, capsys):
    out = tmp_path / "tp.json"
    rc = throughput.main(["--config", str(REPO / "configs/tiny.yaml"), "--device", "cpu", "--items", "2",
                          "--min-time", "0", "--threads", "1", "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert [r["what"].split(" (")[0] for r in result["rows"]] == ["meta-train outer step", "encode", "decode"]
    step, encode, decode = result["rows"]
    for r in result["rows"]:
        assert r["seconds"] > 0 and r["flops"] > 0 and 0 < r["fraction_of_matmul"] < 2
    # an encode is several forward and backward passes; a decode one forward pass
    assert encode["flops_per_value"] > 3 * decode["flops_per_value"]
    assert step["values"] == 8 * 512  # tiny: batch 8 x 512 points per step
    assert "| decode |" in capsys.readouterr().out


def test_throughput_refuses_a_missing_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UsageError, match="sees no GPU"):
        throughput.main(["--config", str(REPO / "configs/tiny.yaml"), "--device", "cuda"])


def test_cross_device_on_cpu(tmp_path):
    out = tmp_path / "xd.json"
    rc = cross_device.main(["--model", str(tiny_artifact()), "--items", "3", "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["fields"] == 3 and result["rows"][0]["decoder"] == "cpu, 1 thread"
    # float32 on the same CPU with another thread count: equal or a few ulps apart
    assert result["rows"][0]["max_abs_diff"] < 1e-5
    assert np.isfinite([r["max_abs_diff_data_units"] for r in result["rows"]]).all()


def test_cross_device_decodes_as_the_codec_does_and_restores_precision(tmp_path, monkeypatch):
    # Its number calibrates the bounded mode's margin, so it must decode as the codec does
    # (IEEE float32 matmuls, whatever the process set) and leave the caller's setting.
    matmul = torch.backends.cuda.matmul
    saved = matmul.fp32_precision
    seen = []
    real = cross_device._decode
    monkeypatch.setattr(cross_device, "_decode", lambda *a: (seen.append(matmul.fp32_precision), real(*a))[1])
    matmul.fp32_precision = "tf32"
    try:
        cross_device.main(["--model", str(tiny_artifact()), "--items", "2"])
        after = matmul.fp32_precision
    finally:
        matmul.fp32_precision = saved
    assert seen[:2] == ["ieee", "ieee"]  # the CPU reference and the CPU decode
    assert after == "tf32"
