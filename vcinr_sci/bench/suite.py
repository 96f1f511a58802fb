"""``vcinr bench suite``: one table over datasets from ``vcinr bench codecs`` results.

``examples/bench_suite.sh`` trains a CPU-sized model per dataset (on that dataset's own
training split) and writes, per dataset NAME, ``NAME.json`` (``vcinr bench codecs``) and
``NAME-bounded.json`` (``--bounded``) into one folder. This reads them and prints, per
dataset, the bits per value every method needs for 40 / 45 / 50 dB (whole chunks; vcinr's
latent bytes alone; with the model file spread over 1e9 values) and the compression
ratio each keeps at bounds of 1e-4 / 1e-3 / 1e-2 of the data range, and per target the
best method of all.

    vcinr bench suite out/suite/bench --json out/suite/suite.json > out/suite/suite.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vcinr_sci.bench.output import write_json
from vcinr_sci.errors import UsageError

BOUNDED_SUFFIX = "-bounded"


def collect(folder: Path) -> list[dict[str, Any]]:
    """Per dataset (a ``NAME.json`` in ``folder``): its RD summary and, when present,
    the bounded summary of ``NAME-bounded.json``."""
    out = []
    for path in sorted(folder.glob("*.json")):
        if path.stem.endswith(BOUNDED_SUFFIX):
            continue
        rd = json.loads(path.read_text())
        bounded_path = path.with_name(path.stem + BOUNDED_SUFFIX + ".json")
        bounded = json.loads(bounded_path.read_text()) if bounded_path.is_file() else None
        out.append({"name": path.stem, "rd": rd, "bounded": bounded})
    return out


def _best_ratios(bounded: dict[str, Any] | None) -> dict[str, dict[str, float]]:
    """Per family: the ratio it keeps at each bound (only where it kept the bound)."""
    out: dict[str, dict[str, float]] = {}
    for r in bounded["rows"] if bounded else []:
        if r["bound_met"] and r.get("nan_exact", True):
            fam = out.setdefault(r["family"], {})
            fam[f"{r['bound_rel']:g}"] = max(fam.get(f"{r['bound_rel']:g}", 0.0), r["ratio_vs_float32"])
    return out


def dataset_table(entry: dict[str, Any]) -> dict[str, Any]:
    """One dataset's rows: per method, bits at each target and ratio at each bound."""
    rd = entry["rd"]
    ratios = _best_ratios(entry["bounded"])
    bounds = sorted({b for fam in ratios.values() for b in fam}, key=float)
    rows = []
    for e in rd["summary"]:
        rows.append({
            "family": e["family"],
            "kind": e["kind"],
            "bpv": e["bpv"],
            "bpv_latents": e.get("bpv_latents"),
            "bpv_model_1e9": e.get("bpv_model_1e9"),
            "bounded_ratio": {b: ratios.get(e["family"], {}).get(b) for b in bounds},
        })
    seen = {r["family"] for r in rows}
    for fam, by_bound in ratios.items():  # bounded-only families (vcinr bounded, EOF-8 + SZ3, ...)
        if fam not in seen:
            kind = next(r["kind"] for r in entry["bounded"]["rows"] if r["family"] == fam)
            rows.append({"family": fam, "kind": kind, "bpv": None, "bpv_latents": None, "bpv_model_1e9": None,
                         "bounded_ratio": {b: by_bound.get(b) for b in bounds}})
    targets = list(rd["summary"][0]["bpv"]) if rd["summary"] else []
    best = {}
    for t in targets:
        cands = [(r["bpv"][t], r["family"]) for r in rows if r["bpv"] and r["bpv"][t] is not None]
        best[t] = min(cands) if cands else None
    return {
        "name": entry["name"],
        "fields": rd["fields"],
        "num_fields": rd["num_fields"],
        "grid": rd["grid"],
        "model": rd["model"],
        "model_bytes": rd["model_bytes"],
        "targets": targets,
        "bounds": bounds,
        "rows": rows,
        "best": best,
        "vcinr_summary": [e for e in rd["summary"] if e["kind"] == "vcinr"],
    }


def _fmt(v: float | None, spec: str = ".3g") -> str:
    return "-" if v is None else format(v, spec)


def _versus(v: dict[str, Any], target: str) -> str:
    other = f"{v['best_other'][target]} ({_fmt(v['best_other_bpv'][target])} bpv)" if v["best_other"][target] else "none"
    if v["bpv"][target] is None:
        return f"{target} dB: vcinr does not reach it; best other {other}"
    return (f"{target} dB: vcinr needs {_fmt(v['vcinr_over_best_other'][target])}x the bits of {other} "
            f"({_fmt(v['vcinr_latents_over_best_other'][target])}x counting latent bytes only)")


def markdown(tables: list[dict[str, Any]]) -> str:
    lines = [
        "Bits per value each method needs for a PSNR (whole chunks / vcinr's latent bytes only / with the "
        "model file spread over 1e9 values; '-' = not reached), and the compression ratio against float32 "
        "each keeps at a max-abs-error bound (fraction of the data range; '-' = not run or broke it).",
    ]
    for t in tables:
        targets, bounds = t["targets"], t["bounds"]
        lines += ["", f"### {t['name']}: {t['fields']}", "",
                  f"{t['num_fields']} held-out fields of {' x '.join(map(str, t['grid']))}; vcinr model "
                  f"{(t['model'] or '-')[:16]}, {t['model_bytes']:,} bytes.", "",
                  "| method | kind | " + " | ".join(f"bpv @ {x} dB" for x in targets) + " | "
                  + " | ".join(f"ratio @ {b}" for b in bounds) + " |",
                  "|---|---|" + "---|" * (len(targets) + len(bounds))]
        for r in t["rows"]:
            cells = []
            for x in targets:
                if r["bpv"] is None:
                    cells.append("-")
                    continue
                parts = [_fmt(r["bpv"][x], ".3g")]
                if r["bpv_latents"] is not None:
                    parts.append(_fmt(r["bpv_latents"][x], ".3g"))
                if r["bpv_model_1e9"] is not None:
                    parts.append(_fmt(r["bpv_model_1e9"][x], ".3g"))
                cells.append(" / ".join(parts))
            cells += [_fmt(r["bounded_ratio"].get(b), ".3g") for b in bounds]
            lines.append(f"| {r['family']} | {r['kind']} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("Best at each target: " + "; ".join(
            f"{x} dB: {b[1]} ({b[0]:.3g})" if b else f"{x} dB: none" for x, b in t["best"].items()) + ".")
        for v in t["vcinr_summary"]:
            lines.append(f"{v['family']} against the best other: " + "; ".join(_versus(v, x) for x in targets) + ".")
            top = v.get("at_best_psnr")
            if top:
                lines.append(f"{v['family']} at its highest PSNR, {top['psnr']:.2f} dB: {top['bpv']:.3g} bpv "
                             f"({top['bpv_latents']:.3g} latents only); the best other there: "
                             f"{top['best_other'] or '-'} at {_fmt(top['best_other_bpv'])} bpv.")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vcinr bench suite", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="folder of NAME.json / NAME-bounded.json from vcinr bench codecs")
    p.add_argument("--json", metavar="PATH")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    entries = collect(Path(args.folder))
    if not entries:
        raise UsageError(f"vcinr bench suite: no vcinr bench codecs results (*.json) in {args.folder}")
    tables = [dataset_table(e) for e in entries]
    print(markdown(tables))
    if args.json:
        write_json(args.json, {"benchmark": "suite", "datasets": tables})
    return 0


if __name__ == "__main__":
    sys.exit(main())
