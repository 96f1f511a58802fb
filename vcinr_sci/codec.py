"""The ``vcinr`` codec: a chunk of a gridded float array -> one self-describing byte string.

One implementation, two faces:

- :class:`VCINRCodec`, a numcodecs codec (``codec_id = "vcinr"``, entry point
  ``numcodecs.codecs``): Zarr format 2 (as the array's compressor) and anything else that
  takes numcodecs codecs. It needs neither zarr 3 nor numcodecs 0.16: it works with
  zarr 2.18 / numcodecs 0.15 too.
- :class:`~vcinr_sci.codec_zarr3.VCINRZarrCodec`, a Zarr-3 array-to-bytes codec
  (``"name": "vcinr"``, entry point ``zarr.codecs``): Zarr format 3 (as the array's
  ``serializer``). It holds a :class:`VCINRCodec` and forwards to it, so both write and
  read the same bytes. It needs zarr 3 (registered, and importable from here, only there).

**Chunking rule.** A codec is never told which chunk it encodes, so every chunk must
span the model's grid whole: a chunk of shape ``(c_1, ..., c_k, *grid.shape)``, ``k >= 0``,
where ``grid`` is the model artifact's grid (e.g. ``(lat, lon)``), and each of the
``c_1 * ... * c_k`` leading positions is one field (time, level, member, ...). In Zarr
terms: the array's trailing dims are the grid dims, and its chunks along them equal the
full grid size. When the model was trained on patches (``data.patch_shape``), each field
is cut into the same patches inside the codec. Anything else is refused with
:class:`CodecError` (format 3 refuses it when the array is created, before any write).

The container header's item count is the number of fields in the chunk (with a patched
model each field is ``num_patches`` items, which the model defines).

**Encode.** Fields -> normalised items (less each item's mean, stored in float16, for a
model trained with ``data.subtract_item_mean``) -> MetaSGD adaptation (``inner_steps`` steps) ->
the quality level's latent coder (``g_a``, quantisation, one entropy-coded string for
the whole chunk) -> :mod:`vcinr_sci.chunk` container (header, lossless mask, payload).
**Decode.** Container -> latents ``phi_hat`` -> the INR evaluated on the grid ->
(plus the items' stored means) -> denormalised values in the chunk's original dtype.

**Dtypes.** float16, float32 and float64, either byte order, are accepted and come back
in the same dtype (the network computes in float32, so float64 gains no precision);
integer, bool, complex and other dtypes are refused with :class:`CodecError` (quantise
integers to floats yourself, with a scale, if you must).

**Missing values and fill values.** NaN points, and points equal to the configured
``fill_value``, are *masked*: they take no part in the fit and come back exactly (the
mask is stored losslessly; when a chunk holds both NaN and fill-value points a second
lossless mask tells them apart). ``+-inf`` is refused. A chunk with every point masked
stores a header and no latents (with only NaN, no payload at all).
The format-3 codec takes ``fill_value`` from the array's fill value when the config
leaves it unset; the format-2 codec is never told the array's fill value, so it masks
NaN only unless ``fill_value`` is configured (the xarray accessor always configures it).

**Edge chunks.** Zarr pads the last chunk along each item dim with the fill value. Those
padded fields are all fill (NaN for xarray's default float encoding) and are masked
whole: a field or patch with no valid point gets no latent and costs only mask bits.
With a non-NaN fill value that the codec is not told (format 2, raw Zarr use) the
padding is encoded as data; Zarr crops it on read, so the result is still correct.

**Error bounds.** With ``max_abs_error`` (data units) and/or ``max_rel_error`` (a
fraction of the chunk's valid value range, as SZ3's REL mode; the bound is computed per
chunk and stored in it) the codec guarantees ``|x - decode(encode(x))| <= bound`` at
every valid point of every chunk, whatever device decodes it: a residual section
corrects the INR's reconstruction (:mod:`vcinr_sci.coding.bound` has the mechanism, the
margin for device differences and the coder's choice). Masked points stay exact. In rel
mode, tell a format-2 codec the array's numeric fill value (``fill_value=``): else the
fill padding of edge chunks counts in the range. Without a bound (the default) nothing
is guaranteed and chunks are as before (format version 1).

Decoding reads the model hash and quality level from each chunk's header (the config
supplies only the lookup hint and the fill value), so a chunk decodes by itself. Bytes do
not depend on the device: the entropy coder's tables are built on the CPU, so chunks
written on a GPU decode on a CPU and vice versa (the decoded floats may differ in the
last bits between devices). Zarr format 2 arrays must use C order (the default).

**Models** (:mod:`vcinr_sci.model.registry`). Chunks name their model by content hash. :func:`get_model` loads a model
artifact once per process (keyed by hash) and keeps it, moved to the device (CUDA when
present, else CPU; ``$VCINR_DEVICE`` overrides) for every later chunk. The artifact is
looked up in the config's ``model_path`` (a folder, ``file://`` URI, or any fsspec URI),
the folders added with :func:`add_model_search_path`, ``$VCINR_MODEL_PATH`` and the cache
folder (``$VCINR_CACHE_DIR``); a candidate whose content hash differs is refused.

Payload layout (inside the container's opaque payload)::

    u8 flags (bit 0: "other" mask present)
    [u32 length + Zstd(packbits(other))]   which masked points hold the *other* missing
                                           value (NaN, when fill_value is a number)
    [f16 offset per item with a valid point]   (models with data.subtract_item_mean):
                                           the mean subtracted before the fit, normalised
    latent string (the coder's bytes) for the items with at least one valid point

An empty payload means: every point masked, all holding the default masked value.
A bounded chunk's residual section (container version 2) corrects its valid points, in
C order.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from numcodecs import Zstd
from numcodecs.abc import Codec
from numcodecs.compat import ensure_ndarray_like, ndarray_copy

from vcinr_sci.chunk import ChunkHeader, decode_container, encode_container
from vcinr_sci.coding.bound import ErrorBound, apply_residual, encode_residual, inr_scale
from vcinr_sci.coding.zstd import zstd_exact
from vcinr_sci.data.grids import grid_from_dict
from vcinr_sci.data.normalise import item_means
from vcinr_sci.errors import (
    BoundError,
    ChunkFormatError,
    CodecError,  # noqa: F401  (re-exported: the codec's model API)
)
from vcinr_sci.model.artifact import ModelArtifact
from vcinr_sci.model.loaded import (  # noqa: F401  (re-exported: the codec's model API)
    LoadedModel,
    default_device,
    full_float32,
)
from vcinr_sci.model.registry import (  # noqa: F401  (re-exported: the codec's model API)
    add_model_search_path,
    clear_model_cache,
    default_inner_steps,
    get_model,
    model_cache_stats,
    register_model,
    resolve_model,
    resolve_model_path,
)
from vcinr_sci.threads import codec_threads, torch_threads
from vcinr_sci.zarr_compat import ZARR3

CODEC_ID = "vcinr"

_PAYLOAD_OTHER = 1
_U32 = struct.Struct("<I")
_OFFSET_DTYPE = np.dtype("<f2")
_MASK_CODEC = Zstd(level=19)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CONFIG_KEYS = {
    "model_hash", "model_path", "quality", "grid", "inner_steps", "fill_value", "max_abs_error", "max_rel_error",
}


# ---------------------------------------------------------------------------- config


def _parse_fill(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        table = {"nan": math.nan, "infinity": math.inf, "-infinity": -math.inf, "inf": math.inf, "-inf": -math.inf}
        if value.lower() not in table:
            raise CodecError(f"fill_value {value!r} is not a number, 'NaN', 'Infinity' or '-Infinity'")
        return table[value.lower()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise CodecError(f"fill_value must be a number or None, got {value!r}")
    return float(value)


def _fill_json(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def check_dtype(dtype: Any) -> np.dtype:
    """``dtype`` as a numpy dtype if the codec supports it, else :class:`CodecError`."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise CodecError(f"unsupported dtype {dtype!r}: vcinr codes float16, float32 or float64") from None
    if dt.kind != "f" or dt.itemsize not in (2, 4, 8):
        raise CodecError(
            f"unsupported dtype {dt}: vcinr codes float16, float32 or float64 "
            "(convert integer data to floats first)"
        )
    return dt


