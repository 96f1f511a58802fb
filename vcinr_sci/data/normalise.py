"""Normalisation: the affine map of data values onto [0, 1] fitted on the training
fields, the training mean field that ``data.subtract_mean_field`` takes out before the
model sees a field, and the per-item means that ``data.subtract_item_mean`` takes out
before a fit."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vcinr_sci.config import DataConfig
from vcinr_sci.data.sources import FieldSource


@dataclass(frozen=True)
class Normaliser:
    """Affine map of data values onto [0, 1]: ``(x - lo) / (hi - lo)``; and, with
    ``data.subtract_mean_field``, the training fields' mean in those units (``mean_field``,
    the grid's shape, float32), which items subtract and models add back (not part of
    :meth:`normalise`, which maps values alone)."""

    lo: float
    hi: float
    mean_field: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if not (np.isfinite(self.lo) and np.isfinite(self.hi) and self.hi > self.lo):
            raise ValueError(f"normalisation range must be finite with hi > lo, got [{self.lo}, {self.hi}]")
        if self.mean_field is not None and not np.isfinite(self.mean_field).all():
            raise ValueError("the normaliser's mean field holds non-finite values")

    def normalise(self, x):
        return (x - self.lo) / (self.hi - self.lo)

    def denormalise(self, y):
        return y * (self.hi - self.lo) + self.lo

    def to_dict(self) -> dict[str, float]:
        return {"lo": float(self.lo), "hi": float(self.hi)}

    @classmethod
    def from_dict(cls, d: dict[str, float], mean_field: np.ndarray | None = None) -> "Normaliser":
        return cls(float(d["lo"]), float(d["hi"]), mean_field)


# Field values read at a time: a block holds as many fields as fit (at least one), so the
# memory of a fit is the same for 64 x 128 fields as for ERA5's 721 x 1440 (where 256
# fields a block took 6.7 GB).
READ_BYTES = 64 * 2**20


def fit_normaliser(
    source: FieldSource, indices: np.ndarray, cfg: DataConfig, block: int | None = None
) -> Normaliser:
    """Training-set min/max (NaNs ignored, read ``block`` fields at a time: by default as
    many as :data:`READ_BYTES` of float32 hold), or the fixed range; with
    ``cfg.subtract_mean_field`` also the training mean field (a second pass)."""
    grid = source.load(indices[:1]).shape[1:]
    block = block or max(1, READ_BYTES // (4 * int(np.prod(grid))))
    norm = _fit_range(source, indices, cfg, block)
    if not cfg.subtract_mean_field:
        return norm
    total = np.zeros(grid)
    count = np.zeros(total.shape)
    for start in range(0, len(indices), block):
        x = norm.normalise(source.load(indices[start : start + block]).astype(np.float64))
        finite = np.isfinite(x)
        total += np.where(finite, x, 0.0).sum(axis=0)
        count += finite.sum(axis=0)
    mean = np.divide(total, count, out=np.zeros(total.shape), where=count > 0)  # 0 where never valid
    return Normaliser(norm.lo, norm.hi, mean.astype(np.float32))


def _fit_range(source: FieldSource, indices: np.ndarray, cfg: DataConfig, block: int) -> Normaliser:
    if cfg.normalisation == "fixed":
        if not cfg.fixed_range or len(cfg.fixed_range) != 2:
            raise ValueError("normalisation 'fixed' needs fixed_range: [lo, hi]")
        return Normaliser(*map(float, cfg.fixed_range))
    if cfg.normalisation != "minmax":
        raise ValueError(f"unknown normalisation {cfg.normalisation!r} (minmax | fixed)")
    lo, hi = np.inf, -np.inf
    for start in range(0, len(indices), block):
        x = source.load(indices[start : start + block])
        if np.isinf(x).any():
            raise ValueError("training data holds inf values; vcinr needs finite values or NaN")
        if np.isfinite(x).any():
            lo, hi = min(lo, float(np.nanmin(x))), max(hi, float(np.nanmax(x)))
    if not np.isfinite(lo):
        raise ValueError("training items are all NaN: nothing to normalise")
    return Normaliser(lo, hi if hi > lo else lo + 1.0)


def item_means(values: np.ndarray) -> np.ndarray:
    """The mean of each row of ``values`` ``(n, P)`` over its finite entries, rounded to
    float16 as a chunk stores it (0 for a row with none): the offsets of
    ``data.subtract_item_mean``. Whoever subtracts them subtracts these rounded values,
    so the rounding costs no accuracy: the INR fits what is left."""
    valid = np.isfinite(values)
    count = valid.sum(axis=1)
    total = np.where(valid, values, 0.0).sum(axis=1, dtype=np.float64)
    means = np.divide(total, count, out=np.zeros(len(values)), where=count > 0)
    if np.abs(means).max(initial=0.0) > np.finfo(np.float16).max:
        raise ValueError(
            f"an item's mean is {np.abs(means).max():.3g} in normalised units, beyond float16: "
            "the normalisation maps this data far outside [0, 1]; it may hold an undeclared fill value "
            "(such as 1e20 or -9999): declare it (_FillValue or missing_value) or set it to NaN"
        )
    return means.astype(np.float16).astype(np.float32)
