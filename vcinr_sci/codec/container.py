"""The byte container of one ``vcinr``-encoded chunk: header, NaN/fill mask, payload.

The container knows nothing of models; it stores what the codec hands it and
refuses (with :class:`ChunkFormatError`) any input that is not exactly what an
encoder wrote: wrong magic, unknown version, truncation, trailing bytes, or any
corrupted bit.

The byte layout (header fields, offsets, CRCs, versions) is specified in
``docs/format.md``, the one place that defines it; tests/golden holds chunks of every
version that must decode forever.

The total length must be exactly ``header_len + mask_len + payload_len (+ residual_len)``.

**Claimed sizes.** A header's shape is checked before anything of that size is allocated
(the mask, and everything the codec builds from it): against the array's chunk shape or
the caller's buffer when the reader knows them (``expected_shape`` / ``expected_nbytes``
of :func:`decode_container`), else against :func:`max_chunk_values` (``2**26`` values,
256 MiB as float32; ``$VCINR_MAX_CHUNK_VALUES`` raises it). Zstd sections must declare
exactly the size the header implies before they are decompressed.

**Versions.** Version 2 differs from version 1 only by the two residual fields at the end
of the header and the residual section (the error-bounded mode's correction, laid out by
:mod:`vcinr_sci.coding.bound`) after the payload. A writer uses version 1 for a chunk without
a residual section, so such chunks stay byte-identical to (and readable by) version-1
readers, and version 2 only when one is present; this reader reads both. The residual
section has its own CRC so that damage to it is reported as such.

Why this detects any corruption: ``header_len`` is checked against the length
implied by ``ndim``/``dtype_len``/``quality_len``, so a damaged length field
cannot silently re-frame the header; every other header byte is covered by
``header_crc``, every body byte by ``payload_crc`` and every residual byte by
``residual_crc``.  CRC-32 catches every
single-bit error and every burst of up to 32 bits, and misses random damage with
probability 2**-32. It guards against accidents, not tampering: a crafted chunk with
recomputed CRCs is read as what it claims (the model hash is an identifier, not a
signature). Integrity against tampering is a separate, opt-in check of per-chunk
SHA-256 digests (:mod:`vcinr_sci.io.integrity`).
"""

from __future__ import annotations

import math
import os
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
from numcodecs import Zstd

from vcinr_sci.coding.zstd import zstd_exact
from vcinr_sci.errors import ChunkFormatError

MAGIC = b"VCINR"
FORMAT_VERSION = 2  # the newest; chunks without a residual section are written as version 1
SUPPORTED_VERSIONS = (1, 2)
_VERSION_PLAIN, _VERSION_RESIDUAL = 1, 2

FLAG_HAS_MASK = 1 << 0
FLAG_ALL_MASKED = 1 << 1
KNOWN_FLAGS = FLAG_HAS_MASK | FLAG_ALL_MASKED
# Bits the container derives from the mask; encode_container overrides them.
_MASK_FLAGS = FLAG_HAS_MASK | FLAG_ALL_MASKED

_FIXED = struct.Struct("<5sBHI32sHBBBIQQQI")  # everything before the shape
_DIM = struct.Struct("<Q")
_RESIDUAL = struct.Struct("<QI")  # version 2: residual_len, residual_crc, ending the header
# Masks are small next to the payload and decode equally fast at any level, so
# spend encode time for the ~15% smaller output of a high level.
_MASK_CODEC = Zstd(level=19)
# Canonical numpy dtype strs only ("<f4", "|b1", "<M8[ns]"): anything else (",f4" makes
# numpy parse a structured dtype and raise SyntaxError) is refused before numpy sees it.
_DTYPE_STR = re.compile(r"[<>|][a-zA-Z]\d+(\[\w+\])?")
MAX_CHUNK_VALUES_ENV = "VCINR_MAX_CHUNK_VALUES"
DEFAULT_MAX_CHUNK_VALUES = 2**26


