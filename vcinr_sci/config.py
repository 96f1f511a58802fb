"""Typed run configuration, loaded from YAML.

Every hyperparameter is defined once, here, with its default. A YAML file names only
what it changes; an unknown key is an error (a typo must not silently fall back to a
default). Every value is checked against its field's type and converted where the
meaning is plain (``"3e-4"`` to a float: YAML 1.1 reads ``3e-4`` as a string), so a
wrong value fails here, naming its key, instead of far away in a training loop.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from vcinr_sci.errors import ConfigError

# Where a stage writes or finds its own outputs: ``~``, ``$VAR`` and ``${VAR}`` are
# expanded when the config is loaded (:func:`load_config`). The data paths
# (``data.paths``, ``compress.paths``) are expanded the same way when the data are opened
# (:func:`vcinr_sci.data.sources.resolve_paths`), so that a model's stored config names
# its data alike on every machine.
_PATH = {"path": True}


@dataclass
class DataConfig:
    """Which variable of which files, and how its fields become items."""

    # Files or globs. ``~``, ``$VAR``/``${VAR}`` are expanded on opening (``$VCINR_DATA_DIR``
    # defaults to ../shared/data beside the checkout); ``iris-sample-data:NAME`` names a
    # file shipped by the iris-sample-data package (available on any machine with PyPI).
    paths: list[str] = field(default_factory=list)
    variable: str = ""
    # Dims spanned by one field (e.g. [lat, lon]); every other dim indexes items.
    grid_dims: list[str] = field(default_factory=list)
    grid: Literal["spherical", "regular"] = "spherical"  # spherical (lat, lon in degrees) | regular (any N-d grid)
    # With several files: the dim they are stacked along, new (e.g. an ensemble member) or
    # one they share; None = combined by their coordinates (files split along time, say),
    # which must then agree exactly on every other coordinate.
    concat_dim: str | None = None
    # Optional index selection applied before anything else, e.g. {isobaricInhPa: 0}.
    isel: dict[str, Any] = field(default_factory=dict)
    # Deterministic split: the last test_fraction of split_dim is test, the val_fraction
    # before it validation. Splitting on a member dim holds out whole runs; on time,
    # whole time ranges.
    split_dim: str = "time"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    normalisation: Literal["minmax", "fixed"] = "minmax"  # minmax (training min/max to [0, 1]) | fixed
    fixed_range: list[float] | None = None  # [lo, hi] in data units, for "fixed"
    # Subtract each item's mean (of its valid points, after normalisation) before the INR
    # sees it, and store that mean beside the latent (16 bits an item). The INR then
    # models anomalies only, so fields warmer or colder than any training field (a
    # warming scenario's later years) do not ask it to extrapolate.
    subtract_item_mean: bool = False
    # Subtract the training fields' mean field (per grid point, after normalisation)
    # before the model sees a field, and add it back after: the model codes anomalies
    # from the climatology, so a zero latent already gives the mean field's accuracy.
    # The mean field is part of the model artifact (grid points x 4 bytes).
    subtract_mean_field: bool = False
    # Bilinearly regrid spherical (lat, lon) fields onto an equiangular global grid of
    # [n_lat, n_lon] with both poles, e.g. the papers' ERA5 grids [46, 90] or [181, 360]
    # (vcinr_sci.data.regrid); None = use the data's own grid.
    regrid: list[int] | None = None
    # Cut fields into patches of this shape (one item each); None = whole fields.
    patch_shape: list[int] | None = None
    # Load the training items into memory when they take at most this many MB;
    # larger data is read lazily, batch by batch.
    cache_limit_mb: float = 2048.0


@dataclass
class ModelConfig:
    """The model: a linear basis (training mean and EOFs, ``basis``), the shared INR
    and how the latent conditions it (the other keys, which ``kind: linear`` ignores),
    or both (``kind: hybrid``)."""

    # inr: a meta-learned INR (meta-train, latents, coders) | linear: the training mean
    # and leading EOFs, closed-form coefficients (pipelines/fit_basis.py) | hybrid: the
    # linear model plus an INR meta-learned on what its leading EOFs leave
    # (pipelines/fit_hybrid.py); each chunk codes with the linear model alone or with both
    kind: Literal["inr", "linear", "hybrid"] = "inr"
    # hybrid: the INR codes the residual of the mean and this many leading EOFs
    residual_components: int = 8
    conditioning: Literal["gated", "shift"] = "gated"  # gated (VC-INR soft gating) | shift (Functa/COIN++)
    latent_dim: int = 64
    width: int = 128
    depth: int = 5  # number of sine layers; a linear output layer follows
    w0: float = 30.0
    w0_initial: float = 30.0
    gate_rank: int = 2
    mod_width: int = 256  # LatentToGates hidden width
    mod_blocks: int = 2  # LatentToGates residual blocks
    gate_first_layer: bool = False


@dataclass
class MetaConfig:
    """MetaSGD inner loop and the outer optimiser."""

    inner_steps: int = 3
    inner_lr_init: float = 1.0
    inner_lr_clip: list[float] = field(default_factory=lambda: [-5.0, 5.0])
    first_order: bool = False
    outer_lr: float = 1e-4
    batch_size: int = 16  # items per outer step, shared out among train.num_workers
    steps: int = 1000
    grad_clip: float | None = 1.0
    # Random grid points per item per outer step (None = all): bounds the cost of
    # second-order steps on large grids.
    points_per_step: int | None = None
    eval_every: int = 100
    eval_items: int = 64  # validation items scored at each evaluation
    eval_inner_steps: int = 3
    # Quantisation-aware meta-training (issue 24): the outer loss decodes each adapted
    # latent plus uniform noise this wide, as a fraction of the batch's leading latent
    # deviation (the Gaussian coder's step at its "1 sd" level is 1.0); 0 = off.
    latent_noise: float = 0.0
    # With latent_noise: weight of the latents' rate in the outer loss, in normalised MSE
    # per bit a field, the rate taken as that of a Gaussian channel with that noise
    # (sum over dimensions of 0.5 log2(1 + variance / noise variance)); 0 = off.
    latent_rate: float = 0.0


@dataclass
class TrainConfig:
    """Ray Train scaling, checkpoints and output places."""

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: int = 1
    checkpoint_every: int = 100
    max_failures: int = 2
    log_every: int = 25
    storage_path: str = field(default="runs", metadata=_PATH)
    artifact_dir: str = field(default="artifacts", metadata=_PATH)
    seed: int = 0


@dataclass
class LatentsConfig:
    """Encoding every item into its latent (``pipelines/build_latents.py``): latent shards."""

    # Shards go to output_dir/<model hash prefix>-k<inner_steps>/<part>/.
    output_dir: str = field(default="latents", metadata=_PATH)
    parts: list[str] = field(default_factory=lambda: ["train", "val"])  # split parts to encode
    shard_fields: int = 64  # fields per shard (one Ray Data block, one Parquet file)
    batch_size: int = 32  # items per adaptation call inside an actor
    inner_steps: int = 10  # MetaSGD steps at encode time (more than in training is allowed)
    num_actors: int = 1  # actor pool size (each actor loads the model once)
    use_gpu: bool = False  # one GPU per actor (falls back to CPU actors if Ray has no GPU)
    cpus_per_actor: int = 1


@dataclass
class CoderConfig:
    """The latent coders (``pipelines/train_coder.py``): a Gaussian transform coder at a
    step per level, or a learned transform coder per lambda."""

    # gaussian: one linear transform fitted on the training latents (KLT in the INR's
    # data-space metric) and per-component Gaussian tables, a step per level
    # (coding/transform.py; ERA5 UK EOF-8 residual latents, issue 24: levels span the
    # whole range where the learned ones collapsed). learned: a factorised-prior transform
    # coder trained per lambda (the fields from dim_y to seed below).
    kind: Literal["gaussian", "learned"] = "gaussian"
    # kind gaussian: bits per latent dimension of each level on the tuning items, one
    # step each (found by bisection); several targets can land on one step and be merged.
    gaussian_bits: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0])
    metric_items: int = 128  # training items the data-space metric is measured on (0: the plain KLT)
    dim_y: int = 32  # channels of z (the entropy-coded latent)
    width: int = 64  # residual-MLP width of g_a and g_s
    blocks: int = 2  # residual blocks of g_a and g_s
    # Rate-distortion trade-offs, in bits per value per unit MSE on the normalised data
    # (see coding.rd_loss); one coder each, labelled q0.. from lowest rate to highest.
    # Empty: ``levels`` lambdas chosen from the data's measured rate-distortion slope.
    lambdas: list[float] = field(default_factory=list)
    levels: int = 3  # learned levels when lambdas is empty
    steps: int = 2000
    lr: float = 1e-3  # Adam on g_a, g_s and the entropy model; cosine decay to lr * lr_final
    lr_final: float = 0.01
    aux_lr: float = 1e-3  # Adam on the bottleneck's quantiles (its aux loss)
    batch_size: int = 64  # items per step
    points_per_step: int | None = 1024  # grid points per item for the distortion (None = all)
    eval_every: int = 250  # validation RD loss (on the val shards) every this many steps
    eval_items: int = 64
    uniform_bits: list[int] = field(default_factory=lambda: [2, 3, 4, 5, 6, 7, 8])  # u2..u8 baselines
    uniform_clip_std: float = 3.0
    num_workers: int = 1  # Ray Train workers; the lambdas are shared out among them
    cpus_per_worker: int = 1
    use_gpu: bool = False
    checkpoint_every: int = 500
    log_every: int = 100
    seed: int = 0


@dataclass
class BasisConfig:
    """The linear model (``model.kind: linear``, ``pipelines/fit_basis.py``)."""

    components: int = 256  # leading EOFs kept (at most the fitted training items - 1)
    # Training items the EOFs are fitted on, evenly spaced (the exact fit holds them:
    # memory ~ this x points x 8 bytes; the streamed fit's memory does not depend on it).
    max_fit_items: int = 1024
    # How the EOFs are fitted: exact (one SVD in this process), streamed (a randomized
    # range finder in float32 over blocks of items on Ray Data; memory per worker does not
    # grow with the items: vcinr_sci/model/basis_fit.py), or auto: exact while the fitted
    # items take at most 2 GiB in float64 (exact is then seconds, needs no Ray, and is the
    # reference), streamed beyond.
    fit: Literal["auto", "exact", "streamed"] = "auto"
    oversample: int = 64  # streamed: probe columns beyond `components`
    # streamed: refinements of the probe; the fit reads the fitted items this + 2 times
    # (their moments, a product per refinement and one for the EOFs) and every training
    # item once more (its coefficients).
    power_iterations: int = 2
    block_items: int = 256  # streamed: items a Ray Data task sums into one partial
    num_workers: int = 1  # streamed: Ray Data tasks summing blocks at once (memory: each its own)
    cpus_per_worker: int = 1
    # One quality level per target, labelled q0.. from lowest to highest: the step that
    # reaches the target PSNR (dB on the normalised range) on the validation items.
    target_psnr: list[float] = field(default_factory=lambda: [40.0, 45.0, 50.0])
    predict: bool = True  # chunks may predict each field's coefficients from the previous field's


@dataclass
class CompressConfig:
    """Compressing a dataset into a vcinr-coded Zarr store (``pipelines/compress.py``)."""

    # Input files/globs (as data.paths); empty = data.paths, with data.concat_dim and data.isel.
    paths: list[str] = field(default_factory=list)
    # The run's variables (empty = [data.variable]), each with a model of its own:
    # fit-basis fits one per variable, compress codes them all into one store.
    variables: list[str] = field(default_factory=list)
    # variable -> its model (artifact folder or hash); a variable not named here takes the
    # newest artifact made from the config with data.variable set to it.
    models: dict[str, str] = field(default_factory=dict)
    output: str = field(default="", metadata=_PATH)  # the Zarr store; empty = compressed/<name>-<quality>.zarr
    zarr_format: int = 3
    # Chunk sizes along item dims (grid dims are always whole), e.g. {time: 16}; the
    # unnamed item dims share chunk_fields fields a chunk, the last ones filled first.
    chunks: dict[str, int] = field(default_factory=dict)
    chunk_fields: int = 16
    quality: str = ""  # a coder level of the model; empty = its first
    inner_steps: int | None = None  # None = the codec's default for the level
    store_model: bool = True  # store the model inside the Zarr group
    measure: bool = True  # decode each chunk after writing and record the errors
    num_actors: int = 1  # Ray Data actors writing chunks (each loads the model once)
    cpus_per_actor: int = 1
    use_gpu: bool = False  # one GPU per actor (CPU actors if the cluster has none)


@dataclass
class Config:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    latents: LatentsConfig = field(default_factory=LatentsConfig)
    coder: CoderConfig = field(default_factory=CoderConfig)
    basis: BasisConfig = field(default_factory=BasisConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Config":
        return _build(cls, raw, "config")


def _build(cls, raw: dict[str, Any], where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for key, value in raw.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value or {}, f"{where}.{key}")
        else:
            kwargs[key] = _convert(value, hint, f"{where}.{key}")
    return cls(**kwargs)


def _convert(value: Any, hint: Any, where: str) -> Any:
    """``value`` as the type ``hint`` says, or a :class:`ConfigError` naming ``where``."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _convert(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {hint}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {_convert(k, args[0], where): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    return _scalar(value, hint, where)


