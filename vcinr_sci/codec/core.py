"""The ``vcinr`` codec's core: a chunk of a gridded float array <-> one self-describing
byte string (:func:`encode_chunk`, :func:`decode_chunk`), and the rules both faces check.

One implementation, two faces:

- :class:`~vcinr_sci.codec.numcodecs.VCINRCodec`, a numcodecs codec (``codec_id = "vcinr"``, entry point
  ``numcodecs.codecs``): Zarr format 2 (as the array's compressor) and anything else that
  takes numcodecs codecs. It needs neither zarr 3 nor numcodecs 0.16: it works with
  zarr 2.18 / numcodecs 0.15 too.
- :class:`~vcinr_sci.codec.zarr3.VCINRZarrCodec`, a Zarr-3 array-to-bytes codec
  (``"name": "vcinr"``, entry point ``zarr.codecs``): Zarr format 3 (as the array's
  ``serializer``). It holds a :class:`VCINRCodec` and forwards to it, so both write and
  read the same bytes. It needs zarr 3.

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
the whole chunk) -> :mod:`vcinr_sci.codec.container` container (header, lossless mask, payload).
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
is guaranteed and chunks hold no residual section.

Each chunk's header names its model by a 16-hex prefix of its hash (format 3; older
chunks hold the full hash) and its quality level. The codec config holds the full hash:
decoding checks the chunk's prefix against it and loads the model by it (plus the lookup
hint and the fill value); without a config a chunk decodes by itself, its model looked up
by the prefix. Bytes do
not depend on the device: the entropy coder's tables are built on the CPU, so chunks
written on a GPU decode on a CPU and vice versa (the decoded floats may differ in the
last bits between devices). Zarr format 2 arrays must use C order (the default).

**Models** (:mod:`vcinr_sci.model.registry`). Chunks name their model by content hash (a prefix). :func:`get_model` loads a model
artifact once per process (keyed by hash) and keeps it, moved to the device (CUDA when
present, else CPU; ``$VCINR_DEVICE`` overrides) for every later chunk. The artifact is
looked up in the folders added with :func:`add_model_search_path` (the copies
:func:`~vcinr_sci.model.registry.use_embedded_models` extracted from a store),
``$VCINR_MODEL_PATH`` and the cache folder (``$VCINR_CACHE_DIR``); the config's
``model_path`` (a folder, ``file://`` URI, or any fsspec URI) only when it was given in
code, or when the user trusts store paths (``$VCINR_TRUST_STORE_PATHS=1``): read from a
store's metadata it is the store's word. A copy whose content hash differs, or that is
damaged, is skipped for the next.

The payload's bytes (masks, stored means, latent string) are laid out in
``docs/format.md``; a bounded chunk's residual section corrects its valid points, in C
order.
"""

from __future__ import annotations

import dataclasses
import math
import re
import struct
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from numcodecs import Zstd

from vcinr_sci.codec.container import FLAG_ALL_MASKED, ChunkHeader, decode_container, encode_container
from vcinr_sci.coding.bound import Correction, ErrorBound, encode_residual
from vcinr_sci.coding.coefficients import MAX_STEP_EXPONENT
from vcinr_sci.coding.rate_control import target_correction
from vcinr_sci.coding.zstd import zstd_exact
from vcinr_sci.data.normalise import Normaliser, item_means
from vcinr_sci.errors import (
    ChunkFormatError,
    CodecError,
)
from vcinr_sci.model.device import full_float32
from vcinr_sci.model.loaded import LoadedModel
from vcinr_sci.model.registry import (
    Hint,
    get_model,
)

