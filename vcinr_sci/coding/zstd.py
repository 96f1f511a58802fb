"""Zstd sections of untrusted bytes, inflated only after their declared size is checked
(a CRC-valid chunk could claim any size)."""

from __future__ import annotations

import numpy as np
from numcodecs import Zstd

from vcinr_sci.errors import ChunkFormatError

_ZSTD = Zstd()  # for decoding: the level is the encoder's business


def zstd_exact(data: bytes | memoryview, nbytes: int, what: str) -> bytes:
    """Decompress a Zstd frame that must declare exactly ``nbytes`` of content. The size
    a frame claims is checked before numcodecs allocates it: chunk bytes are untrusted."""
    claimed = _zstd_content_size(bytes(data[:18]))
    if claimed != nbytes:
        raise ChunkFormatError(f"{what}: a compressed section declares {claimed} bytes, expected {nbytes}")
    try:
        out = _ZSTD.decode(data, np.empty(nbytes, np.uint8))
    except Exception as exc:  # numcodecs raises RuntimeError/ValueError variants
        raise ChunkFormatError(f"{what} cannot be decompressed: {exc}") from None
    return np.asarray(out, np.uint8).tobytes()


def zstd_within(data: bytes | memoryview, max_nbytes: int, what: str, itemsize: int = 1) -> bytes:
    """Decompress a Zstd frame whose declared content size is a multiple of ``itemsize``
    and at most ``max_nbytes`` (for sections whose size is bounded, not known, before
    decoding)."""
    claimed = _zstd_content_size(bytes(data[:18]))
    if claimed is None or claimed > max_nbytes or claimed % itemsize:
        raise ChunkFormatError(
            f"{what}: a compressed section declares {claimed} bytes, expected a multiple of {itemsize} "
            f"up to {max_nbytes}"
        )
    return zstd_exact(data, claimed, what)


def _zstd_content_size(head: bytes) -> int | None:
    """The content size a Zstd frame header declares (RFC 8878, 3.1.1.1), or None."""
    if len(head) < 6 or head[:4] != b"\x28\xb5\x2f\xfd":
        return None
    descriptor = head[4]
    single_segment = bool(descriptor & 0x20)
    fcs_size = (0, 2, 4, 8)[descriptor >> 6] or (1 if single_segment else 0)
    pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 0x3]
    if not fcs_size or len(head) < pos + fcs_size:
        return None
    size = int.from_bytes(head[pos : pos + fcs_size], "little")
    return size + 256 if fcs_size == 2 else size
