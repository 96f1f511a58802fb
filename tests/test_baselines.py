"""Baselines fitted on vcinr's training data: round trips, NaN positions, bytes counted
from what the codecs write, the model counted once, and bounds kept."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from _vcinr_tiny import QUALITY, tiny_artifact
from imagecodecs.numcodecs import Sperr
from scipy.stats import norm

from vcinr_sci.bench import codecs as bench
from vcinr_sci.bench.baselines import BaselineFormatError, TrainingBasis, TrainingBasisCodec, training_fields
from vcinr_sci.bench.candidates import MAX_EOFS
from vcinr_sci.bench.fields import load_fields
from vcinr_sci.bench.masked import NanMasked
from vcinr_sci.model.artifact import load_artifact

GRID = (12, 20)
RANK = 3


def _fields(n: int, seed: int) -> np.ndarray:
    """Fields of rank ``RANK`` around a mean, float32, with a static 'land' mask (NaN)."""
    rng = np.random.default_rng(0)
    mean = 280 + 10 * rng.standard_normal(GRID)
    patterns = rng.standard_normal((RANK, *GRID))
    coeffs = np.random.default_rng(seed).standard_normal((n, RANK)) * [4.0, 2.0, 1.0]
    x = (mean + np.einsum("nk,kij->nij", coeffs, patterns)).astype(np.float32)
    x[:, :3, :4] = np.nan
    return x


@pytest.fixture(scope="module")
def basis() -> TrainingBasis:
    return TrainingBasis.fit(_fields(200, seed=1), max_k=8)


def test_mask_and_eofs_come_from_the_training_fields(basis):
    assert basis.missing.sum() == 12 and basis.missing[:3, :4].all()
    assert basis.max_k == 8
    eofs = basis.eofs.astype(np.float64)
    assert np.allclose(eofs @ eofs.T, np.eye(8), atol=1e-5)  # orthonormal
    assert (eofs[:, basis.missing.reshape(-1)] == 0).all()
    assert basis.sigma[0] > basis.sigma[1] > basis.sigma[2] > 100 * basis.sigma[3]  # the data have rank 3


def test_eof_round_trip_error_within_the_quantisation_step(basis):
    test = _fields(16, seed=2)
    step = 0.05
    codec = TrainingBasisCodec(basis, k=RANK, step=step)
    decoded = codec.decode(codec.encode(test))
    assert decoded.dtype == np.float32 and decoded.shape == test.shape
    assert np.array_equal(np.isnan(decoded), np.isnan(test))
    # each coefficient is off by at most step * sigma / 2; the EOFs have unit norm
    limit = np.sum(step * basis.sigma[:RANK] / 2 * np.abs(basis.eofs[:RANK]).max(axis=1)) + 1e-3
    assert np.nanmax(np.abs(decoded - test)) <= limit
    # the mean field alone is much worse on the same fields
    mean_only = TrainingBasisCodec(basis)
    assert np.nanmax(np.abs(mean_only.decode(mean_only.encode(test)) - test)) > 10 * limit


def _coefficients(basis: TrainingBasis, fields: np.ndarray, k: int) -> np.ndarray:
    """The fields' anomaly coefficients on the first ``k`` EOFs, ``(n, k)`` float64."""
    anomaly = np.nan_to_num(fields.astype(np.float64) - basis.mean).reshape(len(fields), -1)
    return anomaly @ basis.eofs[:k].T.astype(np.float64)


@pytest.mark.parametrize("absolute", [False, True])
def test_coefficient_bits_near_the_gaussian_entropy(basis, absolute):
    """rANS under each coefficient's fitted Gaussian: the bytes are close to the ideal
    -log2 p of the symbols (a raw or fixed-length code would be far above it). Relative
    step: one table for all; absolute: a table per coefficient, each in units of the step."""
    test = _fields(400, seed=3)
    k = RANK
    sigma = basis.sigma[:k].astype(np.float64)
    step = 0.2 * basis.deviation if absolute else 0.5
    steps = np.full(k, step) if absolute else step * sigma  # in data units
    codec = TrainingBasisCodec(basis, k=k, step=step, absolute=absolute)
    data = codec.encode(test)
    q = np.round(_coefficients(basis, test, k) / steps)
    ideal = -np.log2(norm.cdf((q + 0.5) * steps / sigma) - norm.cdf((q - 0.5) * steps / sigma)).sum()
    assert ideal < 8 * len(data) < 1.05 * ideal + 8 * 16  # within 5 %, plus framing and the rANS state