_PAYLOAD_OTHER = 1
_PAYLOAD_STEP = 2  # an int8 step exponent follows the flags byte (rate control)
_PAYLOAD_FLAGS = _PAYLOAD_OTHER | _PAYLOAD_STEP
_U32 = struct.Struct("<I")
_OFFSET_DTYPE = np.dtype("<f2")
# The model sees values clipped to this many normalisation ranges beyond [0, 1]: an
# undeclared fill (1e20, 1e30) is data, kept, but unclipped it overflowed the INR's
# adaptation (1e30) or the linear model's coefficient symbols (1e20). No real value lies
# that far out; with an error bound, the correction restores the clipped points too.
_MODEL_INPUT_RANGES = 16.0
_MASK_CODEC = Zstd(level=19)
HEX64 = re.compile(r"[0-9a-f]{64}")
# Values a decode computes at a time (whole fields): bounds its float32/float64
# temporaries at ~20 bytes each, whatever the chunk's size.
_DECODE_BLOCK_VALUES = 2**19
# Values an encode normalises at a time (8 MiB of float64 temporaries each).
_ENCODE_BLOCK_VALUES = 2**20


# ---------------------------------------------------------------------------- config






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
    model.coder(quality)  # an unknown level fails before any work
    nan = np.isnan(x)
    mask = nan if fill_value is None or math.isnan(fill_value) else (nan | (x == fill_value))
    if np.isinf(x[~mask]).any():
        raise CodecError("the chunk holds inf values: vcinr codes finite values and NaN (missing) only")
    other = nan if mask is not nan and nan.any() else None  # NaN among a numeric fill value
    n_fields = math.prod(x.shape[: x.ndim - len(model.grid.shape)])
    header = ChunkHeader(model.hash, x.shape, dtype.str, n_fields, quality, inner_steps)  # until a level codes it

    head = b""
    if other is not None:
        packed = _MASK_CODEC.encode(np.packbits(other[mask]))
        head = _U32.pack(len(packed)) + packed
    if mask.all():
        payload = bytes([_PAYLOAD_OTHER]) + head if head else b""
        return encode_container(header, mask, payload)

    norm = model.artifact.normaliser
    fields_shape = (n_fields, *model.grid.shape)
    items = model.to_items(_model_inputs(x, mask, norm).reshape(fields_shape))
    valid = ~model.to_items(mask.reshape(fields_shape))
    active = np.flatnonzero(valid.any(axis=1))
    chosen = items if len(active) == len(items) else items[active]
    if model.subtracts_item_mean:
        try:
            offsets = item_means(np.where(valid[active], chosen, np.nan))
        except ValueError as e:
            raise CodecError(f"chunk values do not suit model {model.hash[:16]}: {e}") from None
        stored = offsets.astype(_OFFSET_DTYPE).tobytes()
        chosen = chosen - offsets[:, None]
    else:
        offsets, stored = np.zeros(len(active), np.float32), b""
    coded = model.encode(active, chosen, valid[active], inner_steps, quality)
    latents, exponent = coded.string, coded.exponent
    header = dataclasses.replace(header, quality=coded.level)
    del items, chosen
    flags = (_PAYLOAD_OTHER if head else 0) | (_PAYLOAD_STEP if exponent else 0)
    step = struct.pack("<b", exponent) if exponent else b""
    payload = bytes([flags]) + step + head + stored + latents
    residual = None
    # a level's target past what the latents reach here: a correction gets there
    target = model.artifact.level_target(quality) if bound is None and not coded.reached else None
    if bound is not None or target is not None:  # reconstruct exactly as the decoder will: from the latents' bytes
        phi_hat = _decompress(model, coded.level, latents, len(active), exponent)
        lat = ChunkLatents(header, model, mask, None, active, phi_hat, offsets)
        inr = lat.inr_normalised()[~mask]
        xhat = norm.denormalise(inr.astype(np.float64))
        own = inr - lat.offsets_on_grid()[~mask]  # the model's outputs before the means are added
        device = model.reconstruction_margin(phi_hat, own, offsets)
        del inr, own  # the correction's coders hold several arrays of the chunk's size
        residual = encode_residual(x, ~mask, xhat, bound, device) if bound is not None else \
            target_correction(x, ~mask, xhat, target, norm.hi - norm.lo, device)
    return encode_container(header, mask if mask.any() else None, payload, residual)


