"""``vcinr bench suite``: one table over datasets from ``vcinr bench codecs`` results.

``examples/bench_suite.sh`` trains a CPU-sized model per dataset (on that dataset's own
training split) and writes, per dataset NAME, ``NAME.json`` (``vcinr bench codecs``) and
``NAME-bounded.json`` (``--bounded``) into one folder. This reads them and prints, per
dataset, the bits per value every method needs for 40 / 45 / 50 dB (whole chunks; vcinr's
latent bytes alone; with the model file spread over 1e9 values) and the compression
ratio each keeps at bounds of 1e-4 / 1e-3 / 1e-2 of the data range, and per target the
best method of all. Either file of a dataset may be absent: its columns are left out.

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
    """Per dataset NAME: its RD result ``NAME.json`` and its bounded result
    ``NAME-bounded.json``, each None when absent (at least one is present). JSON files
    that are not ``vcinr bench codecs`` results (e.g. this command's own ``--json``) are
    left out, with a line on stderr."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        result = json.loads(path.read_text())
        if not isinstance(result, dict) or result.get("benchmark") != "codecs":
            print(f"vcinr bench suite: {path.name} is not a vcinr bench codecs result; left out", file=sys.stderr)
            continue
        bounded = path.stem.endswith(BOUNDED_SUFFIX)
        name = path.stem.removesuffix(BOUNDED_SUFFIX) if bounded else path.stem
        found.setdefault(name, {"name": name, "rd": None, "bounded": None})["bounded" if bounded else "rd"] = result
    return list(found.values())


def _best_ratios(bounded: dict[str, Any] | None) -> dict[str, dict[str, float]]:
    """Per family: the ratio it keeps at each bound (only where it kept the bound)."""
    out: dict[str, dict[str, float]] = {}
    for r in bounded["rows"] if bounded else []:
        if r["bound_met"] and r.get("nan_exact", True):
            fam = out.setdefault(r["family"], {})
            fam[f"{r['bound_rel']:g}"] = max(fam.get(f"{r['bound_rel']:g}", 0.0), r["ratio_vs_float32"])
    return out


def dataset_table(entry: dict[str, Any]) -> dict[str, Any]:
    """One dataset's rows: per method, bits at each target (when its RD result is
    present) and ratio at each bound (when its bounded result is)."""
    rd, bounded = entry["rd"], entry["bounded"]
    ratios = _best_ratios(bounded)
    bounds = sorted({f"{r['bound_rel']:g}" for r in bounded["rows"]}, key=float) if bounded else []
    summary = rd["summary"] if rd else []
    rows = []
    for e in summary:
        rows.append({
            "family": e["family"],
            "kind": e["kind"],
            "bpv": e["bpv"],
            "bpv_latents": e.get("bpv_latents"),
            "bpv_model_1e9": e.get("bpv_model_1e9"),
            "bounded_ratio": {b: ratios.get(e["family"], {}).get(b) for b in bounds},
        })
    seen = {r["family"] for r in rows}
    for r in bounded["rows"] if bounded else []:  # bounded-only families (vcinr bounded, EOF-8 + SZ3, ...)
        if r["family"] not in seen:
            seen.add(r["family"])
            rows.append({"family": r["family"], "kind": r["kind"], "bpv": None, "bpv_latents": None,
                         "bpv_model_1e9": None,
                         "bounded_ratio": {b: ratios.get(r["family"], {}).get(b) for b in bounds}})
    targets = list(summary[0]["bpv"]) if summary else []
    best = {}
    for t in targets:
        cands = [(r["bpv"][t], r["family"]) for r in rows if r["bpv"] and r["bpv"][t] is not None]
        best[t] = min(cands) if cands else None
    meta = rd or bounded
    return {
        "name": entry["name"],
        "fields": meta["fields"],
        "num_fields": meta["num_fields"],
        "grid": meta["grid"],
        "model": meta["model"],
        "model_bytes": meta["model_bytes"],
        "results": [part for part in ("rd", "bounded") if entry[part] is not None],
        "targets": targets,
        "bounds": bounds,
        "rows": rows,
        "best": best,
        "vcinr_summary": [e for e in summary if e["kind"] == "vcinr"],
        "sweep_limits": {e["family"]: e["sweep_limit"] for e in summary if e.get("sweep_limit")},
    }


def _fmt(v: float | None, spec: str = ".3g") -> str:
    return "-" if v is None else format(v, spec)


def _versus(v: dict[str, Any], target: str) -> str:
    other = f"{v['best_other'][target]} ({_fmt(v['best_other_bpv'][target])} bpv)" if v["best_other"][target] else "none"
    if v["bpv"][target] is None:
        return f"{target} dB: vcinr does not reach it; best other {other}"
    return (f"{target} dB: vcinr needs {_fmt(v['vcinr_over_best_other'][target])}x the bits of {other} "
            f"({_fmt(v['vcinr_latents_over_best_other'][target])}x counting latent bytes only)")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table: the header, its separator and each row (each as wide as the header)."""
    return ["| " + " | ".join(r) + " |" for r in (header, ["---"] * len(header), *rows)]


def _bits_cell(r: dict[str, Any], target: str) -> str:
    if r["bpv"] is None:
        return "-"
    parts = [_fmt(r["bpv"][target], ".3g")]
    for col in ("bpv_latents", "bpv_model_1e9"):
        if r[col] is not None:
            parts.append(_fmt(r[col][target], ".3g"))
    return " / ".join(parts)


def markdown(tables: list[dict[str, Any]]) -> str:
    lines = [
        "Bits per value each method needs for a PSNR (whole chunks / vcinr's latent bytes only / with the "
        "model file spread over 1e9 values; '-' = not reached), and the compression ratio against float32 "
        "each keeps at a max-abs-error bound (fraction of the data range; '-' = not run or broke it).",
    ]
    for t in tables:
        targets, bounds = t["targets"], t["bounds"]
        absent = [f"{t['name']}{suffix}.json" for part, suffix in (("rd", ""), ("bounded", BOUNDED_SUFFIX))
                  if part not in t["results"]]
        lines += ["", f"### {t['name']}: {t['fields']}", "",
                  f"{t['num_fields']} held-out fields of {' x '.join(map(str, t['grid']))}; vcinr model "
                  f"{(t['model'] or '-')[:16]}, {t['model_bytes']:,} bytes."
                  + (f" No {' or '.join(absent)} in the folder." if absent else ""), ""]
        header = ["method", "kind", *(f"bpv @ {x} dB" for x in targets), *(f"ratio @ {b}" for b in bounds)]
        lines += _table(header, [
            [r["family"], r["kind"], *(_bits_cell(r, x) for x in targets),
             *(_fmt(r["bounded_ratio"].get(b), ".3g") for b in bounds)]
            for r in t["rows"]])
        if targets:
            lines += ["", "Best at each target: " + "; ".join(
                f"{x} dB: {b[1]} ({b[0]:.3g})" if b else f"{x} dB: none" for x, b in t["best"].items()) + "."]
        if t["sweep_limits"]:
            lines.append("Sweeps that could not go on to the highest target: " + "; ".join(
                f"{fam} {why}" for fam, why in t["sweep_limits"].items()) + ".")
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