def test_absolute_step_round_trip_within_half_a_step_per_coefficient(basis):
    """One step for all: each decoded coefficient within step / 2 of the field's, the rest
    of the error what the first k EOFs do not span."""
    test = _fields(16, seed=2)
    step = 0.02 * basis.deviation
    for k in (2, 8):  # fewer EOFs than the data's rank, and more
        codec = TrainingBasisCodec(basis, k=k, step=step, absolute=True)
        decoded = codec.decode(codec.encode(test))
        assert decoded.dtype == np.float32 and np.array_equal(np.isnan(decoded), np.isnan(test))
        true, back = _coefficients(basis, test, k), _coefficients(basis, decoded, k)
        rounding = 1e-3  # float32 fields
        assert np.abs(back - true).max() <= step / 2 + rounding
        assert np.abs(back - true).max() > step / 10  # it did quantise
        truncated = np.linalg.norm(_coefficients(basis, test, basis.max_k)[:, k:], axis=1)
        err = np.linalg.norm(np.nan_to_num(decoded.astype(np.float64) - test).reshape(len(test), -1), axis=1)
        assert (err <= np.sqrt(k * (step / 2) ** 2 + truncated**2) + rounding).all()
        if k == 2:
            assert truncated.mean() > 5 * step  # the third EOF is the larger error


def test_absolute_step_weak_coefficients_cost_almost_nothing(basis):
    """Coefficients far weaker than the step round to 0 under a table that puts nearly all
    its mass there: EOFs beyond the data's rank add (almost) no bytes, where a step
    relative to their own (tiny) deviation codes their noise."""
    test = _fields(16, seed=9)
    step = 0.05 * basis.deviation
    sizes = {k: len(TrainingBasisCodec(basis, k=k, step=step, absolute=True).encode(test)) for k in (RANK, 8)}
    assert sizes[8] - sizes[RANK] <= 2
    relative = {k: len(TrainingBasisCodec(basis, k=k, step=0.5).encode(test)) for k in (RANK, 8)}
    assert relative[8] - relative[RANK] > 16 * (8 - RANK) / 8  # over a bit a noise coefficient


def test_absolute_step_bytes_fall_as_the_step_grows(basis):
    test = _fields(16, seed=10)
    sizes = [len(TrainingBasisCodec(basis, k=8, step=s * basis.deviation, absolute=True).encode(test))
             for s in (0.005, 0.02, 0.08, 0.32)]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)


def test_absolute_step_too_fine_for_the_tables_is_refused(basis):
    with pytest.raises(ValueError, match="too fine"):
        TrainingBasisCodec(basis, k=2, step=1e-4 * basis.sigma[0], absolute=True)
    with pytest.raises(ValueError, match="step must be"):
        TrainingBasisCodec(basis, k=2, step=float("inf"), absolute=True)


@pytest.mark.parametrize("absolute", [False, True])
def test_a_fields_own_nan_mask_comes_back_and_is_paid_for(basis, absolute):
    test = _fields(4, seed=4)
    codec = TrainingBasisCodec(basis, k=2, step=0.1 * basis.deviation if absolute else 0.5, absolute=absolute)
    plain = codec.encode(test)
    test[1, 5, 5:9] = np.nan  # missing only in this field
    own = codec.encode(test)
    assert len(own) > len(plain)
    assert np.array_equal(np.isnan(codec.decode(own)), np.isnan(test))


def test_residual_codec_keeps_its_point_wise_error(basis):
    test = _fields(6, seed=5)
    test += np.random.default_rng(6).standard_normal(test.shape).astype(np.float32)  # beyond rank 3
    tol = 0.05
    codec = TrainingBasisCodec(basis, k=2, step=0.5, residual=Sperr(level=tol, mode="pwe", shape=GRID, dtype=np.float64))
    decoded = codec.decode(codec.encode(test))
    assert np.array_equal(np.isnan(decoded), np.isnan(test))
    err = np.nanmax(np.abs(decoded - test))
    assert 0 < err <= tol + 1e-4  # SPERR's bound, plus the float32 rounding of the sum


