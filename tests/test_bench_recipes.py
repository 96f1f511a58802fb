"""The recipe bench (examples/bench_recipes.py): each variant is the config with its own
overrides, trains in its budget from the same seed, and is scored on held-out fields."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from _vcinr_tiny import linear_artifact

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_variants_train_in_their_budget_and_report_held_out_gain(capsys):
    sys.path.insert(0, str(EXAMPLES))
    import bench_recipes

    linear = linear_artifact()
    capsys.readouterr()  # (the linear model's fit)
    args = ["--config", str(TINY), "--set", "model.kind=hybrid", "--set", "model.residual_components=16",
            "--set", "basis.components=16", "--linear", str(linear), "--budget-s", "1", "--evals", "2",
            "--threads", "1", "--variant", "base:", "--variant", "shallow:model.depth=2,meta.first_order=true"]
    assert bench_recipes.main(args) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == {"base", "shallow"}
    for row in rows.values():
        steps, tune1, tune2, test, gain = int(row[1]), float(row[3]), float(row[4]), float(row[5]), float(row[6])
        assert steps > 0 and 0 < tune1 < 100 and 0 < tune2 < 100 and 0 < test < 100
        assert abs(gain) < 20  # over zero latents: the linear part alone
    # the shallow first-order variant is its own config: cheaper steps, so more of them
    assert int(rows["shallow"][1]) > int(rows["base"][1])

    cfg = bench_recipes.variant_config(bench_recipes.argparse.Namespace(config=str(TINY), set=["meta.steps=7"]),
                                       "x:model.width=8,meta.outer_lr=0.01")
    assert cfg[0] == "x" and cfg[1].model.width == 8 and cfg[1].meta.outer_lr == 0.01 and cfg[1].meta.steps == 7
