"""Model kinds: what each kind of model does for the codec, behind one interface.

A chunk's fields become items (:class:`~vcinr_sci.model.loaded.LoadedModel` cuts them into
the model's patches); each kind turns items into latents and latents back into values:

- :class:`InrKind`, VC-INR (``model.kind: inr``): a meta-learned network, an item's latent
  found by its inner loop, evaluated at any coordinates;
- :class:`LinearKind` (``model.kind: linear``): the training mean and EOFs, an item's latent
  its least-squares coefficients, defined on the grid's points only;
- :class:`HybridKind` (``model.kind: hybrid``): the linear model plus an INR meta-learned
  on what its leading EOFs leave; each chunk is coded by the linear model alone or by
  both, whichever costs less (:mod:`vcinr_sci.coding.hybrid`).

Callers (the codec, sampling, benches, pipelines) hold a ``LoadedModel`` and never ask
which kind it carries; :func:`model_kind` is the one place that looks.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Protocol

import numpy as np
import torch

from vcinr_sci.coding.coefficients import RDOQ_LAMBDA
from vcinr_sci.coding.hybrid import HybridCoder
from vcinr_sci.data.grids import Grid
from vcinr_sci.errors import CodecError, UsageError
from vcinr_sci.model.artifact import ModelArtifact
from vcinr_sci.model.basis import LinearBasis
from vcinr_sci.model.device import full_float32

BATCH_POINTS_ENV = "VCINR_BATCH_POINTS"

# The largest difference allowed between the encoder's and any decoder's float32 INR
# output, in float32 ulps of the output scale: 256 ulps = 3.1e-5 of the normalisation
# range. Measured (`vcinr bench cross-device`, demo model, 29,008 values): an H200 in
# float32 differs from this CPU by at most 2.4e-7 of the range (2 ulps), so this leaves
# two orders of magnitude of headroom; TF32 would differ by 1.0e-3 and is kept off.
INR_DEVICE_ULPS = 256
# A hybrid encoder tries a latent coder only where this share of its typical cost (bits
# and error, measured on tuning items) fits under the linear model's cost: a chunk at
# three quarters of its coder's typical cost is not expected, and skipping saves the
# INR's adaptation (99 % of a hybrid encode's time; at 0.5 ERA5 UK's levels for 35-42.5
# dB still adapted every chunk and never took the INR: 0.06 MB/s).
_SKIP_SHARE = 0.75
_EPS32 = float(np.finfo(np.float32).eps)


def batch_points() -> int:
    """Grid points an INR evaluates at once (``$VCINR_BATCH_POINTS``: memory against speed)."""
    return max(1, int(os.environ.get(BATCH_POINTS_ENV, 2**16)))


class ModelKind(Protocol):
    """One kind of model, as the codec uses it. ``items`` index the chunk's items
    (patch ``i % num_patches`` of field ``i // num_patches``); values are normalised."""

    @property
    def latent_dim(self) -> int:
        """Numbers per item in a latent."""

    def adapt(self, items: np.ndarray, values: np.ndarray, valid: np.ndarray, steps: int) -> torch.Tensor:
        """Latents ``(len(items), latent_dim)`` of ``values`` ``(len(items), P)`` fitted on
        their ``valid`` points (``steps``: inner steps, where the kind has any)."""

    def encoder(self, items: np.ndarray, values: np.ndarray, valid: np.ndarray, steps: int) -> Callable[[Any], bytes]:
        """The items' coding: a function of a ``coder`` (a level of this model, at any
        step) that returns one string of their latents. The items are adapted once, so
        rate control's several codings of a chunk pay for one adaptation."""

    def evaluate(self, items: np.ndarray, phi: torch.Tensor) -> np.ndarray:
        """Float32 values ``(len(items), P)`` of latents ``phi`` on the items' grid points."""

    def evaluate_at(self, coords: np.ndarray, phi: torch.Tensor) -> np.ndarray:
        """Float32 values ``(B, N)`` of each latent in ``phi`` at shared points ``coords``
        ``(N, coord_dim)`` (continuous-resolution sampling)."""

    def value_spread(self, phi: torch.Tensor, own: np.ndarray, offsets: np.ndarray) -> float:
        """The most any decoder's float32 values ``own + offset`` at a chunk's valid
        points can differ from this process's (normalised units), whatever machine,
        BLAS, thread count or device it runs on: ``own`` are :meth:`evaluate`'s values
        of the chunk's latents ``phi`` at its valid points, ``offsets`` the item means
        the codec adds to them in float32 (0 without ``data.subtract_item_mean``)."""


class InrKind:
    """A meta-learned INR on ``device``; ``item_coords`` ``(num_patches, P, coord_dim)``
    are the coordinates of every patch's points."""

    def __init__(self, network, item_coords: torch.Tensor, device: torch.device):
        self.network, self.item_coords, self.device = network, item_coords, device

    @property
    def latent_dim(self) -> int:
        return self.network.latent_dim

    def _coords(self, items: np.ndarray) -> torch.Tensor:
        return self.item_coords[torch.as_tensor(items % len(self.item_coords), device=self.device)]

    def _batches(self, n: int):
        size = max(1, batch_points() // self.item_coords.shape[1])
        for start in range(0, n, size):
            yield slice(start, min(start + size, n))

    def adapt(self, items: np.ndarray, values: np.ndarray, valid: np.ndarray, steps: int) -> torch.Tensor:
        out = []
        for sl in self._batches(len(items)):
            target = torch.as_tensor(values[sl], device=self.device).unsqueeze(-1)
            mask = torch.as_tensor(valid[sl], device=self.device).unsqueeze(-1)
            out.append(self.network.adapt(self._coords(items[sl]), target, mask, steps))
        return torch.cat(out) if out else torch.zeros(0, self.latent_dim, device=self.device)

    def encoder(self, items: np.ndarray, values: np.ndarray, valid: np.ndarray, steps: int) -> Callable[[Any], bytes]:
        phi = self.adapt(items, values, valid, steps)
        return lambda coder: coder.compress(phi)

    @torch.no_grad()
    def evaluate(self, items: np.ndarray, phi: torch.Tensor) -> np.ndarray:
        out = []
        phi = phi.to(self.device, torch.float32)
        with full_float32():
            for sl in self._batches(len(items)):
                out.append(self.network.decode(self._coords(items[sl]), phi[sl])[..., 0].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.item_coords.shape[1]), np.float32)

    def value_spread(self, phi: torch.Tensor, own: np.ndarray, offsets: np.ndarray) -> float:
        """``INR_DEVICE_ULPS`` float32 ulps of the output scale ``max(1, max |own| + max
        |offset|)``: a device allowance (the means count once: only ``own`` varies
        between devices, the sum's rounding is one ulp of ``|own + offset|``)."""
        top = float(np.abs(own).max(initial=0.0)) + float(np.abs(offsets).max(initial=0.0))
        return INR_DEVICE_ULPS * _EPS32 * max(1.0, top)

    @torch.no_grad()
    def evaluate_at(self, coords: np.ndarray, phi: torch.Tensor) -> np.ndarray:

        c = torch.as_tensor(np.asarray(coords, np.float32), device=self.device)
        phi = phi.to(self.device, torch.float32)
        step = max(1, batch_points() // max(1, len(c)))
        with full_float32():
            out = [self.network.decode(c, phi[i : i + step])[..., 0].float().cpu().numpy()
                   for i in range(0, len(phi), step)]
        return np.concatenate(out) if out else np.zeros((0, len(c)), np.float32)


class LinearKind:
    """The linear model: ``mean + coefficients @ components`` on the CPU, in float64."""

    def __init__(self, basis: LinearBasis, model_hash: str):
        self.basis, self.model_hash = basis, model_hash

    @property
    def latent_dim(self) -> int:
        return self.basis.num_components

    def adapt(self, items: np.ndarray, values: np.ndarray, valid: np.ndarray, steps: int) -> torch.Tensor:
        return torch.from_numpy(self.basis.coefficients(values, valid))

    def encoder(self, items: np.ndarray, values: np.ndarray, valid: np.ndarray, steps: int) -> Callable[[Any], bytes]:
        c = self.adapt(items, values, valid, steps)
        return lambda coder: coder.compress(c)

    def evaluate(self, items: np.ndarray, phi: torch.Tensor) -> np.ndarray:
        return self.basis.reconstruct(phi.cpu().numpy())

    def value_spread(self, phi: torch.Tensor, own: np.ndarray, offsets: np.ndarray) -> float:
        """What the arithmetic can differ by, derived: the float64 sum and its float32
        cast (:meth:`LinearBasis.reconstruction_spread`), then half a float32 spacing per
        side for the offsets' addition; about two float32 ulps of the values."""
        top, means = float(np.abs(own).max(initial=0.0)), float(np.abs(offsets).max(initial=0.0))
        top += float(np.spacing(np.float32(top + means)))  # own = float32(y + o) - o: within a spacing of y
        spread = self.basis.reconstruction_spread(phi.cpu().numpy(), top)
        return spread + float(np.spacing(np.float32(top + spread + means)))

    def evaluate_at(self, coords: np.ndarray, phi: torch.Tensor) -> np.ndarray:
        raise UsageError(
            f"model {self.model_hash[:16]} is linear: it is defined on its grid's points only, so sampling off the "
            "grid needs an INR model (read the array, or interpolate it, instead)"
        )


class HybridKind:
    """The linear model (``basis``, ``K`` components) plus an INR (``inr``) meta-learned on
    what the mean and the leading ``head`` EOFs leave. A latent is ``K`` coefficients,
    the INR's ``L`` latents and a flag (1: the INR's output is added), as
    :class:`~vcinr_sci.coding.hybrid.HybridCoder` decodes it; ``grid`` and
    ``num_patches`` serve sampling off the grid."""

    def __init__(self, basis: LinearBasis, head: int, inr: InrKind, grid: Grid, num_patches: int, model_hash: str):
        if not 0 <= head <= basis.num_components:
            raise UsageError(f"model {model_hash[:16]}: the INR's residual is of {head} EOFs, the basis has "
                             f"{basis.num_components}")
        self.linear, self.inr, self.grid, self.num_patches = LinearKind(basis, model_hash), inr, grid, num_patches
        self.basis, self.head, self.model_hash = basis, head, model_hash
        self._head_basis = basis.subset(np.arange(head))

    @property
    def latent_dim(self) -> int:
        return self.basis.num_components + self.inr.latent_dim + 1

    def _split(self, phi: torch.Tensor) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
        k, phi = self.basis.num_components, phi.detach().cpu().double()
        return phi[:, :k].numpy(), phi[:, k:-1].float(), phi[:, -1].numpy() > 0.5

    def adapt(self, items: np.ndarray, values: np.ndarray, valid: np.ndarray, steps: int) -> torch.Tensor:
        """Unquantised latents in the mode with the INR: the leading coefficients, then the
        INR adapted on what they leave."""
        c = np.zeros((len(items), self.basis.num_components))
        c[:, : self.head] = self._head_basis.coefficients(values, valid)
        rest = (values - self._head_basis.reconstruct(c[:, : self.head])).astype(np.float32)
        z = self.inr.adapt(items, rest, valid, steps).detach().cpu().double()
        return torch.cat([torch.from_numpy(c), z, torch.ones(len(items), 1, dtype=torch.float64)], dim=1)

    def encoder(self, items: np.ndarray, values: np.ndarray, valid: np.ndarray, steps: int) -> Callable[[Any], bytes]:
        """The chunk coded by a level (a :class:`HybridCoder`) in the cheapest of its modes
        by ``bits + SE / (lambda step^2)`` (``SE``: the squared error over the valid
        points in normalised units; ``lambda`` the coefficient coder's own slope,
        :data:`~vcinr_sci.coding.coefficients.RDOQ_LAMBDA`), so the INR is used only where
        it buys its bits at the linear model's exchange rate. The coefficients are solved
        once; the INR adapts per coding, on what that level's coefficients leave."""
        c = self.basis.coefficients(values, valid)

        def encode(coder) -> bytes:
            if not isinstance(coder, HybridCoder):
                raise CodecError(f"model {self.model_hash[:16]} is a hybrid: its levels are hybrid levels "
                                 "(pipelines.fit_hybrid makes them), not a bare latent coder")
            if coder.components != self.basis.num_components or coder.head_components != self.head:
                raise CodecError(f"model {self.model_hash[:16]}: a level's coders do not match its basis")
            per_bit = RDOQ_LAMBDA * coder.step**2  # squared error worth one bit

            def cost(nbytes: int, model: np.ndarray) -> float:
                return 8.0 * nbytes + float(np.square(np.where(valid, values - model, 0.0)).sum()) / per_bit

            full, full_decoded = coder.full.code(c)
            best = (cost(len(full), self.basis.reconstruct(full_decoded.numpy())), full)
            head, head_decoded = coder.head.code(c[:, : self.head])
            # modes whose latents, at _SKIP_SHARE of their typical cost, leave room under the linear cost
            budget, n = best[0] - 8.0 * (len(head) + 2), len(items)
            typical = zip(coder.typical_bits, coder.typical_error)
            modes = [m for m, (bits, se) in enumerate(typical, start=1)
                     if _SKIP_SHARE * n * (bits + se / per_bit) < budget]
            if not modes:  # the INR cannot pay here: no adaptation (the linear model's speed)
                return best[1]
            linear = self._head_basis.reconstruct(head_decoded.numpy())
            z = self.inr.adapt(items, (values - linear).astype(np.float32), valid, steps)
            for mode in modes:
                latent_coder = coder.latents[mode - 1]
                latents = latent_coder.compress(z)
                out = linear + self.inr.evaluate(items, latent_coder.decompress(latents, len(items)))
                string = coder.pack(mode, head, latents)
                best = min(best, (cost(len(string), out), string))
            return best[1]

        return encode

    def evaluate(self, items: np.ndarray, phi: torch.Tensor) -> np.ndarray:
        c, z, use = self._split(phi)
        out = self.basis.reconstruct(c)
        if use.any():
            out[use] += self.inr.evaluate(np.asarray(items)[use], z[use])
        return out

    def value_spread(self, phi: torch.Tensor, own: np.ndarray, offsets: np.ndarray) -> float:
        """The linear part's derived spread, plus the INR's device allowance where a
        chunk uses it (both bound their own terms; the sum's rounding is within the
        INR's allowance of ulps)."""
        c, _, use = self._split(phi)
        spread = self.linear.value_spread(torch.from_numpy(c), own, offsets)
        return spread + (self.inr.value_spread(phi, own, offsets) if use.any() else 0.0)

    def evaluate_at(self, coords: np.ndarray, phi: torch.Tensor) -> np.ndarray:
        """The linear part interpolated on the grid (bilinear on the sphere), plus the
        INR evaluated at ``coords`` where a latent uses it. Whole-field items only."""
        if self.num_patches != 1:
            raise UsageError(f"model {self.model_hash[:16]} is a patched hybrid: sampling off the grid needs "
                             "whole-field items (read the array, or interpolate it, instead)")
        c, z, use = self._split(phi)
        fields = self.basis.reconstruct(c).reshape(-1, *self.grid.shape)
        out = np.stack([self.grid.interpolate(f, coords) for f in fields]).astype(np.float32) if len(fields) \
            else np.zeros((0, len(coords)), np.float32)
        if use.any():
            out[use] += self.inr.evaluate_at(coords, z[use])
        return out


def model_kind(artifact: ModelArtifact, item_coords: torch.Tensor, device: torch.device) -> ModelKind:
    """The kind an artifact holds, ready on ``device`` (the one place that asks)."""
    basis = artifact.basis
    if basis is not None and artifact.model is not None:
        inr = InrKind(artifact.model, item_coords, device)
        return HybridKind(basis, artifact.config.model.residual_components, inr, artifact.grid, len(item_coords),
                          artifact.hash)
    if basis is not None:
        return LinearKind(basis, artifact.hash)
    if artifact.model is None:
        raise UsageError(f"model {artifact.hash[:16]} has neither a network nor a basis")
    return InrKind(artifact.model, item_coords, device)
