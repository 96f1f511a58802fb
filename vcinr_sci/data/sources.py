"""Sources: one variable of a dataset on disk, opened lazily, as fields, and their split.

One variable of a dataset is split into *fields* over its grid dims; every other dim
(time, level, ensemble member, ...) indexes fields. A field, or each patch of it, is one
*item* (:mod:`vcinr_sci.data.items`). Reading is lazy (dask-backed), so a dataset larger
than memory is usable: only the fields of a batch are read.
"""

from __future__ import annotations

import glob
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import xarray as xr

from vcinr_sci.config import DataConfig, expand_path
from vcinr_sci.data.grids import Grid, RegularGrid, SphericalGrid
from vcinr_sci.data.regrid import regrid_lat_lon
from vcinr_sci.errors import ConfigError

IRIS_PREFIX = "iris-sample-data:"
DATA_DIR_ENV = "VCINR_DATA_DIR"


def shared_data_dir() -> Path | None:
    """The folder of real test/benchmark data: ``$VCINR_DATA_DIR`` or ``../shared/data``."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env) if Path(env).is_dir() else None
    here = Path(__file__).resolve().parents[3] / "shared" / "data"  # beside the repository
    return here if here.is_dir() else None


def resolve_paths(paths: Sequence[str], key: str = "config.data.paths") -> list[str]:
    """Expand ``~``, env vars (:func:`~vcinr_sci.config.expand_path`: an unset one is a
    :class:`~vcinr_sci.errors.ConfigError` naming ``key``), globs and ``iris-sample-data:NAME``; every
    entry must match."""
    out: list[str] = []
    default = shared_data_dir() if DATA_DIR_ENV not in os.environ else None
    defaults = {DATA_DIR_ENV: str(default)} if default is not None else None
    for i, p in enumerate(paths):
        if p.startswith(IRIS_PREFIX):
            import iris_sample_data

            p = os.path.join(iris_sample_data.path, p[len(IRIS_PREFIX) :])
        expanded = expand_path(p, f"{key}[{i}]", defaults)
        matches = sorted(glob.glob(expanded)) if glob.has_magic(expanded) else [expanded]
        matches = [m for m in matches if Path(m).exists()]
        if not matches:
            raise FileNotFoundError(f"no data file matches {p!r} (expanded: {expanded!r})")
        out.extend(matches)
    return out


def open_variable(cfg: DataConfig, paths_key: str = "config.data.paths") -> xr.DataArray:
    """Open ``cfg.variable`` lazily, item dims first and grid dims last; errors in the
    paths name them ``paths_key``."""
    da = open_inputs(cfg, [cfg.variable], paths_key)[cfg.variable]
    if cfg.isel:
        da = da.isel(cfg.isel)
    if cfg.regrid:
        if cfg.grid != "spherical":
            raise ValueError("data.regrid builds a global lat/lon grid: it needs grid: spherical")
        da = regrid_lat_lon(da, cfg.grid_dims, cfg.regrid)
    return to_fields(da, cfg.grid_dims)


def open_inputs(cfg: DataConfig, variables: Sequence[str], paths_key: str = "config.data.paths") -> xr.Dataset:
    """``variables`` of the files ``cfg.paths`` names, as one lazy (dask) Dataset with
    their coordinates and the first file's attributes. A file holding none of them is
    not read (an archive with a file per variable). Several files are stacked along
    ``cfg.concat_dim`` when it is set (a new dim, or one they share), else combined by
    their coordinates as ``xarray.open_mfdataset`` does (files split along time, say):
    they must then agree exactly on every other coordinate, the grid included. A
    variable in no file, and files that do not combine, are a
    :class:`~vcinr_sci.errors.ConfigError` naming ``paths_key``."""
    if not cfg.paths:
        raise ValueError("data.paths is empty: name at least one netCDF/Zarr file or glob")
    paths = resolve_paths(cfg.paths, paths_key)
    opened = {p: _open_one(p) for p in paths}
    for v in variables:
        if not any(v in ds.data_vars for ds in opened.values()):
            has = sorted(map(str, opened[paths[0]].data_vars))
            where = f"{paths[0]}; it has {has}" if len(paths) == 1 else f"any of the {len(paths)} files ({paths[0]} has {has})"
            raise ConfigError(f"{paths_key}: variable {v!r} not in {where}")
    held = {p: [v for v in variables if v in ds.data_vars] for p, ds in opened.items()}
    used = [p for p, names in held.items() if names]
    parts = [opened[p][held[p]] for p in used]
    if len(parts) == 1:
        return parts[0]
    _check_same_grid(parts, used, cfg.grid_dims, paths_key)
    if cfg.concat_dim:
        return xr.concat(parts, dim=cfg.concat_dim, coords="minimal", compat="override")
    try:
        combined = xr.combine_by_coords(
            parts, join="exact", data_vars="minimal", coords="minimal", compat="override", combine_attrs="override"
        )
    except ValueError as e:  # xarray's AlignmentError is a ValueError
        shown = ", ".join(used[:3]) + (f" and {len(used) - 3} more" if len(used) > 3 else "")
        raise ConfigError(
            f"{paths_key}: {len(used)} files ({shown}) do not combine into one dataset by their coordinates: {e}. Files split "
            "along a dim must agree on every other coordinate (the grid included) and have coordinate values along "
            "that dim; to stack them along a new dim (e.g. ensemble members), set data.concat_dim"
        ) from e
    assert isinstance(combined, xr.Dataset)  # Datasets combine into one
    return combined


def _check_same_grid(parts: Sequence[xr.Dataset], paths: Sequence[str], grid_dims: Sequence[str], key: str) -> None:
    """Every file's ``grid_dims`` (sizes, and coordinates where it has them) must be the
    first file's: files of one archive share its grid."""
    first = parts[0]
    for part, path in zip(parts[1:], paths[1:]):
        for d in grid_dims:
            if d not in first.dims or d not in part.dims:
                continue
            same = first.sizes[d] == part.sizes[d] and (
                d not in first.coords or d not in part.coords or np.array_equal(first[d].values, part[d].values)
            )
            if not same:
                raise ConfigError(f"{key}: {path}: its {d!r} coordinates differ from those of {paths[0]}: "
                                  "the files must share one grid")