@pytest.mark.parametrize("absolute", [False, True])
def test_damaged_chunks_are_refused(basis, absolute):
    codec = TrainingBasisCodec(basis, k=8, step=0.05 * basis.deviation if absolute else 0.5, absolute=absolute)
    data = codec.encode(_fields(2, seed=7))
    with pytest.raises(BaselineFormatError, match="left over"):
        codec.decode(data + b"\0")
    with pytest.raises(BaselineFormatError, match="truncated"):
        codec.decode(data[:1])
    with pytest.raises(BaselineFormatError, match="past the end"):
        codec.decode(data[:-1])


@pytest.mark.parametrize("absolute", [False, True])
def test_short_and_escape_heavy_strings_round_trip(basis, absolute):
    """compressai's encoder buffer holds one word per symbol: one coefficient of one field,
    or fields far from the training ones (every coefficient escaping its table) need more."""
    step = 0.05 * basis.deviation if absolute else 0.5
    one = _fields(1, seed=11)[0]
    far = _fields(2, seed=12) + (300 * np.random.default_rng(13).standard_normal((2, *GRID))).astype(np.float32)
    for k, fields in ((1, one), (8, far)):
        codec = TrainingBasisCodec(basis, k=k, step=step, absolute=absolute)
        stack = fields.reshape(-1, *GRID)
        symbols = codec._symbols(stack)
        # the decoder got every symbol back: the fields rebuilt from the encoder's own symbols
        rebuilt = np.where(np.isnan(stack), np.nan, codec._reconstruct(symbols)).astype(np.float32)
        assert np.array_equal(codec.decode(codec.encode(fields)).reshape(stack.shape), rebuilt, equal_nan=True)
        if k == 8 and absolute:
            assert (np.abs(symbols[:, RANK:]) > 1).all()  # the weak coefficients' tables end at +-1


def test_coefficients_beyond_the_coders_reach_are_refused(basis):
    """A symbol of 2**27 steps or more would hang compressai's encoder: a clear error instead."""
    codec = TrainingBasisCodec(basis, k=8, step=0.5)  # steps of the noise EOFs' float32 deviation
    far = _fields(1, seed=14) + (1e3 * np.random.default_rng(15).standard_normal((1, *GRID))).astype(np.float32)
    with pytest.raises(ValueError, match="more than compressai.s rANS codes"):
        codec.encode(far)


def test_model_bytes_hold_mean_mask_and_k_eofs(basis):
    values = math.prod(GRID)
    sizes = [len(TrainingBasisCodec(basis, k=k).model_bytes()) for k in (0, 2, 4)]
    assert sizes[0] >= 4 * values
    assert sizes[2] - sizes[1] >= 2 * 4 * (values + 1)  # two more float32 EOFs and deviations


def test_nan_masked_classical_codec_round_trip():
    x = _fields(1, seed=8)[0]
    codec = NanMasked([Sperr(level=0.01, mode="pwe", shape=GRID, dtype=np.float32)], GRID, np.float32)
    decoded = codec.decode(codec.encode(x))
    assert np.array_equal(np.isnan(decoded), np.isnan(x))
    assert np.nanmax(np.abs(decoded - x)) <= 0.01 + np.spacing(np.float32(300))  # SPERR's float32 rounding


# ------------------------------------------------------------------ in vcinr bench codecs


@pytest.fixture(scope="module")
def bench_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("baselines")
    results = {}
    for n in (2, 4):
        path = out / f"r{n}.json"
        rc = bench.main(["--model", str(tiny_artifact()), "--quick", "--fields", str(n), "--more-steps", "",
                         "--levels", QUALITY, "--chunk-fields", "2", "--no-classical", "--json", str(path)])
        assert rc == 0
        results[n] = json.loads(path.read_text())
    return results


