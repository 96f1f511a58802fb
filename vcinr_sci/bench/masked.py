"""Classical codecs on fields with missing values: the NaN mask stored beside them.

SZ3, SPERR, ZFP and the rest code every point of a dense array, so a field with NaN
points (land in a sea-surface field) needs them filled and the mask stored: the codec
here writes ``zlib(packed mask bits)`` and the inner codecs' bytes for the field with its
NaN points set to the mean of its valid points, and puts the NaN back on decode. Every
byte is counted.
"""

from __future__ import annotations

import zlib
from typing import Any, Sequence

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_bytes, ensure_ndarray_like

_LEN_BYTES = 4


class NanMasked(Codec):
    """``pipeline`` (filters..., compressor) on the NaN-filled field, plus its mask."""

    codec_id = "vcinr-bench-nan-masked"  # not registered: a benchmark codec

    def __init__(self, pipeline: Sequence[Codec], shape: Sequence[int], dtype: Any):
        self.pipeline, self.shape, self.dtype = list(pipeline), tuple(shape), np.dtype(dtype)

    def encode(self, buf: Any) -> bytes:
        x = np.asarray(ensure_ndarray_like(buf), self.dtype).reshape(self.shape)
        nan = np.isnan(x)
        filled = np.where(nan, np.nanmean(x) if not nan.all() else 0.0, x).astype(self.dtype)
        mask = zlib.compress(np.packbits(nan).tobytes(), 9)
        out: Any = filled
        for codec in self.pipeline:
            out = codec.encode(out)
        inner = bytes(out) if not isinstance(out, np.ndarray) else out.tobytes()
        return len(mask).to_bytes(_LEN_BYTES, "little") + mask + inner

    def decode(self, buf: Any, out: Any = None) -> np.ndarray:
        data = ensure_bytes(buf)
        size = int.from_bytes(data[:_LEN_BYTES], "little")
        nan = np.unpackbits(np.frombuffer(zlib.decompress(data[_LEN_BYTES : _LEN_BYTES + size]), np.uint8))
        values: Any = data[_LEN_BYTES + size :]
        for codec in reversed(self.pipeline):
            values = codec.decode(values)
        arr = ensure_ndarray_like(values)
        if arr.dtype != self.dtype:  # a bytes compressor last hands back raw bytes
            arr = arr.view(self.dtype)
        n = int(np.prod(self.shape))
        x = np.where(nan[:n].reshape(self.shape).astype(bool), np.nan, arr.reshape(self.shape)).astype(self.dtype)
        if out is not None:
            np.copyto(np.asarray(out).reshape(self.shape), x)
            return out
        return x
