"""Latents coded by classic transform coding: a fixed linear decorrelating transform fitted
on the training latents, then the coefficient coder (:mod:`vcinr_sci.coding.coefficients`:
per-component Gaussian tables, one step, RDOQ, rANS, optional prediction along a chunk).

The transform whitens the distortion the latents cause in DATA space, then decorrelates:
with ``H`` the mean over training items of ``J^T J / P`` (``J`` the INR's Jacobian of its
``P`` outputs with respect to the latent; the caller measures it), a latent error ``e``
adds about ``e^T H e`` to the data's MSE. In ``b = H^(1/2) (phi - mean)`` that error is
Euclidean, and the KLT of ``b`` (principal axes of the training latents in that metric)
gives independent-ish components of known deviations. One quantisation step on every
component is then the rate-distortion optimal allocation in data space at high rate
(reverse water-filling), and each component adds about ``step^2 / 12`` to the MSE per
value. Without ``H`` the transform is the plain KLT of the latents.

The step sets the rate, so a ladder of steps spans any rate range with levels that are
distinct and ordered by construction (the learned factorised coder's lambdas collapsed
onto one rate point, issue 24). The decoder's inverse transform is a fixed sequence of
float64 element-wise operations (no BLAS), so every machine decodes the same latents.

String layout: the coefficient coder's (mode byte + rANS string of ``n x D`` symbols).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from vcinr_sci.coding.coefficients import CoefficientCoder
from vcinr_sci.coding.quantiser import check_batch, check_n

SPEC_KIND = "gaussian_latent"
SPEC_VERSION = 1
# The metric's eigenvalues are floored at this share of its largest, so directions the
# INR ignores (no data-space effect) keep a finite inverse transform.
_METRIC_FLOOR = 1e-6
_PREFIX = "coefficients."


class GaussianLatentCoder:
    """Latents ``(n, D)`` <-> bytes: ``c = (phi - mean) @ forward.T`` coded by
    ``coefficients``, decoded as ``mean + c @ inverse.T`` (see the module doc).
    Build one with :func:`fit_transform` and :meth:`at_step`."""

    def __init__(self, mean: np.ndarray, forward: np.ndarray, inverse: np.ndarray, coefficients: CoefficientCoder):
        self.mean = np.asarray(mean, np.float64)
        self.forward = np.asarray(forward, np.float64)
        self.inverse = np.asarray(inverse, np.float64)
        d = len(self.mean)
        if self.mean.ndim != 1 or self.forward.shape != (d, d) or self.inverse.shape != (d, d):
            raise ValueError(f"a Gaussian latent coder needs a mean (D,) and D x D transforms, got "
                             f"{self.mean.shape}, {self.forward.shape}, {self.inverse.shape}")
        if coefficients.latent_dim != d:
            raise ValueError(f"coefficient coder of {coefficients.latent_dim} components for {d} latent dimensions")
        if not all(np.isfinite(a).all() for a in (self.mean, self.forward, self.inverse)):
            raise ValueError("a Gaussian latent coder's transform holds NaN or infinite values")
        self.coefficients = coefficients

    @property
    def latent_dim(self) -> int:
        return len(self.mean)

    @property
    def step(self) -> float:
        return self.coefficients.step

    def at_step(self, step: float) -> "GaussianLatentCoder":
        """The same transform and tables' shapes at another ``step``."""
        c = self.coefficients
        return GaussianLatentCoder(self.mean, self.forward, self.inverse,
                                   CoefficientCoder(c.scales, c.rho, step, c.predict))

    # ------------------------------------------------------------------ coding

    def _analysis(self, phi: Tensor | np.ndarray) -> np.ndarray:
        p = phi.detach().cpu() if isinstance(phi, Tensor) else torch.as_tensor(phi)
        check_batch(p, self.latent_dim)
        return (p.numpy().astype(np.float64) - self.mean) @ self.forward.T

    def _synthesis(self, c: Tensor) -> Tensor:
        """``mean + c @ inverse.T`` summed in a fixed order, float64 element-wise (the
        same bits on every machine), returned as float32 like the INR's latents."""
        coeff = c.numpy()
        out = np.broadcast_to(self.mean, coeff.shape).copy()
        for k in range(self.latent_dim):
            out += coeff[:, k : k + 1] * self.inverse[:, k]
        return torch.from_numpy(out.astype(np.float32))

    def code(self, phi: Tensor | np.ndarray) -> tuple[bytes, Tensor]:
        """:meth:`compress` and :meth:`quantise` of ``phi`` from one encode."""
        string, c = self.coefficients.code(self._analysis(phi))
        return string, self._synthesis(c)

    def compress(self, phi: Tensor | np.ndarray) -> bytes:
        """One string for the whole batch (``n`` is the caller's to keep)."""
        return self.coefficients.compress(self._analysis(phi))

    def quantise(self, phi: Tensor | np.ndarray) -> Tensor:
        """``decompress(compress(phi))`` exactly, without the bytes (float32, CPU)."""
        return self.code(phi)[1]

    def decompress(self, data: bytes, n: int) -> Tensor:
        """The ``(n, D)`` float32 latents coded in ``data`` (``n`` as given to
        :meth:`compress`); malformed bytes raise :class:`ValueError`."""
        check_n(n)
        return self._synthesis(self.coefficients.decompress(data, n))

    # ------------------------------------------------------------------ storage

    def spec(self) -> dict[str, Any]:
        return {"kind": SPEC_KIND, "version": SPEC_VERSION, "latent_dim": self.latent_dim,
                "coefficients": self.coefficients.spec()}

    def state(self) -> dict[str, Tensor]:
        own = {name: torch.from_numpy(getattr(self, name).copy()) for name in ("mean", "forward", "inverse")}
        return own | {_PREFIX + k: v for k, v in self.coefficients.state().items()}

    @classmethod
    def load(cls, spec: dict[str, Any], state: dict[str, Tensor]) -> "GaussianLatentCoder":
        own = {"mean", "forward", "inverse"}
        if not own <= set(state):
            raise ValueError(f"Gaussian latent coder state needs tensors {sorted(own)}, got {sorted(state)}")
        inner = spec.get("coefficients")
        if not isinstance(inner, dict):
            raise ValueError("Gaussian latent coder spec lacks its coefficient coder")
        coefficients = CoefficientCoder.load(inner, {k[len(_PREFIX):]: v for k, v in state.items() if k.startswith(_PREFIX)})
        coder = cls(state["mean"].numpy(), state["forward"].numpy(), state["inverse"].numpy(), coefficients)
        if coder.latent_dim != spec.get("latent_dim"):
            raise ValueError(f"Gaussian latent coder spec says {spec.get('latent_dim')} dimensions, its state {coder.latent_dim}")
        return coder


