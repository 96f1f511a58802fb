"""The byte container of one ``vcinr``-encoded chunk: header, NaN/fill mask, payload,
and in the error-bounded mode a residual section.

The container knows nothing of models; it stores what the codec hands it and
refuses (with :class:`ChunkFormatError`) any input that is not exactly what an
encoder wrote: wrong magic, unknown version, truncation, trailing bytes, or any
corrupted bit.

The byte layout (header fields, CRCs, versions) is specified in ``docs/format.md``, the
one place that defines it; tests/golden holds chunks of every version that must decode
forever.

**Versions.** Every chunk is written in format 3: magic ``b"vc"``, a version byte, one
CRC-32 over every other byte of the chunk, then a compact header (flag bits, a 1-byte
dtype code, an 8-byte prefix of the model hash, varint lengths and shape), about 27
bytes for a chunk of 64 fields on a 64 x 128 grid. The full model hash lives once per
array, in the codec config; the decoder checks the chunk's prefix against it. Formats 1
(no residual section) and 2 (a residual section), magic ``b"VCINR"``, a full model hash
and u64 fields, ~110 bytes of header, are still read.

**Claimed sizes.** A header's shape is checked before anything of that size is allocated
(the mask, and everything the codec builds from it): against the array's chunk shape or
the caller's buffer when the reader knows them (``expected_shape`` / ``expected_nbytes``
of :func:`decode_container`), else against :func:`max_chunk_values` (``2**26`` values,
256 MiB as float32; ``$VCINR_MAX_CHUNK_VALUES`` raises it). Zstd sections must declare
exactly the size the header implies before they are decompressed.

Why this detects any corruption: in format 3 the CRC is checked first, before any field
is read, and covers every byte of the chunk but its own four; the section lengths are
then checked to add up to exactly the chunk's length. In formats 1 and 2, ``header_len`` is checked against the length implied
by ``ndim``/``dtype_len``/``quality_len``, every other header byte is covered by
``header_crc``, every body byte by ``payload_crc`` and every residual byte by
``residual_crc``. CRC-32 catches every single-bit error and every burst of up to 32
bits, and misses random damage with probability 2**-32. It guards against accidents,
not tampering: a crafted chunk with a recomputed CRC is read as what it claims (the
model hash is an identifier, not a signature). Integrity against tampering is a
separate, opt-in check of per-chunk SHA-256 digests (:mod:`vcinr_sci.io.integrity`).
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

from vcinr_sci.coding.varint import encode_uvarint, read_uvarint
from vcinr_sci.coding.zstd import zstd_exact
from vcinr_sci.errors import ChunkFormatError

MAGIC = b"vc"  # format 3; its first byte tells it from the older formats' magic
LEGACY_MAGIC = b"VCINR"  # formats 1 and 2
FORMAT_VERSION = 3  # every chunk is written in it
SUPPORTED_VERSIONS = (1, 2, 3)
_LEGACY_PLAIN, _LEGACY_RESIDUAL = 1, 2

FLAG_HAS_MASK = 1 << 0
FLAG_ALL_MASKED = 1 << 1
KNOWN_FLAGS = FLAG_HAS_MASK | FLAG_ALL_MASKED
# Bits the container derives from the mask; encode_container overrides them.
_MASK_FLAGS = FLAG_HAS_MASK | FLAG_ALL_MASKED

# Format 3. The flags byte also says whether a residual section follows (bit 2) and holds
# the dtype's code (bits 4-7); the dims byte holds ndim (bits 0-3) and the number of
# leading dims that count the chunk's fields (bits 4-7).
_FLAG_RESIDUAL = 1 << 2
_FLAG_BITS = KNOWN_FLAGS | _FLAG_RESIDUAL
_DTYPE_CODES = {"<f2": 1, "<f4": 2, "<f8": 3, ">f2": 4, ">f4": 5, ">f8": 6}
_DTYPES = {code: dtype for dtype, code in _DTYPE_CODES.items()}
MAX_NDIM = 15
# Formats 1 and 2 store ndim in a byte; numpy arrays have at most this many dims, so a
# header claiming more cannot describe an array any writer had.
_NUMPY_MAX_NDIM = 64
HASH_PREFIX_BYTES = 8  # of the model's SHA-256; the codec config holds all 32
_PRELUDE = struct.Struct("<2sBI")  # magic, version, crc
_FIXED3 = struct.Struct("<2sBIBB8s")  # the prelude, flags, dims, model hash prefix

# Formats 1 and 2 (read only).
_FIXED = struct.Struct("<5sBHI32sHBBBIQQQI")  # everything before the shape
_DIM = struct.Struct("<Q")
_RESIDUAL = struct.Struct("<QI")  # version 2: residual_len, residual_crc, ending the header

# Masks are small next to the payload and decode equally fast at any level, so
# spend encode time for the ~15% smaller output of a high level.
_MASK_CODEC = Zstd(level=19)
# Canonical numpy dtype strs only ("<f4", "|b1", "<M8[ns]"): anything else (",f4" makes
# numpy parse a structured dtype and raise SyntaxError) is refused before numpy sees it.
_DTYPE_STR = re.compile(r"[<>|][a-zA-Z]\d+(\[\w+\])?")
_HASH = re.compile(rf"[0-9a-f]{{64}}|[0-9a-f]{{{2 * HASH_PREFIX_BYTES}}}")
MAX_CHUNK_VALUES_ENV = "VCINR_MAX_CHUNK_VALUES"
DEFAULT_MAX_CHUNK_VALUES = 2**26


@dataclass(frozen=True)
class ChunkHeader:
    """What a decoder needs besides the mask and payload.

    ``model_hash`` is the model's full hash (64 hex; what an encoder gives, and what a
    format 1 or 2 chunk holds) or the 16-hex prefix a format-3 chunk holds.
    ``flags`` bits 0-1 describe the stored mask: they are filled in by
    :func:`encode_container` (values given to it are ignored) and reported by
    :func:`decode_container`.  Construction normalises ``shape`` to a tuple of ints,
    ``model_hash`` to lower case and ``dtype`` to its numpy ``.str`` form, and validates
    every field.
    """

    model_hash: str
    shape: tuple[int, ...]
    dtype: str
    num_items: int
    quality: str
    inner_steps: int
    flags: int = 0

    def __post_init__(self) -> None:
        try:
            shape = tuple(int(d) for d in self.shape)
            dtype = np.dtype(self.dtype)
        except (TypeError, ValueError, SyntaxError) as exc:
            raise ChunkFormatError(f"invalid shape or dtype: {exc}") from None
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dtype", dtype.str)
        object.__setattr__(self, "model_hash", str(self.model_hash).lower())

        if not _HASH.fullmatch(self.model_hash):
            raise ChunkFormatError(
                f"model_hash must be 64 hex characters (or a chunk's {2 * HASH_PREFIX_BYTES}-hex prefix), "
                f"got {self.model_hash[:80]!r}"
            )
        if len(shape) > _NUMPY_MAX_NDIM or any(not 0 <= d < 2**64 for d in shape):
            raise ChunkFormatError(
                f"shape must have <= {_NUMPY_MAX_NDIM} dims (numpy's limit), each in [0, 2**64): {shape[:20]}"
            )
        if np.dtype(dtype.str) != dtype or len(dtype.str) > 255:
            raise ChunkFormatError(f"dtype {dtype!r} cannot be stored as a numpy dtype str")
        if self.num_items >= 2**64 or self.item_dims is None:
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

    @property
    def size(self) -> int:
        """Number of points in the chunk."""
        return math.prod(self.shape)

    @property
    def item_dims(self) -> int | None:
        """How many leading dims count the items (the fewest whose product is
        ``num_items``), or None if no prefix of the shape multiplies to it: leading dims
        are items and trailing dims the grid."""
        for j in range(len(self.shape) + 1):
            if math.prod(self.shape[:j]) == self.num_items:
                return j
        return None


class Container(NamedTuple):
    """A decoded chunk. ``mask`` is None when no point is masked, ``residual`` when
    the chunk has no residual section."""

    header: ChunkHeader
    mask: np.ndarray | None
    payload: bytes
    residual: bytes | None = None


@dataclass(frozen=True)
class RawHeader:
    """A format-3 header's fields as stored, unchecked (``docs/format.md``). The codec
    writes through it; tools that craft chunks (tests, the decoder fuzzer) read one with
    :func:`read_raw_header`, edit it, and :meth:`pack` and :func:`seal` it again.
    ``mask_len`` is stored only with flag bit 0 and ``residual_len`` only with bit 2."""

    flags: int  # bits 0-1 mask, bit 2 residual section, bits 4-7 dtype code
    dims: int  # bits 0-3 ndim, bits 4-7 item dims
    hash_prefix: bytes
    shape: tuple[int, ...]
    inner_steps: int
    quality: bytes
    mask_len: int
    payload_len: int
    residual_len: int

    def pack(self) -> bytes:
        """The header's bytes, CRC field zero (:func:`seal` fills it in)."""
        head = bytearray(_FIXED3.pack(MAGIC, FORMAT_VERSION, 0, self.flags, self.dims, self.hash_prefix))
        for d in self.shape:
            head += encode_uvarint(d)
        head += encode_uvarint(self.inner_steps) + bytes([len(self.quality)]) + self.quality
        if self.flags & FLAG_HAS_MASK:
            head += encode_uvarint(self.mask_len)
        head += encode_uvarint(self.payload_len)
        if self.flags & _FLAG_RESIDUAL:
            head += encode_uvarint(self.residual_len)
        return bytes(head)