@dataclass(frozen=True)
class ChunkHeader:
    """What a decoder needs besides the mask and payload.

    ``flags`` bits 0-1 and ``payload_crc`` (crc32 of the stored mask bytes
    followed by the payload) describe the stored bytes: they are
    filled in by :func:`encode_container` (values given to it are ignored) and
    reported by :func:`decode_container`.  Construction normalises ``shape`` to
    a tuple of ints, ``model_hash`` to lower case and ``dtype`` to its numpy
    ``.str`` form, and validates every field.
    """

    model_hash: str
    shape: tuple[int, ...]
    dtype: str
    num_items: int
    quality: str
    inner_steps: int
    flags: int = 0
    payload_crc: int = 0

    def __post_init__(self) -> None:
        try:
            shape = tuple(int(d) for d in self.shape)
            dtype = np.dtype(self.dtype)
        except (TypeError, ValueError, SyntaxError) as exc:
            raise ChunkFormatError(f"invalid shape or dtype: {exc}") from None
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dtype", dtype.str)
        object.__setattr__(self, "model_hash", str(self.model_hash).lower())

        h = self.model_hash
        if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
            raise ChunkFormatError(f"model_hash must be 64 hex characters, got {h!r}")
        if len(shape) > 255 or any(not 0 <= d < 2**64 for d in shape):
            raise ChunkFormatError(f"shape must have <= 255 dims, each in [0, 2**64): {shape}")
        if np.dtype(dtype.str) != dtype or len(dtype.str) > 255:
            raise ChunkFormatError(f"dtype {dtype!r} cannot be stored as a numpy dtype str")
        # Leading dims are items and trailing dims the grid, so num_items must
        # be the product of some prefix of the shape.
        prefixes = {math.prod(shape[:j]) for j in range(len(shape) + 1)}
        if self.num_items not in prefixes or self.num_items >= 2**64:
            raise ChunkFormatError(
                f"num_items={self.num_items} is not the product of leading dims of shape {shape}"
            )
        if len(self.quality.encode("utf-8")) > 255:
            raise ChunkFormatError(f"quality label exceeds 255 UTF-8 bytes: {self.quality[:40]!r}...")
        if not 0 <= self.inner_steps < 2**32:
            raise ChunkFormatError(f"inner_steps must be in [0, 2**32), got {self.inner_steps}")
        if self.flags & ~KNOWN_FLAGS or self.flags < 0:
            raise ChunkFormatError(
                f"flags {self.flags:#x} set bits unknown to format version {FORMAT_VERSION} "
                f"(known: {KNOWN_FLAGS:#x})"
            )
        if self.flags & FLAG_HAS_MASK and self.flags & FLAG_ALL_MASKED:
            raise ChunkFormatError("flags: an all-masked chunk stores no mask")
        if not 0 <= self.payload_crc < 2**32:
            raise ChunkFormatError(f"payload_crc must be a u32, got {self.payload_crc}")

    @property
    def size(self) -> int:
        """Number of points in the chunk."""
        return math.prod(self.shape)


class Container(NamedTuple):
    """A decoded chunk. ``mask`` is None when no point is masked, ``residual`` when
    the chunk has no residual section (a version-1 chunk)."""

    header: ChunkHeader
    mask: np.ndarray | None
    payload: bytes
    residual: bytes | None = None


def encode_container(
    header: ChunkHeader, mask: np.ndarray | None, payload: bytes, residual: bytes | None = None
) -> bytes:
    """Serialise one chunk.

    ``mask`` is a bool array of ``header.shape`` (True = masked point, e.g. NaN
    or fill; its meaning is the caller's) or None for "nothing masked".  It is
    stored only when some but not all points are masked; an all-True mask just
    sets ``FLAG_ALL_MASKED``.  ``residual`` (non-empty bytes, or None) is stored
    as the residual section of a version-2 chunk.
    """
    if residual is not None and not len(residual):
        raise ChunkFormatError("an empty residual section: pass None for a chunk without one")
    flags = header.flags & ~_MASK_FLAGS
    mask_bytes = b""
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != np.bool_:
            raise ChunkFormatError(f"mask must be a bool array, got dtype {mask.dtype}")
        if mask.shape != header.shape:
            raise ChunkFormatError(f"mask shape {mask.shape} does not match chunk shape {header.shape}")
        if mask.size and mask.all():
            flags |= FLAG_ALL_MASKED
        elif mask.any():
            flags |= FLAG_HAS_MASK
            mask_bytes = _MASK_CODEC.encode(np.packbits(mask.ravel()))
    payload = bytes(payload)
    body_crc = zlib.crc32(payload, zlib.crc32(mask_bytes))

    shape = header.shape
    dtype = header.dtype.encode("ascii")
    quality = header.quality.encode("utf-8")
    version = _VERSION_PLAIN if residual is None else _VERSION_RESIDUAL
    header_len = _header_len(version, len(shape), len(dtype), len(quality))
    head = bytearray(_FIXED.pack(
        MAGIC, version, header_len, 0, bytes.fromhex(header.model_hash), flags,
        len(shape), len(dtype), len(quality), header.inner_steps, header.num_items,
        len(mask_bytes), len(payload), body_crc,
    ))
    for d in shape:
        head += _DIM.pack(d)
    head += dtype + quality
    tail = b""
    if residual is not None:
        tail = bytes(residual)
        head += _RESIDUAL.pack(len(tail), zlib.crc32(tail))
    struct.pack_into("<I", head, 8, _header_crc(head))
    return bytes(head) + mask_bytes + payload + tail


