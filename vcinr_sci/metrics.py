"""Error and size figures, in the units climate users quote.

PSNR is ``10 log10(R^2 / MSE)``: callers state the range ``R`` (1 for data scaled to
[0, 1] by the model's normalisation or by a fixed physical range). NaN points are
ignored everywhere.
"""

from __future__ import annotations

import numpy as np


def _valid(reference: np.ndarray, approx: np.ndarray):
    reference, approx = np.asarray(reference, np.float64), np.asarray(approx, np.float64)
    if reference.shape != approx.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {approx.shape}")
    return reference, approx, np.isfinite(reference)


def mse(reference, approx) -> float:
    r, a, ok = _valid(reference, approx)
    return float(np.mean((r[ok] - a[ok]) ** 2))


def rmse(reference, approx) -> float:
    return float(np.sqrt(mse(reference, approx)))


def psnr(reference, approx, data_range: float = 1.0) -> float:
    m = mse(reference, approx)
    return float("inf") if m == 0 else float(10 * np.log10(data_range**2 / m))


def psnr_per_item(reference, approx, data_range: float = 1.0) -> np.ndarray:
    """PSNR of each item along axis 0 (the papers average these)."""
    r, a, ok = _valid(reference, approx)
    err = np.where(ok, (r - a) ** 2, 0.0).reshape(len(r), -1)
    m = err.sum(1) / np.maximum(ok.reshape(len(r), -1).sum(1), 1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(data_range**2 / m)


def weighted_rmse(reference, approx, weights) -> float:
    """RMSE with area weights broadcast over the trailing grid axes (e.g. cos lat)."""
    r, a, ok = _valid(reference, approx)
    w = np.broadcast_to(np.asarray(weights, np.float64), r.shape)
    return float(np.sqrt(np.sum(w[ok] * (r[ok] - a[ok]) ** 2) / np.sum(w[ok])))


def max_abs_error(reference, approx) -> float:
    r, a, ok = _valid(reference, approx)
    return float(np.max(np.abs(r[ok] - a[ok]))) if ok.any() else 0.0


def bits_per_value(num_bytes: int, num_values: int) -> float:
    return 8.0 * num_bytes / num_values
