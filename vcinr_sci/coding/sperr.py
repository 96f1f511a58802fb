"""SPERR (point-wise error mode, through imagecodecs) on the error-bounded mode's float
residual grid, with the checks an untrusted stream needs before SPERR's C++ decoder sees it.

The grid goes to SPERR's 2-D coder as ``(prod(shape[:-1]), shape[-1])`` (fields stacked
along the rows), without imagecodecs' header: the dimensions come from the chunk's own
checked header, so a stream cannot make the decoder allocate a size it claims. (SPERR's
3-D coder was 1-3 % smaller on CCSM chunks and 0-1 % larger on OSTIA ones, but reads its
dimensions from the stream and aborts the process on a leading extent of 1.)

SPERR 0.8 decodes a truncated stream without complaint (its streams are progressive),
aborts the process on some damaged headers, and allocates what a header's counts
claim. So :func:`check_stream` parses the stream's framing first and refuses anything
but one complete stream: the conditioner's 17 bytes, then either nothing (byte 0 bit 0:
a constant field; bytes 1-9 its u64 number of values, which SPERR allocates and must be
the grid's, bytes 9-17 the f64 value, finite) or (bytes 9-17 the f64 quantisation step,
finite and positive) the SPECK stream (u8 bit planes <= 64, u64 bit count, that many bits
rounded up to bytes), then optionally the outlier coder's stream framed the same way,
filling the rest exactly.

Framing is not enough: SPERR's SPECK decoders (2-D for the grid, 1-D for the outliers)
check their bit budget only between passes, so a crafted stream with intact framing
makes one sorting pass read past the bit buffer (valgrind: ``sperr::Bitstream::rbit``;
the decoded values then depend on the heap). :func:`readable` therefore hands SPERR each
SPECK section with zero bytes appended and its bit count raised to match, enough for
every bit any stream can make the decoder read: a bit plane (sorting and refinement
pass) reads at most one bit per set of the partition (fewer sets than values: every split
leaves two or more non-empty parts, and the sets' leaves are the pixels), two per pixel
(significance and sign, or one refinement bit) and one per level of the I set, so
``planes * (3 * values + 1024)`` bits cover the whole decode. An
honest stream ends its last pass exactly at its bit count, so it never reaches the
zeros and decodes to the same values; the encoder writes every bit plane (no budget in
the point-wise error mode), so no pass ends early on the old count.
"""

from __future__ import annotations

import math
import struct
from types import ModuleType

import numpy as np

from vcinr_sci.errors import ChunkFormatError, CodecError

_CONDITIONER = 17  # SPERR 0.8's conditioner header: flags, mean, quantisation step
_CONSTANT_BIT = 0x01  # byte 0, bit 0: the field is constant (no SPECK stream follows)
_CONSTANT = struct.Struct("<Qd")  # a constant field's number of values and value, at byte 1
_SPECK_HEAD = struct.Struct("<BQ")  # bit planes, bit count
_MAX_BITPLANES = 64
# Bits one bit plane of a SPECK decode can read: per value, at most one for a set of the
# partition and two for its pixel, plus one per level of the I set (< 1024; module doc).
_PASS_BITS_PER_VALUE = 3
_PASS_BITS_EXTRA = 1024


def _imagecodecs() -> ModuleType:
    try:
        import imagecodecs
    except ImportError:
        raise CodecError("this chunk's correction is SPERR-coded: install the package imagecodecs") from None
    return imagecodecs


