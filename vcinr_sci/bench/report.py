"""``vcinr bench codecs``'s result as markdown tables and as a plot (bits per value
against PSNR, or ratio against the bound)."""

from __future__ import annotations

import math
from typing import Any

from vcinr_sci.bench.output import pyplot, save_figure


def _fmt(v: float | None, spec: str = ".3g") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def markdown(out: dict[str, Any]) -> str:
    """The rows and the summary as markdown tables, with the notes."""
    lo, hi = out["psnr_range"]
    lines = [
        f"Fields: {out['fields']}: {out['num_fields']} fields of {' x '.join(map(str, out['grid']))} "
        f"({out['values']:,} values, range {out['data_range'][0]:.5g} .. {out['data_range'][1]:.5g}).",
        f"PSNR: mean per-field, on [{lo}, {hi}] mapped to [0, 1]; PSNR (range): on the evaluated data's range. "
        f"bpv = 8 x bytes / values, from the bytes each codec wrote (vcinr: whole chunks of {out['chunk_fields']} fields, "
        "header included; 'latents only' leaves out the chunk header and mask, as the papers count, but keeps stored item means); ratio against float32. "
        "Latent bits per field and per latent dimension (the numbers a field's latents hold: "
        "a hybrid's coefficients, INR latents and mode flag) from the same latent bytes.",
        "",
        "| codec | knob | bpv | bpv latents only | latent bits/field | latent bits/dim | bpv with model | ratio | PSNR dB | PSNR (range) dB | RMSE | lat-w RMSE | max abs err | enc MB/s | dec MB/s |",
        "|" + "---|" * 15,
    ]
    for r in out["rows"]:
        lines.append(
            f"| {r['family']} | {r['knob']} | {r['bpv']:.4g} | {_fmt(r.get('bpv_latents'), '.4g')} | "
            f"{_fmt(r.get('latent_bits_per_field'), '.4g')} | {_fmt(r.get('latent_bits_per_dim'), '.3g')} | "
            f"{_fmt(r.get('bpv_with_model'), '.4g')} | "
            f"{r['ratio_vs_float32']:.3g} | {r['psnr']:.2f} | {r['psnr_data_range']:.2f} | {r['rmse']:.3g} | "
            f"{_fmt(r['rmse_lat_weighted'])} | {r['max_abs_error']:.3g} | {r['encode_mb_s']:.3g} | {r['decode_mb_s']:.3g} |"
        )
    if out["mode"] == "bounded":
        return _bounded_markdown(out, lines)
    targets = list(out["summary"][0]["bpv"]) if out["summary"] else []
    lines += ["", "Bits per value needed for a PSNR (interpolated in log-bits along the lower convex front of "
              "the sweep's points; - = not reached; <= = the sweep's coarsest point already exceeds it). Every "
              "sweep but vcinr's goes on until it passes the highest target; where it cannot, 'sweep's top' "
              "says why:", "",
              "| codec | " + " | ".join(f"{t} dB" for t in targets) + " | sweep's top |",
              "|---|" + "---|" * (len(targets) + 1)]
    for e in out["summary"]:
        for col, label in (("bpv", ""), ("bpv_latents", ", latent bytes only"), ("bpv_with_model", " + model bits"),
                           ("bpv_model_1e9", " + model per 1e9 values")):
            if col in e:
                top = (e["sweep_limit"] or f"{e['top_psnr']:.2f} dB") if col == "bpv" else ""
                lines.append(f"| {e['family']}{label} | " + " | ".join(
                    ("<= " if e[f"{col}_upper_bound"][t] else "") + _fmt(e[col][t], ".4g") for t in targets)
                    + f" | {top} |")
    lines += ["", "vcinr against the best of all the others (classical codecs and the baselines fitted on "
              "vcinr's training data), bits per value:", "",
              "vcinr / other = vcinr's bits over the best other's (below 1: vcinr wins).", "",
              "| vcinr | target | vcinr chunks | vcinr latents only | best other | its bpv | vcinr / other "
              "| vcinr latents / other |",
              "|---|---|---|---|---|---|---|---|"]
    for e in out["summary"]:
        for t in e.get("best_other", {}):
            lines.append(f"| {e['family']} | {t} dB | {_fmt(e['bpv'][t], '.4g')} | {_fmt(e['bpv_latents'][t], '.4g')} | "
                         f"{e['best_other'][t] or '-'} | {_fmt(e['best_other_bpv'][t], '.4g')} | "
                         f"{_fmt(e['vcinr_over_best_other'][t])} | {_fmt(e['vcinr_latents_over_best_other'][t])} |")
    for e in out["summary"]:
        if "at_best_psnr" in e:
            a = e["at_best_psnr"]
            lines.append(f"\n{e['family']} at its highest PSNR, {a['psnr']:.2f} dB: {a['bpv']:.4g} bpv "
                         f"({a['bpv_latents']:.4g} latent bytes only); the best other there: "
                         f"{a['best_other'] or '-'} at {_fmt(a['best_other_bpv'], '.4g')} bpv.")
    for e in out["summary"]:
        if "vcinr_over_best_classical" in e:
            lines.append(
                f"\n{e['family']}'s bits / the best classical codec's (below 1: vcinr wins): "
                + ", ".join(f"{t} dB: {_fmt(e['vcinr_over_best_classical'][t])}x" for t in targets)
                + "; with the model's bits: "
                + ", ".join(f"{t} dB: {_fmt(e['vcinr_over_best_classical_with_model'][t])}x" for t in targets)
            )
    cost = out.get("vcinr_cost")
    if cost:
        lines.append(
            f"\nvcinr on {cost['device_name']}: {cost['decode_flops_per_value']:,.0f} FLOPs per decoded value, "
            f"{cost['encode_flops_per_value']:,.0f} per encoded value ({cost['encode_inner_steps']} inner steps); "
            f"the measured codec throughput reaches {cost['decode_fraction_of_matmul']:.2%} (decode) and "
            f"{cost['encode_fraction_of_matmul']:.2%} (encode) of this machine's float32 matmul rate "
            f"({cost['matmul_flop_s_float32'] / 1e9:.3g} GFLOP/s)."
        )
    if out["model"]:
        lines.append(f"Model {out['model'][:16]}: {out['model_bytes']:,} bytes (INR and coders), counted in 'bpv with model'.")
    lines += [f"Note: {n}" for n in out["notes"]]
    return "\n".join(lines)


