"""A linear basis fitted in passes over blocks of items, in memory that does not grow with
the number of items: the streamed fit (:meth:`LinearBasis.fit` is the exact one).

The exact fit holds the fitted items in float64 and takes one SVD: ``n x P x 8`` bytes for
``n`` items of ``P`` points. This fit reads the same items
(:func:`~vcinr_sci.model.basis.fitted_items`) block by block, once a pass, in float32,
and keeps only sums over blocks:

1. ``moments``: per point the sum and the count of the valid values, and the number of
   items: the mean and the support (the points valid in every item), as the exact fit
   has them.
2. ``range-1`` .. ``range-<q+1>`` (``q = power_iterations``): with ``A`` the items'
   anomalies on the support (items x S) and an orthonormal probe ``Q`` (S x l,
   ``l = components + oversample``), the product ``Y = AᵀA Q``, a sum over blocks of
   ``A_bᵀ (A_b Q)``. The first probe is Gaussian (seeded); each next one is ``orth(Y)``,
   a power iteration (Halko, Martinsson & Tropp 2011, algorithm 4.3, on ``AᵀA``).
3. From the last product the Nyström approximation ``AᵀA ~ Y (QᵀY)⁻¹ Yᵀ``, shifted for
   stability (Tropp, Yurtsever, Udell & Cevher 2017, algorithm 3): its leading
   eigenvectors are the components, orthonormal over the support and zero elsewhere;
   directions whose eigenvalue is under ``_NULL`` of the first are dropped (null
   directions, as the exact fit drops them).
4. ``coefficients``: over every item in order (not only the fitted ones), per component
   the sums of ``c``, ``c²`` and ``c_t c_{t+1}`` and each block's first and last rows:
   the deviations ``scales`` and the lag-1 correlations ``rho`` of the exact fit.

Any worker may sum a block; the sums are added in block order (the lag terms join
consecutive blocks, and float32 sums added in another order round otherwise), so a rerun
gives the same bits.

Memory per worker, with ``S <= P`` support points, ``l`` probe columns, ``K`` components
and ``b`` items read at a time: the probe, ``4 S l`` bytes (on Ray read from the object
store: one copy a node, shared by its workers), the block's partial product, ``4 S l``
(and its copy as it is handed back, in the object store), and the items read, about
``20 b P`` (float32 and their copies on the way from the file), their anomalies ``4 b S``
and ``A_b Q`` ``12 b l``. The coefficients pass holds the basis instead, ``12 K P``
(float32 and its float64 copy), and about ``40 b P`` for the items in float64. None of it
depends on the number of items. The process that adds the partials holds the sum, one
partial, the probe and, for the QR of a power iteration or the Nyström step, about
``2 x 4 S l`` more.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from vcinr_sci.errors import ArtifactError
from vcinr_sci.model.basis import LinearBasis, fitted_items

Sums = dict[str, np.ndarray]

MOMENTS, RANGE, COEFFICIENTS = "moments", "range", "coefficients"
# An eigenvalue of AᵀA under this fraction of the first is float32 rounding, not data:
# its direction is dropped as null.
_NULL = 1e-9
_ROWS = 16384  # rows of a float64 product chunk: bounds the temporaries of the Nyström step
_COLUMNS = 65536  # support points per float32 product, summed in float64 (A_b Q over long rows)


def pass_kind(name: str) -> str:
    """``moments``, ``range`` or ``coefficients`` for a pass name (``range-2`` ...)."""
    return name.split("-")[0]


class StreamedBasisFit:
    """The state between passes: which pass is next, which items it reads and what its
    blocks need (:meth:`inputs`), and what the sum of its blocks' :class:`BlockPass`
    sums makes of it (:meth:`finish`). :func:`fit_in_blocks` runs the passes in this
    process; ``pipelines/streamed_basis.py`` on Ray Data workers."""

    def __init__(self, num_items: int, points: int, max_components: int, max_fit_items: int = 1024,
                 oversample: int = 64, power_iterations: int = 2, seed: int = 0):
        if num_items < 2:
            raise ValueError(f"fitting a linear basis needs at least two training items, got {num_items}")
        if min(max_components, oversample, power_iterations) < 0:
            raise ValueError("max_components, oversample and power_iterations must be >= 0, got "
                             f"{max_components}, {oversample}, {power_iterations}")
        self.num_items, self.points, self.max_components = num_items, points, max_components
        self.oversample, self.seed = oversample, seed
        self.fitted = fitted_items(num_items, max_fit_items)
        self.passes = [MOMENTS, *(f"{RANGE}-{j}" for j in range(1, power_iterations + 2)), COEFFICIENTS]
        self.done = 0  # passes finished
        self._mean = np.zeros(points)
        self._support = np.zeros(points, bool)
        self._probe = np.zeros((0, 0), np.float32)  # (S, l), orthonormal columns
        self._components = np.zeros((0, points), np.float32)
        self._scales = self._rho = np.zeros(0, np.float32)
        self._k = 0  # components the range passes look for

    @property
    def next_pass(self) -> str | None:
        return self.passes[self.done] if self.done < len(self.passes) else None

    def items(self) -> np.ndarray:
        """The items the next pass reads, in order."""
        return np.arange(self.num_items) if self.next_pass == COEFFICIENTS else self.fitted

    def inputs(self) -> Sums:
        """What every block of the next pass needs besides its items."""
        kind = pass_kind(self._next())
        if kind == RANGE:
            return {"support": self._support, "mean": self._mean[self._support].astype(np.float32), "probe": self._probe}
        if kind == COEFFICIENTS:
            return {"mean": self._mean.astype(np.float32), "components": self._components}
        return {}

    def finish(self, total: Sums) -> None:
        """Take the next pass's sums over all its blocks, added in block order."""
        name = self._next()
        _check_sums(name, total, self._shapes(name))
        kind = pass_kind(name)
        if kind == MOMENTS:
            self._finish_moments(total)
        elif kind == COEFFICIENTS:
            self._finish_coefficients(total)
        elif name != self.passes[-2]:
            self._probe = np.linalg.qr(total["product"])[0]  # the next power iteration's probe
        else:
            self._finish_range(total["product"])
        self.done += 1

    def basis(self) -> LinearBasis:
        if self.next_pass is not None:
            raise ValueError(f"the streamed fit is not finished: pass {self.next_pass!r} is next")
        return LinearBasis(self._mean.astype(np.float32), self._components, self._scales, self._rho)

    # ------------------------------------------------------------------ passes

    def _next(self) -> str:
        if self.next_pass is None:
            raise ValueError("the streamed fit has no pass left")
        return self.next_pass

    def _shapes(self, name: str) -> dict[str, tuple[int, ...]]:
        kind, k = pass_kind(name), len(self._components)
        if kind == MOMENTS:
            return {"sum": (self.points,), "count": (self.points,), "items": (1,)}
        if kind == RANGE:
            return {"product": self._probe.shape}
        return {"items": (1,), **{key: (k,) for key in ("sum", "squares", "lag", "first", "last")}}

    def _finish_moments(self, total: Sums) -> None:
        items = int(total["items"][0])
        if items != len(self.fitted):
            raise ArtifactError(f"the moments pass summed {items} items, the fit reads {len(self.fitted)}")
        count = total["count"]
        self._support = count == items
        self._mean = np.divide(total["sum"], count, out=np.zeros(self.points), where=count > 0)
        support = int(self._support.sum())
        k = min(self.max_components, len(self.fitted) - 1, support)
        # More columns than fitted items add nothing: the anomalies' row space is smaller.
        width = min(k + self.oversample, support, len(self.fitted)) if k > 0 else 0
        gaussian = np.random.default_rng(self.seed).standard_normal((support, width), dtype=np.float32)
        self._probe = np.linalg.qr(gaussian)[0]
        self._k = k

    def _finish_range(self, product: np.ndarray) -> None:
        values, vectors = _nystrom(self._probe, product, self._k)
        keep = int((values > values[0] * _NULL).sum()) if len(values) and values[0] > 0 else 0
        self._components = np.zeros((keep, self.points), np.float32)
        self._components[:, self._support] = vectors[:, :keep].T
        self._probe = np.zeros((0, 0), np.float32)

    def _finish_coefficients(self, total: Sums) -> None:
        n = int(total["items"][0])
        if n != self.num_items:
            raise ArtifactError(f"the coefficients pass summed {n} items, the fit has {self.num_items}")
        mean = total["sum"] / n
        self._scales = np.sqrt(np.maximum(total["squares"] / n - mean**2, 0.0)).astype(np.float32)
        self._rho = _lag1_from_sums(total, n).astype(np.float32)


