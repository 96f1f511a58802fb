"""The summary of ``vcinr bench codecs``'s rows: the bits each codec family needs for a
target PSNR, vcinr against the best other codec, and, in the bounded mode, the best
ratio per bound among the codecs that kept it."""

from __future__ import annotations

from typing import Any, Sequence

TARGETS_DB = (40.0, 45.0, 50.0)


def needed_bits(points: list[tuple[float, float]], target: float) -> tuple[float | None, bool]:
    """Fewest bpv to reach ``target`` dB along a sweep of (bpv, psnr) points, read off
    the sweep's lower convex front: bits as a function of PSNR, the lowest convex
    piecewise-linear curve on or under every point, made non-decreasing (a point that
    reaches more dB for fewer bits serves every target below it). Every point of that
    front is achievable: PSNR is the mean of per-field PSNRs, so coding a fraction of the
    fields at one point of the sweep and the rest at another gives the straight line
    between them, in bits and in dB. Interpolating on it moves the answer continuously
    with the points and never lets a dominated point (a two-knob sweep holds many) decide
    it. (A front in log-bits is not achievable: between a cheap point and a far dearer
    one it promised several times fewer bits than any mixture gives.) The flag is True
    when the target lies below the cheapest point's PSNR, so the figure is only an upper
    bound (the codec's knob did not go coarse enough)."""
    if not points:
        return None, False
    if target > max(p for _, p in points):
        return None, False
    front = lower_front(points)
    p0, b0 = front[0]
    if target <= p0:
        return float(b0), target < p0
    for (pa, ba), (pb, bb) in zip(front, front[1:]):
        if target <= pb:
            return float(ba + (target - pa) / (pb - pa) * (bb - ba)), False
    raise AssertionError("unreachable: the front ends at the highest PSNR")