def _open_one(path: str) -> xr.Dataset:
    if path.rstrip("/").endswith(".zarr") or Path(path, "zarr.json").exists() or Path(path, ".zgroup").exists():
        return xr.open_zarr(path)
    engine = "netcdf4" if path.endswith((".nc", ".nc4")) else None
    try:
        return xr.open_dataset(path, chunks={}, engine=engine)
    except ValueError as e:  # e.g. "days since 0000-00-00" in a 365-day calendar
        if "decode" not in str(e) or "time" not in str(e):
            raise
        warnings.warn(f"{path}: time coordinates left undecoded ({e})", stacklevel=2)
        return xr.open_dataset(path, chunks={}, engine=engine, decode_times=False)


def to_fields(da: xr.DataArray, grid_dims: Sequence[str]) -> xr.DataArray:
    """Order ``da`` as (item dims..., grid dims...), checking the grid dims exist."""
    grid_dims = list(grid_dims)
    if not grid_dims:
        raise ValueError("grid_dims is empty: name the dims one field spans, e.g. [lat, lon]")
    missing = [d for d in grid_dims if d not in da.dims]
    if missing:
        raise KeyError(f"grid dims {missing} not in {da.name!r}, whose dims are {list(da.dims)}")
    item_dims = [d for d in da.dims if d not in grid_dims]
    return da.transpose(*item_dims, *grid_dims)


def make_grid(da: xr.DataArray, grid_dims: Sequence[str], kind: str) -> Grid:
    """The grid of ``da``'s ``grid_dims``: ``spherical`` takes (lat, lon) in degrees."""
    if kind == "spherical":
        if len(grid_dims) != 2:
            raise ValueError(f"a spherical grid spans two dims (lat, lon), got {list(grid_dims)}")
        lat, lon = (da[d].values if d in da.coords else None for d in grid_dims)
        if lat is None or lon is None:
            raise ValueError(f"spherical grid needs coordinate values for {list(grid_dims)}")
        return SphericalGrid(lat, lon)
    if kind == "regular":
        return RegularGrid([da[d].values if d in da.coords else da.sizes[d] for d in grid_dims])
    raise ValueError(f"unknown grid kind {kind!r} (expected 'spherical' or 'regular')")


