"""Unsigned LEB128 varints of untrusted bytes: at most 10 bytes, below 2**64, canonical.

A small integer costs one byte (< 128), two below 16384. The reader is bounded (it never
reads past 10 bytes or the buffer's end) and refuses a non-canonical encoding (a
redundant zero group at the end), so each value has exactly one encoding and a damaged
length cannot hide in padding. (The ``leb128`` package's decoder reads without a bound
and checks nothing, which is why this is not it.)
"""

from __future__ import annotations

from vcinr_sci.errors import ChunkFormatError

MAX_BYTES = 10  # ceil(64 / 7)
LIMIT = 2**64


def encode_uvarint(value: int) -> bytes:
    """``value`` (in ``[0, 2**64)``) as an unsigned LEB128 varint."""
    if not 0 <= value < LIMIT:
        raise ChunkFormatError(f"a varint holds an integer in [0, 2**64), got {value}")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def read_uvarint(data: bytes | bytearray | memoryview, pos: int, what: str) -> tuple[int, int]:
    """The varint at ``data[pos:]`` and the position after it; :class:`ChunkFormatError`
    (naming ``what``) if it runs past the end, is longer than 10 bytes, reaches 2**64 or
    is not canonical."""
    value = 0
    for i in range(MAX_BYTES):
        if pos + i >= len(data):
            raise ChunkFormatError(f"truncated header: {what} runs past the end of the chunk")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i and not byte:
                raise ChunkFormatError(f"corrupt header: {what} is not a canonical varint")
            if value >= LIMIT:
                raise ChunkFormatError(f"corrupt header: {what} exceeds 64 bits")
            return value, pos + i + 1
    raise ChunkFormatError(f"corrupt header: {what} is a varint longer than {MAX_BYTES} bytes")
