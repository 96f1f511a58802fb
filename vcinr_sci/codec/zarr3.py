"""The ``vcinr`` codec's Zarr-3 face: :class:`VCINRZarrCodec`, an array-to-bytes codec
(an array's ``serializer``) that forwards to :class:`~vcinr_sci.codec.numcodecs.VCINRCodec`, so
both write and read the same bytes (see :mod:`vcinr_sci.codec.core` for the format and the
chunking rule). Needs zarr 3; the numcodecs face does not, so it lives here, and
importing this module registers it with zarr (the ``zarr.codecs`` entry point does so
in a fresh process).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from vcinr_sci.zarr_compat import require_zarr3

require_zarr3("the Zarr-3 codec VCINRZarrCodec (and so the xarray accessor and the pipelines writing stores)")

from zarr.abc.codec import ArrayBytesCodec  # noqa: E402  (after the check: zarr 2 lacks it)
from zarr.core.common import parse_named_configuration  # noqa: E402
from zarr.registry import register_codec  # noqa: E402

from vcinr_sci.codec.core import check_chunk_shape, check_dtype  # noqa: E402
from vcinr_sci.codec.numcodecs import CODEC_ID, VCINRCodec, fill_json  # noqa: E402
from vcinr_sci.errors import ChunkFormatError  # noqa: E402


@dataclass(frozen=True)
class VCINRZarrCodec(ArrayBytesCodec):
    """The ``vcinr`` codec as a Zarr-3 array-to-bytes codec (an array's ``serializer``).

    Takes the same config as :class:`VCINRCodec` (stored in ``zarr.json`` as
    ``{"name": "vcinr", "configuration": {...}}``) and forwards to it. It checks the
    array's dtype and chunk shape when the array is created (nothing is written for an
    array that breaks the chunking rule), and takes the array's fill value into its
    config when ``fill_value`` is unset. Chunks are coded in worker threads, so Zarr
    codes a batch of chunks in parallel.
    """

    is_fixed_size = False
    codec: VCINRCodec

    def __init__(self, *, codec: VCINRCodec | None = None, **config: Any) -> None:
        if codec is None:  # config keys given in code: its model_path is the caller's own
            codec = VCINRCodec.from_config(config, from_store=False)
        elif config:
            raise TypeError("give either codec= or the config keys, not both")
        object.__setattr__(self, "codec", codec)

    @classmethod
    def for_model(cls, model, quality: str, **kwargs: Any) -> "VCINRZarrCodec":
        return cls(codec=VCINRCodec.for_model(model, quality, **kwargs))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VCINRZarrCodec":
        _, config = parse_named_configuration(data, CODEC_ID)
        return cls(codec=VCINRCodec.from_config(config))  # from metadata: model_path is the store's word

    def to_dict(self) -> dict[str, Any]:
        config = self.codec.get_config()
        config.pop("id")
        return {"name": CODEC_ID, "configuration": config}

    def __hash__(self) -> int:
        return hash(self.codec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VCINRZarrCodec) and self.codec == other.codec

    def evolve_from_array_spec(self, array_spec: Any) -> "VCINRZarrCodec":
        check_dtype(array_spec.dtype.to_native_dtype())
        if self.codec.fill_value is None and array_spec.fill_value is not None:
            return VCINRZarrCodec(codec=self.codec.replace(fill_value=fill_json(float(array_spec.fill_value))))
        return self

    def validate(self, *, shape: tuple[int, ...], dtype: Any, chunk_grid: Any) -> None:
        check_dtype(dtype.to_native_dtype())
        chunk_shape = getattr(chunk_grid, "chunk_shape", None)
        if chunk_shape is not None:
            check_chunk_shape(chunk_shape, self.codec.grid_shape)
        check_chunk_shape(shape, self.codec.grid_shape)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: Any) -> int:
        raise NotImplementedError("vcinr output has a data-dependent size")

    def _encode_sync(self, chunk_array: Any, chunk_spec: Any) -> Any:
        data = self.codec.encode_array(chunk_array.as_numpy_array())
        return chunk_spec.prototype.buffer.from_bytes(data)

    def _decode_sync(self, chunk_bytes: Any, chunk_spec: Any) -> Any:
        arr = self.codec.decode_array(chunk_bytes.as_numpy_array(), expected_shape=tuple(chunk_spec.shape))
        expected = chunk_spec.dtype.to_native_dtype()
        if tuple(arr.shape) != tuple(chunk_spec.shape) or arr.dtype != expected:
            raise ChunkFormatError(
                f"chunk holds {arr.dtype} {arr.shape}, the array expects {expected} {tuple(chunk_spec.shape)}"
            )
        return chunk_spec.prototype.nd_buffer.from_numpy_array(arr)

    async def _encode_single(self, chunk_array: Any, chunk_spec: Any) -> Any:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes: Any, chunk_spec: Any) -> Any:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)


register_codec(CODEC_ID, VCINRZarrCodec)

__all__ = ["VCINRZarrCodec"]
