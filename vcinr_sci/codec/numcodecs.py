"""The ``vcinr`` codec's numcodecs face: :class:`VCINRCodec` (``codec_id = "vcinr"``,
entry point ``numcodecs.codecs``), a Zarr format 2 compressor and anything else that takes
numcodecs codecs. Needs neither zarr 3 nor numcodecs 0.16 (works with zarr 2.18 /
numcodecs 0.15). The format and the chunking rule: :mod:`vcinr_sci.codec.core`."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_ndarray_like, ndarray_copy

from vcinr_sci.codec.core import HEX64, check_chunk_shape, decode_chunk, encode_chunk
from vcinr_sci.coding.bound import ErrorBound, check_correction
from vcinr_sci.data.grids import grid_from_dict
from vcinr_sci.errors import (
    BoundError,
    CodecError,
)
from vcinr_sci.model.artifact import ModelArtifact
from vcinr_sci.model.loaded import (
    LoadedModel,
)
from vcinr_sci.model.registry import (
    Hint,
    StoreModelPath,
    default_inner_steps,
    get_model,
    resolve_model,
)
from vcinr_sci.threads import codec_threads, torch_threads

CODEC_ID = "vcinr"
_CONFIG_KEYS = {
    "model_hash", "model_path", "quality", "grid", "inner_steps", "fill_value", "max_abs_error", "max_rel_error",
    "correction",
}
_REQUIRED_KEYS = {"model_hash", "quality", "grid"}


def _parse_fill(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        table = {"nan": math.nan, "infinity": math.inf, "-infinity": -math.inf, "inf": math.inf, "-inf": -math.inf}
        if value.lower() not in table:
            raise CodecError(f"fill_value {value!r} is not a number, 'NaN', 'Infinity' or '-Infinity'")
        return table[value.lower()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise CodecError(f"fill_value must be a number or None, got {value!r}")
    return float(value)


def fill_json(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _grids_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.get("type") != b.get("type") or set(a) != set(b):
        return False
    for k in a:
        if k == "type":
            continue
        va, vb = a[k], b[k]
        if k == "axes":
            if len(va) != len(vb) or any(len(x) != len(y) or not np.allclose(x, y) for x, y in zip(va, vb)):
                return False
        elif len(va) != len(vb) or not np.allclose(va, vb):
            return False
    return True


class VCINRCodec(Codec):
    """The ``vcinr`` numcodecs codec (see the module doc for the chunking rule).

    Config (all JSON): ``model_hash`` (64 hex; chunks hold a 16-hex prefix of it, which
    decoding checks against it), ``model_path`` (where to find it: folder
    or URI, or None; read from a store's metadata, followed only with
    ``$VCINR_TRUST_STORE_PATHS=1``, see :meth:`model_hints`), ``quality`` (a level of the model's coders), ``grid`` (the model
    grid's description, checked against the model at encode time), ``inner_steps`` (the
    adaptation steps at encode time; None = the model's default, see
    :func:`default_inner_steps`), ``fill_value`` (a number, "NaN", or None),
    ``max_abs_error`` / ``max_rel_error`` (the error bound, see the module doc; None = no
    guarantee), ``correction`` (with a bound: how the correction is coded, "smallest"
    (default: per chunk the fewer bytes of rANS and SPERR), "rans" or "sperr" (lower MSE
    at the same bound, for PSNR); see :mod:`vcinr_sci.coding.bound`). The bound keys
    appear in :meth:`get_config` only when set (``correction`` only when not the default),
    so a config without them stays readable by readers that predate them.
    """

    codec_id = CODEC_ID

    def __init__(
        self,
        model_hash: str,
        quality: str,
        grid: dict[str, Any],
        inner_steps: int | None = None,
        model_path: str | None = None,
        fill_value: float | str | None = None,
        max_abs_error: float | None = None,
        max_rel_error: float | None = None,
        correction: str = "smallest",
    ):
        if not isinstance(model_hash, str) or not HEX64.fullmatch(model_hash.lower()):
            raise CodecError(f"model_hash must be the model's full 64-hex content hash, got {model_hash!r}")
        if not isinstance(quality, str) or not quality:
            raise CodecError(f"quality must be a non-empty level label, got {quality!r}")
        if not isinstance(grid, dict):
            raise CodecError(f"grid must be a grid description (dict), got {type(grid).__name__}")
        try:
            self._grid_shape = tuple(grid_from_dict(grid).shape)
        except (KeyError, TypeError, ValueError) as e:
            raise CodecError(f"invalid grid description: {e}") from None
        if inner_steps is not None and (not isinstance(inner_steps, int) or inner_steps < 0):
            raise CodecError(f"inner_steps must be a non-negative int or None, got {inner_steps!r}")
        if model_path is not None and not isinstance(model_path, str):
            model_path = os.fspath(model_path)
        self.model_hash = model_hash.lower()
        self.model_path = model_path
        self.quality = quality
        self.grid = grid
        self.inner_steps = inner_steps
        self._fill = _parse_fill(fill_value)
        self.fill_value = fill_json(self._fill)
        try:
            check_correction(correction)  # refused with or without a bound
            bounded = max_abs_error is not None or max_rel_error is not None
            self._bound = ErrorBound(max_abs_error, max_rel_error, correction) if bounded else None
        except BoundError as e:
            raise CodecError(str(e)) from None
        self.correction = correction
        self.max_abs_error = None if self._bound is None else self._bound.max_abs_error
        self.max_rel_error = None if self._bound is None else self._bound.max_rel_error
        self._checked = False
        self._path_from_store = False  # model_path given in code: the user's own (see from_config)

    @classmethod
    def for_model(
        cls,
        model: ModelArtifact | LoadedModel | str | os.PathLike,
        quality: str,
        inner_steps: int | None = None,
        model_path: str | None = None,
        fill_value: float | str | None = None,
        max_abs_error: float | None = None,
        max_rel_error: float | None = None,
        correction: str = "smallest",
    ) -> "VCINRCodec":
        """A codec for ``model`` (an artifact, a loaded model, an artifact folder or a
        hash): fills in hash, grid, inner steps and (for a folder) ``model_path``, and
        puts the model in the process cache."""
        loaded = resolve_model(model)
        art = loaded.artifact
        loaded.coder(quality)  # refuse an unknown level now
        if model_path is None and art.path is not None:
            model_path = str(Path(art.path).resolve())
        steps = default_inner_steps(art) if inner_steps is None else inner_steps
        return cls(art.hash, quality, art.grid.to_dict(), steps, model_path, fill_value, max_abs_error, max_rel_error,
                   correction)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return self._grid_shape

    @property
    def bound(self) -> ErrorBound | None:
        """The error bound this codec guarantees, or None."""
        return self._bound

    @property
    def fill(self) -> float | None:
        """``fill_value`` as a float (NaN included), or None."""
        return self._fill

    def get_config(self) -> dict[str, Any]:
        config = {
            "id": self.codec_id,
            "model_hash": self.model_hash,
            "model_path": self.model_path,
            "quality": self.quality,
            "grid": self.grid,
            "inner_steps": self.inner_steps,
            "fill_value": self.fill_value,
        }
        for key in ("max_abs_error", "max_rel_error"):
            if getattr(self, key) is not None:
                config[key] = getattr(self, key)
        if self.correction != "smallest":
            config["correction"] = self.correction
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], *, from_store: bool = True) -> "VCINRCodec":
        """The codec of a config, by default as read from a store's metadata (numcodecs,
        Zarr 2 and 3 call it so): its ``model_path`` is then the store's word, followed
        only when the user trusts store paths (see :meth:`model_hints`)."""
        config = {k: v for k, v in config.items() if k != "id"}
        unknown = set(config) - _CONFIG_KEYS
        if unknown:
            raise CodecError(f"unknown vcinr codec config key(s) {sorted(unknown)}")
        missing = _REQUIRED_KEYS - set(config)
        if missing:
            raise CodecError(f"the vcinr codec config lacks {sorted(missing)}")
        try:
            codec = cls(**config)
        except TypeError as e:  # a value of a type no check above expects (model_path: 7)
            raise CodecError(f"invalid vcinr codec config: {e}") from None
        codec._path_from_store = from_store
        return codec

    def replace(self, **changes: Any) -> "VCINRCodec":
        """This codec with config keys ``changes`` replaced; its ``model_path`` keeps
        its provenance (given in code, or read from a store)."""
        codec = type(self)(**({k: v for k, v in self.get_config().items() if k != "id"} | changes))
        codec._path_from_store = self._path_from_store
        return codec

    def model_hints(self) -> list[Hint]:
        """Where to look for the model besides the usual places: ``model_path`` as given
        in code, or as a :class:`StoreModelPath` when read from a store's metadata
        (:meth:`from_config`: numcodecs, Zarr 2 and 3 build codecs so), which the lookup
        follows only with ``$VCINR_TRUST_STORE_PATHS=1``."""
        if not self.model_path:
            return []
        return [StoreModelPath(self.model_path) if self._path_from_store else self.model_path]

    def __repr__(self) -> str:
        return (
            f"VCINRCodec(model={self.model_hash[:16]}, quality={self.quality!r}, grid={self._grid_shape}, "
            f"inner_steps={self.inner_steps}, fill_value={self.fill_value!r}, "
            f"max_abs_error={self.max_abs_error!r}, max_rel_error={self.max_rel_error!r})"
        )

    def __hash__(self) -> int:
        return hash(json.dumps(self.get_config(), sort_keys=True))

    def model(self) -> LoadedModel:
        """This codec's model, loaded once per process; on first use its grid is checked
        against the config's grid description."""
        loaded = get_model(self.model_hash, self.model_hints())
        if not self._checked:
            if not _grids_equal(loaded.grid.to_dict(), self.grid):
                raise CodecError(
                    f"the codec's grid description {self._grid_shape} differs from model "
                    f"{self.model_hash[:16]}'s grid {tuple(loaded.grid.shape)}"
                )
            self._checked = True
        return loaded

    def encode_array(self, x: np.ndarray) -> bytes:
        """Encode an ``(items..., *grid)`` float array (format-agnostic entry point)."""
        loaded = self.model()
        steps = self.inner_steps if self.inner_steps is not None else default_inner_steps(loaded.artifact)
        with torch_threads(codec_threads()):  # Zarr and dask run chunks in parallel already
            return encode_chunk(x, loaded, self.quality, steps, self._fill, self._bound)

    def decode_array(
        self, buf: Any, expected_shape: tuple[int, ...] | None = None, expected_nbytes: int | None = None
    ) -> np.ndarray:
        """Decode container bytes to the array they hold (a header claiming another size
        than ``expected_shape`` / ``expected_nbytes``, when given, is refused unread)."""
        with torch_threads(codec_threads()):
            return decode_chunk(
                _as_bytes(buf), self.model_hints(), self._fill, expected_shape, expected_nbytes, self.model_hash
            )

    def encode(self, buf: Any) -> bytes:
        arr = ensure_ndarray_like(buf)
        if arr.dtype.kind == "f" and arr.ndim == 1 and len(self._grid_shape) > 1:
            size = math.prod(self._grid_shape)
            if arr.size % size:
                check_chunk_shape(arr.shape, self._grid_shape)  # raises
            arr = arr.reshape(-1, *self._grid_shape)  # a flat buffer of whole fields
        return self.encode_array(np.asarray(arr))

    def decode(self, buf: Any, out: Any = None) -> np.ndarray:
        nbytes = None if out is None else ensure_ndarray_like(out).nbytes
        arr = self.decode_array(buf, expected_nbytes=nbytes)
        if out is not None:
            dst = ensure_ndarray_like(out)
            if dst.nbytes != arr.nbytes:
                raise CodecError(f"output buffer of {dst.nbytes} bytes, decoded chunk has {arr.nbytes}")
            return ndarray_copy(arr, out)
        return arr


def _as_bytes(buf: Any) -> Any:
    if isinstance(buf, (bytes, bytearray, memoryview)):
        return buf
    return np.ascontiguousarray(ensure_ndarray_like(buf)).view(np.uint8).reshape(-1)


def codec_of(array: Any) -> VCINRCodec | None:
    """The :class:`VCINRCodec` of a zarr array (format 2 or 3; zarr 2 or 3), or None."""
    held = getattr(getattr(array, "serializer", None), "codec", None)  # the Zarr-3 face holds one
    if isinstance(held, VCINRCodec):
        return held
    compressors = getattr(array, "compressors", None)
    if compressors is None:  # zarr 2's arrays have a single compressor
        compressors = (getattr(array, "compressor", None),)
    for c in compressors:
        if isinstance(c, VCINRCodec):
            return c
    return None




def _register() -> None:
    """Register the codec in-process too (entry points cover fresh processes). The
    Zarr-3 face registers itself when imported (``import vcinr_sci`` does so with zarr 3)."""
    from numcodecs.registry import codec_registry, register_codec

    if codec_registry.get(CODEC_ID) is not VCINRCodec:
        register_codec(VCINRCodec)


_register()