def _scalar(value: Any, hint: type, where: str) -> Any:
    if hint not in (bool, int, float, str):
        raise ConfigError(f"{where}: no rule for type {hint}")
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):  # bool is an int
        return value
    if hint in (int, float) and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:  # "3e-4" (YAML 1.1 reads it as a string), 3 for a float, 2.0 for an int
            number = float(value)
        except ValueError:
            pass
        else:
            if hint is float:
                return number
            if number.is_integer():
                return int(value) if isinstance(value, str) and value.strip().lstrip("+-").isdigit() else int(number)
    raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r} ({type(value).__name__})")


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Config:
    """Load a YAML config; ``overrides`` maps dotted keys (``meta.steps``) to values.

    A config may start from another: ``extends: suite-era5-uk.yaml`` (a path relative to
    the file) takes that config's keys, and this file's keys replace them, section by
    section (a list is replaced whole)."""
    raw = _read_yaml(Path(path), ())
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    cfg = Config.from_dict(raw)
    for section in dataclasses.fields(cfg):
        values = getattr(cfg, section.name)
        if dataclasses.is_dataclass(values):
            for f in dataclasses.fields(values):
                if f.metadata.get("path"):
                    key = f"config.{section.name}.{f.name}"
                    setattr(values, f.name, expand_path(getattr(values, f.name), key))
    return cfg


