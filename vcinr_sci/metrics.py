"""Error and size figures, in the units climate users quote.

PSNR is ``10 log10(R^2 / MSE)``: callers state the range ``R`` (1 for data scaled to
[0, 1] by the model's normalisation or by a fixed physical range). NaN points are
ignored everywhere.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xarray as xr


def psnr_from_mse(mse: Any, data_range: float = 1.0) -> Any:
    """``10 log10(R^2 / MSE)``, the one copy of the formula: a float for a number (inf for
    an MSE of 0), elementwise for a numpy array or a torch tensor (callers that want a
    finite figure clamp the MSE first)."""
    if isinstance(mse, (int, float, np.floating, np.integer)):
        return math.inf if mse == 0 else 10 * math.log10(data_range**2 / float(mse))
    if isinstance(mse, np.ndarray):
        with np.errstate(divide="ignore"):
            return 10 * np.log10(data_range**2 / mse)
    return 10 * (data_range**2 / mse).log10()  # a torch tensor (torch is not imported here)


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
    return float(psnr_from_mse(mse(reference, approx), data_range))


def psnr_per_item(reference, approx, data_range: float = 1.0) -> np.ndarray:
    """PSNR of each item along axis 0 (the papers average these)."""
    r, a, ok = _valid(reference, approx)
    err = np.where(ok, (r - a) ** 2, 0.0).reshape(len(r), -1)
    m = err.sum(1) / np.maximum(ok.reshape(len(r), -1).sum(1), 1)
    return psnr_from_mse(m, data_range)


def weighted_rmse(reference, approx, weights) -> float:
    """RMSE with area weights broadcast over the trailing grid axes (e.g. cos lat)."""
    r, a, ok = _valid(reference, approx)
    w = np.broadcast_to(np.asarray(weights, np.float64), r.shape)
    return float(np.sqrt(np.sum(w[ok] * (r[ok] - a[ok]) ** 2) / np.sum(w[ok])))


def max_abs_error(reference, approx) -> float:
    r, a, ok = _valid(reference, approx)
    return float(np.max(np.abs(r[ok] - a[ok]))) if ok.any() else 0.0


def bits_per_value(num_bytes: int, num_values: int) -> float:
    """Bits per value of ``num_bytes`` stored for ``num_values`` values (an empty array: per 1)."""
    return 8.0 * num_bytes / max(1, num_values)


def error_sums(decoded: xr.DataArray, reference: xr.DataArray, lat_dim: str | None) -> dict[str, Any]:
    """Lazy (dask-friendly) error sums of a decoded variable against its source, with
    cos-latitude weights along ``lat_dim`` when given; :func:`error_figures` turns them
    into figures."""
    valid = reference.notnull()
    err = (decoded.astype(np.float64) - reference.astype(np.float64)).where(valid)
    out = {"sq": (err**2).sum(), "n": valid.sum(), "max": abs(err).max(), "lo": reference.min(), "hi": reference.max()}
    if lat_dim is not None:
        w = np.cos(np.deg2rad(reference[lat_dim].astype(np.float64)))
        out["wsq"] = (err**2 * w).sum()
        out["wn"] = (valid * w).sum()
    return out


def error_figures(stats: dict[str, Any], data_range: float | None) -> dict[str, float | None]:
    """PSNR (over ``data_range``, else the source's range), RMSE, latitude-weighted RMSE,
    max error and count from :func:`error_sums` (computed)."""
    s = {k: float(v) for k, v in stats.items()}
    n = s["n"]
    mse = s["sq"] / n if n else math.nan
    data_range = data_range if data_range else (s["hi"] - s["lo"] if n else math.nan)
    report = {
        "psnr_db": psnr_from_mse(mse, data_range) if n else math.nan,
        "psnr_data_range": data_range,
        "rmse": math.sqrt(mse) if n else math.nan,
        "lat_weighted_rmse": math.sqrt(s["wsq"] / s["wn"]) if "wsq" in s and s["wn"] else None,
        "max_abs_error": s["max"] if n else math.nan,
        "n_values": int(n),
    }
    return report
