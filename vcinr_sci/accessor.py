"""xarray accessors: ``ds.vcinr`` and ``da.vcinr`` (registered on import of this module).

- ``ds.vcinr.to_zarr(store, model=..., quality=..., variables=...)`` writes with the
  ``vcinr`` codec and records, as attributes of each coded variable, what was done, the
  error bound guaranteed (``max_abs_error=`` / ``max_rel_error=``, if asked for) and the
  errors measured against the input (see :data:`ATTRS` and :data:`BOUND_ATTRS`).
- ``da.vcinr.sample(lat=..., lon=...)`` evaluates the INR from the stored latents at any
  coordinates, without decoding whole chunks onto the grid (continuous resolution).
- ``da.vcinr.error_report(reference)``: PSNR, RMSE, latitude-weighted RMSE, max error.
- :func:`open_zarr`: ``xarray.open_zarr`` that also makes models stored inside the store
  visible to the codec and remembers the store, for ``sample``.

CF-1.12 section 8.4 describes lossy compression only by quantisation algorithms (e.g.
``quantization_nsd``); a neural codec is none of these, so the attributes are namespaced
``vcinr_*`` and no CF quantisation attribute is written.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Hashable, Iterator, Sequence

import dask
import numpy as np
import xarray as xr
import zarr

from vcinr_sci.codec.core import check_dtype
from vcinr_sci.codec.numcodecs import VCINRCodec
from vcinr_sci.codec.zarr3 import VCINRZarrCodec  # needs zarr 3, as does xarray's Zarr backend
from vcinr_sci.coding.bound import ErrorBound
from vcinr_sci.data.grids import RegularGrid, SphericalGrid
from vcinr_sci.data.normalise import Normaliser
from vcinr_sci.errors import CodecError
from vcinr_sci.integrity import record_digests
from vcinr_sci.model.artifact import HASH_PREFIX_LEN
from vcinr_sci.model.embedded import MODELS_GROUP, embed_model
from vcinr_sci.model.loaded import LoadedModel
from vcinr_sci.model.registry import default_inner_steps, resolve_model, use_embedded_models
from vcinr_sci.store import chunk_bytes_stored, consolidate, is_local_path

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


def open_zarr(store: Any, **kwargs: Any) -> xr.Dataset:
    """``xarray.open_zarr(store)``, after making the store's embedded models (if any)
    findable; each variable's ``encoding["source"]`` names the store."""
    use_embedded_models(store)
    ds = xr.open_zarr(store, **kwargs)
    ref = str(Path(store).resolve()) if is_local_path(store) else store
    for var in ds.variables.values():
        var.encoding.setdefault("source", ref)
    return ds


# ---------------------------------------------------------------------------- writing


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
    and the grid dims."""
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


def _finite_check(da: xr.DataArray) -> None:
    if bool(np.isinf(da).any()):
        raise CodecError(f"{da.name!r} holds inf values: vcinr codes finite values and NaN (missing) only")


def error_sums(decoded: xr.DataArray, reference: xr.DataArray, lat_dim: str | None) -> dict[str, Any]:
    """Lazy (dask-friendly) error sums; :func:`_finish` turns them into figures."""
    valid = reference.notnull()
    err = (decoded.astype(np.float64) - reference.astype(np.float64)).where(valid)
    out = {"sq": (err**2).sum(), "n": valid.sum(), "max": abs(err).max(), "lo": reference.min(), "hi": reference.max()}
    if lat_dim is not None:
        w = np.cos(np.deg2rad(reference[lat_dim].astype(np.float64)))
        out["wsq"] = (err**2 * w).sum()
        out["wn"] = (valid * w).sum()
    return out


def error_figures(stats: dict[str, Any], data_range: float | None) -> dict[str, float | None]:
    s = {k: float(v) for k, v in stats.items()}
    n = s["n"]
    mse = s["sq"] / n if n else math.nan
    data_range = data_range if data_range else (s["hi"] - s["lo"] if n else math.nan)
    report = {
        "psnr_db": (math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)) if n else math.nan,
        "psnr_data_range": data_range,
        "rmse": math.sqrt(mse) if n else math.nan,
        "lat_weighted_rmse": math.sqrt(s["wsq"] / s["wn"]) if "wsq" in s and s["wn"] else None,
        "max_abs_error": s["max"] if n else math.nan,
        "n_values": int(n),
    }
    return report


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
        "vcinr_bits_per_value": 8.0 * stored_bytes / max(1, num_values),
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


@contextlib.contextmanager
def joined_dask_pool() -> Iterator[None]:
    """dask's threads in a pool of our own that is shut down, waiting, before the block
    is left: when one chunk fails (inf found while encoding, a corrupt chunk while
    decoding), dask raises at once while chunks already handed to other threads are
    still being written, and those would recreate a temporary output after it was removed."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, dask.config.set(pool=pool):
        yield


def _write(ds: xr.Dataset, target: Any, encoding: dict, zarr_format: int, kwargs: dict[str, Any]) -> None:
    """``ds.to_zarr`` in a :func:`joined_dask_pool`."""
    with joined_dask_pool():
        ds.to_zarr(target, mode="w", encoding=encoding, zarr_format=zarr_format, **kwargs)