def max_chunk_values() -> int:
    """Most values a chunk may claim when the reader knows neither the array's chunk
    shape nor its output buffer (``$VCINR_MAX_CHUNK_VALUES``, default ``2**26``)."""
    try:
        return max(1, int(os.environ.get(MAX_CHUNK_VALUES_ENV, DEFAULT_MAX_CHUNK_VALUES)))
    except ValueError:
        raise ChunkFormatError(f"${MAX_CHUNK_VALUES_ENV} must be an integer") from None


def check_claimed_size(
    header: ChunkHeader, expected_shape: tuple[int, ...] | None = None, expected_nbytes: int | None = None
) -> None:
    """Refuse a header whose shape is not the array's chunk shape (``expected_shape``),
    whose decoded size is not the output buffer's (``expected_nbytes``), or, when
    neither is known, that claims more than :func:`max_chunk_values` values."""
    if expected_shape is not None and header.shape != tuple(int(d) for d in expected_shape):
        raise ChunkFormatError(
            f"chunk header claims shape {header.shape}, the array's chunks are {tuple(expected_shape)}"
        )
    if expected_nbytes is not None and header.size * np.dtype(header.dtype).itemsize != expected_nbytes:
        raise ChunkFormatError(
            f"chunk header claims {header.size} {header.dtype} values, the output buffer holds {expected_nbytes} bytes"
        )
    if expected_shape is None and expected_nbytes is None and header.size > max_chunk_values():
        raise ChunkFormatError(
            f"chunk header claims {header.size} values, more than a chunk may hold when its shape is not "
            f"known ({max_chunk_values()}; set ${MAX_CHUNK_VALUES_ENV} to read larger chunks)"
        )