def check_chunk_shape(chunk_shape: Sequence[int], grid_shape: Sequence[int]) -> None:
    """Raise :class:`CodecError` unless ``chunk_shape`` ends with the whole grid."""
    chunk_shape, grid_shape = tuple(int(c) for c in chunk_shape), tuple(int(g) for g in grid_shape)
    g = len(grid_shape)
    if len(chunk_shape) < g or chunk_shape[len(chunk_shape) - g :] != grid_shape:
        raise CodecError(
            f"chunk shape {chunk_shape} does not cover the model's grid {grid_shape}: a vcinr chunk "
            f"must be (items..., {', '.join(map(str, grid_shape))}), i.e. the trailing dims are the grid "
            "dims and chunks span them whole"
        )


def _grids_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.get("type") != b.get("type") or set(a) != set(b):
        return False
    for k in a:
        if k == "type":
            continue
        va, vb = a[k], b[k]
        if k == "axes":
            if len(va) != len(vb) or any(len(x) != len(y) or not np.allclose(x, y) for x, y in zip(va, vb)):
                return False
        elif len(va) != len(vb) or not np.allclose(va, vb):
            return False
    return True


# ---------------------------------------------------------------------------- core


def encode_chunk(
    x: np.ndarray,
    model: LoadedModel,
    quality: str,
    inner_steps: int,
    fill_value: float | None = None,
    bound: ErrorBound | None = None,
) -> bytes:
    """Encode the chunk ``x`` (``(items..., *grid)``, float) into one container; with
    ``bound``, one whose decoded valid points all lie within it."""
    x = np.asarray(x)
    dtype = check_dtype(x.dtype)
    check_chunk_shape(x.shape, model.grid.shape)
    coder = model.coder(quality)  # an unknown level fails before any work
    nan = np.isnan(x)
    mask = nan if fill_value is None or math.isnan(fill_value) else (nan | (x == fill_value))
    if np.isinf(x[~mask]).any():
        raise CodecError("the chunk holds inf values: vcinr codes finite values and NaN (missing) only")
    other = nan if mask is not nan and nan.any() else None  # NaN among a numeric fill value
    n_fields = math.prod(x.shape[: x.ndim - len(model.grid.shape)])
    header = ChunkHeader(model.hash, x.shape, dtype.str, n_fields, quality, inner_steps)

    head = b""
    if other is not None:
        packed = _MASK_CODEC.encode(np.packbits(other[mask]))
        head = _U32.pack(len(packed)) + packed
    if mask.all():
        payload = bytes([_PAYLOAD_OTHER]) + head if head else b""
        return encode_container(header, mask, payload)

    norm = model.artifact.normaliser
    values = np.where(mask, 0.0, norm.normalise(x.astype(np.float64))).astype(np.float32)
    fields_shape = (n_fields, *model.grid.shape)
    items = model.to_items(values.reshape(fields_shape))
    valid = ~model.to_items(mask.reshape(fields_shape))
    active = np.flatnonzero(valid.any(axis=1))
    if model.subtracts_item_mean:
        try:
            offsets = item_means(np.where(valid[active], items[active], np.nan))
        except ValueError as e:
            raise CodecError(f"chunk values do not suit model {model.hash[:16]}: {e}") from None
        stored = offsets.astype(_OFFSET_DTYPE).tobytes()
    else:
        offsets, stored = np.zeros(len(active), np.float32), b""
    phi = model.adapt(active, items[active] - offsets[:, None], valid[active], inner_steps)
    latents = coder.compress(phi)
    payload = bytes([_PAYLOAD_OTHER if head else 0]) + head + stored + latents
    residual = None
    if bound is not None:  # reconstruct exactly as the decoder will: from the latents' bytes
        phi_hat = _decompress(model, quality, latents, len(active))
        lat = ChunkLatents(header, model, mask, None, active, phi_hat, offsets)
        inr = lat.inr_normalised()[~mask]
        xhat = norm.denormalise(inr.astype(np.float64))
        own = inr - lat.offsets_on_grid()[~mask]  # the INR's outputs before the means are added
        residual = encode_residual(x, ~mask, xhat, bound, inr_scale(own, norm.lo, norm.hi, offsets))
    return encode_container(header, mask if mask.any() else None, payload, residual)


