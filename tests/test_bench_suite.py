"""``vcinr bench suite``: valid markdown whichever result files a dataset has."""

from __future__ import annotations

import itertools
import json

import pytest

from vcinr_sci.bench import suite
from vcinr_sci.errors import UsageError

META = {"benchmark": "codecs", "fields": "d t2m, test part (24 time positions: 120-143)", "num_fields": 24,
        "grid": [20, 28], "model": "ab" * 32, "model_bytes": 1234}


def _rd(targets: tuple[str, ...] = ("40.0", "45.0", "50.0")) -> dict:
    def bits(v):
        return {t: v for t in targets}

    summary = [
        {"family": "SPERR (pwe)", "kind": "classical", "bpv": bits(1.0)},
        {"family": "EOF abs-step (training)", "kind": "baseline", "bpv": bits(0.5), "bpv_model_1e9": bits(0.6)},
        {"family": "vcinr, 0 steps", "kind": "vcinr", "bpv": bits(0.25), "bpv_latents": bits(0.2),
         "bpv_model_1e9": bits(0.3), "best_other": bits("EOF abs-step (training)"), "best_other_bpv": bits(0.5),
         "vcinr_over_best_other": bits(0.5), "vcinr_latents_over_best_other": bits(0.4),
         "at_best_psnr": {"psnr": 52.0, "bpv": 0.3, "bpv_latents": 0.25, "best_other": "SPERR (pwe)",
                          "best_other_bpv": 1.2}},
    ]
    return META | {"mode": "psnr", "summary": summary if targets else []}


def _bounded() -> dict:
    rows = [{"family": fam, "kind": kind, "bound_rel": rel, "bound_met": met, "ratio_vs_float32": ratio}
            for fam, kind, met, ratio in (("SPERR (pwe)", "classical", True, 4.0),
                                          ("vcinr bounded (q0)", "vcinr", True, 6.0),
                                          ("ZFP (accuracy)", "classical", False, 9.0))
            for rel in (1e-4, 1e-2)]
    return META | {"mode": "bounded", "rows": rows, "summary": []}


def _tables(text: str) -> list[list[str]]:
    """The markdown tables of ``text``: runs of lines that start with '|'."""
    blocks, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    return blocks


def _cells(line: str) -> int:
    assert line.startswith("| ") and line.endswith(" |"), line
    return len(line[2:-2].split(" | "))


@pytest.mark.parametrize("rd, bounded", list(itertools.product(("none", "full", "empty"), (False, True))))
def test_suite_writes_valid_markdown_whatever_files_are_present(tmp_path, capsys, rd, bounded):
    if rd == "none" and not bounded:
        with pytest.raises(UsageError, match="no vcinr bench codecs results"):
            suite.main([str(tmp_path)])
        return
    if rd != "none":
        (tmp_path / "d.json").write_text(json.dumps(_rd(() if rd == "empty" else ("40.0", "45.0", "50.0"))))
    if bounded:
        (tmp_path / "d-bounded.json").write_text(json.dumps(_bounded()))
    (tmp_path / "suite.json").write_text(json.dumps({"benchmark": "suite", "datasets": []}))  # not a result
    assert suite.main([str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "suite.json is not a vcinr bench codecs result" in err
    (table,) = _tables(out)
    header, separator, *rows = table
    width = _cells(header)
    assert _cells(separator) == width and set(separator[2:-2].split(" | ")) == {"---"}
    assert all(_cells(r) == width for r in rows) and bool(rows) == (rd == "full" or bounded)
    targets = 3 if rd == "full" else 0
    assert width == 2 + targets + (2 if bounded else 0)
    assert ("No d.json" in out) == (rd == "none") and ("No d-bounded.json" in out) == (not bounded)
    if bounded:  # the ratio a family kept; '-' where it broke the bound
        zfp = next(r for r in rows if r.startswith("| ZFP (accuracy)"))
        assert zfp.endswith("| - | - |")
    if rd == "full":
        assert "vcinr needs 0.5x the bits of EOF abs-step (training)" in out