@xr.register_dataset_accessor("vcinr")
class VCINRDatasetAccessor:
    def __init__(self, ds: xr.Dataset):
        self._obj = ds

    def to_zarr(
        self,
        store: Any,
        model: Any,
        quality: str,
        variables: Sequence[Hashable] | None = None,
        *,
        inner_steps: int | None = None,
        chunks: dict[str, int] | None = None,
        grid_dims: Sequence[str] | None = None,
        zarr_format: int = 3,
        store_model: bool = False,
        mode: str = "w-",
        measure: bool = True,
        max_abs_error: float | None = None,
        max_rel_error: float | None = None,
        **to_zarr_kwargs: Any,
    ) -> Any:
        """Write the dataset to ``store``, coding ``variables`` with the vcinr codec.

        ``model``: a :class:`~vcinr_sci.model.artifact.ModelArtifact`, an artifact folder, or a
        hash; ``quality``: one of its levels. ``variables`` defaults to every float data
        variable that has the model's grid dims (others are written as xarray would).
        Each coded variable is transposed to put the grid dims last and chunked whole
        along them; ``chunks`` sets its chunk sizes along the other (item) dims (default:
        the dask chunks, else up to 64 fields or 16 MB per chunk, the last item dims
        filled first, see :func:`item_chunks`). Its CF packing encoding is dropped: it is stored in its in-memory float
        dtype with NaN as missing value; values it declares missing (``_FillValue`` or
        ``missing_value`` in its attributes or encoding) become NaN, and values far
        outside the model's normalisation range (an undeclared fill value?) are warned
        about (:data:`FAR_OUTSIDE_RANGES`). ``store_model`` stores the model inside the
        group. ``mode``: "w-" (refuse an existing store) or "w" (replace it).
        ``measure`` decodes what was written and records the errors as attributes.
        ``max_abs_error`` (data units) and/or ``max_rel_error`` (fraction of each chunk's
        value range) ask for a guaranteed point-wise bound (see :mod:`vcinr_sci.codec.core`);
        the bound and its mode are recorded as attributes.

        A local store is written under a temporary name and renamed when complete, so a
        failure leaves nothing behind; for other stores the input is checked first
        (dtype, grid, inf) and chunks may remain if a later step fails.
        """
        if mode not in ("w", "w-"):
            raise ValueError(f"mode must be 'w' or 'w-', got {mode!r}")
        if zarr_format not in (2, 3):
            raise ValueError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
        local = is_local_path(store)
        final = Path(store).resolve() if local else None
        if local and mode == "w-" and final.exists():
            raise FileExistsError(f"{final} exists: pass mode='w' to replace it")
        loaded = resolve_model(model)
        art = loaded.artifact
        loaded.coder(quality)  # unknown level -> CodecError before anything is written
        steps = default_inner_steps(art) if inner_steps is None else int(inner_steps)
        bounds = {"max_abs_error": max_abs_error, "max_rel_error": max_rel_error}
        bound = VCINRCodec(art.hash, quality, art.grid.to_dict(), steps, None, "NaN", **bounds).bound  # bad: fails now
        ds = self._obj
        names = self._select(variables, loaded, grid_dims)
        if store_model and local:  # where the model will lie once the store is in place
            model_path = str(final / MODELS_GROUP / art.hash[:HASH_PREFIX_LEN])
        else:
            model_path = str(Path(art.path).resolve()) if art.path else None

        out = ds.copy()
        encoding: dict[Hashable, dict[str, Any]] = {}
        prepared: dict[Hashable, tuple[xr.DataArray, list[str]]] = {}
        for name in names:
            da, dims = prepare_variable(ds[name], loaded, grid_dims, chunks)
            if not local or da.chunks is None:  # a local store is renamed into place only when complete
                _finite_check(da)
            codec = VCINRCodec(art.hash, quality, art.grid.to_dict(), steps, model_path, "NaN", **bounds)
            out[name] = da
            encoding[name] = coded_encoding(codec, da.encoding.pop("vcinr_chunks"), zarr_format)
            prepared[name] = (da, dims)
        (ranges,) = dask.compute({n: far_outside_range(da, art.normaliser) for n, (da, _) in prepared.items()})
        for name, stats in ranges.items():
            warn_far_outside(name, stats, art.normaliser)

        target = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}" if local else store
        try:
            to_zarr_kwargs.setdefault("consolidated", False)  # consolidated once, at the end
            _write(out, target, encoding, zarr_format, to_zarr_kwargs)
            group = zarr.open_group(target, mode="r+")
            if store_model:
                embed_model(group, art)
            self._record(target, group, prepared, loaded, quality, steps, measure, bound)
            record_digests(target)  # SHA-256 of every chunk, for `vcinr verify`
            consolidate(target, zarr_format=zarr_format)
            if local:
                if final.exists():
                    shutil.rmtree(final)
                os.replace(target, final)
        except BaseException:
            if local:
                shutil.rmtree(target, ignore_errors=True)
            raise
        return final if local else store

    def _select(self, variables, loaded: LoadedModel, grid_dims) -> list[Hashable]:
        ds = self._obj
        if variables is not None:
            names = [variables] if isinstance(variables, (str, bytes)) else list(variables)
            missing = [n for n in names if n not in ds.data_vars]
            if missing:
                raise KeyError(f"variables {missing} not in the dataset; it has {list(ds.data_vars)}")
            return names
        dims = list(grid_dims or loaded.artifact.config.data.grid_dims)
        gridded = {n: v.dtype for n, v in ds.data_vars.items() if dims and all(d in v.dims for d in dims)}
        names = [n for n, dtype in gridded.items() if dtype.kind == "f"]
        if not names:
            if gridded:
                found = ", ".join(f"{n!r} ({dtype})" for n, dtype in gridded.items())
                raise CodecError(
                    f"no float data variable has the grid dims {dims}: {found} do, but vcinr codes float16, "
                    "float32 or float64; decode or cast them first (e.g. xr.decode_cf, or .astype('float32'))"
                )
            raise CodecError(f"no data variable has the grid dims {dims}; name variables= and grid_dims=")
        return names

    def _record(self, target, group, prepared, loaded: LoadedModel, quality, steps, measure, bound) -> None:
        art = loaded.artifact
        data_range = float(art.normaliser.hi - art.normaliser.lo)
        reports = {}
        if measure:
            decoded = xr.open_zarr(target, consolidated=False)
            stats = {n: error_sums(decoded[n], da, lat_dim(da)) for n, (da, _) in prepared.items()}
            (stats,) = dask.compute(stats)
            reports = {n: error_figures(s, data_range) for n, s in stats.items()}
        for name, (da, dims) in prepared.items():
            arr = group[str(name)]
            stored = chunk_bytes_stored(arr)
            attrs = coded_variable_attrs(
                art.hash, quality, steps, dims, da.size, da.dtype.itemsize, stored, reports.get(name), bound
            )
            arr.attrs.update(attrs)

    def error_report(self, reference: xr.Dataset, variables: Sequence[Hashable] | None = None) -> dict:
        """:meth:`VCINRDataArrayAccessor.error_report` of each variable (default: those
        with vcinr attributes), as ``{name: report}``."""
        ds = self._obj
        if variables is None:
            variables = [n for n, v in ds.data_vars.items() if "vcinr_codec" in v.attrs]
        names = list(variables)
        return {n: ds[n].vcinr.error_report(reference[n]) for n in names}


