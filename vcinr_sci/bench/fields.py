"""The fields ``vcinr bench codecs`` compresses: the held-out part of the model's own
data split, or any dataset (``--data``), regridded when asked."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

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
        name = f"{model_cfg.name} {model_cfg.data.variable}, {part} part ({data.split.dim} {data.split.positions[part]})"
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
