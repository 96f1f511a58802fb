"""Tests of the vcinr chunk container (vcinr_sci.codec.container)."""

from __future__ import annotations

import dataclasses
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcinr_sci.codec.container import (
    FLAG_ALL_MASKED,
    FLAG_HAS_MASK,
    FORMAT_VERSION,
    LEGACY_MAGIC,
    MAGIC,
    ChunkHeader,
    decode_container,
    encode_container,
    read_raw_header,
    seal,
)
from vcinr_sci.errors import ChunkFormatError

HASH = "0123456789abcdef" * 4
PREFIX = HASH[:16]  # what a format-3 chunk stores
GOLDEN = Path(__file__).resolve().parent / "golden"


def header(shape=(2, 3, 5), dtype="<f4", grid_ndim=2, **kw) -> ChunkHeader:
    fields = dict(model_hash=HASH, shape=shape, dtype=dtype, num_items=math.prod(shape[: len(shape) - grid_ndim]),
                  quality="q30", inner_steps=3)
    return ChunkHeader(**(fields | kw))


def small_chunk() -> bytes:
    mask = np.zeros((2, 3, 5), bool)
    mask[0, 1, 2] = mask[1, 2, 4] = True
    return encode_container(header(), mask, b"latent payload")


def rewrite(buf: bytes, **fields) -> bytes:
    """``buf`` (format 3) with header fields replaced and the CRC recomputed: a chunk
    that is well-checksummed but inconsistent, as a faulty writer would make."""
    raw, end = read_raw_header(buf)
    return seal(dataclasses.replace(raw, **fields).pack() + buf[end:])


def golden(name: str) -> bytes:
    return (GOLDEN / f"{name}.vcinr").read_bytes()


def legacy_resign(buf: bytes) -> bytes:
    """Recompute a format 1 or 2 chunk's header crc (well-checksummed but inconsistent)."""
    b = bytearray(buf)
    header_len = struct.unpack_from("<H", b, 6)[0]
    struct.pack_into("<I", b, 8, zlib.crc32(b[12:header_len], zlib.crc32(b[:8])))
    return bytes(b)


# --- round trips -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["<f2", "<f4", "<f8", ">f2", ">f4", ">f8"])
@pytest.mark.parametrize("shape", [(4, 6), (3, 7, 13), (2, 1, 3, 5), (1,), (), (2**40, 300, 2**63)])
def test_round_trip_without_mask(shape, dtype):
    h = header(shape, dtype, grid_ndim=min(2, len(shape)))
    out = decode_container(encode_container(h, None, b"\x00\x01payload"), expected_shape=shape)
    assert out.header.model_hash == PREFIX and out.header.shape == shape and out.header.dtype == dtype
    assert out.header.num_items == h.num_items and out.header.flags == 0
    assert out.mask is None and out.payload == b"\x00\x01payload"


def test_dtypes_and_dims_a_chunk_cannot_hold_are_refused():
    with pytest.raises(ChunkFormatError, match="float16, float32 or float64"):
        encode_container(header(dtype="<i2"), None, b"p")
    with pytest.raises(ChunkFormatError, match="at most 15 dims"):
        encode_container(header((1,) * 16), None, b"p")


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
    h = header(flags=FLAG_HAS_MASK)  # the caller's value is ignored
    nothing = decode_container(encode_container(h, np.zeros(h.shape, bool), b"p"))
    assert nothing.mask is None and nothing.header.flags == 0

    buf = encode_container(h, np.ones(h.shape, bool), b"")
    everything = decode_container(buf)
    assert everything.header.flags == FLAG_ALL_MASKED and everything.mask.all()
    assert everything.mask.shape == h.shape
    assert len(buf) == len(encode_container(h, None, b""))  # an all-True mask costs no bytes


def test_decoded_header_equals_encoded_except_derived_fields():
    buf = small_chunk()
    out = decode_container(buf)
    assert out.header == header(flags=FLAG_HAS_MASK, model_hash=PREFIX)
    header_out, mask, payload, residual = out  # unpacks like a tuple too
    assert payload == b"latent payload" and mask.sum() == 2 and residual is None


def test_mask_is_compressed():
    mask = np.zeros((4, 181, 360), bool)
    mask[:, 60:120] = True
    buf = encode_container(header(mask.shape), mask, b"")
    assert len(buf) < mask.size // 8 // 20


