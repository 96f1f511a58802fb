"""The fields ``vcinr bench codecs`` compresses: the held-out part of the model's own
data split, or any dataset (``--data``), regridded when asked."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from vcinr_sci.config import DataConfig
from vcinr_sci.data.grids import SphericalGrid
from vcinr_sci.data.items import load_dataset
from vcinr_sci.data.regrid import interp_lat_lon, regrid_lat_lon
from vcinr_sci.data.sources import FieldSource, open_variable
from vcinr_sci.errors import UsageError


@dataclass
class Fields:
    """The fields every codec compresses: ``values (n, lat, lon)`` float32 and where
    they came from."""

    values: np.ndarray
    lat: np.ndarray | None
    lon: np.ndarray | None
    source: str

    @property
    def weights(self) -> np.ndarray | None:
        if self.lat is None:
            return None
        return SphericalGrid(self.lat, self.lon).area_weights()


MAX_RUNS = 8  # runs of consecutive indices index_ranges writes out in full


def index_ranges(indices: Sequence[int]) -> str:
    """Integer indices as runs of consecutive ones, ``"3650-7299"`` or ``"0-9, 20, 30-39"``,
    in order: a 10-year daily split is one short line, not 15 KB. Beyond ``MAX_RUNS``
    runs, the first and last few around how many runs are left out."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    text = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs] or ["none"]
    if len(text) > MAX_RUNS:
        head, tail = MAX_RUNS // 2, MAX_RUNS // 4
        text = [*text[:head], f"... {len(text) - head - tail} more runs ...", *text[-tail:]]
    return ", ".join(text)


def load_fields(args: argparse.Namespace, model_grid: SphericalGrid | None, model_cfg) -> Fields:
    """The fields to compress: ``--data`` or the model's held-out part, regridded if asked;
    ``--fields`` of them evenly spaced, or with ``--consecutive`` the last ones in a row."""
    if args.data:
        if not args.variable or not args.grid_dims:
            raise UsageError("vcinr bench codecs: --data needs --variable and --grid-dims")
        cfg = DataConfig(paths=list(args.data), variable=args.variable, grid_dims=args.grid_dims.split(","),
                         concat_dim=args.concat_dim)
        source = FieldSource(open_variable(cfg), cfg.grid_dims)
        indices = np.arange(len(source))
        name = ", ".join(Path(p).name for p in args.data) + f" {args.variable}"
    elif model_cfg is not None:
        data = load_dataset(model_cfg.data)
        part = args.part
        source, indices = data.source, getattr(data.split, part)
        positions = data.split.positions[part]
        name = (f"{model_cfg.name} {model_cfg.data.variable}, {part} part ({len(positions)} {data.split.dim} "
                f"positions: {index_ranges(positions)})")
    else:
        raise UsageError("vcinr bench codecs: give --model or --data")
    da = source.da
    if args.regrid:
        if args.regrid == "model":
            if model_grid is None:
                raise UsageError("vcinr bench codecs: --regrid model needs a model on a lat/lon grid")
            da = interp_lat_lon(da, source.grid_dims, model_grid.lat, model_grid.lon)
        else:
            da = regrid_lat_lon(da, source.grid_dims, [int(v) for v in args.regrid.lower().split("x")])
        source = FieldSource(da, source.grid_dims)
        name += f", regridded to {args.regrid}"
    if args.fields and args.fields < len(indices):
        if args.consecutive:  # as a store chunked along time holds them
            indices = indices[-args.fields :]
            name += f", last {args.fields} fields"
        else:
            indices = indices[np.unique(np.linspace(0, len(indices) - 1, args.fields).round().astype(int))]
    values = source.load(indices)
    if np.isinf(values).any():
        raise UsageError("vcinr bench codecs: the fields hold inf values; codecs compare on finite values and NaN")
    lat = lon = None
    if len(source.grid_dims) == 2 and all(d in da.coords for d in source.grid_dims):
        lat, lon = (np.asarray(da[d].values, np.float64) for d in source.grid_dims)
        if np.abs(lat).max() > 90:
            lat = lon = None
    return Fields(values, lat, lon, name)
