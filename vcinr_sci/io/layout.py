"""How a coded variable is laid out in a store, shared by the accessor and ``vcinr
compress``: its grid dims and chunks, declared fill values masked, the check against
the model's normalisation range, its Zarr encoding, and the ``vcinr_*`` attributes it
carries."""

from __future__ import annotations

import math
import warnings
from typing import Any, Hashable, Sequence

import numpy as np
import xarray as xr

from vcinr_sci import metrics
from vcinr_sci.codec.core import check_dtype
from vcinr_sci.codec.numcodecs import VCINRCodec
from vcinr_sci.codec.zarr3 import VCINRZarrCodec  # needs zarr 3, as does xarray's Zarr backend
from vcinr_sci.coding.bound import ErrorBound
from vcinr_sci.data.grids import RegularGrid, SphericalGrid
from vcinr_sci.data.normalise import Normaliser
from vcinr_sci.errors import CodecError, UsageError
from vcinr_sci.model.loaded import LoadedModel

NOTE = (
    "Lossy compression by a neural codec (VC-INR: meta-learned implicit neural representation "
    "with entropy-coded latents). Values are approximations except NaN/fill points, which are "
    "exact. vcinr_* error figures were measured against the input when written. This is not a "
    "CF-1.12 section 8.4 quantization algorithm."
)


# Attributes written on each coded variable.
ATTRS = (
    "vcinr_codec", "vcinr_model_hash", "vcinr_quality", "vcinr_inner_steps", "vcinr_grid_dims",
    "vcinr_psnr_db", "vcinr_psnr_data_range", "vcinr_rmse", "vcinr_lat_weighted_rmse",
    "vcinr_max_abs_error", "vcinr_bits_per_value", "vcinr_compression_ratio", "vcinr_error_bound_mode", "vcinr_note",
)


# Written besides when a bound was asked for: the bound(s) as given ("rel" is a fraction of
# each chunk's value range). vcinr_error_bound_mode is "none" (no guarantee), "abs", "rel"
# or "abs_and_rel" (both hold).
BOUND_ATTRS = ("vcinr_error_bound_abs", "vcinr_error_bound_rel")


_LAT_NAMES = {"lat", "latitude", "nav_lat", "rlat"}


# Values more than this many normalisation ranges beyond the model's [lo, hi] are taken
# for undeclared fill values (or data unlike the training data) and warned about.
FAR_OUTSIDE_RANGES = 1.0


_FILL_KEYS = ("_FillValue", "missing_value")


_TARGET_CHUNK_BYTES = 16 * 2**20


_MAX_FIELDS_PER_CHUNK = 64


def _grid_dims(da: xr.DataArray, model: LoadedModel, grid_dims: Sequence[str] | None) -> list[str]:
    dims = list(grid_dims or model.artifact.config.data.grid_dims)
    if not dims:
        raise CodecError("the model names no grid dims: pass grid_dims=[...]")
    missing = [d for d in dims if d not in da.dims]
    if missing:
        raise CodecError(f"{da.name!r} lacks the model's grid dims {missing} (dims {list(da.dims)}); pass grid_dims=")
    return dims


def check_variable_grid(da: xr.DataArray, dims: list[str], model: LoadedModel) -> None:
    """The variable's grid must be the model's: sizes always, coordinates where present."""
    grid = model.grid
    sizes = tuple(da.sizes[d] for d in dims)
    if sizes != tuple(grid.shape):
        raise CodecError(
            f"{da.name!r} has grid {dict(zip(dims, sizes))}, the model's grid is {tuple(grid.shape)}: "
            "a vcinr chunk must cover the model's grid"
        )
    if isinstance(grid, SphericalGrid):
        axes = [(grid.lat, None), (grid.lon, 360.0)]
    elif isinstance(grid, RegularGrid):
        axes = [(a, None) for a in grid.axes]
    else:
        return
    for d, (axis, period) in zip(dims, axes):
        if d not in da.coords:
            continue
        values = np.asarray(da[d].values, np.float64)
        diff = values - axis
        if period:
            diff = (diff + period / 2) % period - period / 2
        if not np.allclose(diff, 0.0, atol=1e-4):
            raise CodecError(f"{da.name!r}'s {d} coordinates differ from the model's grid")