def fit_transform(phi: np.ndarray, step: float, metric: np.ndarray | None = None, follows: np.ndarray | None = None,
                  ) -> GaussianLatentCoder:
    """A coder at ``step`` whose transform is fitted on the training latents ``phi``
    ``(n, D)``: the KLT of ``H^(1/2) (phi - mean)`` with ``H`` = ``metric`` (the data-space
    metric of the module doc; ``None``: the identity). ``follows[t]`` says that row ``t``
    is the field after row ``t - 1`` (the lag-1 correlations that prediction along a chunk
    uses; ``None``: no prediction)."""
    x = np.asarray(phi, np.float64)
    if x.ndim != 2 or len(x) < 2 or not np.isfinite(x).all():
        raise ValueError(f"fitting a latent transform needs at least 2 finite latents (n, D), got shape {x.shape}")
    d = x.shape[1]
    mean = x.mean(axis=0)
    x = x - mean
    if metric is None:
        root, root_inv = np.eye(d), np.eye(d)
    else:
        h = np.asarray(metric, np.float64)
        if h.shape != (d, d) or not np.isfinite(h).all():
            raise ValueError(f"the latent metric must be a finite {d} x {d} matrix, got {h.shape}")
        w, v = np.linalg.eigh((h + h.T) / 2)
        w = np.maximum(w, max(float(w.max()), 1e-30) * _METRIC_FLOOR)
        root, root_inv = (v * np.sqrt(w)) @ v.T, (v / np.sqrt(w)) @ v.T
    y = x @ root
    variance, axes = np.linalg.eigh(y.T @ y / len(y))
    axes = axes[:, np.argsort(variance)[::-1]]
    forward, inverse = axes.T @ root, root_inv @ axes
    c = x @ forward.T
    scales = c.std(axis=0)
    rho = np.zeros(d)
    if follows is not None:
        follows = np.asarray(follows, bool)
        if follows.shape != (len(c),):
            raise ValueError(f"follows must have one flag per latent ({len(c)}), got {follows.shape}")
        now, before = c[1:][follows[1:]], c[:-1][follows[1:]]
        if len(now):
            denom = np.sqrt((now**2).sum(axis=0) * (before**2).sum(axis=0))
            rho = np.where(denom > 0, (now * before).sum(axis=0) / np.where(denom > 0, denom, 1.0), 0.0)
    return GaussianLatentCoder(mean, forward, inverse, CoefficientCoder(scales, rho, step, follows is not None))