def lower_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The vertices (psnr, bpv) of the lower convex front of ``points`` ((bpv, psnr)),
    from the cheapest point (the highest PSNR among equally cheap ones) to the highest
    PSNR: each next vertex is the point beyond the last that the flattest line from it
    reaches (the farthest on a tie). Slopes start >= 0 and only grow."""
    pts = sorted({(p, b) for b, p in points})
    b_min = min(b for _, b in pts)
    front = [max((p, b) for p, b in pts if b == b_min)]
    while True:
        pc, bc = front[-1]
        beyond = [(p, b) for p, b in pts if p > pc]
        if not beyond:
            return front
        front.append(min(beyond, key=lambda q: ((q[1] - bc) / (q[0] - pc), -q[0])))


SUMMARY_COLUMNS = {
    "classical": ["bpv"],
    "baseline": ["bpv", "bpv_with_model", "bpv_model_1e9"],
    "vcinr": ["bpv", "bpv_latents", "bpv_with_model", "bpv_model_1e9"],
}


def summarise(rows: list[dict[str, Any]], targets: Sequence[float] = TARGETS_DB) -> list[dict[str, Any]]:
    """Per codec family: bits needed at each target; for vcinr and the baselines also with
    the model's bits; for vcinr the best other codec (classical or baseline) at each
    target and vcinr's bits over its (whole chunks, and latent bytes alone; below 1:
    vcinr wins)."""
    families: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        families.setdefault(r["family"], []).append(r)
    out = []
    for fam, rs in families.items():
        entry: dict[str, Any] = {"family": fam, "kind": rs[0]["kind"], "top_psnr": max(r["psnr"] for r in rs),
                                 # why the sweep could not go on to the highest target (sweep.py)
                                 "sweep_limit": next((r["sweep_limit"] for r in rs if r.get("sweep_limit")), None)}
        for col in SUMMARY_COLUMNS[rs[0]["kind"]]:
            need = {str(t): needed_bits([(r[col], r["psnr"]) for r in rs if r[col] > 0], t) for t in targets}
            entry[col] = {t: v for t, (v, _) in need.items()}
            entry[f"{col}_upper_bound"] = {t: flag for t, (_, flag) in need.items()}
        out.append(entry)
    best, best_other = {}, {}
    for t in map(str, targets):
        classical = [e["bpv"][t] for e in out if e["kind"] == "classical" and e["bpv"][t] is not None]
        best[t] = min(classical) if classical else None
        others = [(e["bpv"][t], e["family"]) for e in out if e["kind"] != "vcinr" and e["bpv"][t] is not None]
        best_other[t] = min(others) if others else (None, None)

    def ratio(num: float | None, den: float | None) -> float | None:
        return num / den if num and den else None

    # vcinr's bits over the other's: below 1, vcinr needs fewer bits (the README's reading)
    for e in out:
        if e["kind"] == "vcinr":
            e["vcinr_over_best_classical"] = {t: ratio(e["bpv"][t], best[t]) for t in best}
            e["vcinr_over_best_classical_with_model"] = {t: ratio(e["bpv_with_model"][t], best[t]) for t in best}
            e["best_other"] = {t: best_other[t][1] for t in best}
            e["best_other_bpv"] = {t: best_other[t][0] for t in best}
            e["vcinr_over_best_other"] = {t: ratio(e["bpv"][t], best_other[t][0]) for t in best}
            e["vcinr_latents_over_best_other"] = {t: ratio(e["bpv_latents"][t], best_other[t][0]) for t in best}
            e["at_best_psnr"] = _at_best_psnr(families[e["family"]], families)
    return out


def _at_best_psnr(own: list[dict[str, Any]], families: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """vcinr's highest-PSNR point, and the fewest bits any other codec needs for that PSNR
    (where the targets lie above what vcinr reaches, this still compares it)."""
    top = max(own, key=lambda r: r["psnr"])
    need = [(needed_bits([(r["bpv"], r["psnr"]) for r in rs if r["bpv"] > 0], top["psnr"])[0], fam)
            for fam, rs in families.items() if rs[0]["kind"] != "vcinr"]
    bits, fam = min(((b, f) for b, f in need if b is not None), default=(None, None))
    return {"psnr": top["psnr"], "bpv": top["bpv"], "bpv_latents": top["bpv_latents"],
            "best_other": fam, "best_other_bpv": bits}


def bounded_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per bound: the best ratio of the classical codecs, of the baselines and of vcinr
    (latents and correction; and with the model's bytes), among the codecs that kept the
    bound at every point (and NaN points exactly), and the codecs that broke it; vcinr's
    compression ratio over the best classical's and the best other's (above 1: vcinr
    wins, as its bits over theirs are below 1)."""
    out = []
    for rel in sorted({r["bound_rel"] for r in rows}):
        rs = [r for r in rows if r["bound_rel"] == rel]
        kept = [r for r in rs if r["bound_met"] and r.get("nan_exact", True)]

        def best(kinds: tuple[str, ...]) -> dict[str, Any] | None:
            return max((r for r in kept if r["kind"] in kinds), key=lambda r: r["ratio_vs_float32"], default=None)  # noqa: B023  (called at once, below)

        best_c, best_b, best_v = best(("classical",)), best(("baseline",)), best(("vcinr",))
        best_o = best(("classical", "baseline"))
        entry: dict[str, Any] = {
            "bound_rel": rel,
            "bound": rs[0]["bound"],
            "best_classical": best_c and best_c["family"],
            "best_classical_ratio": best_c and best_c["ratio_vs_float32"],
            "best_baseline": best_b and best_b["family"],
            "best_baseline_ratio": best_b and best_b["ratio_vs_float32"],
            "best_other": best_o and best_o["family"],
            "best_other_ratio": best_o and best_o["ratio_vs_float32"],
            "best_vcinr": best_v and best_v["family"],
            "best_vcinr_ratio": best_v and best_v["ratio_vs_float32"],
            "best_vcinr_ratio_with_model": best_v and 32 / best_v["bpv_with_model"],
            "broke_the_bound": [f"{r['family']} ({r['knob']})" for r in rs if r not in kept],
        }
        if best_c and best_v:
            entry["vcinr_ratio_over_best_classical"] = best_v["ratio_vs_float32"] / best_c["ratio_vs_float32"]
        if best_o and best_v:
            entry["vcinr_ratio_over_best_other"] = best_v["ratio_vs_float32"] / best_o["ratio_vs_float32"]
        out.append(entry)
    return out