def _model_inputs(x: np.ndarray, mask: np.ndarray, norm: Normaliser) -> np.ndarray:
    """``x`` normalised, clipped to the model's input range and 0 at masked points, as
    float32, computed ``_ENCODE_BLOCK_VALUES`` values at a time (the float64 copies of a
    block, not the chunk's: an 8-field 0.25-degree chunk held four 63 MB ones)."""
    out = np.empty(x.shape, np.float32)
    flat_x, flat_mask, flat_out = np.ravel(x), np.ravel(mask), out.reshape(-1)
    for start in range(0, flat_x.size, _ENCODE_BLOCK_VALUES):
        block = slice(start, start + _ENCODE_BLOCK_VALUES)
        v = np.clip(norm.normalise(flat_x[block].astype(np.float64)), -_MODEL_INPUT_RANGES, 1.0 + _MODEL_INPUT_RANGES)
        v[flat_mask[block]] = 0.0
        flat_out[block] = v
    return out


def _decompress(model: LoadedModel, quality: str, latents: bytes, n: int, exponent: int) -> torch.Tensor:
    """The quantised latents of ``n`` items coded at ``quality``'s step times
    ``step_factor(exponent)`` (the coder's synthesis runs in full float32)."""
    with full_float32():
        return model.coder(quality, exponent).decompress(latents, n)


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

    def inr_normalised(self, fields: slice | None = None) -> np.ndarray:
        """The INR's normalised float32 values on the grid plus the items' offsets (0 for
        items without latents): the decoder's computation, which the encoder of a bounded
        chunk repeats to check its correction. In the chunk's shape, or for a run of
        ``fields`` (flat field indices), ``(fields, *grid)``."""
        if fields is None:
            return self.inr_normalised(slice(0, self.num_fields)).reshape(self.header.shape)
        items, rows = self._items(fields)
        return self._on_grid(self.model.evaluate(self.active[rows], self.phi[rows]) + self.offsets[rows, None],
                             items, self.active[rows])

    def offsets_on_grid(self) -> np.ndarray:
        """Each point's item offset, in the chunk's shape (0 for items without latents)."""
        values = np.broadcast_to(self.offsets[:, None], (len(self.active), self.model.points_per_item))
        return self._on_grid(values, slice(0, self.num_fields * self.model.num_patches), self.active).reshape(
            self.header.shape
        )

    def _items(self, fields: slice) -> tuple[slice, slice]:
        """The items of ``fields``, and the rows of ``active`` (sorted) among them."""
        n = self.model.num_patches
        items = slice(fields.start * n, fields.stop * n)
        lo, hi = np.searchsorted(self.active, [items.start, items.stop])
        return items, slice(int(lo), int(hi))

    def _on_grid(self, values: np.ndarray, items: slice, active: np.ndarray) -> np.ndarray:
        """Per-point values ``(len(active), points_per_item)`` of the items ``active``
        among ``items``, placed on their fields' grids ``(fields, *grid)``, float32, 0
        elsewhere."""
        model = self.model
        out = np.zeros((items.stop - items.start, model.points_per_item), np.float32)
        out[active - items.start] = values
        return model.to_fields(out)

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
    hints: Sequence[Hint] = (),
    expected_shape: tuple[int, ...] | None = None,
    expected_nbytes: int | None = None,
    model_hash: str | None = None,
) -> ChunkLatents:
    """Parse and check a container and decode its latents (no INR evaluation). The
    header's claimed size is checked against ``expected_shape`` (the array's chunk
    shape) or ``expected_nbytes`` (the output buffer) when known, else a cap, before
    anything of that size is allocated (see :func:`vcinr_sci.codec.container.check_claimed_size`).

    ``model_hash`` is the full hash the codec config names: the chunk's hash (a 16-hex
    prefix in format 3) must agree with it, and the model is loaded by it. Without it
    the model is looked up by the chunk's own hash or prefix."""
    if model_hash is not None and not HEX64.fullmatch(model_hash):
        raise CodecError(f"model_hash must be a full 64-hex content hash, got {model_hash[:80]!r}")
    found: list[LoadedModel] = []

    def check_header(header: ChunkHeader) -> None:  # before the container builds the mask
        check_dtype(header.dtype)
        if model_hash is not None and not model_hash.startswith(header.model_hash):
            raise ChunkFormatError(
                f"the chunk was written with model {header.model_hash}, the codec config names model {model_hash}"
            )
        model = get_model(model_hash or header.model_hash, hints)
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
    pos = exponent = 0
    if payload:
        flags = payload[0]
        pos = 1
        if flags & ~_PAYLOAD_FLAGS:
            raise ChunkFormatError(f"unknown payload flags {flags:#x}")
        if flags & _PAYLOAD_STEP:
            if len(payload) < 2:
                raise ChunkFormatError("payload announces a step exponent but ends before it")
            (exponent,) = struct.unpack_from("<b", payload, 1)
            if not exponent or abs(exponent) > MAX_STEP_EXPONENT:
                raise ChunkFormatError(f"step exponent {exponent} is outside 1..{MAX_STEP_EXPONENT} in magnitude")
            pos = 2
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
    elif header.flags & FLAG_ALL_MASKED:  # nothing to evaluate: skip a pass over the mask
        active = np.zeros(0, np.int64)
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
            phi = _decompress(model, header.quality, latents, len(active), exponent)
        except CodecError as e:
            if exponent:  # a level without a step: the chunk's word, not the reader's config
                raise ChunkFormatError(str(e)) from None
            raise
        except ValueError as e:
            raise ChunkFormatError(f"latent code: {e}") from None
    else:
        if latents or exponent:
            raise ChunkFormatError("latents or a step stored for a chunk whose every point is masked")
        phi = torch.zeros(0, model.latent_dim)
    return ChunkLatents(header, model, mask, other, active, phi, offsets, residual)


