"""A model artifact ready to code chunks: its kind (an INR on the device it runs on, or a
linear basis), the layout of its items (patches), their coordinates, its latent coders by
level."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
import torch

from vcinr_sci.coding.rate_control import ERROR_BLOCK_VALUES, choose_coding, target_error
from vcinr_sci.data.grids import Grid, Patcher
from vcinr_sci.errors import CodecError
from vcinr_sci.model.artifact import ModelArtifact
from vcinr_sci.model.kinds import ModelKind


class Coded(NamedTuple):
    """A chunk's latents as :meth:`LoadedModel.encode` coded them."""

    string: bytes
    level: str  # whose coder decodes the string
    exponent: int  # on that level's step (rate control; 0: its own step)
    reached: bool  # whether the requested level's target PSNR, where it has one, was reached


@dataclass
class LoadedModel:
    """A model artifact ready to code chunks: its kind (:mod:`vcinr_sci.model.kinds`: an
    INR's weights on ``device``, or a linear basis), the items' layout (patches) and the
    coordinates of every item's points, latent coders by level. What a kind does, the
    model forwards to it: callers never ask which kind they hold."""

    artifact: ModelArtifact
    device: torch.device
    patcher: Patcher | None
    item_coords: torch.Tensor  # (num_patches, points_per_item, coord_dim) on device
    kind: ModelKind
    _coders: dict[tuple[str, int], Any] = field(default_factory=dict)  # (level, step exponent) -> coder
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def hash(self) -> str:
        return self.artifact.hash

    @property
    def grid(self) -> Grid:
        return self.artifact.grid

    @property
    def subtracts_item_mean(self) -> bool:
        """Whether chunks store each item's mean and the model codes the rest."""
        return self.artifact.config.data.subtract_item_mean

    @property
    def latent_dim(self) -> int:
        """Numbers per item in a latent (coefficients, for a linear model)."""
        return self.kind.latent_dim

    @property
    def num_patches(self) -> int:
        return self.item_coords.shape[0]

    @property
    def points_per_item(self) -> int:
        return self.item_coords.shape[1]

    def coder(self, level: str, exponent: int = 0):
        """The latent coder of quality ``level`` (built once, on the model's device), at
        the level's step times :func:`~vcinr_sci.coding.coefficients.step_factor` of
        ``exponent`` (rate control: a level whose coder has a step only)."""
        with self._lock:
            if (level, 0) not in self._coders:
                try:
                    coder = self.artifact.coder(level)
                except KeyError:
                    raise CodecError(
                        f"model {self.hash[:16]} has no quality level {level!r}; "
                        f"it has {self.artifact.quality_levels or 'none (train a coder first)'}"
                    ) from None
                if hasattr(coder, "to"):  # learned coders (and a hybrid level's) run on the model's device
                    coder = coder.to(self.device)
                self._coders[(level, 0)] = coder
            if (level, exponent) not in self._coders:
                if not hasattr(self._coders[(level, 0)], "scaled"):
                    raise CodecError(f"model {self.hash[:16]}: level {level!r} has no step to scale "
                                     f"(step exponent {exponent})")
                self._coders[(level, exponent)] = self._coders[(level, 0)].scaled(exponent)
            return self._coders[(level, exponent)]

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

    @cached_property
    def _base(self) -> np.ndarray | None:
        """The mean field as items ``(num_patches, P)`` (``data.subtract_mean_field``), or None."""
        mean = self.artifact.normaliser.mean_field
        return None if mean is None else self.to_items(mean[None]).astype(np.float32)

    def adapt(self, items: np.ndarray, values: np.ndarray, valid: np.ndarray, steps: int) -> torch.Tensor:
        """Latents ``(len(items), D)`` of the normalised ``values`` at item indices ``items``
        (the kind fits what the mean field, where the model has one, leaves)."""
        return self.kind.adapt(items, self._anomalies(items, values), valid, steps)

    def encode(self, items: np.ndarray, values: np.ndarray, valid: np.ndarray, steps: int, quality: str) -> Coded:
        """The latents of ``values`` (as :meth:`adapt` takes them) coded at quality
        ``quality``: one string, and the level and step exponent whose :meth:`coder`
        decompresses it. A level with a target PSNR and a coder with a step lands on its
        target on these items, coded at whichever level's step and exponent get there
        (:mod:`vcinr_sci.coding.rate_control`), or says it cannot; any other is coded at
        its own step."""
        anomalies = self._anomalies(items, values)
        encode = self.kind.encoder(items, anomalies, valid, steps)
        target = self.artifact.level_target(quality)
        if target is None or not hasattr(self.coder(quality), "scaled"):
            return Coded(encode(self.coder(quality)), quality, 0, True)
        levels = [q for q in dict.fromkeys([*self.artifact.ladder, quality]) if hasattr(self.coder(q), "scaled")]
        coded: dict[tuple[str, int], tuple[bytes, float]] = {}

        def measure(level: str, exponent: int) -> tuple[float, int]:
            if (level, exponent) not in coded:
                coder = self.coder(level, exponent)
                string = encode(coder)
                coded[level, exponent] = string, self._squared_error(items, coder.decompress(string, len(items)),
                                                                     anomalies, valid)
            return coded[level, exponent][1], len(coded[level, exponent][0])

        level, exponent, reached = choose_coding({q: self.coder(q).step for q in levels}, quality, measure,
                                                 target_error(target, int(np.count_nonzero(valid))))
        return Coded(coded[level, exponent][0], level, exponent, reached)

    def _squared_error(self, items: np.ndarray, phi: torch.Tensor, anomalies: np.ndarray, valid: np.ndarray) -> float:
        """The squared error of latents ``phi`` against ``anomalies`` at the ``valid``
        points, evaluated ``ERROR_BLOCK_VALUES`` values at a time (the chunk's
        float32/float64 temporaries would be several times its size)."""
        total, size = 0.0, max(1, ERROR_BLOCK_VALUES // max(1, anomalies.shape[1]))
        for start in range(0, len(items), size):
            block = slice(start, start + size)
            diff = self.kind.evaluate(items[block], phi[block]) - anomalies[block]
            total += float(np.square(np.where(valid[block], diff, 0.0), dtype=np.float64).sum())
        return total

    def _anomalies(self, items: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``values`` less the mean field, where the model has one."""
        return values if self._base is None else values - self._base[np.asarray(items) % self.num_patches]

    def evaluate(self, items: np.ndarray, phi: torch.Tensor) -> np.ndarray:
        """The model of latents ``phi`` on the grid points of items ``items``: ``(n, P)``
        float32 (the kind's values plus the mean field, where the model has one)."""
        out = self.kind.evaluate(items, phi)
        if self._base is not None:
            out = out + self._base[np.asarray(items) % self.num_patches]
        return out

    def round_trip(self, items: np.ndarray, anomalies: np.ndarray, valid: np.ndarray, steps: int,
                   quality: str) -> tuple[bytes, np.ndarray]:
        """``anomalies`` (values with the mean field already out, as an ItemSet holds
        them) coded at ``quality`` and decoded again: the string and the decoded
        anomalies ``(n, P)``, the mean field not added back."""
        coder = self.coder(quality)
        string = self.kind.encoder(items, anomalies, valid, steps)(coder)
        return string, self.kind.evaluate(items, coder.decompress(string, len(items)))

    def reconstruction_margin(self, phi: torch.Tensor, own: np.ndarray, offsets: np.ndarray) -> float:
        """The most any decoder's reconstruction of a chunk's valid points can differ
        from this process's, in data units: the error-bounded mode's ``d``
        (:mod:`vcinr_sci.coding.bound`). ``phi``: the chunk's decoded latents; ``own``:
        the model's normalised values at the valid points (:meth:`evaluate`); ``offsets``:
        the item means the codec adds to them in float32. The kind bounds those float32
        sums (:meth:`~vcinr_sci.model.kinds.ModelKind.value_spread`); the float64
        denormalisation ``v (hi - lo) + lo`` rounds twice more, a float64 spacing each."""
        norm = self.artifact.normaliser
        span = norm.hi - norm.lo
        spread = self.kind.value_spread(phi, own, offsets)
        top = float(np.abs(own).max(initial=0.0)) + float(np.abs(offsets).max(initial=0.0)) + spread
        return span * spread + 2 * float(np.spacing(abs(norm.lo) + span * top))

    def evaluate_at(self, coords: np.ndarray, phi: torch.Tensor) -> np.ndarray:
        """The model of each latent in ``phi`` ``(B, D)`` at shared points ``coords``
        ``(N, coord_dim)``: ``(B, N)`` (continuous-resolution sampling; the mean field,
        where the model has one, interpolated there)."""
        out = self.kind.evaluate_at(coords, phi)
        mean = self.artifact.normaliser.mean_field
        if mean is not None:
            out = out + self.grid.interpolate(mean, coords).astype(np.float32)
        return out