def _read_yaml(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The keys of the config at ``path``, with those of the config it ``extends``."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}" + (f" (extended by {chain[-1]})" if chain else ""))
    if path.resolve() in chain:
        raise ConfigError(f"config {path} extends itself: {' -> '.join(map(str, chain + (path.resolve(),)))}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path}: expected a mapping of sections, got {type(raw).__name__}")
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"config {path}: extends must name one config file, got {base!r}")
    return _merged(_read_yaml(path.parent / base, chain + (path.resolve(),)), raw)


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


_VAR = re.compile(r"\$(\w+|\{[^}]*\})")  # as os.path.expandvars reads them


def expand_path(path: str, key: str, defaults: dict[str, str] | None = None) -> str:
    """``path`` with ``~`` and every ``$VAR``/``${VAR}`` expanded (a variable unset in
    the environment takes its value in ``defaults``); an unset variable is a
    :class:`ConfigError` naming ``key`` and the variable, never left in the path to name
    a folder ``${VAR}``."""

    def value(match: re.Match) -> str:
        name = match.group(1).strip("{}")
        if name in os.environ:
            return os.environ[name]
        if defaults and name in defaults:
            return defaults[name]
        raise ConfigError(f"{key}: environment variable {name!r} (in {path!r}) is not set")

    return _VAR.sub(value, os.path.expanduser(path))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["meta.steps=50", "data.paths=[a.nc]"]`` -> {"meta.steps": 50, ...} (YAML values)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out
