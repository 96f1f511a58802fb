"""Rate control: a linear level lands on its target PSNR on the chunk it codes, whatever
step its tuning items gave it (vcinr_sci/coding/rate_control.py); the step it chose
travels in the chunk, and a crafted one is refused."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from _vcinr_tiny import fields, linear_artifact

from vcinr_sci.codec.container import decode_container, encode_container
from vcinr_sci.codec.numcodecs import VCINRCodec
from vcinr_sci.coding.coefficients import MAX_STEP_EXPONENT, CoefficientCoder, step_factor
from vcinr_sci.coding.rate_control import LIMIT_GAP_DB, choose_coding, coarsest_within, level_steps
from vcinr_sci.errors import ChunkFormatError
from vcinr_sci.model.artifact import load_artifact
from vcinr_sci.model.registry import get_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_step_factors_are_exact_and_ascending():
    factors = [step_factor(e) for e in range(-MAX_STEP_EXPONENT, MAX_STEP_EXPONENT + 1)]
    assert factors[0] == 0.5 and step_factor(0) == 1.0 and factors[-1] == 2.0
    assert all(b > a for a, b in zip(factors, factors[1:]))
    assert max(b / a for a, b in zip(factors, factors[1:])) <= 1 + 1 / 32
    assert all(f * 64 == int(f * 64) for f in factors)  # a few bits of mantissa: every machine multiplies alike
    with pytest.raises(ValueError, match="outside"):
        step_factor(MAX_STEP_EXPONENT + 1)


def test_a_scaled_coder_decodes_its_own_strings_under_the_same_tables():
    rng = np.random.default_rng(0)
    scales = np.array([4.0, 2.0, 1.0, 0.5], np.float32)
    coder = CoefficientCoder(scales, np.full(4, 0.5, np.float32), 0.1)
    c = rng.normal(size=(12, 4)) * scales
    for exponent in (-32, -7, 9, 32):
        scaled = coder.scaled(exponent)
        assert scaled.step == coder.step * step_factor(exponent) and scaled._rans_tables is coder._rans_tables
        string, decoded = scaled.code(c)
        assert np.array_equal(scaled.decompress(string, len(c)).numpy(), decoded.numpy())
        assert np.abs(decoded.numpy() - c).max() <= scaled.step  # RDOQ moves a symbol by one step at most
    assert coder.scaled(0) is coder


@pytest.mark.parametrize("seed", range(8))
def test_the_search_finds_a_levels_coarsest_step_within_the_target(seed):
    rng = np.random.default_rng(seed)
    steps = level_steps(float(rng.uniform(0.01, 1.0)))
    error = np.cumsum(rng.uniform(0.0, 1.0, len(steps))) + rng.uniform(0, 5)  # nondecreasing in the step
    target = float(rng.uniform(error[0], error[-1] * 1.2))
    calls = []

    def measure(i):
        calls.append(i)
        return float(error[i])

    got = coarsest_within(steps, steps[int(rng.integers(0, len(steps)))], measure, target)
    assert got == int(np.flatnonzero(error <= target).max())
    assert got in calls and len(calls) <= 10
    assert coarsest_within(steps, steps[40], measure, float(error[0]) * 0.99) is None


def _levels_measure(steps, floor, jump):
    """Squared error ``floor + step^2`` under each level's tables, ``jump`` times that
    under the coarser level's (tables matter); bytes falling with the step."""
    coarsest = max(steps, key=steps.get)

    def measure(level, exponent):
        s = steps[level] * step_factor(exponent)
        return (floor + s * s) * (jump if level == coarsest else 1.0), int(1000 / s)

    return measure


def test_choose_coding_lands_within_the_levels_and_takes_the_shortest_string():
    steps = {"q0": 1.0, "q1": 0.5}
    measure = _levels_measure(steps, 0.0, 1.0)
    assert choose_coding(steps, "q0", measure, 0.25) == ("q0", -MAX_STEP_EXPONENT, True)  # step 0.5 exactly
    # a step finer than q0's finest: q1's tables, at the coarsest exponent within the target
    level, exponent, reached = choose_coding(steps, "q0", measure, 0.2)
    assert (level, reached) == ("q1", True) and 0.5 * step_factor(exponent) <= 0.2**0.5 < 0.5 * step_factor(exponent + 1)
    # tables that cost error: the shorter string of the levels searched that reach the target
    jumpy = _levels_measure(steps, 0.0, 1.5)
    level, exponent, _ = choose_coding(steps, "q0", jumpy, 0.3)
    assert level == "q1" and jumpy(level, exponent)[0] <= 0.3


def test_choose_coding_out_of_reach_aims_just_below_the_finest_step():
    steps = {"q0": 1.0, "q1": 0.5}
    measure = _levels_measure(steps, 1.0, 1.0)  # a floor of 1: the model's own error
    level, exponent, reached = choose_coding(steps, "q0", measure, 0.5)
    assert (level, reached) == ("q1", False)
    floor = measure("q1", -MAX_STEP_EXPONENT)[0] * 10 ** (LIMIT_GAP_DB / 10)
    assert measure(level, exponent)[0] <= floor < measure(level, exponent + 1)[0]