class BlockPass:
    """One pass's work on blocks of items, set up once per worker from the pass's
    :meth:`StreamedBasisFit.inputs`."""

    def __init__(self, name: str, inputs: Sums):
        self.name, self.kind = name, pass_kind(name)
        self.inputs = inputs
        if self.kind == COEFFICIENTS:
            k = len(inputs["components"])
            self._basis = LinearBasis(inputs["mean"], inputs["components"], np.ones(k, np.float32), np.zeros(k, np.float32))

    def sums(self, x: np.ndarray) -> Sums:
        """The sums of the items ``x (b, P)`` (normalised, NaN where missing), in order."""
        if self.kind == MOMENTS:
            return _moment_sums(x)
        if self.kind == RANGE:
            return _range_sums(x, self.inputs["support"], self.inputs["mean"], self.inputs["probe"])
        return _coefficient_sums(self._basis.coefficients(x))


def add_sums(name: str, first: Sums | None, then: Sums) -> Sums:
    """The sums of two consecutive runs of items, ``first`` (None: nothing yet) before
    ``then``."""
    if first is None:
        return then
    out = {k: first[k] + then[k] for k in then if k not in ("first", "last")}
    if pass_kind(name) == COEFFICIENTS:
        out["lag"] = out["lag"] + first["last"] * then["first"]  # the pair across the join
        out["first"], out["last"] = first["first"], then["last"]
    return out