@xr.register_dataarray_accessor("vcinr")
class VCINRDataArrayAccessor:
    def __init__(self, da: xr.DataArray):
        self._obj = da

    @property
    def attrs(self) -> dict[str, Any]:
        """The ``vcinr_*`` attributes (what was done, the measured errors)."""
        return {k: v for k, v in self._obj.attrs.items() if k.startswith("vcinr_")}

    def to_zarr(self, store: Any, model: Any, quality: str, **kwargs: Any) -> Any:
        """Write this (named) variable alone; see :meth:`VCINRDatasetAccessor.to_zarr`."""
        if self._obj.name is None:
            raise ValueError("name the DataArray first (da.rename('...'))")
        return self._obj.to_dataset().vcinr.to_zarr(store, model, quality, [self._obj.name], **kwargs)

    def error_report(self, reference: xr.DataArray, data_range: float | None = None) -> dict[str, Any]:
        """Errors of this (decoded) array against ``reference``, over the points where
        the reference is not NaN: ``psnr_db`` (with ``data_range``: given, else the
        stored ``vcinr_psnr_data_range``, else the reference's max - min), ``rmse``,
        ``lat_weighted_rmse`` (cos-latitude weights; None without a latitude dim),
        ``max_abs_error``, ``n_values``."""
        da = self._obj
        if set(da.dims) != set(reference.dims) or any(da.sizes[d] != reference.sizes[d] for d in da.dims):
            raise ValueError(f"shapes differ: {dict(da.sizes)} vs {dict(reference.sizes)}")
        reference = reference.transpose(*da.dims)
        data_range = data_range or da.attrs.get("vcinr_psnr_data_range")
        (stats,) = dask.compute(error_sums(da, reference, lat_dim(reference)))
        return error_figures(stats, data_range)

    def sample(self, store: Any = None, **points: Any) -> xr.DataArray:
        """The INR of the stored latents at arbitrary points: one keyword per grid dim
        (e.g. ``lat=``, ``lon=``; degrees for a spherical grid, axis units otherwise),
        each a scalar, a 1-D array (a new dim of that name; several such form a grid,
        like ``interp``) or a DataArray (pointwise, broadcast by xarray's rules).
        The array must be (a selection along item dims of) a variable opened with
        :func:`open_zarr`, or ``store`` must name its store. Points whose nearest grid
        point is missing (NaN/fill) return that value; values beyond the grid's range are
        extrapolations. Latents are decoded per chunk; the grid is never evaluated."""
        from vcinr_sci.sampling import sample

        return sample(self._obj, store, points)