@pytest.fixture(scope="module")
def linear():
    return load_artifact(linear_artifact())


def _psnr(linear, out, x) -> float:
    span = linear.normaliser.hi - linear.normaliser.lo
    return float(-10 * np.log10(np.nanmean(((out.astype(np.float64) - x) / span) ** 2)))


def _step_of(chunk: bytes) -> tuple[str, int]:
    container = decode_container(chunk)
    payload = container.payload
    return container.header.quality, struct.unpack_from("<b", payload, 1)[0] if payload[0] & 2 else 0


@pytest.mark.parametrize("spread", [2.0, 0.5])
def test_a_level_lands_on_its_target_where_the_tuned_step_misses(linear, spread):
    """Fields whose EOF coefficients are doubled (halved), what the EOFs leave of them
    kept: the 40 dB level's tuned step gives them less (more) than 40 dB; coded through
    the codec, the chunk lands on 40-40.5 dB at a step it records."""
    model = get_model(linear.hash, [str(linear.path)])
    norm, index = linear.normaliser, np.arange(24)
    items = norm.normalise(fields(24).air_temperature.values.astype(np.float64)).reshape(24, -1)
    valid = np.ones(items.shape, bool)
    c = model.adapt(index, items, valid, 0)
    fitted = model.evaluate(index, c)
    items = model.evaluate(index, spread * c) + (items - fitted)
    x = norm.denormalise(items).reshape(24, *linear.grid.shape).astype(np.float32)
    items = norm.normalise(x.astype(np.float64)).reshape(24, -1)
    phi = model.adapt(index, items, valid, 0)
    tuned = model.kind.evaluate(index, model.coder("q1").quantise(phi))
    target = linear.metrics["levels"]["q1"]["target_psnr"]
    assert abs(-10 * np.log10(np.mean((tuned - items) ** 2)) - target) > 0.5  # off by more than the promise
    codec = VCINRCodec(linear.hash, "q1", linear.grid.to_dict(), model_path=str(linear.path))
    chunk = codec.encode(x)
    assert _step_of(chunk) != ("q1", 0)
    assert target <= _psnr(linear, codec.decode(chunk).reshape(x.shape), x) <= target + 0.5


def test_a_target_past_the_models_reach_is_met_by_a_correction(linear):
    """Noise the EOFs cannot follow puts 40 dB out of the model's reach on these fields:
    the chunk carries a correction (the bounded mode's residual section) at the loosest
    bound that reaches the target, and lands within 0.5 dB of it."""
    x = fields(24).air_temperature.values.astype(np.float64)
    span = linear.normaliser.hi - linear.normaliser.lo
    x = (x + np.random.default_rng(0).normal(scale=span * 10 ** (-37 / 20), size=x.shape)).astype(np.float32)
    codec = VCINRCodec(linear.hash, "q1", linear.grid.to_dict(), model_path=str(linear.path))
    chunk = codec.encode(x)
    assert decode_container(chunk).residual is not None
    assert 40.0 <= _psnr(linear, codec.decode(chunk).reshape(x.shape), x) <= 40.5
    reachable = fields(24).air_temperature.values.astype(np.float32)
    assert decode_container(codec.encode(reachable)).residual is None


def test_a_rate_controlled_chunk_keeps_its_error_bound(linear):
    x = fields(8).air_temperature.values.astype(np.float64)
    x = (x.mean(axis=0) + 2.0 * (x - x.mean(axis=0))).astype(np.float32)
    codec = VCINRCodec(linear.hash, "q1", linear.grid.to_dict(), model_path=str(linear.path), max_abs_error=0.02)
    chunk = codec.encode(x)
    assert _step_of(chunk)[1] != 0
    assert np.abs(codec.decode(chunk).reshape(x.shape) - x).max() <= 0.02


def test_a_crafted_step_exponent_is_refused(linear):
    x = fields(4).air_temperature.values.astype(np.float32)
    codec = VCINRCodec(linear.hash, "q1", linear.grid.to_dict(), model_path=str(linear.path))
    container = decode_container(codec.encode(x))
    payload = container.payload
    rest = payload[2:] if payload[0] & 2 else payload[1:]

    def with_payload(p: bytes) -> bytes:
        return encode_container(container.header, container.mask, p)

    assert np.isfinite(codec.decode(with_payload(bytes([2, 5]) + rest))).all()  # a valid exponent decodes
    for bad in (bytes([2, 0]) + rest, bytes([2, 33]) + rest, bytes([2, 0x80]) + rest, bytes([2])):
        with pytest.raises(ChunkFormatError, match="step exponent"):
            codec.decode(with_payload(bad))
