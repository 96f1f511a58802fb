"""Grids: where a field's values sit, as coordinates an INR can take.

Coordinates only; nothing here trains. A grid is described by plain JSON (``to_dict``)
so that it can travel inside a model artifact or a Zarr codec config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


class Grid:
    """A grid of ``shape`` points with ``coord_dim``-dimensional coordinates."""

    shape: tuple[int, ...]
    coord_dim: int

    def coords(self) -> np.ndarray:
        """Coordinates of every point, shape ``(*shape, coord_dim)``, float32."""
        raise NotImplementedError

    def area_weights(self) -> np.ndarray:
        """Relative area of each point, shape ``shape``, mean 1 (for weighted metrics)."""
        return np.ones(self.shape, dtype=np.float64)

    def interpolate(self, values: np.ndarray, coords: np.ndarray) -> np.ndarray:
        """``values`` (this grid's ``shape``) at points ``coords`` ``(N, coord_dim)`` (as
        :meth:`coords` gives them), linearly between grid points and held constant past
        the grid's edges: ``(N,)`` float64."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def coordinate_span(self) -> float:
        """The grid's largest extent along one coordinate axis: 2 for a global grid on
        the unit sphere and for any :class:`RegularGrid` (axes on [-1, 1]), about 0.13
        for the UK at 0.25 degrees."""
        c = self.coords().reshape(-1, self.coord_dim)
        return float((c.max(0) - c.min(0)).max())