def _decompress(model: LoadedModel, quality: str, latents: bytes, n: int) -> torch.Tensor:
    """The quantised latents of ``n`` items (the coder's synthesis runs in full float32)."""
    with full_float32():
        return model.coder(quality).decompress(latents, n)


@dataclass
class ChunkLatents:
    """A decoded container before the INR runs: what sampling needs."""

    header: ChunkHeader
    model: LoadedModel
    mask: np.ndarray | None  # (shape) True = masked point; None = nothing masked
    other: np.ndarray | None  # (shape) True = masked point holding the other missing value
    active: np.ndarray  # indices of the items that have latents
    phi: torch.Tensor  # (len(active), D)
    offsets: np.ndarray  # (len(active),) float32: added to the INR's outputs (0 unless stored)
    residual: bytes | None = None  # the error-bounded mode's correction (None: no bound)

    @property
    def num_fields(self) -> int:
        return self.header.num_items

    def inr_normalised(self) -> np.ndarray:
        """The INR's normalised float32 values on the grid plus the items' offsets, in the
        chunk's shape (0 for items without latents): the decoder's computation, which the
        encoder of a bounded chunk repeats to check its correction."""
        return self._on_grid(self.model.evaluate(self.active, self.phi) + self.offsets[:, None])

    def offsets_on_grid(self) -> np.ndarray:
        """Each point's item offset, in the chunk's shape (0 for items without latents)."""
        return self._on_grid(np.broadcast_to(self.offsets[:, None], (len(self.active), self.model.points_per_item)))

    def _on_grid(self, values: np.ndarray) -> np.ndarray:
        """Per-point values of the active items ``(len(active), points_per_item)`` placed
        in the chunk's shape, float32, 0 elsewhere."""
        model = self.model
        items = np.zeros((self.num_fields * model.num_patches, model.points_per_item), np.float32)
        items[self.active] = values
        return model.to_fields(items).reshape(self.header.shape)

    def masked_values(self, fill_value: float | None, dtype: Any = np.float64) -> np.ndarray:
        """Values of the masked points as stored (NaN or the fill value), ``(shape)``."""
        default = math.nan if fill_value is None or math.isnan(fill_value) else fill_value
        with np.errstate(over="ignore"):  # float16 saturates to inf, as any cast would
            out = np.full(self.header.shape, default, dtype=dtype)
        if self.other is not None:
            out[self.other] = math.nan
        return out


