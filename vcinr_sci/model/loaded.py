"""A model artifact ready to code chunks: its weights on the device it runs on (or its
linear basis), the layout of its items (patches), their coordinates, its latent coders
by level; and the
full-float32 context every decode runs in, so that no speed setting changes the bytes' meaning."""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from vcinr_sci.data.grids import Grid, Patcher
from vcinr_sci.errors import CodecError, UsageError
from vcinr_sci.model.artifact import (
    ModelArtifact,
)
from vcinr_sci.model.basis import LinearBasis

DEVICE_ENV = "VCINR_DEVICE"


BATCH_POINTS_ENV = "VCINR_BATCH_POINTS"

# The largest difference allowed between the encoder's and any decoder's float32 INR
# output, in float32 ulps of the output scale: 256 ulps = 3.1e-5 of the normalisation
# range. Measured (`vcinr bench cross-device`, demo model, 29,008 values): an H200 in
# float32 differs from this CPU by at most 2.4e-7 of the range (2 ulps), so this leaves
# two orders of magnitude of headroom; TF32 would differ by 1.0e-3 and is kept off.
INR_DEVICE_ULPS = 256
_EPS32 = float(np.finfo(np.float32).eps)


def default_device() -> torch.device:
    """``$VCINR_DEVICE`` if set, else CUDA when present, else the CPU."""
    name = os.environ.get(DEVICE_ENV) or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _batch_points() -> int:
    return max(1, int(os.environ.get(BATCH_POINTS_ENV, 2**16)))


_PRECISION_LOCK = threading.Lock()
_PRECISION_USERS = 0
_PRECISION_SAVED: str | None = None


@contextlib.contextmanager
def full_float32() -> Iterator[None]:
    """Run CUDA float32 matmuls in IEEE float32 (no TF32) inside the block, restoring the
    caller's setting afterwards.

    Decoding must not depend on a process-wide speed setting: TF32 changes the INR's
    output by ~1e-3 of the normalisation range, far beyond the error-bounded mode's
    margin (:mod:`vcinr_sci.coding.bound`). torch 2.13 sets this with
    ``torch.backends.cuda.matmul.fp32_precision`` (``"ieee"``); the legacy
    ``allow_tf32`` / ``set_float32_matmul_precision`` flags map onto it, and reading
    them after the new one was set raises, so only the new one is touched. The INR
    has no convolutions, so cuDNN's flag does not apply. Chunks decode in several
    threads at once: the first to enter saves and sets, the last to leave restores.
    On the CPU the setting has no effect.
    """
    global _PRECISION_USERS, _PRECISION_SAVED
    matmul = torch.backends.cuda.matmul
    with _PRECISION_LOCK:
        if _PRECISION_USERS == 0:
            _PRECISION_SAVED = matmul.fp32_precision
            matmul.fp32_precision = "ieee"
        _PRECISION_USERS += 1
    try:
        yield
    finally:
        with _PRECISION_LOCK:
            _PRECISION_USERS -= 1
            if _PRECISION_USERS == 0:
                matmul.fp32_precision = _PRECISION_SAVED


