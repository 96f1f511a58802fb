"""Quality levels that are honest: tuned on fields held out of training, lambdas from
the data's rate-distortion slope, and a ladder without dominated levels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vcinr_sci.config import load_config
from vcinr_sci.data.holdout import tuning_split_of
from vcinr_sci.errors import ConfigError
from vcinr_sci.model.artifact import pareto_ladder
from vcinr_sci.model.coder_training import lambdas_from_slope

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_dominated_levels_leave_the_ladder():
    points = {
        "q0": (0.05, 38.6),
        "q1": (0.064, 38.0),  # the demo's old q2: more bits than q0 for less PSNR
        "q2": (0.07, 38.6),  # more bits for the same PSNR
        "u4": (0.04, 36.0),
        "u6": (0.06, 39.0),
        "u8": (0.08, 39.0),  # u6's PSNR for more bits
    }
    ladder, dominated = pareto_ladder(points)
    assert ladder == ["u4", "q0", "u6"]
    assert dominated == {"q1": "q0", "q2": "q0", "u8": "u6"}
    # Each step up the ladder spends more bits for more PSNR.
    for lo, hi in zip(ladder, ladder[1:]):
        assert points[lo][0] < points[hi][0] and points[lo][1] < points[hi][1]
    # A uniform level that beats a learned one stays; of two identical points one does.
    ladder, dominated = pareto_ladder({"q0": (0.1, 30.0), "u4": (0.05, 31.0), "u5": (0.05, 31.0)})
    assert ladder == ["u4"] and dominated == {"q0": "u4", "u5": "u4"}


def test_lambdas_from_slope_span_the_measured_range():
    floor = 1e-4  # MSE of the unquantised latents
    points = [(0.01 * b, floor + 0.01 * 4.0**-b) for b in range(2, 9)]  # uniform quantisers
    lambdas = lambdas_from_slope(points[::-1], floor, 4)
    assert lambdas == sorted(lambdas) and len(set(lambdas)) == 4
    # The lowest sits at the coarsest quantiser's slope, the highest near the floor's.
    first_slope = (points[1][0] - points[0][0]) / (points[0][1] - points[1][1])
    assert lambdas[0] == pytest.approx(first_slope)
    assert lambdas[-1] / lambdas[0] > 30
    assert lambdas[0] < lambdas_from_slope(points, floor, 1)[0] < lambdas[-1]
    with pytest.raises(ValueError, match="slope"):
        lambdas_from_slope([(0.1, 1e-3), (0.2, 1e-3)], floor, 3)


def test_without_a_validation_part_the_end_of_training_is_held_out():
    cfg = load_config(CONFIGS / "tiny.yaml", {"data.val_fraction": 0}).data
    part = tuning_split_of(cfg)
    # 240 years: test the last 24, training 216 of which the last 22 are held out.
    assert len(part.tune) == 22 and len(part.train) == 194
    assert not set(part.tune) & set(part.train)
    assert part.held_out == list(range(194, 216)) and part.to_dict()["part"] == "held out of train"
    assert "data.val_fraction is 0" in part.note and "22 of 216" in part.note
    # Deterministic, and nothing held out when there is a validation part.
    assert np.array_equal(tuning_split_of(cfg).tune, part.tune)
    with_val = tuning_split_of(load_config(CONFIGS / "tiny.yaml").data)
    assert with_val.held_out == [] and len(with_val.tune) == 24 and with_val.to_dict() == {"part": "val"}


def test_a_training_part_of_one_position_is_refused_naming_the_key():
    cfg = load_config(CONFIGS / "tiny.yaml", {"data.val_fraction": 0, "data.test_fraction": 0.996}).data
    with pytest.raises(ConfigError, match="data.val_fraction"):
        tuning_split_of(cfg)
