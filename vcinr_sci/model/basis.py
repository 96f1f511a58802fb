"""The linear model: the training mean item and its leading principal components (EOFs).

An item ``x`` (``P`` normalised values, NaN where missing) is coded as ``K`` coefficients
``c`` with ``x ~ mean + c @ components``. The components are orthonormal over the
*support*, the points valid in every training item; elsewhere they are zero, so the
reconstruction there is the training mean (the mean of the training items that hold
the point; 0 where none does). Encoding is closed form: least squares on the item's
valid points (a plain projection when the item is valid on the whole support).

Per component the training coefficients' standard deviation ``scales`` and their lag-1
correlation along consecutive training items ``rho`` (the item order a chunk has: C
order over the item dims) are kept: they are the coefficient coder's priors
(:mod:`vcinr_sci.coding.coefficients`).

A reconstruction is a float64 matrix product through numpy's BLAS, cast to float32 (on
the CPU whatever device the codec uses). Another machine, BLAS kernel or thread count may
sum the ``K`` products in another order, with or without FMA, and the cast may then round
the other way: :meth:`LinearBasis.reconstruction_spread` bounds that difference per chunk,
which sizes the error-bounded mode's margin for this model (:mod:`vcinr_sci.coding.bound`).
The coefficients themselves decode bit for bit (elementwise float64 arithmetic,
:mod:`vcinr_sci.coding.coefficients`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from vcinr_sci.errors import ArtifactError

# Items to a projection batch: bounds memory at ~batch x P float64 values.
_BATCH = 256
_BLOCK_VALUES = 2**21  # values a least-squares block holds in float64 (16 MiB a copy)
_U64 = float(np.finfo(np.float64).eps) / 2  # float64's unit roundoff
_STATE_KEYS = ("mean", "components", "scales", "rho")


@dataclass(frozen=True)
class LinearBasis:
    """``mean (P,)``, ``components (K, P)`` (orthonormal rows, zero off the support),
    ``scales (K,)`` and ``rho (K,)``, all float32."""

    mean: np.ndarray
    components: np.ndarray
    scales: np.ndarray
    rho: np.ndarray
    _support: np.ndarray = field(init=False, repr=False, compare=False)  # (P,) bool: components nonzero
    _components64: np.ndarray = field(init=False, repr=False, compare=False)
    _component_max: np.ndarray = field(init=False, repr=False, compare=False)  # (K,) max |e_k| float64

    def __post_init__(self) -> None:
        k, p = self.components.shape if self.components.ndim == 2 else (-1, -1)
        if self.mean.shape != (p,) or self.scales.shape != (k,) or self.rho.shape != (k,):
            raise ArtifactError(
                f"linear basis tensors do not agree: mean {self.mean.shape}, components {self.components.shape}, "
                f"scales {self.scales.shape}, rho {self.rho.shape}"
            )
        arrays = (self.mean, self.components, self.scales, self.rho)
        if not all(np.isfinite(a).all() for a in arrays) or (self.scales < 0).any() or (np.abs(self.rho) > 1).any():
            raise ArtifactError("linear basis holds non-finite values, negative scales or |rho| > 1")
        # derived once: frozen fields, so set past the dataclass's guard
        object.__setattr__(self, "_support", np.abs(self.components).sum(axis=0) > 0)
        object.__setattr__(self, "_components64", self.components.astype(np.float64))
        object.__setattr__(self, "_component_max", np.abs(self._components64).max(axis=1, initial=0.0))

    @property
    def num_components(self) -> int:
        return self.components.shape[0]

    @property
    def points(self) -> int:
        return self.components.shape[1]

    # ------------------------------------------------------------------ fitting

    @classmethod
    def fit(cls, load: Callable[[np.ndarray], np.ndarray], num_items: int, max_components: int,
            max_fit_items: int = 1024) -> "LinearBasis":
        """Fit on ``num_items`` training items, ``load(indices) -> (B, P)`` (normalised,
        NaN where missing), in their natural order. The components come from an SVD of
        up to ``max_fit_items`` evenly spaced items (memory ~ ``max_fit_items x P`` float64);
        ``scales`` and ``rho`` from every item's coefficients."""
        if num_items < 2:
            raise ValueError(f"fitting a linear basis needs at least two training items, got {num_items}")
        if max_components < 0:
            raise ValueError(f"max_components must be >= 0, got {max_components}")
        chosen = fitted_items(num_items, max_fit_items)
        x = np.asarray(load(chosen), np.float64)
        if np.isinf(x).any():
            raise ValueError("training items hold inf values")
        finite = np.isfinite(x)
        support = finite.all(axis=0)
        count = finite.sum(axis=0)
        mean = np.divide(np.where(finite, x, 0.0).sum(axis=0), count, out=np.zeros(x.shape[1]), where=count > 0)
        k = min(max_components, len(chosen) - 1, int(support.sum()))
        components = np.zeros((max(k, 0), x.shape[1]))
        if k > 0:
            anomalies = x[:, support] - mean[support]
            _, s, vt = np.linalg.svd(anomalies, full_matrices=False)
            keep = int((s[:k] > s[0] * 1e-7).sum()) if s.size and s[0] > 0 else 0  # drop null directions
            components = np.zeros((keep, x.shape[1]))
            components[:, support] = vt[:keep]
        del x
        basis = cls(mean.astype(np.float32), components.astype(np.float32),
                    np.ones(len(components), np.float32), np.zeros(len(components), np.float32))
        c = np.concatenate([basis.coefficients(load(idx)) for idx in _batches(num_items)]) if len(components) \
            else np.zeros((num_items, 0))
        scales = c.std(axis=0)
        rho = _lag1_correlation(c)
        return cls(basis.mean, basis.components, scales.astype(np.float32), rho.astype(np.float32))

    def leading(self, k: int) -> "LinearBasis":
        """The basis of the first ``k`` components (all, when it has fewer)."""
        return self.subset(np.arange(min(k, self.num_components)))

    def subset(self, keep: np.ndarray) -> "LinearBasis":
        """The basis of the components ``keep`` (a bool mask or indices) only."""
        return LinearBasis(self.mean, self.components[keep], self.scales[keep], self.rho[keep])

    # ------------------------------------------------------------------ coding

    def coefficients(self, values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Least-squares coefficients ``(B, K)`` float64 of items ``values (B, P)`` on
        their ``valid`` points (default: the finite ones; values elsewhere are ignored)."""
        values = np.asarray(values)
        out = np.empty((len(values), self.num_components))
        # A block of items at a time: the float64 copies are a block's, not the chunk's
        # (an 8-field chunk at 0.25 degrees took 3 x 63 MB of them at once).
        size = max(1, _BLOCK_VALUES // max(1, self.points))
        for start in range(0, len(values), size):
            block = slice(start, start + size)
            out[block] = self._block_coefficients(values[block], None if valid is None else valid[block])
        return out

    def _block_coefficients(self, values: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        values = np.asarray(values, np.float64)
        valid = np.isfinite(values) if valid is None else np.asarray(valid, bool) & np.isfinite(values)
        anomaly = np.where(valid, values - self.mean, 0.0)
        out = anomaly @ self._components64.T  # exact where an item covers the support
        partial = np.flatnonzero((self._support & ~valid).any(axis=1))
        for i in partial:  # least squares on what the item has of the support
            b = self._components64[:, valid[i]]
            out[i] = np.linalg.lstsq(b.T, anomaly[i, valid[i]], rcond=None)[0]
        return out

    def project(self, values: np.ndarray) -> np.ndarray:
        """Items ``(B, P)`` float32 as this basis reconstructs them from their
        least-squares coefficients (what a hybrid model's INR is trained to add to)."""
        return np.concatenate([self.reconstruct(self.coefficients(values[b])) for b in _batches(len(values))]) \
            if len(values) else np.zeros((0, self.points), np.float32)

    def reconstruct(self, coefficients: np.ndarray) -> np.ndarray:
        """Items ``(B, P)`` float32 from coefficients ``(B, K)``."""
        c = np.asarray(coefficients, np.float64)
        return (self.mean + c @ self._components64).astype(np.float32)

    def reconstruction_spread(self, coefficients: np.ndarray, top: float) -> float:
        """The most :meth:`reconstruct` of ``coefficients (B, K)`` can differ between two
        machines (normalised units) at the points whose values here are at most ``top``
        in magnitude.

        Each value is a sum of ``K + 1`` terms (the mean, ``K`` products) bounded by
        ``t = max |mean| + max_i sum_k |c_ik| max |e_k|``. In float64, in any order and
        with or without FMA, a machine's sum is within ``gamma t`` of the exact one
        (``gamma = n u / (1 - n u)``, ``n = K + 1``, ``u = 2**-53``; Higham, *Accuracy and
        Stability*, 3.1), so two machines' sums differ by at most ``2 gamma t`` and are at
        most ``a = top + spacing32(top) / 2 + 2 gamma t`` in magnitude; the cast to float32
        rounds each by at most half a float32 spacing at ``a``."""
        c = np.abs(np.asarray(coefficients, np.float64))
        t = float(np.abs(self.mean).max(initial=0.0)) + float((c * self._component_max).sum(axis=1).max(initial=0.0))
        n = self.num_components + 1
        sums = 2 * n * _U64 / (1 - n * _U64) * t
        a = top + float(np.spacing(np.float32(top))) / 2 + sums
        return sums + float(np.spacing(np.float32(a)))

    # ------------------------------------------------------------------ storage

    def state(self) -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(getattr(self, k), np.float32) for k in _STATE_KEYS}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> "LinearBasis":
        if set(state) != set(_STATE_KEYS):
            raise ArtifactError(f"linear basis needs tensors {list(_STATE_KEYS)}, got {sorted(state)}")
        return cls(*(np.asarray(state[k], np.float32) for k in _STATE_KEYS))


def fitted_items(num_items: int, max_fit_items: int) -> np.ndarray:
    """The items the components are fitted on: up to ``max_fit_items`` of ``num_items``,
    evenly spaced, in order (the exact and the streamed fit alike)."""
    return np.unique(np.linspace(0, num_items - 1, min(num_items, max_fit_items)).round().astype(np.int64))


def _batches(n: int):
    for start in range(0, n, _BATCH):
        yield np.arange(start, min(start + _BATCH, n))


def _lag1_correlation(c: np.ndarray) -> np.ndarray:
    """Per column, the correlation of consecutive rows (0 where undefined)."""
    if len(c) < 3:
        return np.zeros(c.shape[1])
    a, b = c[:-1] - c[:-1].mean(axis=0), c[1:] - c[1:].mean(axis=0)
    denom = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    rho = np.divide((a * b).sum(axis=0), denom, out=np.zeros(c.shape[1]), where=denom > 0)
    return np.clip(rho, -1.0, 1.0)