def item_blocks(items: np.ndarray, block_items: int) -> list[np.ndarray]:
    """``items`` in consecutive blocks of ``block_items``."""
    return [items[s : s + block_items] for s in range(0, len(items), max(1, block_items))]


def fit_in_blocks(load: Callable[[np.ndarray], np.ndarray], num_items: int, max_components: int,
                  max_fit_items: int = 1024, *, oversample: int = 64, power_iterations: int = 2,
                  block_items: int = 256, seed: int = 0) -> LinearBasis:
    """The streamed fit in this process, ``load(indices) -> (B, P)`` as for
    :meth:`LinearBasis.fit`, ``block_items`` items read at a time."""
    points = np.asarray(load(np.arange(1))).shape[1]
    fit = StreamedBasisFit(num_items, points, max_components, max_fit_items, oversample, power_iterations, seed)
    while (name := fit.next_pass) is not None:
        work = BlockPass(name, fit.inputs())
        total = None
        for block in item_blocks(fit.items(), block_items):
            total = add_sums(name, total, work.sums(load(block)))
        assert total is not None  # every pass reads at least two items
        fit.finish(total)
    return fit.basis()


# ---------------------------------------------------------------------- block sums


def _moment_sums(x: np.ndarray) -> Sums:
    if np.isinf(x).any():
        raise ValueError("training items hold inf values")
    finite = np.isfinite(x)
    return {"sum": np.where(finite, x, 0.0).sum(axis=0, dtype=np.float64), "count": finite.sum(axis=0),
            "items": np.array([len(x)])}


def _range_sums(x: np.ndarray, support: np.ndarray, mean: np.ndarray, probe: np.ndarray) -> Sums:
    a = np.asarray(x, np.float32)[:, support] - mean
    if not np.isfinite(a).all():
        raise ValueError("a fitted item lacks a value on the support its moments pass found (the data changed?)")
    ap = np.zeros((len(a), probe.shape[1]))
    for c in range(0, a.shape[1], _COLUMNS):  # float32 products over long rows, summed in float64
        ap += a[:, c : c + _COLUMNS] @ probe[c : c + _COLUMNS]
    return {"product": a.T @ ap.astype(np.float32)}


