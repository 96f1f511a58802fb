"""Items an INR fits: fields (or patches of fields) of a configured variable, normalised,
with their coordinates and masks of valid points, read lazily batch by batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from vcinr_sci.config import DataConfig
from vcinr_sci.data.grids import Grid, Patcher
from vcinr_sci.data.normalise import Normaliser, fit_normaliser, item_means
from vcinr_sci.data.sources import DataSplit, FieldSource, make_grid, make_split, open_variable


class ItemSet:
    """Normalised items (fields, or patches of fields) with their coordinates and masks.

    ``batch(items)`` gives ``coords (B, P, d)``, ``values (B, P, 1)`` in [0, 1]-ish
    normalised units with NaNs zeroed, and ``mask (B, P, 1)`` (True where data is valid).
    Item ``i`` is patch ``i % num_patches`` of field ``fields[i // num_patches]``. Values
    are less the normaliser's mean field, where it has one; with ``subtract_mean`` every
    item's values are then less its :func:`item_means` (``offsets``); then less what
    ``linear_part`` (items ``(B, P)`` -> their linear model's reconstruction, NaN-aware)
    makes of them, where given (a hybrid model's INR fits that residual).
    """

    def __init__(
        self,
        source: FieldSource,
        fields: np.ndarray,
        grid: Grid,
        normaliser: Normaliser,
        patch_shape: Sequence[int] | None = None,
        cache_limit_mb: float = 2048.0,
        subtract_mean: bool = False,
        linear_part: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        self.source, self.fields, self.grid, self.normaliser = source, np.asarray(fields), grid, normaliser
        self.subtract_mean, self.linear_part = subtract_mean, linear_part
        self.patcher = Patcher(grid.shape, tuple(patch_shape)) if patch_shape else None
        coords = grid.coords()
        self.patch_coords = (
            self.patcher.split(coords, trailing=1).reshape(self.patcher.num_patches, -1, grid.coord_dim)
            if self.patcher
            else coords.reshape(1, -1, grid.coord_dim)
        )
        self.num_patches, self.points_per_item = self.patch_coords.shape[:2]
        nbytes = len(self.fields) * grid.size * 4
        self._cache = self._fields_to_items(source.load(self.fields)) if nbytes <= cache_limit_mb * 2**20 else None

    def __len__(self) -> int:
        return len(self.fields) * self.num_patches

    def _fields_to_items(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = self.normaliser.normalise(x).astype(np.float32)
        if self.normaliser.mean_field is not None:
            x = x - self.normaliser.mean_field
        if self.patcher:
            x = self.patcher.split(x)
        x = x.reshape(-1, self.points_per_item)
        offsets = item_means(x) if self.subtract_mean else np.zeros(len(x), np.float32)
        x = x - offsets[:, None]
        if self.linear_part is not None:  # of what the codec hands the model: the item less its offset
            x = (x - self.linear_part(x)).astype(np.float32)
        return x, offsets

    def _load(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        items = np.asarray(items, dtype=np.int64)
        if self._cache is not None:
            return self._cache[0][items], self._cache[1][items]
        field_pos, patch = np.divmod(items, self.num_patches)
        uniq, inv = np.unique(field_pos, return_inverse=True)
        values, offsets = self._fields_to_items(self.source.load(self.fields[uniq]))
        rows = inv * self.num_patches + patch
        return values[rows], offsets[rows]

    def values(self, items: np.ndarray) -> np.ndarray:
        """Normalised values ``(B, P)`` of ``items`` (NaN where data is missing), less
        their offsets."""
        return self._load(items)[0]

    def offsets(self, items: np.ndarray) -> np.ndarray:
        """What was subtracted from each item's values ``(B,)``: its mean with
        ``subtract_mean``, else 0. Data = normaliser.denormalise(values + offset)."""
        return self._load(items)[1]

    def batch(self, items: np.ndarray, points: np.ndarray | None = None):
        """Tensors for ``items``; ``points`` selects a subset of grid points per item."""
        import torch

        items = np.asarray(items, dtype=np.int64)
        v = self.values(items)
        c = self.patch_coords[items % self.num_patches]
        if points is not None:
            v, c = v[:, points], c[:, points]
        mask = np.isfinite(v)
        v = np.where(mask, v, 0.0)
        return (
            torch.from_numpy(np.ascontiguousarray(c)),
            torch.from_numpy(np.ascontiguousarray(v[..., None], dtype=np.float32)),
            torch.from_numpy(mask[..., None]),
        )

    def to_fields(self, item_values: np.ndarray) -> np.ndarray:
        """Per-item values ``(n_fields * num_patches, P)`` back to ``(n_fields, *grid)``."""
        x = item_values.reshape(-1, self.num_patches, *(self.patcher.patch_shape if self.patcher else self.grid.shape))
        if self.patcher:
            x = self.patcher.merge(x)
        else:
            x = x[:, 0]
        return x


@dataclass
class Dataset:
    """A configured variable: its source, grid, split and normalisation."""

    source: FieldSource
    grid: Grid
    split: DataSplit
    normaliser: Normaliser
    cfg: DataConfig
    # A hybrid model's linear part: its INR's items are what this leaves of the data
    linear_part: Callable[[np.ndarray], np.ndarray] | None = None

    def items(self, part: str, fields: np.ndarray | None = None) -> ItemSet:
        """The items of split ``part`` (or of ``fields``), less ``linear_part``'s
        reconstruction of them where set (see :class:`ItemSet`)."""
        chosen = getattr(self.split, part) if fields is None else fields
        return ItemSet(
            self.source, chosen, self.grid, self.normaliser, self.cfg.patch_shape, self.cfg.cache_limit_mb,
            self.cfg.subtract_item_mean, self.linear_part,
        )


def load_dataset(cfg: DataConfig, normaliser: Normaliser | None = None,
                 linear_part: Callable[[np.ndarray], np.ndarray] | None = None) -> Dataset:
    """Open, split and (unless given) fit the normalisation on the training part; with
    ``linear_part``, items are what it leaves of the data (a hybrid model's INR's)."""
    da = open_variable(cfg)
    source = FieldSource(da, cfg.grid_dims)
    grid = make_grid(source.da, cfg.grid_dims, cfg.grid)
    split = make_split(source, cfg)
    norm = normaliser or fit_normaliser(source, split.train, cfg)
    return Dataset(source, grid, split, norm, cfg, linear_part)