def decode_chunk(
    buf: Any,
    hints: Sequence[Hint] = (),
    fill_value: float | None = None,
    expected_shape: tuple[int, ...] | None = None,
    expected_nbytes: int | None = None,
    model_hash: str | None = None,
) -> np.ndarray:
    """The chunk coded in ``buf``, in its original shape and dtype (for the size checks
    and ``model_hash`` see :func:`decode_latents`)."""
    lat = decode_latents(buf, hints, expected_shape, expected_nbytes, model_hash)
    header, model = lat.header, lat.model
    dtype = np.dtype(header.dtype)
    if lat.mask is None:
        out = np.empty(header.shape, dtype)
    else:  # the masked points' values in place; the valid ones are written below
        out = lat.masked_values(fill_value, dtype)
    if not len(lat.active):
        return out
    # Whole fields at a time, written into the output: the float32/float64 temporaries
    # are per block, so a decode needs its output, its mask and a constant.
    grid = math.prod(model.grid.shape)
    rows = out.reshape(lat.num_fields, grid)
    mask = None if lat.mask is None else lat.mask.reshape(lat.num_fields, -1)
    correction = None
    if lat.residual is not None:
        valid = rows.size if mask is None else rows.size - int(np.count_nonzero(mask))
        correction = Correction(lat.residual, header.shape, lat.num_fields, mask, valid)
    step, start = max(1, _DECODE_BLOCK_VALUES // grid), 0
    for first in range(0, lat.num_fields, step):
        fields = slice(first, min(first + step, lat.num_fields))
        values = model.artifact.normaliser.denormalise(lat.inr_normalised(fields).astype(np.float64))
        kept = None if mask is None else ~mask[fields]
        values = values.reshape(-1) if kept is None else values.reshape(kept.shape)[kept]  # valid, C order
        if correction is not None:  # corrected in the chunk's dtype
            values = correction.apply(fields, start, values, dtype)
            start += values.size
        with np.errstate(over="ignore"):  # float16 saturates to inf, as any cast would
            if kept is None:
                rows[fields] = values.reshape(-1, grid)
            else:
                rows[fields][kept] = values
    return out


# ---------------------------------------------------------------------------- numcodecs face













