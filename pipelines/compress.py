"""Compress a dataset (larger than memory is fine) into a vcinr-coded Zarr store, on Ray Data.

    python -m pipelines.compress --config configs/tiny.yaml [--model HASH_OR_PATH] [--set compress.quality=q1]
    vcinr compress --config C --variables t2m,msl [--model t2m=HASH,msl=PATH]

The input is one file, or a list or glob of netCDF/Zarr files (combined lazily by their
coordinates, as ``xarray.open_mfdataset`` does, or stacked along ``data.concat_dim``:
:func:`vcinr_sci.data.sources.open_inputs`). Each variable (``compress.variables``,
default ``[data.variable]``) is coded with a model of its own: ``--model`` (one for all,
or ``VAR=MODEL,...``), ``compress.models``, or else the newest artifact made from the
config with ``data.variable`` set to it (:mod:`pipelines.run_variables`); every
variable, its coordinates and attributes, and the input's global attributes go into
one store. Dims other than the grid dims (time, pressure level, member) index the
fields a model codes, so a variable's levels are items of its one model.

The driver opens the input lazily, checks each variable against its model (dtype, grid,
chunking rule) and the variables against each other (shared coordinates must agree),
and creates the store's metadata and coordinates (under a temporary name, then
renamed, so a store either has its full layout or does not exist). The work is one task
per Zarr chunk of each variable; Ray Data maps the tasks over a pool of
``compress.num_actors`` actors, each of which loads a model once per run of chunks of
its variables (holding one at a time), reads only its chunk
of the input, writes it through Zarr (so the ``vcinr`` codec encodes it) and, with
``compress.measure``, reads it back (decodes it) and records its error sums in a small
marker file under ``<store>.progress/``. A rerun with the same config plans only the
chunks without a marker, so after a kill it completes the store without rewriting
finished chunks (a chunk cut short by the kill has no marker and is written again).
Each written chunk prints a line with the chunks done and left and an ETA. When
every chunk is done the driver writes the ``vcinr_*`` attributes (codec, model
hash, quality, measured PSNR/RMSE/max error) to each variable, consolidates the
metadata, marks the store complete and removes the progress folder; a rerun of a
complete store does nothing.

Locally it starts an embedded Ray; under ``ray job submit`` it joins the cluster (the
input, the store and its progress folder must then be on storage every node sees).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.cli_args import config_parser, load
from pipelines.progress import Progress
from pipelines.ray_setup import run_actor_pool, use_assigned_cpus
from pipelines.run_variables import run_variables, variable_config
from vcinr_sci.atomic import atomic_path, atomic_write_bytes
from vcinr_sci.config import Config, DataConfig
from vcinr_sci.errors import ArtifactError, CodecError, ConfigError, UsageError
from vcinr_sci.metrics import psnr_from_mse
from vcinr_sci.model.artifact import HASH_PREFIX_LEN
from vcinr_sci.model.selection import select_artifact

if TYPE_CHECKING:
    from vcinr_sci.model.artifact import ModelArtifact
    from vcinr_sci.model.loaded import LoadedModel

JOB_ATTR = "vcinr_job"
COMPLETE_ATTR = "vcinr_complete"
_PARTIAL_WRITE = re.compile(r"\.[0-9a-f]{32}\.partial$")


def _input(cfg: Config) -> tuple[DataConfig, str]:
    """How the input is read (the data section, with ``compress.paths`` when set) and
    the key its paths are named by in errors."""
    if cfg.compress.paths:
        return dataclasses.replace(cfg.data, paths=list(cfg.compress.paths)), "config.compress.paths"
    return cfg.data, "config.data.paths"


def open_source(cfg: Config, variable: str):
    """One input variable, lazily, item dims first and grid dims last."""
    from vcinr_sci.data.sources import open_variable

    data, key = _input(cfg)
    return open_variable(dataclasses.replace(data, variable=variable), key)


@dataclass(frozen=True)
class VariableModel:
    """The model a variable is coded with (its artifact folder, loaded), at which level
    and with how many inner steps."""

    path: Path
    loaded: LoadedModel
    quality: str
    steps: int

    @property
    def artifact(self) -> ModelArtifact:
        return self.loaded.artifact


def _model_pairs(text: str) -> dict[str, str] | None:
    """``--model a=HASH,b=FOLDER`` as {variable: model}; None when it names one model."""
    if "=" not in text or Path(text).exists():
        return None
    pairs = {}
    for item in text.split(","):
        variable, sep, model = (part.strip() for part in item.partition("="))
        if not (sep and variable and model):
            raise UsageError(f"--model {text!r}: expected one MODEL, or VAR=MODEL,VAR=MODEL")
        pairs[variable] = model
    return pairs


def model_choices(cfg: Config, model: str | None, variables: list[str]) -> dict[str, str | None]:
    """Each variable's model as given: ``--model`` (one for every variable, or
    ``VAR=MODEL,...``) over ``compress.models``; None where neither names one (the
    artifact is then selected by the variable's config)."""
    unknown = sorted(set(cfg.compress.models) - set(variables))
    if unknown:
        raise ConfigError(f"config.compress.models names {unknown}, which this run does not code (variables {variables})")
    chosen: dict[str, str | None] = {v: cfg.compress.models.get(v) for v in variables}
    if model:
        pairs = _model_pairs(model)
        if pairs is None:
            return {v: model for v in variables}
        unknown = sorted(set(pairs) - set(variables))
        if unknown:
            raise UsageError(f"--model names {unknown}, which this run does not code (variables {variables})")
        chosen |= pairs
    return chosen


def load_models(cfg: Config, model: str | None, variables: list[str]) -> dict[str, VariableModel]:
    """The model of each variable (see :func:`model_choices`), loaded once per folder,
    with its level (``compress.quality``, else its first) checked to exist."""
    from vcinr_sci.model.registry import default_inner_steps, register_model

    c = cfg.compress
    loaded: dict[Path, LoadedModel] = {}
    out = {}
    for v, choice in model_choices(cfg, model, variables).items():
        try:
            path = Path(select_artifact(variable_config(cfg, v), choice, with_coders=True, require_coders=True,
                                        quality=c.quality)).resolve()
        except ArtifactError as e:
            raise ArtifactError(f"variable {v!r}: {e}") from e
        if path not in loaded:
            loaded[path] = register_model(path)
        art = loaded[path].artifact
        quality = c.quality or (art.quality_levels[0] if art.quality_levels else "")
        loaded[path].coder(quality)  # a clear error for a missing level, before anything is written
        out[v] = VariableModel(path, loaded[path], quality, default_inner_steps(art) if c.inner_steps is None else c.inner_steps)
    return out


def default_output(cfg: Config, quality: str) -> Path:
    return Path(cfg.compress.output or f"compressed/{cfg.name}-{quality}.zarr")


def progress_dir(store: Path) -> Path:
    return store.parent / f"{store.name}.progress"


def _marker(store: Path, variable: str, chunk: int) -> Path:
    return progress_dir(store) / variable / f"{chunk:08d}.json"


def _chunk_slices(shape, chunks, flat: int, n_item_dims: int) -> tuple[slice, ...]:
    counts = [math.ceil(s / c) for s, c in zip(shape[:n_item_dims], chunks[:n_item_dims])]
    index = np.unravel_index(flat, counts) if counts else ()
    item = tuple(slice(int(i) * c, min((int(i) + 1) * c, s)) for i, c, s in zip(index, chunks, shape))
    return item + (slice(None),) * (len(shape) - n_item_dims)


class WriteChunks:
    """Ray Data actor: encodes and writes whole chunks, each with its variable's model
    (``artifact_paths``: variable -> artifact folder), loaded when a chunk first needs
    it and kept for the chunks after. One model is held at a time (the tasks come
    variable by variable), so an actor's memory does not grow with the variables."""

    def __init__(self, config: dict, store: str, artifact_paths: dict[str, str], use_gpu: bool):
        import dask

        use_assigned_cpus()  # the codec codes one chunk at a time here, with every CPU held
        dask.config.set(scheduler="synchronous")  # one chunk at a time per actor
        if not use_gpu:
            os.environ.setdefault("VCINR_DEVICE", "cpu")
        self.cfg = Config.from_dict(config)
        self.store = Path(store)
        self.artifact_paths = artifact_paths
        self.model_path: str | None = None
        self.loaded: Any = None
        self.sources: dict[str, Any] = {}
        self.arrays: dict[str, Any] = {}

    def _model(self, variable: str):
        from vcinr_sci.model.registry import clear_model_cache, register_model

        path = self.artifact_paths[variable]
        if path != self.model_path:
            clear_model_cache()  # the last variable's model, no longer needed
            self.loaded = register_model(path)  # the codec finds it in the process cache
            self.model_path = path
        return self.loaded

    def _array(self, variable: str):
        import zarr

        if variable not in self.arrays:
            # Every chunk is written, even an all-NaN one, so that "chunk present" is exact.
            self.arrays[variable] = zarr.open_array(
                self.store, path=variable, mode="r+", config={"write_empty_chunks": True}
            )
            self.sources[variable] = open_source(self.cfg, variable)
        return self.arrays[variable], self.sources[variable]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from vcinr_sci.model.registry import model_cache_stats

        out: dict[str, list] = {"variable": [], "chunk": [], "seconds": [], "mse": [], "pid": [], "loads": [], "skipped": []}
        for variable, chunk in zip(batch["variable"], batch["chunk"]):
            t0 = time.perf_counter()
            marker = _marker(self.store, str(variable), int(chunk))
            # Ray retries a task whose node was lost, even one that finished before its
            # result came back: a chunk with a marker is done and is not written again.
            skipped = marker.is_file()
            stats = json.loads(marker.read_text()) if skipped else self._write(str(variable), int(chunk))
            mse = stats["sq"] / stats["n"] if stats.get("n") else math.nan
            loads = model_cache_stats()["loads"]
            row = (str(variable), int(chunk), time.perf_counter() - t0, mse, os.getpid(), loads, skipped)
            for k, v in zip(out, row):
                out[k].append(v)
        return {k: np.asarray(v) for k, v in out.items()}

    def _write(self, variable: str, chunk: int) -> dict[str, float]:
        from vcinr_sci.io.layout import lat_dim

        arr, source = self._array(variable)
        n_items = arr.ndim - len(self._model(variable).grid.shape)
        region = _chunk_slices(arr.shape, arr.chunks, chunk, n_items)
        ref = source[region]
        values = np.asarray(ref.values)
        arr[region] = values.astype(arr.dtype, copy=False)
        stats: dict[str, float] = {}
        if self.cfg.compress.measure:
            decoded = np.asarray(arr[region], np.float64)
            valid = np.isfinite(values)
            err = np.where(valid, decoded - values, 0.0)
            stats = {
                "sq": float(np.sum(err**2)),
                "n": float(valid.sum()),
                "max": float(np.abs(err).max()) if valid.any() else 0.0,
                "lo": float(np.nanmin(values)) if valid.any() else math.inf,
                "hi": float(np.nanmax(values)) if valid.any() else -math.inf,
            }
            lat = lat_dim(source)
            if lat is not None:
                w = np.cos(np.deg2rad(np.asarray(ref[lat].values, np.float64)))
                shape = [1] * values.ndim
                shape[list(source.dims).index(lat)] = -1
                w = np.broadcast_to(w.reshape(shape), values.shape)
                stats |= {"wsq": float(np.sum(w * err**2)), "wn": float(np.sum(w * valid))}
        marker = _marker(self.store, variable, chunk)
        marker.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(marker, json.dumps(stats).encode())  # the chunk counts as done only once this exists
        return stats


@dataclass
class CompressSummary:
    store: Path
    model_hashes: dict[str, str]  # variable -> the hash of its model
    written: int  # chunks written by this run
    skipped: int  # chunks already complete before it
    complete: bool
    seconds: float
    reports: dict[str, dict[str, Any]]
    model_loads: dict[int, int] = dataclasses.field(default_factory=dict)  # actor pid -> models loaded


def _job_id(cfg: Config, models: dict[str, VariableModel]) -> str:
    c = cfg.compress
    body = {
        "paths": list(c.paths or cfg.data.paths), "concat_dim": cfg.data.concat_dim, "isel": cfg.data.isel,
        "variables": list(models), "zarr_format": c.zarr_format, "chunks": c.chunks, "chunk_fields": c.chunk_fields,
        "models": {v: [m.artifact.hash, m.quality, m.steps] for v, m in models.items()}, "store_model": c.store_model,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _distinct_artifacts(models: dict[str, VariableModel]) -> list[ModelArtifact]:
    return list({m.artifact.hash: m.artifact for m in models.values()}.values())


def _create_store(cfg: Config, store: Path, models: dict[str, VariableModel], job: str, attrs: dict) -> None:
    """Metadata and coordinates of the new store (no chunk data), with the input's
    global ``attrs``, placed atomically."""
    import xarray as xr
    import zarr

    from vcinr_sci.codec.numcodecs import VCINRCodec
    from vcinr_sci.io.layout import coded_encoding, item_chunks, prepare_variable
    from vcinr_sci.model.embedded import MODELS_GROUP, embed_model
    from vcinr_sci.model.registry import cache_model

    c = cfg.compress
    for art in _distinct_artifacts(models):
        cache_model(art)  # readers on this machine find it by hash
    parts, encoding = [], {}
    for v, m in models.items():
        art = m.artifact
        # Where the model lies relative to the store, or nothing: never a path of this machine's.
        model_path = f"{MODELS_GROUP}/{art.hash[:HASH_PREFIX_LEN]}" if c.store_model else None
        da = open_source(cfg, v)
        item_dims = list(da.dims[: da.ndim - len(art.grid.shape)])
        chunks = item_chunks({d: da.sizes[d] for d in item_dims}, c.chunk_fields, c.chunks)
        try:
            da, _ = prepare_variable(da, m.loaded, cfg.data.grid_dims, chunks)
        except CodecError as e:
            raise CodecError(f"variable {v!r} and its model {art.hash[:16]} ({m.path}): {e}") from e
        codec = VCINRCodec(art.hash, m.quality, art.grid.to_dict(), m.steps, model_path, "NaN")
        encoding[v] = coded_encoding(codec, da.encoding.pop("vcinr_chunks"), c.zarr_format)
        parts.append(da.to_dataset(name=v))
    try:  # variables on one grid share its coordinates: they must agree exactly
        ds = xr.merge(parts, join="exact", compat="no_conflicts", combine_attrs="override")
    except ValueError as e:  # xarray's AlignmentError and MergeError are ValueErrors
        raise UsageError(f"variables {list(models)} disagree on a coordinate they share ({e}): "
                         "compress them into separate stores") from e
    ds.attrs = attrs
    for name in list(ds.coords):  # coordinates are small: written now, with the layout
        ds[name].variable.load()
    for stale in store.parent.glob(f".{store.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    with atomic_path(store, overwrite=False) as tmp:
        ds.to_zarr(tmp, mode="w", compute=False, encoding=encoding, zarr_format=c.zarr_format, consolidated=False)
        group = zarr.open_group(tmp, mode="r+")
        if c.store_model:
            for art in _distinct_artifacts(models):
                embed_model(group, art)
        group.attrs.update({JOB_ATTR: job, COMPLETE_ATTR: False})


def _remove_partial_writes(folder: Path) -> None:
    """Delete what chunk writers killed mid-write (on a lost node, say) left under
    ``folder``: Zarr's local store writes a chunk to ``<key>.<32 hex>.partial`` and
    renames it, so such a file is never read, but it would count as stored bytes. Call
    only once no writer is left."""
    for path in folder.rglob("*.partial"):
        if _PARTIAL_WRITE.search(path.name):
            path.unlink(missing_ok=True)


def _finalise(cfg: Config, store: Path, models: dict[str, VariableModel]) -> dict[str, Any]:
    import zarr

    from vcinr_sci.io.integrity import record_digests
    from vcinr_sci.io.layout import coded_variable_attrs
    from vcinr_sci.io.store import chunk_bytes_stored, consolidate
    from vcinr_sci.metrics import error_figures

    group = zarr.open_group(store, mode="r+")
    reports: dict[str, Any] = {}
    for v, m in models.items():
        art = m.artifact
        _remove_partial_writes(store / v)  # before the stored bytes are counted
        arr = group[v]
        report = None
        if cfg.compress.measure:
            total: dict[str, float] = {}
            for marker in sorted((progress_dir(store) / v).glob("*.json")):
                for k, x in json.loads(marker.read_text()).items():
                    total[k] = max(total.get(k, -math.inf), x) if k in ("max", "hi") else (
                        min(total.get(k, math.inf), x) if k == "lo" else total.get(k, 0.0) + x
                    )
            report = error_figures(total, float(art.normaliser.hi - art.normaliser.lo)) if total.get("n") else None
            reports[v] = report
        dims = list(arr.metadata.dimension_names or arr.attrs.get("_ARRAY_DIMENSIONS", []))
        itemsize = np.dtype(arr.dtype).itemsize
        attrs = coded_variable_attrs(
            art.hash, m.quality, m.steps, dims[len(dims) - len(art.grid.shape):], math.prod(arr.shape), itemsize,
            chunk_bytes_stored(arr), report,
        )
        arr.attrs.update(attrs)
    record_digests(store)  # SHA-256 of every chunk, for `vcinr verify`
    group.attrs[COMPLETE_ATTR] = True
    consolidate(store, zarr_format=cfg.compress.zarr_format)
    shutil.rmtree(progress_dir(store), ignore_errors=True)
    return reports


def compress(
    cfg: Config, model: str | None = None, limit: int | None = None, quiet: bool = False, replace: bool = False
) -> CompressSummary:
    """Compress the run's variables, each with its model (:func:`load_models`), into one
    store (resuming an unfinished one).

    ``limit`` writes at most that many chunks and leaves the store unfinished (for
    incremental runs and tests); a later run completes it. A store at the output that
    another job wrote is refused, or with ``replace`` removed first."""
    import zarr

    from vcinr_sci.data.sources import open_inputs

    t0 = time.perf_counter()
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    c = cfg.compress
    variables = run_variables(cfg)
    data, key = _input(cfg)
    source_attrs = dict(open_inputs(data, variables, key).attrs)  # and a variable in no input file fails here, first
    models = load_models(cfg, model, variables)
    hashes = {v: m.artifact.hash for v, m in models.items()}
    store = default_output(cfg, c.quality or models[variables[0]].quality).resolve()
    job = _job_id(cfg, models)

    if store.exists() and zarr.open_group(store, mode="r").attrs.get(JOB_ATTR) != job:
        if not replace:
            raise FileExistsError(
                f"{store} exists and was not written by this job (config, models or quality differ): "
                "remove it or set compress.output"
            )
        shutil.rmtree(store)
    if store.exists():
        if zarr.open_group(store, mode="r").attrs.get(COMPLETE_ATTR):
            say(f"{store} is already complete")
            return CompressSummary(store, hashes, 0, 0, True, time.perf_counter() - t0, {})
    else:
        store.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(progress_dir(store), ignore_errors=True)  # left by a store since removed
        _create_store(cfg, store, models, job, source_attrs)

    group = zarr.open_group(store, mode="r")
    tasks, total = [], 0
    for v, m in models.items():
        n = _chunk_count(group[v], len(m.artifact.grid.shape))
        total += n
        tasks += [{"variable": v, "chunk": i} for i in range(n) if not _marker(store, v, i).is_file()]
    done = total - len(tasks)
    if limit is not None:
        tasks = tasks[: max(0, limit)]
    for v, m in models.items():
        say(f"{v}: model {m.artifact.hash[:16]} quality {m.quality}")
    say(f"-> {store}: {total} chunks of {len(variables)} variable(s), {done} complete, {len(tasks)} to write")

    written, loads = 0, {}
    if tasks:
        rows = run_actor_pool(
            WriteChunks,
            tasks,
            {"config": cfg.to_dict(), "store": str(store), "artifact_paths": {v: str(m.path) for v, m in models.items()}},
            num_actors=c.num_actors,
            cpus_per_actor=c.cpus_per_actor,
            want_gpu=c.use_gpu,
            section="compress",
            say=say,
        )
        progress = Progress(total, done)
        for row in rows:
            written += not row["skipped"]
            loads[int(row["pid"])] = int(row["loads"])
            normaliser = models[str(row["variable"])].artifact.normaliser
            psnr = psnr_from_mse(row["mse"], float(normaliser.hi - normaliser.lo))
            note = f"PSNR {psnr:6.2f} dB  " if c.measure and math.isfinite(row["mse"]) else ""
            where = f"{row['variable']}/{int(row['chunk']):06d}"
            say(f"chunk {where}  {note}{row['seconds']:6.2f} s  {progress.step()}")

    missing = [i for v, m in models.items() for i in _missing(store, group[v], v, len(m.artifact.grid.shape))]
    if missing:
        say(f"{len(missing)} chunk(s) left: rerun to complete the store")
        return CompressSummary(store, hashes, written, done, False, time.perf_counter() - t0, {}, loads)
    reports = _finalise(cfg, store, models)
    for v, r in reports.items():
        if r:
            say(f"{v}: PSNR {r['psnr_db']:.2f} dB, RMSE {r['rmse']:.4g}, max abs error {r['max_abs_error']:.4g}")
    seconds = time.perf_counter() - t0
    say(f"store complete: {store} ({written} chunks written, {done} skipped, {seconds:.1f} s)")
    return CompressSummary(store, hashes, written, done, True, seconds, reports, loads)


def _chunk_count(arr, g: int) -> int:
    """Chunks of ``arr`` (whole along its ``g`` trailing grid dims)."""
    return math.prod(math.ceil(s / ch) for s, ch in zip(arr.shape[:-g], arr.chunks[:-g]))


def _missing(store: Path, arr, variable: str, g: int) -> list[int]:
    return [i for i in range(_chunk_count(arr, g)) if not _marker(store, variable, i).is_file()]


def main(argv: list[str] | None = None) -> int:
    p = config_parser("vcinr compress", __doc__, "YAML run config (its data and compress sections)", "compress.quality=q1",
                      model_help="artifact folder or hash for every variable, or VAR=MODEL,VAR=MODEL (default: "
                                 "compress.models, else each variable's newest matching artifact with coders)",
                      variables_help="variables to code into the one store, each with its own model")
    p.add_argument("--limit", type=int, help="write at most this many chunks (the store stays unfinished)")
    args = p.parse_args(argv)
    compress(load(args), args.model, args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
