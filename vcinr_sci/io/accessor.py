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
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Hashable, Iterator, Sequence

import dask
import xarray as xr
import zarr

from vcinr_sci.atomic import atomic_path
from vcinr_sci.codec.numcodecs import VCINRCodec
from vcinr_sci.errors import CodecError, UsageError
from vcinr_sci.io.integrity import record_digests
from vcinr_sci.io.layout import (
    coded_encoding,
    coded_variable_attrs,
    far_outside_range,
    finite_check,
    lat_dim,
    prepare_variable,
    warn_far_outside,
)
from vcinr_sci.io.store import chunk_bytes_stored, consolidate
from vcinr_sci.metrics import error_figures, error_sums
from vcinr_sci.model.artifact import HASH_PREFIX_LEN
from vcinr_sci.model.embedded import MODELS_GROUP, embed_model
from vcinr_sci.model.loaded import LoadedModel
from vcinr_sci.model.registry import cache_model, default_inner_steps, resolve_model, use_embedded_models
from vcinr_sci.trust import is_local_path


def open_zarr(store: Any, **kwargs: Any) -> xr.Dataset:
    """``xarray.open_zarr(store)``, after making the store's embedded models (if any)
    findable (a local store holding a symlink out of itself is refused first, see
    :func:`~vcinr_sci.model.registry.use_embedded_models`); each variable's
    ``encoding["source"]`` names the store."""
    use_embedded_models(store)
    ds = xr.open_zarr(store, **kwargs)
    ref = str(Path(store).resolve()) if is_local_path(store) else store
    for var in ds.variables.values():
        var.encoding.setdefault("source", ref)
    return ds


# ---------------------------------------------------------------------------- writing


































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
        correction: str = "smallest",
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
        the bound and its mode are recorded as attributes. ``correction`` ("smallest",
        "rans" or "sperr") says how the bound's correction is coded.

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
        bounds = {"max_abs_error": max_abs_error, "max_rel_error": max_rel_error, "correction": correction}
        bound = VCINRCodec(art.hash, quality, art.grid.to_dict(), steps, None, "NaN", **bounds).bound  # bad: fails now
        ds = self._obj
        names = self._select(variables, loaded, grid_dims)
        # The store records where its model is relative to itself, or nothing: never a path
        # of the writer's. The writer caches the model, so readers on this machine find it.
        model_path = f"{MODELS_GROUP}/{art.hash[:HASH_PREFIX_LEN]}" if store_model else None
        cache_model(art)

        out = ds.copy()
        encoding: dict[Hashable, dict[str, Any]] = {}
        prepared: dict[Hashable, tuple[xr.DataArray, list[str]]] = {}
        for name in names:
            da, dims = prepare_variable(ds[name], loaded, grid_dims, chunks)
            if not local or da.chunks is None:  # a local store is renamed into place only when complete
                finite_check(da)
            codec = VCINRCodec(art.hash, quality, art.grid.to_dict(), steps, model_path, "NaN", **bounds)
            out[name] = da
            encoding[name] = coded_encoding(codec, da.encoding.pop("vcinr_chunks"), zarr_format)
            prepared[name] = (da, dims)
        (ranges,) = dask.compute({n: far_outside_range(da, art.normaliser) for n, (da, _) in prepared.items()})
        for name, stats in ranges.items():
            warn_far_outside(name, stats, art.normaliser)

        # a local store appears whole or not at all; a remote one is written in place
        with atomic_path(final) if local else contextlib.nullcontext(store) as target:
            to_zarr_kwargs.setdefault("consolidated", False)  # consolidated once, at the end
            _write(out, target, encoding, zarr_format, to_zarr_kwargs)
            group = zarr.open_group(target, mode="r+")
            if store_model:
                embed_model(group, art)
            self._record(target, group, prepared, loaded, quality, steps, measure, bound)
            record_digests(target)  # SHA-256 of every chunk, for `vcinr verify`
            consolidate(target, zarr_format=zarr_format)
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
        if da.size == 0:
            raise UsageError(f"{da.name!r} has no values (sizes {dict(da.sizes)}): there are no errors to report")
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
        from vcinr_sci.io.sampling import sample

        return sample(self._obj, store, points)