@dataclass
class LoadedModel:
    """A model artifact ready to code chunks: weights on ``device``, the items' layout
    (patches) and the coordinates of every item's points, latent coders by level.

    With a linear model (``basis``) an item's "latent" is its coefficients: found in
    closed form (no inner steps) and evaluated as ``mean + c @ components`` on the CPU."""

    artifact: ModelArtifact
    device: torch.device
    patcher: Patcher | None
    item_coords: torch.Tensor  # (num_patches, points_per_item, coord_dim) on device
    basis: LinearBasis | None = None
    _coders: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def hash(self) -> str:
        return self.artifact.hash

    @property
    def grid(self) -> Grid:
        return self.artifact.grid

    @property
    def subtracts_item_mean(self) -> bool:
        """Whether chunks store each item's mean and the INR codes the rest."""
        return self.artifact.config.data.subtract_item_mean

    @property
    def latent_dim(self) -> int:
        """Numbers per item in a latent (coefficients, for a linear model)."""
        if self.basis is not None:
            return self.basis.num_components
        assert self.artifact.model is not None
        return self.artifact.model.latent_dim

    @property
    def num_patches(self) -> int:
        return self.item_coords.shape[0]

    @property
    def points_per_item(self) -> int:
        return self.item_coords.shape[1]

    def coder(self, level: str):
        """The latent coder of quality ``level`` (built once, on the model's device)."""
        with self._lock:
            if level not in self._coders:
                try:
                    coder = self.artifact.coder(level)
                except KeyError:
                    raise CodecError(
                        f"model {self.hash[:16]} has no quality level {level!r}; "
                        f"it has {self.artifact.quality_levels or 'none (train a coder first)'}"
                    ) from None
                if isinstance(coder, torch.nn.Module):
                    coder = coder.to(self.device)
                self._coders[level] = coder
            return self._coders[level]

    def to_items(self, fields: np.ndarray) -> np.ndarray:
        """``(n, *grid)`` -> ``(n * num_patches, points_per_item)`` (item i is patch
        ``i % num_patches`` of field ``i // num_patches``, as in :class:`~vcinr_sci.data.items.ItemSet`)."""
        if self.patcher is not None:
            fields = self.patcher.split(fields)
        return fields.reshape(-1, self.points_per_item)

    def to_fields(self, items: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_items`."""
        if self.patcher is None:
            return items.reshape(-1, *self.grid.shape)
        return self.patcher.merge(items.reshape(-1, self.num_patches, *self.patcher.patch_shape))

    def _network(self):
        if self.artifact.model is None:
            raise UsageError(f"model {self.hash[:16]} has no network")
        return self.artifact.model

    def _batches(self, n: int):
        size = max(1, _batch_points() // self.points_per_item)
        for start in range(0, n, size):
            yield slice(start, min(start + size, n))

    def adapt(self, items: np.ndarray, values: np.ndarray, valid: np.ndarray, steps: int) -> torch.Tensor:
        """Latents ``(len(items), D)`` of the normalised ``values`` at item indices ``items``
        (a linear model's least-squares coefficients: ``steps`` does not apply)."""
        if self.basis is not None:
            return torch.from_numpy(self.basis.coefficients(values, valid))
        out = []
        model = self._network()
        for sl in self._batches(len(items)):
            coords = self.item_coords[torch.as_tensor(items[sl] % self.num_patches, device=self.device)]
            target = torch.as_tensor(values[sl], device=self.device).unsqueeze(-1)
            mask = torch.as_tensor(valid[sl], device=self.device).unsqueeze(-1)
            out.append(model.adapt(coords, target, mask, steps))
        return torch.cat(out) if out else torch.zeros(0, model.latent_dim, device=self.device)

    @torch.no_grad()
    def evaluate(self, items: np.ndarray, phi: torch.Tensor) -> np.ndarray:
        """The INR of latents ``phi`` on the grid points of items ``items``: ``(n, P)``."""
        if self.basis is not None:
            return self.basis.reconstruct(phi.cpu().numpy())
        out = []
        model = self._network()
        phi = phi.to(self.device, torch.float32)
        with full_float32():
            for sl in self._batches(len(items)):
                coords = self.item_coords[torch.as_tensor(items[sl] % self.num_patches, device=self.device)]
                out.append(model.decode(coords, phi[sl])[..., 0].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.points_per_item), np.float32)

    def reconstruction_margin(self, phi: torch.Tensor, own: np.ndarray, offsets: np.ndarray) -> float:
        """The most any decoder's reconstruction of a chunk's valid points can differ
        from this process's, in data units: the error-bounded mode's device term
        (:mod:`vcinr_sci.coding.bound`). ``phi``: the chunk's decoded latents; ``own``:
        this model's normalised outputs at the valid points (:meth:`evaluate`);
        ``offsets``: the item means the codec adds to them in float32 before it
        denormalises in float64.

        An INR (float32, any device): ``INR_DEVICE_ULPS`` float32 ulps of its output
        scale ``(hi - lo) max(1, max |own| + max |offset|)`` (the means count once: only
        ``own`` varies between devices). A linear model: what its arithmetic can differ
        by (:meth:`LinearBasis.reconstruction_spread`), plus half a float32 spacing per
        side for the offsets' addition and two float64 spacings for the denormalisation:
        about two float32 ulps of its values."""
        norm = self.artifact.normaliser
        span = norm.hi - norm.lo
        top = float(np.abs(own).max(initial=0.0))
        means = float(np.abs(offsets).max(initial=0.0))
        if self.basis is None:
            return INR_DEVICE_ULPS * _EPS32 * (span * max(1.0, top + means))
        top += float(np.spacing(np.float32(top + means)))  # own = float32(y + o) - o: within a spacing of y
        spread = self.basis.reconstruction_spread(phi.cpu().numpy(), top)
        v = top + spread + means  # bounds |y + o| on any machine
        spread += float(np.spacing(np.float32(v)))
        return span * spread + 2 * float(np.spacing(abs(norm.lo) + span * v))

    @torch.no_grad()
    def evaluate_at(self, coords: np.ndarray, phi: torch.Tensor) -> np.ndarray:
        """The INR of each latent in ``phi`` ``(B, D)`` at shared points ``coords``
        ``(N, coord_dim)``: ``(B, N)`` (continuous-resolution sampling; an INR only)."""
        if self.basis is not None:
            raise UsageError(
                f"model {self.hash[:16]} is linear: it is defined on its grid's points only, so sampling off the "
                "grid needs an INR model (read the array, or interpolate it, instead)"
            )
        model = self._network()
        c = torch.as_tensor(np.asarray(coords, np.float32), device=self.device)
        phi = phi.to(self.device, torch.float32)
        step = max(1, _batch_points() // max(1, len(c)))
        with full_float32():
            out = [model.decode(c, phi[i : i + step])[..., 0].float().cpu().numpy() for i in range(0, len(phi), step)]
        return np.concatenate(out) if out else np.zeros((0, len(c)), np.float32)
