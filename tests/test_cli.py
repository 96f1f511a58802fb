"""The ``vcinr`` console script: the one place that turns errors into exit codes."""

from __future__ import annotations

from vcinr_sci.cli import main


def test_usage_error_exits_2_with_its_message(capsys):
    assert main(["bench", "conditioning", "--conditionings", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vcinr: vcinr bench conditioning: unknown conditioning(s) ['nope']")