def decode_latents(
    buf: Any,
    hints: Sequence[str | os.PathLike | None] = (),
    expected_shape: tuple[int, ...] | None = None,
    expected_nbytes: int | None = None,
) -> ChunkLatents:
    """Parse and check a container and decode its latents (no INR evaluation). The
    header's claimed size is checked against ``expected_shape`` (the array's chunk
    shape) or ``expected_nbytes`` (the output buffer) when known, else a cap, before
    anything of that size is allocated (see :func:`vcinr_sci.chunk.check_claimed_size`)."""
    found: list[LoadedModel] = []

    def check_header(header: ChunkHeader) -> None:  # before the container builds the mask
        check_dtype(header.dtype)
        if not _HEX64.fullmatch(header.model_hash):
            raise ChunkFormatError("chunk header holds no full model hash")
        model = get_model(header.model_hash, hints)
        try:
            check_chunk_shape(header.shape, model.grid.shape)
        except CodecError as e:
            raise ChunkFormatError(f"chunk header shape: {e}") from None
        if header.num_items != math.prod(header.shape[: len(header.shape) - len(model.grid.shape)]):
            raise ChunkFormatError(f"chunk header: {header.num_items} fields in a chunk of shape {header.shape}")
        found.append(model)

    header, mask, payload, residual = decode_container(buf, expected_shape, expected_nbytes, check_header)
    (model,) = found
    other = None
    pos = 0
    if payload:
        flags = payload[0]
        pos = 1
        if flags & ~_PAYLOAD_OTHER:
            raise ChunkFormatError(f"unknown payload flags {flags:#x}")
        if flags & _PAYLOAD_OTHER:
            if mask is None or len(payload) < pos + _U32.size:
                raise ChunkFormatError("payload announces a NaN mask but the chunk has no masked points")
            (length,) = _U32.unpack_from(payload, pos)
            pos += _U32.size
            n = int(mask.sum())
            packed = np.frombuffer(zstd_exact(payload[pos : pos + length], -(-n // 8), "stored NaN mask"), np.uint8)
            pos += length
            other = np.zeros(header.shape, bool)
            other[mask] = np.unpackbits(packed, count=n).view(bool)
    fields_shape = (header.num_items, *model.grid.shape)
    if mask is None:
        active = np.arange(header.num_items * model.num_patches)
    else:
        active = np.flatnonzero((~model.to_items(mask.reshape(fields_shape))).any(axis=1))
    offsets = np.zeros(len(active), np.float32)
    if model.subtracts_item_mean and len(active):
        end = pos + len(active) * _OFFSET_DTYPE.itemsize
        if len(payload) < end:
            raise ChunkFormatError("payload too short for the items' stored means")
        offsets = np.frombuffer(payload[pos:end], _OFFSET_DTYPE).astype(np.float32)
        if not np.isfinite(offsets).all():
            raise ChunkFormatError("stored item means are not finite")
        pos = end
    latents = payload[pos:]
    if residual is not None and not len(active):
        raise ChunkFormatError("a residual section stored for a chunk whose every point is masked")
    if len(active):
        try:
            phi = _decompress(model, header.quality, latents, len(active))
        except CodecError:
            raise
        except ValueError as e:
            raise ChunkFormatError(f"latent code: {e}") from None
    else:
        if latents:
            raise ChunkFormatError("latents stored for a chunk whose every point is masked")
        phi = torch.zeros(0, model.artifact.model.latent_dim)
    return ChunkLatents(header, model, mask, other, active, phi, offsets, residual)


def decode_chunk(
    buf: Any,
    hints: Sequence[str | os.PathLike | None] = (),
    fill_value: float | None = None,
    expected_shape: tuple[int, ...] | None = None,
    expected_nbytes: int | None = None,
) -> np.ndarray:
    """The chunk coded in ``buf``, in its original shape and dtype (for the size checks
    see :func:`decode_latents`)."""
    lat = decode_latents(buf, hints, expected_shape, expected_nbytes)
    header, model = lat.header, lat.model
    if lat.mask is not None and lat.mask.all():
        return lat.masked_values(fill_value, header.dtype)
    values = model.artifact.normaliser.denormalise(lat.inr_normalised().astype(np.float64))
    if lat.residual is not None:  # corrected in the chunk's dtype; widening back is exact
        kept = np.ones(header.shape, bool) if lat.mask is None else ~lat.mask
        values[kept] = apply_residual(lat.residual, kept, values[kept], np.dtype(header.dtype))
    if lat.mask is not None:
        values = np.where(lat.mask, lat.masked_values(fill_value), values)
    with np.errstate(over="ignore"):  # float16 saturates to inf, as any cast would
        return values.astype(header.dtype)


# ---------------------------------------------------------------------------- numcodecs face


class VCINRCodec(Codec):
    """The ``vcinr`` numcodecs codec (see the module doc for the chunking rule).

    Config (all JSON): ``model_hash`` (64 hex), ``model_path`` (where to find it: folder
    or URI, or None), ``quality`` (a level of the model's coders), ``grid`` (the model
    grid's description, checked against the model at encode time), ``inner_steps`` (the
    adaptation steps at encode time; None = the model's default, see
    :func:`default_inner_steps`), ``fill_value`` (a number, "NaN", or None),
    ``max_abs_error`` / ``max_rel_error`` (the error bound, see the module doc; None = no
    guarantee). The bound keys appear in :meth:`get_config` only when set, so a config
    without a bound stays readable by readers that predate them.
    """

    codec_id = CODEC_ID

    def __init__(
        self,
        model_hash: str,
        quality: str,
        grid: dict[str, Any],
        inner_steps: int | None = None,
        model_path: str | None = None,
        fill_value: float | str | None = None,
        max_abs_error: float | None = None,
        max_rel_error: float | None = None,
    ):
        if not isinstance(model_hash, str) or not _HEX64.fullmatch(model_hash.lower()):
            raise CodecError(f"model_hash must be the model's full 64-hex content hash, got {model_hash!r}")
        if not isinstance(quality, str) or not quality:
            raise CodecError(f"quality must be a non-empty level label, got {quality!r}")
        if not isinstance(grid, dict):
            raise CodecError(f"grid must be a grid description (dict), got {type(grid).__name__}")
        try:
            self._grid_shape = tuple(grid_from_dict(grid).shape)
        except (KeyError, TypeError, ValueError) as e:
            raise CodecError(f"invalid grid description: {e}") from None
        if inner_steps is not None and (not isinstance(inner_steps, int) or inner_steps < 0):
            raise CodecError(f"inner_steps must be a non-negative int or None, got {inner_steps!r}")
        if model_path is not None and not isinstance(model_path, str):
            model_path = os.fspath(model_path)
        self.model_hash = model_hash.lower()
        self.model_path = model_path
        self.quality = quality
        self.grid = grid
        self.inner_steps = inner_steps
        self._fill = _parse_fill(fill_value)
        self.fill_value = _fill_json(self._fill)
        try:
            bounded = max_abs_error is not None or max_rel_error is not None
            self._bound = ErrorBound(max_abs_error, max_rel_error) if bounded else None
        except BoundError as e:
            raise CodecError(str(e)) from None
        self.max_abs_error = None if self._bound is None else self._bound.max_abs_error
        self.max_rel_error = None if self._bound is None else self._bound.max_rel_error
        self._checked = False

    @classmethod
    def for_model(
        cls,
        model: ModelArtifact | LoadedModel | str | os.PathLike,
        quality: str,
        inner_steps: int | None = None,
        model_path: str | None = None,
        fill_value: float | str | None = None,
        max_abs_error: float | None = None,
        max_rel_error: float | None = None,
    ) -> "VCINRCodec":
        """A codec for ``model`` (an artifact, a loaded model, an artifact folder or a
        hash): fills in hash, grid, inner steps and (for a folder) ``model_path``, and
        puts the model in the process cache."""
        loaded = resolve_model(model)
        art = loaded.artifact
        loaded.coder(quality)  # refuse an unknown level now
        if model_path is None and art.path is not None:
            model_path = str(Path(art.path).resolve())
        steps = default_inner_steps(art) if inner_steps is None else inner_steps
        return cls(art.hash, quality, art.grid.to_dict(), steps, model_path, fill_value, max_abs_error, max_rel_error)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return self._grid_shape

    @property
    def bound(self) -> ErrorBound | None:
        """The error bound this codec guarantees, or None."""
        return self._bound

    @property
    def fill(self) -> float | None:
        """``fill_value`` as a float (NaN included), or None."""
        return self._fill

    def get_config(self) -> dict[str, Any]:
        config = {
            "id": self.codec_id,
            "model_hash": self.model_hash,
            "model_path": self.model_path,
            "quality": self.quality,
            "grid": self.grid,
            "inner_steps": self.inner_steps,
            "fill_value": self.fill_value,
        }
        for key in ("max_abs_error", "max_rel_error"):
            if getattr(self, key) is not None:
                config[key] = getattr(self, key)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "VCINRCodec":
        config = {k: v for k, v in config.items() if k != "id"}
        unknown = set(config) - _CONFIG_KEYS
        if unknown:
            raise CodecError(f"unknown vcinr codec config key(s) {sorted(unknown)}")
        return cls(**config)

    def __repr__(self) -> str:
        return (
            f"VCINRCodec(model={self.model_hash[:16]}, quality={self.quality!r}, grid={self._grid_shape}, "
            f"inner_steps={self.inner_steps}, fill_value={self.fill_value!r}, "
            f"max_abs_error={self.max_abs_error!r}, max_rel_error={self.max_rel_error!r})"
        )

    def __hash__(self) -> int:
        return hash(json.dumps(self.get_config(), sort_keys=True))

    def model(self) -> LoadedModel:
        """This codec's model, loaded once per process; on first use its grid is checked
        against the config's grid description."""
        loaded = get_model(self.model_hash, [self.model_path])
        if not self._checked:
            if not _grids_equal(loaded.grid.to_dict(), self.grid):
                raise CodecError(
                    f"the codec's grid description {self._grid_shape} differs from model "
                    f"{self.model_hash[:16]}'s grid {tuple(loaded.grid.shape)}"
                )
            self._checked = True
        return loaded

    def encode_array(self, x: np.ndarray) -> bytes:
        """Encode an ``(items..., *grid)`` float array (format-agnostic entry point)."""
        loaded = self.model()
        steps = self.inner_steps if self.inner_steps is not None else default_inner_steps(loaded.artifact)
        with torch_threads(codec_threads()):  # Zarr and dask run chunks in parallel already
            return encode_chunk(x, loaded, self.quality, steps, self._fill, self._bound)

    def decode_array(
        self, buf: Any, expected_shape: tuple[int, ...] | None = None, expected_nbytes: int | None = None
    ) -> np.ndarray:
        """Decode container bytes to the array they hold (a header claiming another size
        than ``expected_shape`` / ``expected_nbytes``, when given, is refused unread)."""
        with torch_threads(codec_threads()):
            return decode_chunk(_as_bytes(buf), [self.model_path], self._fill, expected_shape, expected_nbytes)

    def encode(self, buf: Any) -> bytes:
        arr = ensure_ndarray_like(buf)
        if arr.dtype.kind == "f" and arr.ndim == 1 and len(self._grid_shape) > 1:
            size = math.prod(self._grid_shape)
            if arr.size % size:
                check_chunk_shape(arr.shape, self._grid_shape)  # raises
            arr = arr.reshape(-1, *self._grid_shape)  # a flat buffer of whole fields
        return self.encode_array(np.asarray(arr))

    def decode(self, buf: Any, out: Any = None) -> np.ndarray:
        nbytes = None if out is None else ensure_ndarray_like(out).nbytes
        arr = self.decode_array(buf, expected_nbytes=nbytes)
        if out is not None:
            dst = ensure_ndarray_like(out)
            if dst.nbytes != arr.nbytes:
                raise CodecError(f"output buffer of {dst.nbytes} bytes, decoded chunk has {arr.nbytes}")
            return ndarray_copy(arr, out)
        return arr


def _as_bytes(buf: Any) -> Any:
    if isinstance(buf, (bytes, bytearray, memoryview)):
        return buf
    return np.ascontiguousarray(ensure_ndarray_like(buf)).view(np.uint8).reshape(-1)


def codec_of(array: Any) -> VCINRCodec | None:
    """The :class:`VCINRCodec` of a zarr array (format 2 or 3; zarr 2 or 3), or None."""
    held = getattr(getattr(array, "serializer", None), "codec", None)  # the Zarr-3 face holds one
    if isinstance(held, VCINRCodec):
        return held
    compressors = getattr(array, "compressors", None)
    if compressors is None:  # zarr 2's arrays have a single compressor
        compressors = (getattr(array, "compressor", None),)
    for c in compressors:
        if isinstance(c, VCINRCodec):
            return c
    return None


def __getattr__(name: str) -> Any:
    # The Zarr-3 face lives in its own module, which needs zarr 3; still importable from here.
    if name == "VCINRZarrCodec":
        from vcinr_sci.codec_zarr3 import VCINRZarrCodec

        return VCINRZarrCodec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _register() -> None:
    """Register the codec in-process too (entry points cover fresh processes); with
    zarr 3, its Zarr-3 face as well."""
    from numcodecs.registry import codec_registry, register_codec

    if codec_registry.get(CODEC_ID) is not VCINRCodec:
        register_codec(VCINRCodec)
    if ZARR3:
        import vcinr_sci.codec_zarr3  # noqa: F401  (registers itself)


_register()

__all__ = [
    "CODEC_ID",
    "ChunkLatents",
    "CodecError",
    "LoadedModel",
    "VCINRCodec",
    "add_model_search_path",
    "check_chunk_shape",
    "check_dtype",
    "clear_model_cache",
    "codec_of",
    "decode_chunk",
    "decode_latents",
    "default_device",
    "default_inner_steps",
    "encode_chunk",
    "get_model",
    "model_cache_stats",
    "register_model",
    "resolve_model",
    "resolve_model_path",
]