def decode_container(
    buf: bytes | bytearray | memoryview | np.ndarray,
    expected_shape: tuple[int, ...] | None = None,
    expected_nbytes: int | None = None,
    check_header: Callable[[ChunkHeader], None] | None = None,
) -> Container:
    """Parse and verify bytes written by :func:`encode_container`; the header's claimed
    size is checked (see :func:`check_claimed_size`), and ``check_header`` (the caller's
    own checks, which raise to refuse) called, before the mask is built."""
    data = _byte_view(buf)
    head = bytes(data[: len(MAGIC)])
    if head != MAGIC[: len(head)]:
        raise ChunkFormatError(f"not a vcinr chunk: bad magic {head!r}, expected {MAGIC!r}")
    if len(data) > len(MAGIC) and data[len(MAGIC)] not in SUPPORTED_VERSIONS:
        raise ChunkFormatError(
            f"unknown vcinr format version {data[len(MAGIC)]}; "
            f"this reader supports {list(SUPPORTED_VERSIONS)}"
        )
    if len(data) < _FIXED.size:
        raise ChunkFormatError(f"truncated header: expected at least {_FIXED.size} bytes, got {len(data)}")
    (_, version, header_len, header_crc, raw_hash, flags, ndim, dtype_len, quality_len,
     inner_steps, num_items, mask_len, payload_len, body_crc) = _FIXED.unpack_from(data)
    if header_len != _header_len(version, ndim, dtype_len, quality_len):
        raise ChunkFormatError("corrupt header: header_len disagrees with its field lengths")
    if len(data) < header_len:
        raise ChunkFormatError(f"truncated header: expected at least {header_len} bytes, got {len(data)}")
    if _header_crc(data[:header_len]) != header_crc:
        raise ChunkFormatError("header checksum mismatch: the chunk is corrupt")
    residual_len = residual_crc = 0
    if version == _VERSION_RESIDUAL:
        residual_len, residual_crc = _RESIDUAL.unpack_from(data, header_len - _RESIDUAL.size)
        if not residual_len:
            raise ChunkFormatError("a version-2 chunk must hold a residual section")
    body_end = header_len + mask_len + payload_len
    total = body_end + residual_len
    if len(data) != total:
        what = "truncated" if len(data) < total else "trailing bytes after chunk"
        raise ChunkFormatError(f"{what}: expected {total} bytes, got {len(data)}")
    mask_bytes = data[header_len : header_len + mask_len]
    payload = bytes(data[header_len + mask_len : body_end])
    if zlib.crc32(payload, zlib.crc32(mask_bytes)) != body_crc:
        raise ChunkFormatError("payload checksum mismatch: the chunk is corrupt")
    residual = bytes(data[body_end:]) if version == _VERSION_RESIDUAL else None
    if residual is not None and zlib.crc32(residual) != residual_crc:
        raise ChunkFormatError("residual checksum mismatch: the chunk's error-bound correction is corrupt")

    # The checksums passed, so the fields below are what an encoder wrote;
    # failures here mean a faulty or foreign writer, still reported as format errors.
    pos = _FIXED.size
    shape = tuple(_DIM.unpack_from(data, pos + _DIM.size * i)[0] for i in range(ndim))
    pos += _DIM.size * ndim
    try:
        dtype = bytes(data[pos : pos + dtype_len]).decode("ascii")
        quality = bytes(data[pos + dtype_len : pos + dtype_len + quality_len]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ChunkFormatError(f"header text is not valid: {exc}") from None
    if not _DTYPE_STR.fullmatch(dtype):
        raise ChunkFormatError(f"header dtype {dtype[:40]!r} is not a canonical numpy dtype str")
    header = ChunkHeader(raw_hash.hex(), shape, dtype, num_items, quality, inner_steps, flags, body_crc)
    if header.dtype != dtype:
        raise ChunkFormatError(f"header dtype {dtype!r} is not a canonical numpy dtype str")
    check_claimed_size(header, expected_shape, expected_nbytes)
    if check_header is not None:
        check_header(header)
    return Container(header, _decode_mask(header, bytes(mask_bytes)), payload, residual)


def _header_len(version: int, ndim: int, dtype_len: int, quality_len: int) -> int:
    extra = _RESIDUAL.size if version == _VERSION_RESIDUAL else 0
    return _FIXED.size + _DIM.size * ndim + dtype_len + quality_len + extra


def _decode_mask(header: ChunkHeader, mask_bytes: bytes) -> np.ndarray | None:
    if header.flags & FLAG_ALL_MASKED:
        if mask_bytes:
            raise ChunkFormatError("an all-masked chunk must store no mask")
        return np.ones(header.shape, dtype=bool)
    if not header.flags & FLAG_HAS_MASK:
        if mask_bytes:
            raise ChunkFormatError("mask bytes present but the has-mask flag is clear")
        return None
    n = header.size
    try:
        packed = np.frombuffer(zstd_exact(mask_bytes, -(-n // 8), "stored mask"), dtype=np.uint8)
    except ChunkFormatError as exc:
        raise ChunkFormatError(f"{exc} (chunk shape {header.shape})") from None
    # Zero pad bits keep the mask encoding unique (lossless both ways).
    if n % 8 and packed[-1] & (0xFF >> (n % 8)):
        raise ChunkFormatError(f"stored mask does not fit chunk shape {header.shape}")
    mask = np.unpackbits(packed, count=n).view(bool).reshape(header.shape)
    if mask.all() or not mask.any():
        raise ChunkFormatError("stored mask must mask some but not all points")
    return mask


def _header_crc(head: bytes | bytearray | memoryview) -> int:
    # The crc field itself (bytes 8..12) is skipped.
    return zlib.crc32(head[12:], zlib.crc32(head[:8]))


def _byte_view(buf: bytes | bytearray | memoryview | np.ndarray) -> memoryview:
    if isinstance(buf, np.ndarray):
        buf = np.ascontiguousarray(buf)
    try:
        view = memoryview(buf)
    except TypeError:
        raise TypeError(f"expected a bytes-like buffer, got {type(buf).__name__}") from None
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    return view.cast("B")