def _axis(values: Sequence[float], name: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has non-finite values")
    return a


class SphericalGrid(Grid):
    """A latitude/longitude grid on the unit sphere.

    Latitudes in degrees, ascending or descending, uniform or not (Gaussian grids,
    regional subsets); longitudes in degrees in any convention (0..360, -180..180, or
    beyond 360): the map to (cos lat cos lon, cos lat sin lon, sin lat) is periodic, so
    poles and the dateline are continuous.
    """

    coord_dim = 3

    def __init__(self, lat: Sequence[float], lon: Sequence[float]):
        self.lat = _axis(lat, "lat")
        self.lon = _axis(lon, "lon")
        if np.any(np.abs(self.lat) > 90.0):
            raise ValueError(
                f"latitudes must lie in [-90, 90] degrees, got {self.lat.min()}..{self.lat.max()}"
            )
        self.shape = (self.lat.size, self.lon.size)

    def coords(self) -> np.ndarray:
        return lat_lon_to_xyz(self.lat[:, None], self.lon[None, :]).astype(np.float32)

    def area_weights(self) -> np.ndarray:
        w = np.cos(np.deg2rad(self.lat))[:, None] * np.ones(self.lon.size)[None, :]
        return w / w.mean()

    def to_dict(self) -> dict[str, Any]:
        return {"type": "spherical", "lat": self.lat.tolist(), "lon": self.lon.tolist()}

    def interpolate(self, values: np.ndarray, coords: np.ndarray) -> np.ndarray:
        """Bilinear in (lat, lon); across the dateline too when the grid goes round the
        globe (its widest longitude gap is at most 1.5 of its other spacings), else held
        at the nearer edge of a regional grid's longitudes."""
        c = np.asarray(coords, np.float64)
        lat = np.rad2deg(np.arcsin(np.clip(c[:, 2], -1.0, 1.0)))
        lon = np.rad2deg(np.arctan2(c[:, 1], c[:, 0]))
        lat_order = np.argsort(self.lat)
        lon_order = np.argsort(np.mod(self.lon, 360.0))
        ring = np.mod(self.lon, 360.0)[lon_order]
        gaps = np.diff(np.append(ring, ring[0] + 360.0))  # gaps[i]: from ring[i] to the next round the circle
        widest = int(np.argmax(gaps))
        lon_order = np.roll(lon_order, -(widest + 1))  # start just past the widest gap
        lons = np.unwrap(np.mod(self.lon[lon_order], 360.0), period=360.0)
        grid = np.asarray(values, np.float64)[lat_order][:, lon_order]
        rel = np.mod(lon - lons[0], 360.0)
        span = lons[-1] - lons[0]
        if lons.size > 1 and gaps[widest] <= 1.5 * np.delete(gaps, widest).max(initial=0.0):
            lons = np.append(lons, lons[0] + 360.0)  # the first column again, one turn on
            grid = np.concatenate([grid, grid[:, :1]], axis=1)
        else:
            rel = np.where(rel > span, np.where(rel - span < 360.0 - rel, span, 0.0), rel)
        lon = lons[0] + rel
        return _multilinear([self.lat[lat_order], lons], grid, [lat, lon])


def lat_lon_to_xyz(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Broadcast lat/lon in degrees to unit vectors, last axis (x, y, z)."""
    lat = np.deg2rad(np.asarray(lat_deg, dtype=np.float64))
    lon = np.deg2rad(np.asarray(lon_deg, dtype=np.float64))
    lat, lon = np.broadcast_arrays(lat, lon)
    return np.stack(
        [np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1
    )


class RegularGrid(Grid):
    """Any N-d rectilinear grid, each axis mapped linearly from its range onto [-1, 1].

    Axes are given as coordinate values (non-uniform spacing is kept) or as lengths
    (index coordinates). An axis of length 1 maps to 0.
    """

    def __init__(self, axes: Sequence[Sequence[float] | int]):
        if len(axes) == 0:
            raise ValueError("RegularGrid needs at least one axis")
        self.axes = [
            np.arange(a, dtype=np.float64) if isinstance(a, (int, np.integer)) else _axis(a, f"axis {i}")
            for i, a in enumerate(axes)
        ]
        self.shape = tuple(a.size for a in self.axes)
        self.coord_dim = len(self.axes)

    @staticmethod
    def _unit(a: np.ndarray) -> np.ndarray:
        lo, hi = a.min(), a.max()
        return np.zeros_like(a) if hi == lo else 2.0 * (a - lo) / (hi - lo) - 1.0

    def coords(self) -> np.ndarray:
        mesh = np.meshgrid(*[self._unit(a) for a in self.axes], indexing="ij")
        return np.stack(mesh, axis=-1).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "regular", "axes": [a.tolist() for a in self.axes]}

    def interpolate(self, values: np.ndarray, coords: np.ndarray) -> np.ndarray:
        c = np.asarray(coords, np.float64)
        units = [self._unit(a) for a in self.axes]
        orders = [np.argsort(u) for u in units]
        grid = np.asarray(values, np.float64)[np.ix_(*orders)]
        return _multilinear([u[o] for u, o in zip(units, orders)], grid, [c[:, i] for i in range(len(units))])


def _multilinear(axes: list[np.ndarray], values: np.ndarray, points: list[np.ndarray]) -> np.ndarray:
    """Multilinear interpolation on ascending ``axes``, each point clipped to their range
    (an axis of one point is held constant)."""
    from scipy.interpolate import RegularGridInterpolator

    keep = [i for i, a in enumerate(axes) if a.size > 1]
    values = values.reshape([a.size for a in axes if a.size > 1]) if len(keep) < len(axes) else values
    if not keep:
        return np.full(points[0].shape, float(values.reshape(-1)[0]))
    clipped = [np.clip(points[i], axes[i][0], axes[i][-1]) for i in keep]
    return RegularGridInterpolator([axes[i] for i in keep], values, method="linear")(np.stack(clipped, axis=-1))


def grid_from_dict(d: dict[str, Any]) -> Grid:
    kind = d.get("type")
    if kind == "spherical":
        return SphericalGrid(d["lat"], d["lon"])
    if kind == "regular":
        return RegularGrid(d["axes"])
    raise ValueError(f"unknown grid type {kind!r} (expected 'spherical' or 'regular')")


@dataclass(frozen=True)
class Patcher:
    """Cuts the trailing grid axes of an array into fixed-size patches and back.

    The grid is padded at its far edges (edge values repeated) up to a whole number of
    patches; ``merge`` drops the padding, so ``merge(split(x)) == x`` exactly.
    """

    grid_shape: tuple[int, ...]
    patch_shape: tuple[int, ...]

    def __post_init__(self):
        # Accept lists (DataConfig.patch_shape, JSON): the shape checks compare tuples.
        object.__setattr__(self, "grid_shape", tuple(int(g) for g in self.grid_shape))
        object.__setattr__(self, "patch_shape", tuple(int(p) for p in self.patch_shape))
        if len(self.grid_shape) != len(self.patch_shape):
            raise ValueError(
                f"patch_shape {self.patch_shape} must have one entry per grid axis {self.grid_shape}"
            )
        if any(p < 1 for p in self.patch_shape):
            raise ValueError(f"patch sizes must be positive, got {self.patch_shape}")

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(math.ceil(g / p) for g, p in zip(self.grid_shape, self.patch_shape))

    @property
    def num_patches(self) -> int:
        return int(np.prod(self.counts))

    def split(self, x: np.ndarray, trailing: int = 0) -> np.ndarray:
        """``(..., *grid, *rest)`` -> ``(..., num_patches, *patch, *rest)``.

        ``trailing`` axes after the grid (e.g. a coordinate axis) are carried along.
        """
        d = len(self.grid_shape)
        lead = x.ndim - d - trailing
        if lead < 0 or tuple(x.shape[lead : lead + d]) != self.grid_shape:
            raise ValueError(f"array of shape {x.shape} does not end in grid {self.grid_shape}")
        pad = [(0, 0)] * lead
        pad += [(0, c * p - g) for c, p, g in zip(self.counts, self.patch_shape, self.grid_shape)]
        pad += [(0, 0)] * trailing
        x = np.pad(x, pad, mode="edge")
        # (..., c0, p0, c1, p1, ..., rest) -> (..., c0, c1, ..., p0, p1, ..., rest)
        shape = x.shape[:lead]
        for c, p in zip(self.counts, self.patch_shape):
            shape += (c, p)
        shape += x.shape[lead + d :]
        x = x.reshape(shape)
        order = list(range(lead))
        order += [lead + 2 * i for i in range(d)] + [lead + 2 * i + 1 for i in range(d)]
        order += list(range(lead + 2 * d, x.ndim))
        x = x.transpose(order)
        return x.reshape(x.shape[:lead] + (self.num_patches,) + self.patch_shape + x.shape[lead + 2 * d :])

    def merge(self, patches: np.ndarray, trailing: int = 0) -> np.ndarray:
        """Inverse of :meth:`split`."""
        d = len(self.grid_shape)
        lead = patches.ndim - d - 1 - trailing
        if lead < 0 or patches.shape[lead] != self.num_patches or tuple(
            patches.shape[lead + 1 : lead + 1 + d]
        ) != self.patch_shape:
            raise ValueError(
                f"patches of shape {patches.shape} do not match {self.num_patches} patches of {self.patch_shape}"
            )
        x = patches.reshape(patches.shape[:lead] + self.counts + self.patch_shape + patches.shape[lead + 1 + d :])
        order = list(range(lead))
        for i in range(d):
            order += [lead + i, lead + d + i]
        order += list(range(lead + 2 * d, x.ndim))
        x = x.transpose(order)
        padded = tuple(c * p for c, p in zip(self.counts, self.patch_shape))
        x = x.reshape(x.shape[:lead] + padded + x.shape[lead + 2 * d :])
        crop = (slice(None),) * lead + tuple(slice(0, g) for g in self.grid_shape)
        return x[crop]