def read_raw_header(data: bytes | bytearray | memoryview) -> tuple[RawHeader, int]:
    """The fields of the format-3 header at the start of ``data`` and its length. Reads
    at most 463 bytes (17 fixed, 19 varints of at most 10, a label of at most 255) and
    checks nothing but that each field lies within ``data`` (varints: see
    :func:`vcinr_sci.coding.varint.read_uvarint`)."""
    if len(data) < _FIXED3.size:
        raise ChunkFormatError(f"truncated header: expected at least {_FIXED3.size} bytes, got {len(data)}")
    _, _, _, flags, dims, prefix = _FIXED3.unpack_from(data)
    pos = _FIXED3.size
    shape = []
    for i in range(dims & MAX_NDIM):
        d, pos = read_uvarint(data, pos, f"shape[{i}]")
        shape.append(d)
    inner_steps, pos = read_uvarint(data, pos, "inner_steps")
    if pos >= len(data) or pos + 1 + data[pos] > len(data):
        raise ChunkFormatError("truncated header: the quality label runs past the end of the chunk")
    quality = bytes(data[pos + 1 : pos + 1 + data[pos]])
    pos += 1 + len(quality)
    mask_len = residual_len = 0
    if flags & FLAG_HAS_MASK:
        mask_len, pos = read_uvarint(data, pos, "mask_len")
    payload_len, pos = read_uvarint(data, pos, "payload_len")
    if flags & _FLAG_RESIDUAL:
        residual_len, pos = read_uvarint(data, pos, "residual_len")
    return RawHeader(flags, dims, prefix, tuple(shape), inner_steps, quality, mask_len, payload_len, residual_len), pos