def test_layout_offsets_match_the_format_doc():
    buf = small_chunk()
    assert buf[:2] == MAGIC and buf[2] == 3 == FORMAT_VERSION
    assert struct.unpack_from("<I", buf, 3)[0] == zlib.crc32(buf[7:], zlib.crc32(buf[:3]))
    assert buf[7] == FLAG_HAS_MASK | 2 << 4  # dtype code 2: <f4
    assert buf[8] == 3 | 1 << 4  # 3 dims, the first counts the items
    assert buf[9:17] == bytes.fromhex(HASH)[:8]
    assert buf[17:20] == bytes([2, 3, 5]) and buf[20] == 3  # shape, inner_steps
    assert buf[21:25] == b"\x03q30"
    mask_len = buf[25]
    assert buf[26] == len(b"latent payload") and len(buf) == 27 + mask_len + 14
    assert buf.endswith(b"latent payload")


def test_varints_take_more_bytes_only_for_larger_values():
    h = header((300, 20000, 5), inner_steps=2**32 - 1)
    buf = encode_container(h, None, bytes(200))
    assert buf[17:24] == bytes([0xAC, 0x02, 0xA0, 0x9C, 0x01, 0x05, 0xFF])  # 300, 20000, 5, then inner_steps
    assert decode_container(buf).header == dataclasses.replace(h, model_hash=PREFIX)


def test_overhead_of_a_64_field_chunk_is_under_a_tenth_of_its_latents():
    """At 45 dB a 64-field chunk of a 64 x 128 grid holds ~300 bytes of latents."""
    h = header((64, 64, 128), quality="q1", inner_steps=10)
    assert len(encode_container(h, None, bytes(300))) - 300 == 27


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
    with pytest.raises(ChunkFormatError, match="not a vcinr chunk"):
        decode_container(b"VCINX" + golden("v1_uniform")[5:])


def test_unknown_version():
    buf = bytearray(small_chunk())
    buf[2] = FORMAT_VERSION + 1
    with pytest.raises(ChunkFormatError, match=rf"version {FORMAT_VERSION + 1}.*supports \[1, 2, 3\]"):
        decode_container(bytes(buf))
    old = bytearray(golden("v1_uniform"))
    old[5] = 3  # the old magic with the new version
    with pytest.raises(ChunkFormatError, match="version 3 after magic b'VCINR'"):
        decode_container(bytes(old))


# --- the residual section (version 2) ----------------------------------------------


def residual_chunk(residual: bytes = b"residual bytes") -> bytes:
    mask = np.zeros((2, 3, 5), bool)
    mask[0, 1, 2] = True
    return encode_container(header(), mask, b"latent payload", residual)


def test_residual_round_trip_and_layout():
    buf = residual_chunk()
    out = decode_container(buf)
    assert buf[2] == 3 and out.residual == b"residual bytes" and out.payload == b"latent payload"
    assert buf[7] & 0x0F == FLAG_HAS_MASK | 1 << 2  # the residual flag
    raw, end = read_raw_header(buf)
    assert raw.residual_len == 14 and buf[end - 1] == 14  # residual_len ends the header
    assert buf.endswith(b"latent payloadresidual bytes")
    # the same chunk without a residual: no flag, no residual_len, one byte shorter header
    plain = encode_container(out.header, out.mask, out.payload)
    assert decode_container(plain).residual is None and decode_container(plain).header == out.header
    assert len(plain) == len(buf) - 14 - 1 and plain[7] & 1 << 2 == 0


def test_residual_damage_is_refused():
    buf = residual_chunk()
    for n in (len(buf) - 1, len(buf) - 14, len(buf) - 20):
        with pytest.raises(ChunkFormatError, match="checksum mismatch"):
            decode_container(buf[:n])
    with pytest.raises(ChunkFormatError, match="checksum mismatch"):
        decode_container(buf + b"\0")
    with pytest.raises(ChunkFormatError, match="must hold one"):
        decode_container(rewrite(buf[:-14], residual_len=0))
    for i in range(len(buf)):  # every flipped byte, the residual fields included
        bad = bytearray(buf)
        bad[i] ^= 0x40
        with pytest.raises(ChunkFormatError):
            decode_container(bytes(bad))


def test_empty_residual_refused():
    with pytest.raises(ChunkFormatError, match="empty residual"):
        encode_container(header(), None, b"p", b"")


def all_chunks() -> dict[str, bytes]:
    """Format-3 chunks of every kind: plain, masked, all masked, with a residual section."""
    return {
        "plain": encode_container(header(), None, b"latent payload"),
        "masked": small_chunk(),
        "all masked": encode_container(header(), np.ones((2, 3, 5), bool), b""),
        "residual": residual_chunk(),
    }


@pytest.mark.parametrize("kind", ["plain", "masked", "all masked", "residual"])
def test_truncation_at_every_position_is_detected(kind):
    buf = all_chunks()[kind]
    for n in range(len(buf)):
        with pytest.raises(ChunkFormatError, match=rf"(truncated.*got {n}|checksum mismatch over the chunk's {n} bytes)"):
            decode_container(buf[:n])