def grid_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The 2-D shape SPERR codes a chunk of ``shape`` as."""
    return math.prod(shape[:-1]), shape[-1]


def encode(residual: np.ndarray, tolerance: float) -> bytes:
    """SPERR's stream of ``residual`` (float64, the chunk's shape) with every point within
    ``tolerance``."""
    flat = np.ascontiguousarray(residual, np.float64).reshape(grid_shape(residual.shape))
    return bytes(_imagecodecs().sperr_encode(flat, tolerance, "pwe", header=False))


def decode(stream: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """The float64 residual (``shape``) coded in ``stream``; ChunkFormatError for a stream
    that is not one complete SPERR stream or that SPERR refuses."""
    safe = readable(stream, math.prod(shape))
    codecs = _imagecodecs()
    try:
        out = codecs.sperr_decode(safe, shape=grid_shape(shape), dtype=np.float64, header=False)
    except Exception as exc:  # imagecodecs' SperrError, ValueError, MemoryError
        raise ChunkFormatError(f"residual section: SPERR refuses its stream: {exc}") from None
    if not np.isfinite(out).all():
        raise ChunkFormatError("residual section: SPERR's stream decodes to non-finite values")
    return np.asarray(out, np.float64).reshape(shape)


def readable(stream: bytes, values: int) -> bytes | np.ndarray:
    """``stream`` (checked by :func:`check_stream` for a grid of ``values`` points) as
    SPERR may read it: each SPECK section zero-padded past any bit its decoder can read
    (see module doc). Decodes to the same values as ``stream`` for every stream SPERR's
    encoder writes."""
    check_stream(stream, values)
    if stream[0] & _CONSTANT_BIT:
        return stream
    sections, pos = [], _CONDITIONER
    while pos < len(stream):  # the SPECK stream, then the outliers' if any
        length = _framed_len(stream, pos, "SPECK")
        planes, bits = _SPECK_HEAD.unpack_from(stream, pos)
        body = stream[pos + _SPECK_HEAD.size:pos + length]
        pad = -(-planes * (_PASS_BITS_PER_VALUE * values + _PASS_BITS_EXTRA) // 8)  # none for 0 planes: no bit is read
        sections.append((_SPECK_HEAD.pack(planes, 8 * (len(body) + pad) if planes else bits), body, pad))
        pos += length
    # np.zeros leaves the padding's pages untouched (the kernel's zero page when SPERR
    # reads them), so only SPERR's own copy of it takes memory.
    out = np.zeros(_CONDITIONER + sum(len(h) + len(b) + p for h, b, p in sections), np.uint8)
    out[:_CONDITIONER] = np.frombuffer(stream, np.uint8, _CONDITIONER)
    pos = _CONDITIONER
    for head, body, pad in sections:
        for part in (head, body):
            out[pos:pos + len(part)] = np.frombuffer(part, np.uint8)
            pos += len(part)
        pos += pad
    return out


def check_stream(stream: bytes, values: int) -> None:
    """Refuse a SPERR 0.8 stream that is not exactly one complete stream of a grid of
    ``values`` points (see module doc)."""
    if len(stream) < _CONDITIONER:
        raise ChunkFormatError(f"residual section: SPERR stream of {len(stream)} bytes is shorter than its header")
    if stream[0] & _CONSTANT_BIT:
        if len(stream) != _CONDITIONER:
            raise ChunkFormatError("residual section: SPERR stream of a constant field has trailing bytes")
        count, value = _CONSTANT.unpack_from(stream, 1)
        if count != values or not math.isfinite(value):
            # SPERR 0.8 sizes its output by this count: 2**60 aborted the process (std::length_error)
            raise ChunkFormatError(f"residual section: SPERR constant-field stream claims {count} values of "
                                   f"{value!r}, the grid has {values}")
        return
    (q,) = struct.unpack_from("<d", stream, 9)
    if not (math.isfinite(q) and q > 0):
        raise ChunkFormatError("residual section: SPERR stream's quantisation step is not positive")
    pos = _CONDITIONER + _framed_len(stream, _CONDITIONER, "SPECK")
    if pos < len(stream) and pos + _framed_len(stream, pos, "outlier") != len(stream):
        raise ChunkFormatError("residual section: SPERR stream has trailing bytes")


def _framed_len(stream: bytes, pos: int, what: str) -> int:
    """The full length of the SPECK-framed stream at ``pos``, which must fit in ``stream``."""
    if len(stream) < pos + _SPECK_HEAD.size:
        raise ChunkFormatError(f"residual section: SPERR {what} stream truncated")
    planes, bits = _SPECK_HEAD.unpack_from(stream, pos)
    length = _SPECK_HEAD.size + (bits + 7) // 8
    if planes > _MAX_BITPLANES or len(stream) < pos + length:
        raise ChunkFormatError(f"residual section: SPERR {what} stream truncated or malformed")
    return length