def seal(chunk: bytes | bytearray) -> bytes:
    """``chunk`` (a format-3 chunk of at least 7 bytes) with its CRC field set to the
    CRC-32 of every other byte."""
    b = bytearray(chunk)
    struct.pack_into("<I", b, 3, _chunk_crc(b))
    return bytes(b)


def encode_container(
    header: ChunkHeader, mask: np.ndarray | None, payload: bytes, residual: bytes | None = None
) -> bytes:
    """Serialise one chunk (format 3).

    ``mask`` is a bool array of ``header.shape`` (True = masked point, e.g. NaN
    or fill; its meaning is the caller's) or None for "nothing masked".  It is
    stored only when some but not all points are masked; an all-True mask just
    sets ``FLAG_ALL_MASKED``.  ``residual`` (non-empty bytes, or None) is stored
    as the residual section. Only the first 8 bytes of ``header.model_hash`` are stored.
    """
    if residual is not None and not len(residual):
        raise ChunkFormatError("an empty residual section: pass None for a chunk without one")
    if header.dtype not in _DTYPE_CODES:
        raise ChunkFormatError(f"dtype {header.dtype} cannot be stored: a chunk holds float16, float32 or float64")
    if len(header.shape) > MAX_NDIM:
        raise ChunkFormatError(f"a chunk has at most {MAX_NDIM} dims, got shape {header.shape}")
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
    tail = b"" if residual is None else bytes(residual)
    if tail:
        flags |= _FLAG_RESIDUAL
    item_dims = header.item_dims
    assert item_dims is not None  # ChunkHeader checked it
    raw = RawHeader(
        flags | _DTYPE_CODES[header.dtype] << 4, len(header.shape) | item_dims << 4,
        bytes.fromhex(header.model_hash)[:HASH_PREFIX_BYTES], header.shape, header.inner_steps,
        header.quality.encode("utf-8"), len(mask_bytes), len(payload), len(tail),
    )
    return seal(raw.pack() + mask_bytes + payload + tail)


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
    """Parse and verify bytes written by :func:`encode_container` (or by a writer of
    formats 1 and 2); the header's claimed size is checked (see
    :func:`check_claimed_size`), and ``check_header`` (the caller's own checks, which
    raise to refuse) called, before the mask is built."""
    data = _byte_view(buf)
    read = _read_legacy if bytes(data[:1]) == LEGACY_MAGIC[:1] else _read
    header, mask_bytes, payload, residual = read(data)
    check_claimed_size(header, expected_shape, expected_nbytes)
    if check_header is not None:
        check_header(header)
    return Container(header, _decode_mask(header, bytes(mask_bytes)), payload, residual)