@pytest.mark.parametrize("kind", ["plain", "masked", "all masked", "residual"])
def test_trailing_bytes_are_rejected(kind):
    buf = all_chunks()[kind]
    for extra in (b"\x00", b"\xff" * 4, struct.pack("<I", zlib.crc32(buf))):
        with pytest.raises(ChunkFormatError, match="checksum mismatch"):
            decode_container(buf + extra)


@pytest.mark.parametrize("kind", ["plain", "masked", "all masked", "residual"])
def test_every_single_byte_corruption_is_detected(kind):
    buf = all_chunks()[kind]
    assert decode_container(buf).payload == (b"" if kind == "all masked" else b"latent payload")
    for i in range(len(buf)):
        for value in range(256):
            if value != buf[i]:
                bad = bytearray(buf)
                bad[i] = value
                with pytest.raises(ChunkFormatError):
                    decode_container(bytes(bad))


def test_checksum_is_checked_before_any_field_is_used():
    """A damaged chunk claiming a huge shape is refused by its CRC: the caller's
    check_header is never called and nothing of the claimed size is allocated."""
    buf = bytearray(rewrite(small_chunk(), shape=(2**40, 2**20, 2**20)))
    buf[-1] ^= 1
    called = []
    with pytest.raises(ChunkFormatError, match="checksum mismatch"):
        decode_container(bytes(buf), check_header=called.append)
    assert not called


def test_checksummed_but_inconsistent_chunks():
    buf = small_chunk()
    raw, end = read_raw_header(buf)
    cases = [
        (dict(flags=raw.flags | FLAG_ALL_MASKED), "all-masked"),
        (dict(flags=raw.flags | 1 << 3), "unknown to format version 3"),
        (dict(flags=raw.flags & 0x0F), "unknown dtype code 0"),
        (dict(flags=raw.flags & 0x0F | 7 << 4), "unknown dtype code 7"),
        (dict(dims=3 | 4 << 4), "4 item dims in a chunk of 3"),
        (dict(shape=(3, 3, 5)), "num_items|stored mask"),
        (dict(quality=b"\xff\xfe"), "header text"),
        (dict(inner_steps=2**32), "inner_steps"),
        (dict(payload_len=raw.payload_len + 1), "truncated"),
        (dict(payload_len=raw.payload_len - 1), "trailing bytes"),
        (dict(mask_len=raw.mask_len - 1, payload_len=raw.payload_len + 1), "stored mask"),
    ]
    for fields, message in cases:
        with pytest.raises(ChunkFormatError, match=message):
            decode_container(rewrite(buf, **fields))
    # clearing the has-mask flag drops mask_len, so the mask would be read as payload
    with pytest.raises(ChunkFormatError, match="trailing bytes"):
        decode_container(rewrite(buf, flags=raw.flags & ~FLAG_HAS_MASK))
    with pytest.raises(ChunkFormatError, match="a chunk flagged with a residual section"):
        decode_container(rewrite(buf, flags=raw.flags | 1 << 2, residual_len=0))
    with pytest.raises(ChunkFormatError, match="truncated header"):
        decode_container(seal(buf[: end - 1]))


@pytest.mark.parametrize(
    ("varint", "message"),
    [
        (b"\x8e\x00", "not a canonical varint"),  # 14 with a redundant zero group
        (b"\x80" * 10 + b"\x01", "longer than 10 bytes"),
        (b"\xff" * 9 + b"\x02", "exceeds 64 bits"),
        (b"\x80\x80", "runs past the end"),
    ],
)
def test_malformed_varints_are_refused(varint, message):
    buf = encode_container(header(), None, b"latent payload")
    end = read_raw_header(buf)[1]
    assert buf[end - 1] == 14  # payload_len ends this header
    with pytest.raises(ChunkFormatError, match=message):
        decode_container(seal(buf[: end - 1] + varint + (buf[end:] if "past" not in message else b"")))


# --- formats 1 and 2: still read (the golden chunks, and crafted edits of them) ------


@pytest.mark.parametrize("name", ["v1_uniform", "v1_learned_mask", "v2_abs_bound_means_mask", "v2_rel_bound"])
def test_legacy_chunks_decode_with_their_full_hash(name):
    buf = golden(name)
    out = decode_container(buf)
    assert buf[:5] == LEGACY_MAGIC and buf[5] == int(name[1])
    assert out.header.model_hash == buf[12:44].hex() and len(out.header.model_hash) == 64
    assert (out.residual is not None) == (buf[5] == 2)
    assert (out.mask is not None) == (out.header.flags == FLAG_HAS_MASK)


