"""Tests of the vcinr chunk container (vcinr_sci.codec.container)."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcinr_sci.codec.container import (
    FLAG_ALL_MASKED,
    FLAG_HAS_MASK,
    FORMAT_VERSION,
    MAGIC,
    ChunkHeader,
    decode_container,
    encode_container,
)
from vcinr_sci.errors import ChunkFormatError

HASH = "0123456789abcdef" * 4


def header(shape=(2, 3, 5), dtype="<f4", grid_ndim=2, **kw) -> ChunkHeader:
    fields = dict(model_hash=HASH, shape=shape, dtype=dtype, num_items=math.prod(shape[: len(shape) - grid_ndim]),
                  quality="q30", inner_steps=3)
    return ChunkHeader(**(fields | kw))


def small_chunk() -> bytes:
    mask = np.zeros((2, 3, 5), bool)
    mask[0, 1, 2] = mask[1, 2, 4] = True
    return encode_container(header(), mask, b"latent payload")


def resign(buf: bytes) -> bytes:
    """Recompute the header crc, to build chunks that are well-checksummed but inconsistent."""
    b = bytearray(buf)
    header_len = struct.unpack_from("<H", b, 6)[0]
    struct.pack_into("<I", b, 8, zlib.crc32(b[12:header_len], zlib.crc32(b[:8])))
    return bytes(b)


# --- round trips -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["<f2", "<f4", "<f8", ">f4", "<i2"])
@pytest.mark.parametrize("shape", [(4, 6), (3, 7, 13), (2, 1, 3, 5), (1,), ()])
def test_round_trip_without_mask(shape, dtype):
    h = header(shape, dtype, grid_ndim=min(2, len(shape)))
    out = decode_container(encode_container(h, None, b"\x00\x01payload"))
    assert out.header.model_hash == HASH and out.header.shape == shape and out.header.dtype == dtype
    assert out.header.flags == 0 and out.mask is None and out.payload == b"\x00\x01payload"
    assert out.header.payload_crc == zlib.crc32(b"\x00\x01payload")


@pytest.mark.parametrize("shape", [(3, 7, 13), (1, 8, 8), (5, 1), (2, 0, 4)])
def test_round_trip_with_mask(shape):
    rng = np.random.default_rng(0)
    mask = rng.random(shape) < 0.3
    h = header(shape, "<f8", grid_ndim=len(shape) - 1)
    out = decode_container(encode_container(h, mask, b"xyz"))
    if mask.any():
        assert out.header.flags == FLAG_HAS_MASK and out.mask.dtype == bool
        np.testing.assert_array_equal(out.mask, mask)
    else:
        assert out.header.flags == 0 and out.mask is None
    assert out.payload == b"xyz"


def test_mask_flags_are_derived_from_the_mask():
    h = header(flags=FLAG_HAS_MASK, payload_crc=123)  # caller's values are ignored
    nothing = decode_container(encode_container(h, np.zeros(h.shape, bool), b"p"))
    assert nothing.mask is None and nothing.header.flags == 0
    assert nothing.header.payload_crc == zlib.crc32(b"p")

    buf = encode_container(h, np.ones(h.shape, bool), b"")
    everything = decode_container(buf)
    assert everything.header.flags == FLAG_ALL_MASKED and everything.mask.all()
    assert everything.mask.shape == h.shape
    assert len(buf) == len(encode_container(h, None, b""))  # an all-True mask costs no bytes


def test_decoded_header_equals_encoded_except_derived_fields():
    buf = small_chunk()
    out = decode_container(buf)
    assert out.header == header(flags=FLAG_HAS_MASK, payload_crc=out.header.payload_crc)
    header_out, mask, payload, residual = out  # unpacks like a tuple too
    assert payload == b"latent payload" and mask.sum() == 2 and residual is None


def test_mask_is_compressed():
    mask = np.zeros((4, 181, 360), bool)
    mask[:, 60:120] = True
    buf = encode_container(header(mask.shape), mask, b"")
    assert len(buf) < mask.size // 8 // 20


def test_layout_offsets_match_the_docstring():
    buf = small_chunk()
    assert buf[:5] == MAGIC and buf[5] == 1  # no residual section: version 1, as older writers
    assert buf[12:44] == bytes.fromhex(HASH)
    assert struct.unpack_from("<H", buf, 44)[0] == FLAG_HAS_MASK
    assert buf[46:49] == bytes([3, 3, 3])  # ndim, len("<f4"), len("q30")
    assert struct.unpack_from("<3Q", buf, 81) == (2, 3, 5)
    header_len = struct.unpack_from("<H", buf, 6)[0]
    assert header_len == 81 + 24 + 6 and buf[105:111] == b"<f4q30"
    assert buf.endswith(b"latent payload")


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview, lambda b: np.frombuffer(b, np.uint8)])
def test_accepts_buffer_types(wrap):
    assert decode_container(wrap(small_chunk())).payload == b"latent payload"


def test_accepts_offset_and_strided_buffers():
    buf = small_chunk()
    assert decode_container(memoryview(b"junk" + buf)[4:]).payload == b"latent payload"
    strided = np.zeros(2 * len(buf), np.uint8)
    strided[::2] = np.frombuffer(buf, np.uint8)
    assert decode_container(strided[::2]).payload == b"latent payload"
    assert decode_container(np.frombuffer(buf, np.uint8).reshape(1, -1)).payload == b"latent payload"


def test_rejects_non_buffers():
    with pytest.raises(TypeError, match="bytes-like"):
        decode_container("VCINR")  # type: ignore[arg-type]


# --- corrupt or foreign bytes ------------------------------------------------------


def test_bad_magic():
    with pytest.raises(ChunkFormatError, match="not a vcinr chunk"):
        decode_container(b"PK\x03\x04" + small_chunk()[4:])
    with pytest.raises(ChunkFormatError, match="not a vcinr chunk"):
        decode_container(b"\x89")


def test_unknown_version():
    buf = bytearray(small_chunk())
    buf[5] = FORMAT_VERSION + 1
    with pytest.raises(ChunkFormatError, match=rf"version {FORMAT_VERSION + 1}.*supports \[1, 2\]"):
        decode_container(bytes(buf))


# --- the residual section (version 2) ----------------------------------------------


def residual_chunk(residual: bytes = b"residual bytes") -> bytes:
    mask = np.zeros((2, 3, 5), bool)
    mask[0, 1, 2] = True
    return encode_container(header(), mask, b"latent payload", residual)


def test_residual_round_trip_and_layout():
    buf = residual_chunk()
    out = decode_container(buf)
    assert buf[5] == 2 == FORMAT_VERSION and out.residual == b"residual bytes" and out.payload == b"latent payload"
    header_len = struct.unpack_from("<H", buf, 6)[0]
    assert header_len == 81 + 24 + 6 + 12  # the version-1 header, then residual_len and residual_crc
    assert struct.unpack_from("<QI", buf, header_len - 12) == (14, zlib.crc32(b"residual bytes"))
    assert buf.endswith(b"latent payloadresidual bytes")
    # the same chunk without a residual is the version-1 chunk, byte for byte
    plain = decode_container(encode_container(out.header, out.mask, out.payload))
    assert plain.residual is None and plain.header == out.header


def test_residual_damage_is_reported():
    buf = residual_chunk()
    bad = bytearray(buf)
    bad[-1] ^= 0x01
    with pytest.raises(ChunkFormatError, match="residual checksum mismatch"):
        decode_container(bytes(bad))
    for n in (len(buf) - 1, len(buf) - 14, len(buf) - 20):
        with pytest.raises(ChunkFormatError, match="truncated"):
            decode_container(buf[:n])
    with pytest.raises(ChunkFormatError, match="trailing"):
        decode_container(buf + b"\0")
    header_len = struct.unpack_from("<H", buf, 6)[0]
    bad = bytearray(buf)
    struct.pack_into("<Q", bad, header_len - 12, 0)  # a version-2 chunk claiming no residual
    with pytest.raises(ChunkFormatError, match="must hold a residual"):
        decode_container(resign(bytes(bad)))
    for i in range(len(buf)):  # every flipped byte, the residual fields included
        bad = bytearray(buf)
        bad[i] ^= 0x40
        with pytest.raises(ChunkFormatError):
            decode_container(bytes(bad))


def test_empty_residual_refused():
    with pytest.raises(ChunkFormatError, match="empty residual"):
        encode_container(header(), None, b"p", b"")


def test_truncation_at_every_position_is_detected():
    buf = small_chunk()
    for n in range(len(buf)):
        with pytest.raises(ChunkFormatError, match=rf"truncated.*got {n}$"):
            decode_container(buf[:n])


def test_trailing_bytes_are_rejected():
    buf = small_chunk()
    with pytest.raises(ChunkFormatError, match=rf"trailing bytes.*expected {len(buf)} bytes, got {len(buf) + 1}"):
        decode_container(buf + b"\x00")


def test_every_flipped_bit_is_detected():
    buf = small_chunk()
    for i in range(len(buf)):
        for bit in range(8):
            bad = bytearray(buf)
            bad[i] ^= 1 << bit
            with pytest.raises(ChunkFormatError):
                decode_container(bytes(bad))


@pytest.mark.parametrize("where", ["header", "mask", "payload"])
def test_checksum_messages(where):
    buf = bytearray(small_chunk())
    i = {"header": 60, "mask": 115, "payload": len(buf) - 1}[where]
    buf[i] ^= 0xFF
    part = "header" if where == "header" else "payload"
    with pytest.raises(ChunkFormatError, match=f"{part} checksum mismatch"):
        decode_container(bytes(buf))


def test_header_len_disagreeing_with_field_lengths():
    buf = bytearray(small_chunk())
    buf[47] = 4  # dtype_len
    with pytest.raises(ChunkFormatError, match="header_len disagrees"):
        decode_container(resign(bytes(buf)))


def test_checksummed_but_inconsistent_chunks():
    buf = bytearray(small_chunk())
    buf[44] = 0  # clear the has-mask flag while mask bytes remain
    with pytest.raises(ChunkFormatError, match="flag is clear"):
        decode_container(resign(bytes(buf)))

    buf = bytearray(small_chunk())
    buf[44] = FLAG_HAS_MASK | FLAG_ALL_MASKED
    with pytest.raises(ChunkFormatError, match="all-masked"):
        decode_container(resign(bytes(buf)))

    buf = bytearray(encode_container(header(dtype="<f8"), None, b""))
    buf[105:108] = b"f8 "  # not a canonical dtype str
    with pytest.raises(ChunkFormatError, match="dtype"):
        decode_container(resign(bytes(buf)))

    buf = bytearray(small_chunk())
    struct.pack_into("<Q", buf, 81, 3)  # shape (3, 3, 5): mask too short, num_items wrong
    with pytest.raises(ChunkFormatError, match="num_items"):
        decode_container(resign(bytes(buf)))


# --- invalid header fields ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(model_hash="abc"), "64 hex"),
        (dict(model_hash="g" * 64), "64 hex"),
        (dict(num_items=4), "num_items"),
        (dict(quality="é" * 128), "255 UTF-8 bytes"),
        (dict(inner_steps=-1), "inner_steps"),
        (dict(flags=1 << 5), "unknown to format version"),
        (dict(dtype="not a dtype"), "dtype"),
        (dict(shape=(-1, 3)), "shape"),
    ],
)
def test_invalid_header_fields(fields, message):
    with pytest.raises(ChunkFormatError, match=message):
        header(**fields)


def test_header_normalises_fields():
    h = header(shape=[np.int64(2), 3, 5], dtype="float32", model_hash=HASH.upper())
    assert h.shape == (2, 3, 5) and h.dtype == "<f4" and h.model_hash == HASH
    assert header(num_items=1).num_items == 1 and header(num_items=30).size == 30  # any leading-dims prefix


def test_mask_must_match_the_chunk():
    with pytest.raises(ChunkFormatError, match="does not match chunk shape"):
        encode_container(header(), np.zeros((2, 3, 4), bool), b"")
    with pytest.raises(ChunkFormatError, match="bool"):
        encode_container(header(), np.zeros((2, 3, 5), np.uint8), b"")


# --- property ----------------------------------------------------------------------


@st.composite
def chunks(draw):
    shape = tuple(draw(st.lists(st.integers(0, 6), max_size=4)))
    grid_ndim = draw(st.integers(0, len(shape)))
    density = draw(st.sampled_from([0.0, 0.05, 0.5, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mask = draw(st.sampled_from([None, rng.random(shape) < density]))
    h = header(shape, draw(st.sampled_from(["<f2", "<f4", "<f8"])), grid_ndim,
               quality=draw(st.text(max_size=30)), inner_steps=draw(st.integers(0, 2**32 - 1)))
    residual = draw(st.one_of(st.none(), st.binary(min_size=1, max_size=100)))
    return h, mask, draw(st.binary(max_size=300)), residual


@settings(max_examples=100, deadline=None)
@given(chunks(), st.data())
def test_round_trip_property(chunk, data):
    h, mask, payload, residual = chunk
    buf = encode_container(h, mask, payload, residual)
    out = decode_container(buf)
    assert out.payload == payload and out.residual == residual
    assert out.header.shape == h.shape and out.header.dtype == h.dtype
    assert (out.header.quality, out.header.inner_steps, out.header.num_items) == (h.quality, h.inner_steps, h.num_items)
    if mask is None or not mask.any():
        assert out.mask is None
    else:
        np.testing.assert_array_equal(out.mask, mask)
    # Any single corrupted byte is caught.
    i = data.draw(st.integers(0, len(buf) - 1))
    bad = bytearray(buf)
    bad[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(ChunkFormatError):
        decode_container(bytes(bad))
