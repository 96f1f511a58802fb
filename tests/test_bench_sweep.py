"""Sweeps that go on until they pass the highest target PSNR, or say why they cannot."""

from __future__ import annotations

import numpy as np

from vcinr_sci.bench.baselines import TrainingBasis
from vcinr_sci.bench.candidates import Candidate, _line, baseline_candidates, classical_candidates
from vcinr_sci.bench.fields import Fields
from vcinr_sci.bench.sweep import MAX_EXTRA_POINTS, extend_sweeps


def _fake(family: str, knobs, next_knob, psnr_of, ceiling: str = "", kind: str = "baseline"):
    """A line of candidates whose knob is their PSNR's argument (no codec runs)."""
    def make(k):
        return Candidate(family, f"k={k}", [], kind=kind, extra={"k": k})

    cands = _line(make, knobs, next_knob, ceiling)
    return cands, lambda c: {"family": c.family, "knob": c.knob, "psnr": psnr_of(c.extra["k"]), "bpv": 1.0}


def _run(cands, measure, target=50.0):
    rows = [measure(c) for c in cands]
    return rows, extend_sweeps(cands, rows, measure, target)


def test_a_short_sweep_goes_on_until_it_passes_the_target():
    cands, measure = _fake("A", [1.0, 0.5, 0.25], lambda s: s / 2, lambda s: 30 - 6 * np.log2(s))
    rows, added = _run(cands, measure)
    assert [r["psnr"] for r in rows] == [30, 36, 42]
    assert [r["psnr"] for r in added] == [48, 54]  # stops at the first point past 50 dB
    assert not any("sweep_limit" in r for r in rows + added)


def test_a_sweep_that_passes_the_target_or_belongs_to_vcinr_is_not_extended():
    calls = []
    cands, measure = _fake("A", [1.0], lambda s: calls.append(s) or s / 2, lambda s: 55.0)
    vc, vc_measure = _fake("v", [1.0], lambda s: calls.append(s) or s / 2, lambda s: 30.0, kind="vcinr")
    for c in vc:
        c.kind = "vcinr"
    rows = [measure(c) for c in cands] + [vc_measure(c) for c in vc]
    assert extend_sweeps(cands + vc, rows, measure, 50.0) == [] and calls == []


def test_a_knob_that_cannot_go_finer_says_why():
    cands, measure = _fake("A", [8, 16], lambda b: b + 4 if b + 4 <= 23 else "keepbits 23 is all of float32",
                           lambda b: 2.0 * b)
    rows, added = _run(cands, measure)
    assert [r["knob"] for r in added] == ["k=20"]
    assert added[-1]["sweep_limit"] == "stops at 40.00 dB: keepbits 23 is all of float32"


def test_a_line_that_stops_gaining_names_its_ceiling():
    cands, measure = _fake("A", [1.0], lambda s: s / 2, lambda s: 46.0 - s, ceiling="EOFs exhausted: k = 9")
    rows, added = _run(cands, measure)
    # 45.5, 45.75, ... 45.969: the last gains under 0.1 dB over the point two before it
    assert [r["psnr"] for r in added][-1] == 45.96875 and len(added) == 5
    assert added[-1]["sweep_limit"] == "stops at 45.97 dB: EOFs exhausted: k = 9"


def test_a_line_that_gains_too_slowly_is_cut_with_a_word():
    cands, measure = _fake("A", [0], lambda i: i + 1, lambda i: 30.0 + 0.06 * i)
    _, added = _run(cands, measure)
    assert len(added) == MAX_EXTRA_POINTS and "still short" in added[-1]["sweep_limit"]


# -------------------------------------------------- the real lines of the bench's codecs


def _data(n: int, seed: int, rank: int = 40) -> np.ndarray:
    """Fields of ``rank`` patterns with falling weights: 12 training EOFs do not hold
    them all, so what EOF-12 leaves caps its PSNR."""
    rng = np.random.default_rng(0)
    patterns = rng.standard_normal((rank, 10, 12))
    coeffs = np.random.default_rng(seed).standard_normal((n, rank)) * 0.9 ** np.arange(rank)
    return (280 + np.einsum("nk,kij->nij", coeffs, patterns)).astype(np.float32)


def _measure_psnr(fields: Fields, lo_hi=(270.0, 290.0)):
    from vcinr_sci.bench.measure import measure

    return lambda c: measure(c, fields, lo_hi, 0)


def test_every_baseline_and_classical_line_can_go_on():
    basis = TrainingBasis.fit(_data(13, seed=1), max_k=1024)
    fields = Fields(_data(4, seed=2), None, None, "synthetic")
    cands = baseline_candidates(basis, fields, 2) + classical_candidates(fields)
    ends = {c.family for c in cands if c.finer is not None}
    assert ends == {c.family for c in cands} - {"Zstd (lossless)"}  # lossless: nothing finer to reach


def test_eof_lines_end_where_the_training_eofs_do():
    basis = TrainingBasis.fit(_data(13, seed=1), max_k=1024)
    assert basis.max_k == 12
    fields = Fields(_data(4, seed=2), None, None, "synthetic")
    cands = [c for c in baseline_candidates(basis, fields, 2) if c.family.startswith(("EOF abs", "EOF-k", "mean field ("))]
    rows, added = _run(cands, _measure_psnr(fields), target=80.0)
    limits = {r["family"]: r["sweep_limit"] for r in rows + added if r.get("sweep_limit")}
    assert limits["mean field (training)"].endswith("no knob: the training mean field alone")
    for fam in ("EOF abs-step (training)", "EOF-k (training)"):
        assert fam in limits and ("EOFs exhausted: k = 12" in limits[fam] or "too fine" in limits[fam]), limits
        assert max(r["psnr"] for r in added if r["family"] == fam) > max(r["psnr"] for r in rows if r["family"] == fam)
        assert all(r["knob"].startswith("k=12 ") for r in added if r["family"] == fam)


def test_era5_hourly_eof_abs_step_passes_50_db(shared_data):
    """Issue 23: on hourly ERA5 the EOF abs-step grid stopped near 45 dB; its line goes on
    (more EOFs, finer step) past 50 dB instead of leaving it 'not reached'."""
    import xarray as xr

    with xr.open_dataset(shared_data / "era5_t2m_uk_2019-03_hourly.nc") as ds:
        x = ds["t2m"].values.astype(np.float32)
    train, test = x[:563], x[-24:]
    basis = TrainingBasis.fit(train, max_k=1024)
    fields = Fields(test, None, None, "era5 uk, last 24 hours")
    cands = [c for c in baseline_candidates(basis, fields, 24) if c.family == "EOF abs-step (training)"]
    rows, added = _run(cands, _measure_psnr(fields, (float(train.min()), float(train.max()))))
    assert max(r["psnr"] for r in rows) < 50.0 <= added[-1]["psnr"]
    assert not any(r.get("sweep_limit") for r in rows + added)