def test_legacy_layout_offsets():
    buf = golden("v1_learned_mask")  # (2, 37, 49) float32, a mask, quality "q0"
    assert struct.unpack_from("<H", buf, 44)[0] == FLAG_HAS_MASK
    assert buf[46:49] == bytes([3, 3, 2])  # ndim, len("<f4"), len("q0")
    assert struct.unpack_from("<3Q", buf, 81) == (2, 37, 49)
    assert struct.unpack_from("<H", buf, 6)[0] == 81 + 24 + 5 and buf[105:110] == b"<f4q0"
    v2 = golden("v2_rel_bound")
    header_len = struct.unpack_from("<H", v2, 6)[0]
    residual = decode_container(v2).residual
    assert struct.unpack_from("<QI", v2, header_len - 12) == (len(residual), zlib.crc32(residual))


@pytest.mark.parametrize("name", ["v1_learned_mask", "v2_rel_bound"])
def test_legacy_truncation_and_trailing_bytes(name):
    buf = golden(name)
    for n in range(0, len(buf), 1 if name.startswith("v1") else 7):
        with pytest.raises(ChunkFormatError, match=rf"truncated.*got {n}$"):
            decode_container(buf[:n])
    with pytest.raises(ChunkFormatError, match=rf"trailing bytes.*expected {len(buf)} bytes, got {len(buf) + 1}"):
        decode_container(buf + b"\x00")


def test_legacy_every_flipped_bit_is_detected():
    buf = golden("v1_learned_mask")
    for i in range(len(buf)):
        for bit in range(8):
            bad = bytearray(buf)
            bad[i] ^= 1 << bit
            with pytest.raises(ChunkFormatError):
                decode_container(bytes(bad))
    buf = golden("v2_rel_bound")
    for i in range(0, len(buf), 3):
        bad = bytearray(buf)
        bad[i] ^= 0x40
        with pytest.raises(ChunkFormatError):
            decode_container(bytes(bad))


@pytest.mark.parametrize("where", ["header", "mask", "payload", "residual"])
def test_legacy_checksum_messages(where):
    buf = bytearray(golden("v2_abs_bound_means_mask"))
    header_len = struct.unpack_from("<H", buf, 6)[0]
    i = {"header": 60, "mask": header_len, "payload": header_len + 47, "residual": len(buf) - 1}[where]
    buf[i] ^= 0xFF
    part = {"mask": "payload"}.get(where, where)
    with pytest.raises(ChunkFormatError, match=f"{part} checksum mismatch"):
        decode_container(bytes(buf))


def test_legacy_checksummed_but_inconsistent_chunks():
    buf = bytearray(golden("v1_learned_mask"))
    buf[47] = 4  # dtype_len
    with pytest.raises(ChunkFormatError, match="header_len disagrees"):
        decode_container(legacy_resign(bytes(buf)))

    buf = bytearray(golden("v1_learned_mask"))
    buf[44] = 0  # clear the has-mask flag while mask bytes remain
    with pytest.raises(ChunkFormatError, match="flag is clear"):
        decode_container(legacy_resign(bytes(buf)))

    buf = bytearray(golden("v1_learned_mask"))
    buf[44] = FLAG_HAS_MASK | FLAG_ALL_MASKED
    with pytest.raises(ChunkFormatError, match="all-masked"):
        decode_container(legacy_resign(bytes(buf)))

    buf = bytearray(golden("v1_learned_mask"))
    buf[105:108] = b"f4 "  # not a canonical dtype str
    with pytest.raises(ChunkFormatError, match="dtype"):
        decode_container(legacy_resign(bytes(buf)))

    buf = bytearray(golden("v1_learned_mask"))
    struct.pack_into("<Q", buf, 81, 3)  # shape (3, 37, 49): num_items wrong
    with pytest.raises(ChunkFormatError, match="num_items"):
        decode_container(legacy_resign(bytes(buf)))

    buf = bytearray(golden("v2_rel_bound"))
    header_len = struct.unpack_from("<H", buf, 6)[0]
    struct.pack_into("<Q", buf, header_len - 12, 0)  # a version-2 chunk claiming no residual
    with pytest.raises(ChunkFormatError, match="must hold a residual"):
        decode_container(legacy_resign(bytes(buf)))


# --- invalid header fields ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(model_hash="abc"), "64 hex"),
        (dict(model_hash="g" * 64), "64 hex"),
        (dict(model_hash=HASH[:15]), "64 hex"),
        (dict(model_hash=HASH[:17]), "64 hex"),
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
    assert header(model_hash=PREFIX.upper()).model_hash == PREFIX  # a format-3 chunk's prefix
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