_Sections = tuple[ChunkHeader, memoryview, bytes, bytes | None]  # header, mask bytes, payload, residual


def _read(data: memoryview) -> _Sections:
    """A format-3 chunk's header and sections; the CRC is checked before any field is read."""
    start = bytes(data[: len(MAGIC)])
    if start != MAGIC[: len(start)]:
        raise ChunkFormatError(  # the bytes are not quoted: they may be a file a store linked to
            f"not a vcinr chunk: it does not start with the magic {MAGIC!r} (or {LEGACY_MAGIC!r}, formats 1 and 2)"
        )
    if len(data) > len(MAGIC) and data[len(MAGIC)] != FORMAT_VERSION:
        raise ChunkFormatError(
            f"unknown vcinr format version {data[len(MAGIC)]}; this reader supports {list(SUPPORTED_VERSIONS)}"
        )
    if len(data) < _PRELUDE.size:
        raise ChunkFormatError(f"truncated header: expected at least {_PRELUDE.size} bytes, got {len(data)}")
    if _chunk_crc(data) != _PRELUDE.unpack_from(data)[2]:
        raise ChunkFormatError(
            f"checksum mismatch over the chunk's {len(data)} bytes: the chunk is corrupt, truncated or extended"
        )
    # The checksum passed, so the fields below are what an encoder wrote; failures
    # here mean a faulty or foreign writer, still reported as format errors.
    raw, header_len = read_raw_header(data)
    if raw.flags & 0x0F & ~_FLAG_BITS:
        raise ChunkFormatError(f"flags {raw.flags & 0x0F:#x} set bits unknown to format version {FORMAT_VERSION}")
    if raw.flags >> 4 not in _DTYPES:
        raise ChunkFormatError(f"unknown dtype code {raw.flags >> 4}")
    if raw.dims >> 4 > raw.dims & MAX_NDIM:
        raise ChunkFormatError(f"corrupt header: {raw.dims >> 4} item dims in a chunk of {raw.dims & MAX_NDIM}")
    if raw.flags & _FLAG_RESIDUAL and not raw.residual_len:
        raise ChunkFormatError("a chunk flagged with a residual section must hold one")
    body_end = header_len + raw.mask_len + raw.payload_len
    _check_length(data, body_end + raw.residual_len)
    try:
        quality = raw.quality.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ChunkFormatError(f"header text is not valid: {exc}") from None
    header = ChunkHeader(
        raw.hash_prefix.hex(), raw.shape, _DTYPES[raw.flags >> 4], math.prod(raw.shape[: raw.dims >> 4]),
        quality, raw.inner_steps, raw.flags & KNOWN_FLAGS,
    )
    residual = bytes(data[body_end:]) if raw.flags & _FLAG_RESIDUAL else None
    return header, data[header_len : header_len + raw.mask_len], bytes(data[header_len + raw.mask_len : body_end]), residual