def test_bench_bytes_are_the_codecs_and_the_model_is_counted_once(bench_runs):
    result = bench_runs[4]
    art = load_artifact(tiny_artifact())
    basis = TrainingBasis.fit(training_fields(art.config.data, art.split), max_k=MAX_EOFS)
    fields = load_fields(bench.build_parser().parse_args(["--fields", "4"]), None, art.config)
    row = next(r for r in result["rows"] if r["family"] == "EOF-k (training)" and r["knob"] == "k=8 step=0.5")
    codec = TrainingBasisCodec(basis, k=8, step=0.5)
    assert row["bytes"] == sum(len(codec.encode(fields.values[i : i + 2])) for i in (0, 2))
    assert row["model_bytes"] == len(codec.model_bytes())
    absolute = next(r for r in result["rows"] if r["family"] == "EOF abs-step (training)" and r["knob"] == "k=64 step=0.25 x dev")
    codec_abs = TrainingBasisCodec(basis, k=64, step=0.25 * basis.deviation, absolute=True)
    assert absolute["bytes"] == sum(len(codec_abs.encode(fields.values[i : i + 2])) for i in (0, 2))
    assert absolute["model_bytes"] == len(codec_abs.model_bytes()) > row["model_bytes"]
    assert row["bpv_with_model"] == pytest.approx(8 * (row["bytes"] + row["model_bytes"]) / result["values"])
    assert row["bpv_model_1e9"] == pytest.approx(row["bpv"] + 8 * row["model_bytes"] / 1e9)
    # twice the fields: the same model bytes, not twice them
    same = next(r for r in bench_runs[2]["rows"] if r["knob"] == row["knob"] and r["family"] == row["family"])
    assert same["model_bytes"] == row["model_bytes"]
    for r in result["rows"]:
        assert r["nan_exact"]
        assert r["bpv"] == pytest.approx(8 * r["bytes"] / result["values"])


def test_bench_summary_compares_vcinr_with_the_best_of_all_others(bench_runs):
    result = bench_runs[4]
    families = {r["family"] for r in result["rows"]}
    assert {"mean field (training)", "EOF-k (training)", "EOF abs-step (training)", "mean field + SPERR",
            "mean field + SZ3", "EOF-8 + SPERR"} <= families
    summary = {e["family"]: e for e in result["summary"]}
    vc = next(e for e in result["summary"] if e["kind"] == "vcinr")
    for t, name in vc["best_other"].items():
        others = [e["bpv"][t] for e in result["summary"] if e["kind"] != "vcinr" and e["bpv"][t] is not None]
        if name is None:
            assert not others
            continue
        assert summary[name]["kind"] == "baseline"  # --no-classical: the baselines are all the others
        assert vc["best_other_bpv"][t] == min(others)


def test_bounded_baselines_keep_the_bound_at_every_point(tmp_path):
    out = tmp_path / "b.json"
    rc = bench.main(["--model", str(tiny_artifact()), "--bounded", "--bounds", "1e-4,1e-2", "--fields", "4",
                     "--levels", QUALITY, "--chunk-fields", "2", "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    rows = [r for r in result["rows"] if r["kind"] == "baseline"]
    assert {r["family"] for r in rows} == {"mean field + SPERR", "mean field + SZ3", "EOF-8 + SPERR", "EOF-8 + SZ3"}
    for r in rows:
        assert r["bound_met"] and r["max_abs_error"] <= r["bound"], r
    for e in result["summary"]:
        assert e["best_baseline"] is not None and e["best_other_ratio"] >= e["best_baseline_ratio"]


def test_suite_table_reads_the_bench_results(bench_runs, tmp_path):
    from vcinr_sci.bench import suite

    (tmp_path / "d.json").write_text(json.dumps(bench_runs[4]))
    rc = suite.main([str(tmp_path), "--json", str(tmp_path / "suite.json")])
    assert rc == 0
    (table,) = json.loads((tmp_path / "suite.json").read_text())["datasets"]
    assert table["name"] == "d" and table["bounds"] == []  # no d-bounded.json
    assert {r["family"] for r in table["rows"]} == {e["family"] for e in bench_runs[4]["summary"]}
    for t, best in table["best"].items():
        needed = [r["bpv"][t] for r in table["rows"] if r["bpv"][t] is not None]
        assert (best is None and not needed) or best[0] == min(needed)
