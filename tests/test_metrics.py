"""Error and size figures (vcinr_sci.metrics) on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from vcinr_sci import metrics
from vcinr_sci.data.grids import SphericalGrid


def test_psnr_of_known_mse():
    ref = np.zeros((4, 5))
    assert metrics.mse(ref, ref + 0.1) == pytest.approx(0.01)
    assert metrics.rmse(ref, ref + 0.1) == pytest.approx(0.1)
    assert metrics.psnr(ref, ref + 0.1) == pytest.approx(20.0)
    assert metrics.psnr(ref, ref + 0.01) == pytest.approx(40.0)
    # the range enters squared: R = 118.27 K (the COIN++ ERA5 range) with a 1.1827 K error = 40 dB
    assert metrics.psnr(ref, ref + 1.1827, data_range=118.27) == pytest.approx(40.0)
    assert metrics.psnr(ref, ref) == float("inf")


def test_psnr_per_item():
    ref = np.zeros((3, 2, 2))
    approx = ref + np.array([0.1, 0.01, 0.0])[:, None, None]
    np.testing.assert_allclose(metrics.psnr_per_item(ref, approx)[:2], [20.0, 40.0])
    assert metrics.psnr_per_item(ref, approx)[2] == float("inf")
    # the mean of per-item PSNR is not the PSNR of the mean error
    assert metrics.psnr_per_item(ref[:2], approx[:2]).mean() == pytest.approx(30.0)
    assert metrics.psnr(ref[:2], approx[:2]) == pytest.approx(10 * np.log10(1 / 0.00505))


def test_weighted_rmse_with_cos_lat_weights():
    lat = np.array([-60.0, 0.0, 60.0])
    grid = SphericalGrid(lat, [0.0, 90.0, 180.0, 270.0])
    w = grid.area_weights()
    ref = np.zeros((2,) + grid.shape)  # two fields: weights broadcast over leading axes
    # a uniform error: weighting changes nothing
    assert metrics.weighted_rmse(ref, ref + 0.3, w) == pytest.approx(0.3)
    # an error of 1 on the equator only: sqrt(w_eq / sum w), w ~ cos lat = (0.5, 1, 0.5)
    eq = ref.copy()
    eq[:, 1] = 1.0
    assert metrics.weighted_rmse(ref, eq, w) == pytest.approx(np.sqrt(1.0 / 2.0))
    assert metrics.rmse(ref, eq) == pytest.approx(np.sqrt(1.0 / 3.0))
    # the same error at 60 N weighs half as much
    north = ref.copy()
    north[:, 2] = 1.0
    assert metrics.weighted_rmse(ref, north, w) == pytest.approx(np.sqrt(0.5 / 2.0))
    # per-latitude weights as a column broadcast too
    cos = np.cos(np.deg2rad(lat))[:, None]
    assert metrics.weighted_rmse(ref, eq, cos) == pytest.approx(np.sqrt(1.0 / 2.0))


def test_max_abs_error():
    ref = np.array([[280.0, 290.0], [300.0, 310.0]])
    approx = ref + np.array([[0.5, -2.25], [0.0, 1.0]])
    assert metrics.max_abs_error(ref, approx) == pytest.approx(2.25)
    assert metrics.max_abs_error(ref, ref) == 0.0


def test_nan_points_are_ignored():
    ref = np.array([[1.0, np.nan, 3.0], [np.nan, 5.0, 6.0]])
    approx = np.array([[1.5, 1e9, 3.0], [-1e9, 5.0, 6.5]])
    assert metrics.mse(ref, approx) == pytest.approx((0.25 + 0.25) / 4)
    assert metrics.max_abs_error(ref, approx) == pytest.approx(0.5)
    w = np.array([[1.0, 1.0, 1.0], [3.0, 3.0, 3.0]])
    assert metrics.weighted_rmse(ref, approx, w) == pytest.approx(np.sqrt((0.25 * 1 + 0.25 * 3) / (1 + 1 + 3 + 3)))
    assert metrics.psnr(ref, approx) == pytest.approx(10 * np.log10(1 / 0.125))
    items = metrics.psnr_per_item(ref, approx)
    np.testing.assert_allclose(items, 10 * np.log10(1 / np.array([0.25 / 2, 0.25 / 2])))
    assert metrics.max_abs_error(np.full(3, np.nan), np.zeros(3)) == 0.0


def test_shape_mismatch_and_bits_per_value():
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.mse(np.zeros(3), np.zeros(4))
    assert metrics.bits_per_value(100, 800) == 1.0
    assert metrics.bits_per_value(46 * 90 * 4, 46 * 90) == 32.0  # float32