def _read_legacy(data: memoryview) -> _Sections:
    """A format 1 or 2 chunk's header and sections."""
    head = bytes(data[: len(LEGACY_MAGIC)])
    if head != LEGACY_MAGIC[: len(head)]:
        raise ChunkFormatError(f"not a vcinr chunk: it does not start with the magic {LEGACY_MAGIC!r} or {MAGIC!r}")
    if len(data) > len(LEGACY_MAGIC) and data[len(LEGACY_MAGIC)] not in (_LEGACY_PLAIN, _LEGACY_RESIDUAL):
        raise ChunkFormatError(
            f"unknown vcinr format version {data[len(LEGACY_MAGIC)]} after magic {LEGACY_MAGIC!r}, "
            f"which formats 1 and 2 use"
        )
    if len(data) < _FIXED.size:
        raise ChunkFormatError(f"truncated header: expected at least {_FIXED.size} bytes, got {len(data)}")
    (_, version, header_len, header_crc, raw_hash, flags, ndim, dtype_len, quality_len,
     inner_steps, num_items, mask_len, payload_len, body_crc) = _FIXED.unpack_from(data)
    if header_len != _legacy_header_len(version, ndim, dtype_len, quality_len):
        raise ChunkFormatError("corrupt header: header_len disagrees with its field lengths")
    if len(data) < header_len:
        raise ChunkFormatError(f"truncated header: expected at least {header_len} bytes, got {len(data)}")
    if _legacy_header_crc(data[:header_len]) != header_crc:
        raise ChunkFormatError("header checksum mismatch: the chunk is corrupt")
    residual_len = residual_crc = 0
    if version == _LEGACY_RESIDUAL:
        residual_len, residual_crc = _RESIDUAL.unpack_from(data, header_len - _RESIDUAL.size)
        if not residual_len:
            raise ChunkFormatError("a version-2 chunk must hold a residual section")
    body_end = header_len + mask_len + payload_len
    _check_length(data, body_end + residual_len)
    mask_bytes = data[header_len : header_len + mask_len]
    payload = bytes(data[header_len + mask_len : body_end])
    if zlib.crc32(payload, zlib.crc32(mask_bytes)) != body_crc:
        raise ChunkFormatError("payload checksum mismatch: the chunk is corrupt")
    residual = bytes(data[body_end:]) if version == _LEGACY_RESIDUAL else None
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
    header = ChunkHeader(raw_hash.hex(), shape, dtype, num_items, quality, inner_steps, flags)
    if header.dtype != dtype:
        raise ChunkFormatError(f"header dtype {dtype!r} is not a canonical numpy dtype str")
    return header, mask_bytes, payload, residual


def _check_length(data: memoryview, total: int) -> None:
    if len(data) != total:
        what = "truncated" if len(data) < total else "trailing bytes after chunk"
        raise ChunkFormatError(f"{what}: expected {total} bytes, got {len(data)}")


def _legacy_header_len(version: int, ndim: int, dtype_len: int, quality_len: int) -> int:
    extra = _RESIDUAL.size if version == _LEGACY_RESIDUAL else 0
    return _FIXED.size + _DIM.size * ndim + dtype_len + quality_len + extra


def _decode_mask(header: ChunkHeader, mask_bytes: bytes) -> np.ndarray | None:
    if header.flags & FLAG_ALL_MASKED:
        if mask_bytes:
            raise ChunkFormatError("an all-masked chunk must store no mask")
        # A read-only view of one True: a chunk of a few bytes may claim many points.
        return np.broadcast_to(np.True_, header.shape)
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


def _chunk_crc(chunk: bytes | bytearray | memoryview) -> int:
    # Format 3: every byte but the CRC field itself (bytes 3..7).
    return zlib.crc32(chunk[_PRELUDE.size :], zlib.crc32(chunk[:3]))


def _legacy_header_crc(head: bytes | bytearray | memoryview) -> int:
    # Formats 1 and 2: the crc field itself (bytes 8..12) is skipped.
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