def item_chunks(sizes: dict[str, int], max_fields: int, fixed: dict[str, int] | None = None) -> dict[str, int]:
    """Chunk sizes along the item dims ``sizes`` (in array order) for at most
    ``max_fields`` fields a chunk: the dims in ``fixed`` keep their size; the others
    share the rest, innermost first (the last item dims whole, then as many positions of
    the outer ones as fit), so a chunk is one contiguous block of fields and its header
    is paid by as many fields as allowed."""
    fixed = {d: int(n) for d, n in (fixed or {}).items() if d in sizes}
    budget = max(1, int(max_fields) // max(1, math.prod(fixed.values())))
    chunks = dict(fixed)
    for d in reversed([d for d in sizes if d not in fixed]):
        chunks[d] = max(1, min(int(sizes[d]), budget))
        budget //= chunks[d]
    return {d: chunks[d] for d in sizes}


def _default_chunks(da: xr.DataArray, item_dims: list[str], grid_size: int, chunks: dict[str, int]) -> dict[str, int]:
    """``chunks`` along the item dims it names; elsewhere the dask chunks, else up to
    64 fields or 16 MB a chunk across the other item dims (:func:`item_chunks`)."""
    if da.chunks is not None:
        return {d: int(c[0]) for d, c in zip(da.dims, da.chunks) if d in item_dims} | chunks
    per_field = max(1, grid_size * da.dtype.itemsize)
    n = max(1, min(_MAX_FIELDS_PER_CHUNK, _TARGET_CHUNK_BYTES // per_field))
    return item_chunks({d: da.sizes[d] for d in item_dims}, n, chunks) | chunks


def declared_fill_values(da: xr.DataArray) -> np.ndarray:
    """The missing-value markers ``da`` declares, in its dtype: CF ``_FillValue`` and
    ``missing_value`` in its attributes, or in its encoding unless that packs the data
    (then they are in packed units, and decoding has already made them NaN)."""
    sources = [da.attrs] if {"scale_factor", "add_offset"} & set(da.encoding) else [da.attrs, da.encoding]
    values = [v for src in sources for k in _FILL_KEYS if src.get(k) is not None for v in np.atleast_1d(src[k])]
    fills = np.asarray(values, dtype=da.dtype)
    return np.unique(fills[~np.isnan(fills)])


def mask_declared_fill(da: xr.DataArray) -> xr.DataArray:
    """``da`` with its declared missing-value markers (:func:`declared_fill_values`) as
    NaN, vcinr's missing value, and those attributes dropped (the store declares NaN)."""
    if da.dtype.kind != "f":
        return da  # refused by check_dtype, whatever it declares
    fills = declared_fill_values(da)
    out = (da.where(~da.isin(fills)) if fills.size else da).copy(deep=False)
    out.attrs = {k: v for k, v in da.attrs.items() if k not in _FILL_KEYS}
    return out


def far_outside_range(da: xr.DataArray, normaliser: Normaliser) -> dict[str, Any]:
    """Lazy count of the values more than :data:`FAR_OUTSIDE_RANGES` normalisation
    ranges outside ``normaliser``'s [lo, hi], of the valid values, and the least and
    greatest of those far values."""
    margin = FAR_OUTSIDE_RANGES * (normaliser.hi - normaliser.lo)
    far = (da < normaliser.lo - margin) | (da > normaliser.hi + margin)
    return {"far": far.sum(), "valid": da.notnull().sum(), "min": da.where(far).min(), "max": da.where(far).max()}


def warn_far_outside(name: Hashable, stats: dict[str, Any], normaliser: Normaliser) -> None:
    """Warn if :func:`far_outside_range` found values: left as data, a fill value costs
    accuracy at the real points of its chunk too."""
    far, valid = int(stats["far"]), int(stats["valid"])
    if not far:
        return
    lo, hi = float(stats["min"]), float(stats["max"])
    extreme = lo if normaliser.lo - lo > hi - normaliser.hi else hi
    warnings.warn(
        f"{name!r}: {far:,} of {valid:,} values ({far / max(1, valid):.2%}) lie far outside the model's "
        f"normalisation range [{normaliser.lo:.6g}, {normaliser.hi:.6g}] (most extreme {extreme:.6g}); if "
        "they mark missing data, declare them (attrs['_FillValue'] or attrs['missing_value']) or set them to "
        "NaN, else they are coded as data and the points around them lose accuracy",
        UserWarning,
        stacklevel=3,
    )


def prepare_variable(
    da: xr.DataArray, model: LoadedModel, grid_dims: Sequence[str] | None = None, chunks: dict[str, int] | None = None
) -> tuple[xr.DataArray, list[str]]:
    """Check ``da`` against the chunking rule and the model (dtype, grid sizes and
    coordinates) and return it transposed to (item dims..., grid dims...), its declared
    fill values as NaN (:func:`mask_declared_fill`), with its encoding reset and the
    Zarr chunk shape in ``encoding["vcinr_chunks"]`` (dask arrays are rechunked to it);
    and the grid dims. An array without values is a :class:`UsageError`: Zarr has no
    chunk shape for a zero-length dim."""
    if da.size == 0:
        raise UsageError(f"{da.name!r} has no values (sizes {dict(da.sizes)}): there is nothing to code")
    dims = _grid_dims(da, model, grid_dims)
    check_dtype(da.dtype)
    check_variable_grid(da, dims, model)
    item_dims = [d for d in da.dims if d not in dims]
    out = mask_declared_fill(da).transpose(*item_dims, *dims)
    sizes = _default_chunks(out, item_dims, model.grid.size, dict(chunks or {}))
    unknown = set(sizes) - set(item_dims)
    if unknown:
        raise CodecError(
            f"chunks {sorted(unknown)} for {da.name!r}: only item dims {item_dims} are chunked "
            "(grid dims are always whole)"
        )
    zchunks = tuple(int(sizes[d]) for d in item_dims) + tuple(model.grid.shape)
    if out.chunks is not None:
        out = out.chunk(dict(zip(out.dims, zchunks)))
    out = out.copy()
    out.encoding = {k: v for k, v in da.encoding.items() if k == "coordinates"}
    out.encoding["vcinr_chunks"] = zchunks
    return out, dims


def coded_encoding(codec: VCINRCodec, chunks: Sequence[int], zarr_format: int) -> dict[str, Any]:
    """xarray ``to_zarr`` encoding of a variable coded by ``codec``: its serializer (format
    3) or compressor (format 2), no other codec (the output is entropy coded already),
    NaN as the missing value."""
    enc: dict[str, Any] = {"chunks": tuple(chunks), "filters": None, "_FillValue": np.nan}
    if zarr_format == 3:
        return enc | {"serializer": VCINRZarrCodec(codec=codec), "compressors": None}
    if zarr_format == 2:
        return enc | {"compressors": [codec]}
    raise ValueError(f"zarr_format must be 2 or 3, got {zarr_format!r}")


def finite_check(da: xr.DataArray) -> None:
    if bool(np.isinf(da).any()):
        raise CodecError(f"{da.name!r} holds inf values: vcinr codes finite values and NaN (missing) only")


def lat_dim(da: xr.DataArray) -> str | None:
    for d in da.dims:
        if d in da.coords:
            attrs = da[d].attrs
            if str(d).lower() in _LAT_NAMES or attrs.get("standard_name") == "latitude" or attrs.get("units") in (
                "degrees_north", "degree_north", "degrees_N",
            ):
                return str(d)
    return None


def _json_number(x: float | None) -> float | str | None:
    if x is None or math.isfinite(x):
        return x
    return str(x)


def coded_variable_attrs(
    model_hash: str,
    quality: str,
    inner_steps: int,
    grid_dims: Sequence[Hashable],
    num_values: int,
    itemsize: int,
    stored_bytes: int,
    report: dict[str, Any] | None,
    bound: ErrorBound | None = None,
) -> dict[str, Any]:
    """The ``vcinr_*`` attributes of a coded variable (see :data:`ATTRS` and
    :data:`BOUND_ATTRS`)."""
    attrs: dict[str, Any] = {
        "vcinr_codec": "vcinr",
        "vcinr_model_hash": model_hash,
        "vcinr_quality": quality,
        "vcinr_inner_steps": int(inner_steps),
        "vcinr_grid_dims": [str(d) for d in grid_dims],
        "vcinr_bits_per_value": metrics.bits_per_value(stored_bytes, num_values),
        "vcinr_compression_ratio": _json_number(num_values * itemsize / stored_bytes if stored_bytes else math.inf),
        "vcinr_error_bound_mode": "none" if bound is None else bound.mode,
        "vcinr_note": NOTE,
    }
    if bound is not None:
        for key, value in zip(BOUND_ATTRS, (bound.max_abs_error, bound.max_rel_error)):
            if value is not None:
                attrs[key] = value
    if report is not None:
        attrs |= {
            "vcinr_psnr_db": _json_number(report["psnr_db"]),
            "vcinr_psnr_data_range": report["psnr_data_range"],
            "vcinr_rmse": _json_number(report["rmse"]),
            "vcinr_max_abs_error": _json_number(report["max_abs_error"]),
        }
        if report["lat_weighted_rmse"] is not None:
            attrs["vcinr_lat_weighted_rmse"] = report["lat_weighted_rmse"]
    return attrs