def _bounded_markdown(out: dict[str, Any], lines: list[str]) -> str:
    lines = lines[:2] + [
        "", "| bound | codec | bpv | ratio | max abs err / bound | bound met | PSNR dB | enc MB/s | dec MB/s |",
        "|" + "---|" * 9,
    ]
    for r in out["rows"]:
        lines.append(
            f"| {r['knob']} | {r['family']} | {r['bpv']:.4g} | {r['ratio_vs_float32']:.3g} | "
            f"{r['max_abs_error'] / r['bound']:.3f} | {'yes' if r['bound_met'] else 'NO'} | {r['psnr']:.2f} | "
            f"{r['encode_mb_s']:.3g} | {r['decode_mb_s']:.3g} |"
        )
    lines += ["", "Among the codecs that kept the bound at every point:", "",
              "vcinr / classical, vcinr / best other: vcinr's compression ratio over theirs (above 1: vcinr wins, "
              "its bits over theirs being below 1).", "",
              "| bound (x range) | best classical (ratio) | best baseline (ratio) | best vcinr (ratio; with model bytes) "
              "| vcinr / classical | vcinr / best other | broke the bound |",
              "|---|---|---|---|---|---|---|"]
    for e in out["summary"]:
        vc = f"{e['best_vcinr']} ({_fmt(e['best_vcinr_ratio'])}; {_fmt(e['best_vcinr_ratio_with_model'])})" \
            if e["best_vcinr"] else "-"
        base = f"{e['best_baseline']} ({_fmt(e['best_baseline_ratio'])})" if e["best_baseline"] else "-"
        lines.append(f"| {e['bound_rel']:g} | {e['best_classical']} ({_fmt(e['best_classical_ratio'])}) | {base} | {vc} | "
                     f"{_fmt(e.get('vcinr_ratio_over_best_classical'))} | {_fmt(e.get('vcinr_ratio_over_best_other'))} | "
                     f"{', '.join(e['broke_the_bound']) or '-'} |")
    if out["model"]:
        lines.append(f"\nModel {out['model'][:16]}: {out['model_bytes']:,} bytes (INR and coders), counted in 'with model bytes'.")
    lines += [f"Note: {n}" for n in out["notes"]]
    return "\n".join(lines)


def plot(out: dict[str, Any], path: str) -> None:
    """Bits per value against PSNR per codec family (bounded mode: ratio against the bound) to ``path``."""
    fig, ax = pyplot().subplots(figsize=(8, 5))
    if out["mode"] == "bounded":
        _bounded_axes(out, ax)
    else:
        _psnr_axes(out, ax)
    ax.set_xscale("log")
    ax.set_title(out["fields"][:90], fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _psnr_axes(out: dict[str, Any], ax) -> None:
    families: dict[str, list[dict[str, Any]]] = {}
    for r in out["rows"]:
        if r["psnr"] < 200:
            families.setdefault(r["family"], []).append(r)
    for fam, rs in families.items():
        rs = sorted(rs, key=lambda r: r["bpv"])
        if rs[0]["kind"] == "baseline":  # a sweep of two knobs (EOF k and step): its Pareto front
            rs = [r for i, r in enumerate(rs) if all(r["psnr"] > q["psnr"] for q in rs[:i])]
        style = {"vcinr": "o-", "baseline": "s-"}.get(rs[0]["kind"], ".--")
        ax.plot([r["bpv"] for r in rs], [r["psnr"] for r in rs], style, label=fam)
        if rs[0]["kind"] == "vcinr":
            ax.plot([r["bpv_latents"] for r in rs], [r["psnr"] for r in rs], "x-", alpha=0.7, label=f"{fam}, latents only")
            ax.plot([r["bpv_with_model"] for r in rs], [r["psnr"] for r in rs], "o:", alpha=0.5, label=f"{fam} + model bits")
    top = max((r["psnr"] for r in out["rows"] if r["kind"] == "vcinr"), default=60.0)
    ax.set_ylim(bottom=max(0.0, ax.get_ylim()[0]), top=max(top + 20.0, 60.0))  # the range where codecs compete
    ax.set_xlabel("bits per value (real bytes)")
    lo, hi = out["psnr_range"]
    ax.set_ylabel(f"PSNR (dB, [{lo}, {hi}] -> [0, 1])")


def _bounded_axes(out: dict[str, Any], ax) -> None:
    families: dict[str, list[dict[str, Any]]] = {}
    for r in out["rows"]:
        families.setdefault(r["family"], []).append(r)
    for fam, rs in families.items():
        rs = sorted(rs, key=lambda r: r["bound_rel"])
        ax.plot([r["bound_rel"] for r in rs], [r["ratio_vs_float32"] for r in rs],
                "o-" if rs[0]["kind"] == "vcinr" else ".--", label=fam)
    ax.set_yscale("log")
    ax.set_xlabel("max abs error bound / data range")
    ax.set_ylabel("compression ratio vs float32 (real bytes)")
