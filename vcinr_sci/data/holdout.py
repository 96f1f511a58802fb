"""The fields a stage tunes its quality levels on and scores its checkpoints on.

The validation part of the data split when there is one. With ``data.val_fraction: 0``
the last tenth of the training part along the split dim (at least one position) is held
out of training instead, and the stage says so: levels tuned on the fields they were
fitted on fall short on any other field (3-4 dB for the linear model's levels).

A block at the end of the training part, like the split's own parts, not a random draw:
neighbouring hours or days are near-copies of each other, so fields drawn from between
training fields would score about as well as the training fields do. Deterministic: every
stage (meta-training, the linear fit, coder training) holds out the same fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vcinr_sci.config import DataConfig
from vcinr_sci.data.sources import DataSplit, FieldSource, make_split, open_variable
from vcinr_sci.errors import ConfigError

HOLDOUT_FRACTION = 0.1


@dataclass(frozen=True)
class TuningSplit:
    """Field indices to fit on (``train``) and to tune and evaluate on (``tune``)."""

    train: np.ndarray
    tune: np.ndarray
    # Positions along ``dim`` taken out of the training part; empty when ``tune`` is the
    # validation part.
    held_out: list[int]
    dim: str
    note: str  # one line for the log

    def to_dict(self) -> dict[str, Any]:
        """What a model artifact records of it."""
        if not self.held_out:
            return {"part": "val"}
        return {"part": "held out of train", "dim": self.dim, "positions": self.held_out}

    def tuning_rows(self, fields: np.ndarray) -> np.ndarray:
        """Which of the items of ``fields`` (one field index per item) are tuning items."""
        return np.isin(np.asarray(fields), self.tune)


def tuning_split(split: DataSplit, source: FieldSource, val_missing: str = "") -> TuningSplit:
    """The tuning fields of ``split``: its validation part (unless ``val_missing`` says
    why a stage's inputs lack that part), else a block held out of its training part.
    A :class:`ConfigError` naming ``data.val_fraction`` when the training part is too
    short to give one up."""
    if not val_missing and len(split.val):
        note = f"tuning and evaluating on the validation part ({len(split.val)} fields)"
        return TuningSplit(split.train, split.val, [], split.dim, note)
    positions = list(split.positions["train"])
    n = max(1, int(round(len(positions) * HOLDOUT_FRACTION)))
    if len(positions) - n < 1:
        raise ConfigError(
            f"data.val_fraction is 0 and the training part has {len(positions)} position(s) along "
            f"{split.dim!r}: none can be held out to tune on; set data.val_fraction > 0"
        )
    held = positions[-n:]
    tune = source.indices_along(split.dim, held)
    train = split.train[~np.isin(split.train, tune)]
    labels = split.coords.get("train", positions)[-n:]
    span = f"{labels[0]}" if n == 1 else f"{labels[0]} .. {labels[-1]}"
    why = val_missing or "data.val_fraction is 0"
    note = (f"{why}: holding out the last {n} of {len(positions)} training {split.dim} positions ({span}, "
            f"{len(tune)} fields) to tune and evaluate on; training on the other {len(train)} fields")
    return TuningSplit(train, tune, held, split.dim, note)


def tuning_split_of(cfg: DataConfig) -> TuningSplit:
    """:func:`tuning_split` of a config's data, opened lazily (no field is read): for a
    driver that checks and reports before its workers start."""
    source = FieldSource(open_variable(cfg), cfg.grid_dims)
    return tuning_split(make_split(source, cfg), source)