def _coefficient_sums(c: np.ndarray) -> Sums:
    return {"items": np.array([len(c)]), "sum": c.sum(axis=0), "squares": (c * c).sum(axis=0),
            "lag": (c[:-1] * c[1:]).sum(axis=0), "first": c[0], "last": c[-1]}


def _lag1_from_sums(total: Sums, n: int) -> np.ndarray:
    """:func:`~vcinr_sci.model.basis._lag1_correlation` from the sums: pairs
    ``(c_t, c_t+1)``, ``t < n - 1``."""
    if n < 3:
        return np.zeros(len(total["sum"]))
    pairs = n - 1
    sa, sb = total["sum"] - total["last"], total["sum"] - total["first"]
    va = np.maximum(total["squares"] - total["last"] ** 2 - sa**2 / pairs, 0.0)
    vb = np.maximum(total["squares"] - total["first"] ** 2 - sb**2 / pairs, 0.0)
    cov = total["lag"] - sa * sb / pairs
    denom = np.sqrt(va * vb)
    rho = np.divide(cov, denom, out=np.zeros(len(cov)), where=denom > 0)
    return np.clip(rho, -1.0, 1.0)


def _check_sums(name: str, total: Sums, shapes: dict[str, tuple[int, ...]]) -> None:
    if set(total) != set(shapes):
        raise ArtifactError(f"pass {name!r}: sums {sorted(total)}, expected {sorted(shapes)}")
    for key, shape in shapes.items():
        if np.shape(total[key]) != shape or not np.isfinite(total[key]).all():
            raise ArtifactError(f"pass {name!r}: sum {key!r} has shape {np.shape(total[key])} (expected {shape}) "
                                "or non-finite values")


# ---------------------------------------------------------------------- the Nyström step


def _nystrom(probe: np.ndarray, product: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` leading eigenvalues (descending) and eigenvectors ``(S, k)`` float32 of
    ``Y (QᵀY)⁻¹ Yᵀ`` for the probe ``Q`` and ``Y = AᵀA Q``: with ``Y_s = Y + s Q`` for
    a shift ``s`` at float32 rounding, ``B = QᵀY_s = L Lᵀ`` and ``F = Y_s L⁻ᵀ``, the
    eigenpairs of ``F Fᵀ``, less ``s``. ``FᵀF``'s eigenpairs come from ``l x l``
    products summed in float64 (no ``S x l`` float64 array), the vectors as
    ``Y_s L⁻ᵀ W Σ⁻¹``, also in float64 by rows."""
    if probe.shape[1] == 0 or k == 0:
        return np.zeros(0), np.zeros((len(probe), 0), np.float32)
    shift = float(np.sqrt(len(probe)) * np.spacing(np.float32(np.linalg.norm(product))))
    shifted = product + np.float32(shift) * probe
    core = _gram64(probe, shifted)
    lower = np.linalg.cholesky((core + core.T) / 2)
    inv_t = np.linalg.inv(lower).T
    values, w = np.linalg.eigh(inv_t.T @ _gram64(shifted, shifted) @ inv_t)  # FᵀF
    order = np.argsort(values)[::-1][:k]
    values, w = values[order], w[:, order]
    keep = values > 0
    to_vectors = inv_t @ (w[:, keep] / np.sqrt(values[keep]))
    vectors = np.empty((len(probe), int(keep.sum())), np.float32)
    for r in range(0, len(probe), _ROWS):
        vectors[r : r + _ROWS] = shifted[r : r + _ROWS].astype(np.float64) @ to_vectors
    return np.maximum(values[keep] - shift, 0.0), vectors


def _gram64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``aᵀ b`` in float64, by chunks of rows."""
    out = np.zeros((a.shape[1], b.shape[1]))
    for r in range(0, len(a), _ROWS):
        out += a[r : r + _ROWS].T.astype(np.float64) @ b[r : r + _ROWS].astype(np.float64)
    return out