class FieldSource:
    """The fields of one variable, indexed 0..n-1 over the flattened item dims."""

    def __init__(self, da: xr.DataArray, grid_dims: Sequence[str]):
        self.da = to_fields(da, grid_dims)
        self.grid_dims = list(grid_dims)
        self.item_dims = [d for d in self.da.dims if d not in self.grid_dims]
        self.item_shape = tuple(self.da.sizes[d] for d in self.item_dims)
        self.grid_shape = tuple(self.da.sizes[d] for d in self.grid_dims)
        if not np.issubdtype(self.da.dtype, np.floating):
            raise TypeError(f"{da.name!r} has dtype {self.da.dtype}; vcinr compresses float fields")

    def __len__(self) -> int:
        return int(np.prod(self.item_shape)) if self.item_shape else 1

    def load(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Fields ``indices`` as float32 ``(n, *grid_shape)``; reads only those."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"field index out of range 0..{len(self) - 1}")
        if not self.item_dims:
            return np.repeat(self.da.values[None].astype(np.float32), idx.size, axis=0)
        multi = np.unravel_index(idx, self.item_shape)
        sel = {d: xr.DataArray(m, dims="item") for d, m in zip(self.item_dims, multi)}
        return np.asarray(self.da.isel(sel).values, dtype=np.float32)

    def key(self, index: int) -> dict[str, Any]:
        """The item's coordinates along the item dims (labels where the dims have them)."""
        if not self.item_dims:
            return {}
        out: dict[str, Any] = {}
        for d, i in zip(self.item_dims, np.unravel_index(int(index), self.item_shape)):
            out[d] = str(self.da[d].values[i]) if d in self.da.coords else int(i)
        return out

    def indices_along(self, dim: str, positions: Sequence[int]) -> np.ndarray:
        """Field indices whose position along ``dim`` is in ``positions``."""
        if dim not in self.item_dims:
            raise KeyError(f"split dim {dim!r} is not an item dim; item dims are {self.item_dims}")
        axis = self.item_dims.index(dim)
        grid = np.indices(self.item_shape).reshape(len(self.item_shape), -1)
        return np.flatnonzero(np.isin(grid[axis], np.asarray(positions)))








@dataclass(frozen=True)
class DataSplit:
    """Field indices of the train / validation / test items, and how they were chosen:
    ``positions`` along ``dim`` count within the variable as opened (after
    ``data.isel``), ``coords`` are the coordinate values there (empty when the dim has
    no coordinate), which say which members or times they are."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    dim: str
    positions: dict[str, list[int]]
    coords: dict[str, list[Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"dim": self.dim, "positions": self.positions}
        return (out | {"coords": self.coords}) if self.coords else out

    def matches(self, recorded: dict[str, Any]) -> bool:
        """Whether ``recorded`` (a :meth:`to_dict` stored with a model) is this split;
        the coordinate values are compared when recorded (older models lack them)."""
        mine = self.to_dict()
        if "coords" not in recorded:
            mine.pop("coords", None)
        return mine == recorded

    def describe(self) -> str:
        """One line: each part's coordinate values along the split dim (positions when
        the dim has no coordinate), e.g. ``number: train [1, 2, ..., 7] (7), val [8] (1)``."""
        labels = self.coords or self.positions
        kind = "" if self.coords else " positions"
        return f"{self.dim}{kind}: " + ", ".join(f"{part} {_brief(v)} ({len(v)})" for part, v in labels.items())


def _brief(values: list[Any]) -> str:
    shown = [str(v) for v in values] if len(values) <= 4 else [str(values[0]), str(values[1]), "...", str(values[-1])]
    return "[" + ", ".join(shown) + "]"


def _json_labels(values: np.ndarray) -> list[Any]:
    """Coordinate values as JSON-able labels: ISO dates, numbers, strings."""
    if np.issubdtype(values.dtype, np.datetime64):
        return [str(v) for v in np.datetime_as_string(values, unit="auto")]
    if values.dtype.kind in "iub":
        return [int(v) for v in values]
    if values.dtype.kind == "f":
        return [float(v) for v in values]
    if values.dtype == object and all(hasattr(v, "isoformat") for v in values):  # cftime dates
        return [v.isoformat().removesuffix("T00:00:00") for v in values]
    return [str(v) for v in values]


def make_split(source: FieldSource, cfg: DataConfig) -> DataSplit:
    """Deterministic split by contiguous blocks at the end of ``cfg.split_dim``."""
    n = source.da.sizes.get(cfg.split_dim)
    if n is None or cfg.split_dim not in source.item_dims:
        raise KeyError(f"split_dim {cfg.split_dim!r} is not an item dim; item dims are {source.item_dims}")
    n_test = int(round(n * cfg.test_fraction))
    n_val = int(round(n * cfg.val_fraction))
    if cfg.test_fraction > 0:
        n_test = max(n_test, 1)
    if cfg.val_fraction > 0:
        n_val = max(n_val, 1)
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(f"split leaves no training items along {cfg.split_dim!r} (length {n})")
    pos = {
        "train": list(range(n_train)),
        "val": list(range(n_train, n_train + n_val)),
        "test": list(range(n_train + n_val, n)),
    }
    idx = {k: source.indices_along(cfg.split_dim, v) for k, v in pos.items()}
    labels = {}
    if cfg.split_dim in source.da.coords:
        values = source.da[cfg.split_dim].values
        labels = {k: _json_labels(values[v]) for k, v in pos.items()}
    return DataSplit(idx["train"], idx["val"], idx["test"], cfg.split_dim, pos, labels)






