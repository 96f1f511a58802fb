"""Baselines that see the same training data as vcinr, as codecs with real bytes.

A user who holds vcinr's training fields can also store, once, their mean field and
their leading EOFs (principal components of the training anomalies), and code each new
field against them. These codecs do that, fitted on the training part of the vcinr
model's own data split:

- **mean field + SPERR / SZ3**: the anomaly (field minus the training mean) through
  SPERR's point-wise-error or SZ3's absolute-bound mode (imagecodecs' numcodecs codecs,
  the code paths ``vcinr bench codecs`` uses for them);
- **EOF-k**: the anomaly's coefficients on the first ``k`` EOFs, quantised with a step of
  ``step`` x (each coefficient's training standard deviation) and coded with compressai's
  rANS under a Gaussian of that deviation (one table for all: every coefficient is coded
  in units of its own deviation);
- **EOF abs-step**: the same coefficients quantised with one absolute step for all (reverse
  water-filling: a coefficient whose deviation is well below the step rounds to 0 and
  costs almost nothing, so ``k`` can be large), each coded under a Gaussian of its own
  deviation in units of that step (a table per coefficient);
- **EOF-k + SPERR / SZ3**: the residual after EOF-k through SPERR or SZ3 (high PSNR, and
  a point-wise bound, which the residual codec keeps).

Their *model* (mean field, EOFs, deviations: what a decoder needs besides the chunks) is
one safetensors file of float32 tensors; its size is counted as vcinr's model file is.

Masked points: the EOFs span the points valid in every training field; a field's NaN
points come back NaN, at no cost when they are the model's own mask (points missing in
every training field, e.g. land), else with the field's mask stored (zlib of the packed
bits). Like a vcinr chunk, one baseline chunk codes ``n`` fields with one rANS string.
"""

from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_bytes, ensure_ndarray_like
from safetensors.numpy import save as st_save
from scipy.stats import norm

from vcinr_sci.coding.rans import RansTables, decode_with_indexes, encode_with_indexes
from vcinr_sci.coding.varint import encode_uvarint, read_uvarint
from vcinr_sci.config import DataConfig
from vcinr_sci.data.sources import FieldSource, open_variable
from vcinr_sci.errors import ChunkFormatError

_CDF_PRECISION = 16  # bits of compressai's quantised CDFs
_TABLE_SIGMAS = 6.0  # the Gaussian table covers +-6 deviations; beyond, rANS escapes (bypass)
# The finest bin (in deviations) a table may have: ~12,000 symbols, each of which the
# 16-bit CDF gives at least one count, costing ~0.3 bits a coefficient over its entropy.
_MIN_WIDTH = 1e-3
_FLAG_MASK = 1  # the chunk stores its own NaN mask (it differs from the model's)


class BaselineFormatError(ValueError):
    """A baseline chunk is truncated or inconsistent with the model it is decoded with."""


@dataclass(frozen=True)
class TrainingBasis:
    """Mean field and EOFs of the training fields.

    ``mean (*grid)`` float32 (at points missing in every training field, ``missing``,
    the mean over all points); ``eofs (K, P)`` float32, orthonormal rows over the
    flattened grid, zero outside the points finite in every training field; ``sigma (K,)``
    the training coefficients' standard deviations; ``deviation`` the training anomalies'
    total standard deviation (the root of the summed variances of all their coefficients,
    not only the first K: the size of a typical anomaly field, the unit a sweep of
    absolute steps reads well in; a decoder does not need it)."""

    mean: np.ndarray
    missing: np.ndarray
    eofs: np.ndarray
    sigma: np.ndarray
    deviation: float

    @classmethod
    def fit(cls, train: np.ndarray, max_k: int = 256) -> "TrainingBasis":
        """From training fields ``(n, *grid)``; up to ``min(max_k, n - 1)`` EOFs."""
        x = np.asarray(train, np.float64)
        if x.ndim < 2 or len(x) < 2:
            raise ValueError(f"fitting a basis needs at least two training fields, got shape {x.shape}")
        if np.isinf(x).any():
            raise ValueError("training fields hold inf values")
        finite = np.isfinite(x)
        valid = finite.all(axis=0)
        if not valid.any():
            raise ValueError("no grid point is valid in every training field")
        missing = ~finite.any(axis=0)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN points: filled below
            mean = np.nanmean(x, axis=0)
        mean[missing] = np.nanmean(x)
        anomaly = (x - mean)[:, valid]
        _, s, vt = np.linalg.svd(anomaly, full_matrices=False)
        k = min(max_k, len(x) - 1, len(s))
        eofs = np.zeros((k, valid.size), np.float32)
        eofs[:, valid.reshape(-1)] = vt[:k]
        # float32 as stored: the deviations of the coefficients the decoder will see
        coeffs = anomaly @ eofs[:, valid.reshape(-1)].astype(np.float64).T
        sigma = np.maximum(coeffs.std(axis=0), np.finfo(np.float32).tiny).astype(np.float32)
        deviation = float(np.sqrt(np.sum(s**2) / len(x)))
        return cls(mean.astype(np.float32), missing, eofs, sigma, deviation)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return self.mean.shape

    @property
    def max_k(self) -> int:
        return len(self.eofs)

    def model_bytes(self, k: int) -> bytes:
        """What a decoder of EOF-``k`` (``k = 0``: the mean field alone) needs, as a
        safetensors file."""
        tensors = {"mean": self.mean, "missing": np.packbits(self.missing)}
        if k:
            tensors |= {"eofs": np.ascontiguousarray(self.eofs[:k]), "sigma": self.sigma[:k]}
        return st_save(tensors)


def gaussian_cdf(width: float) -> list[int]:
    """compressai's quantised CDF of ``round(c / (width * sigma))`` for ``c ~ N(0, sigma)``
    (``width``: the quantisation step in units of the coefficient's deviation): symbols
    ``-L..L`` then the escape symbol (tail mass), ``L = table_half_width(width)``."""
    from vcinr_sci.coding._compressai import pmf_to_quantized_cdf

    half = table_half_width(width)
    q = np.arange(-half, half + 1)
    pmf = norm.cdf((q + 0.5) * width) - norm.cdf((q - 0.5) * width)
    return pmf_to_quantized_cdf([*pmf.tolist(), max(1.0 - pmf.sum(), 0.0)], _CDF_PRECISION)


def table_half_width(width: float) -> int:
    """The largest symbol of :func:`gaussian_cdf`'s table: +-6 deviations."""
    return math.ceil(_TABLE_SIGMAS / width)


class TrainingBasisCodec(Codec):
    """Fields ``(n, *grid)`` (or one field ``grid``) coded against a :class:`TrainingBasis`:
    the mean field, ``k`` quantised EOF coefficients (``k = 0``: none), then the residual
    through ``residual`` (a numcodecs codec for one float64 field, e.g. imagecodecs'
    ``Sperr``; None: no residual).

    The coefficients' quantisation step is ``step`` x each one's training deviation
    (EOF-k), or with ``absolute``, ``step`` in the data's units for all of them (EOF
    abs-step; the EOFs have unit norm, so a coefficient is in the data's units too)."""

    codec_id = "vcinr-bench-training-basis"  # not registered: a benchmark codec

    def __init__(self, basis: TrainingBasis, k: int = 0, step: float = 0.5, residual: Codec | None = None,
                 absolute: bool = False):
        if not 0 <= k <= basis.max_k:
            raise ValueError(f"k={k}: the basis has {basis.max_k} EOFs")
        if k and not (step > 0 and math.isfinite(step)):
            raise ValueError(f"step must be finite and > 0, got {step}")
        self.basis, self.k, self.step, self.residual, self.absolute = basis, k, float(step), residual, absolute
        sigma = basis.sigma[:k].astype(np.float64)
        # per coefficient: its quantisation step (data units) and that step in units of
        # its deviation, the width of its table's bins; equal widths share one table
        self._steps = np.full(k, self.step) if absolute else self.step * sigma
        widths = self._steps / sigma if absolute else np.full(k, self.step)
        if k and widths.min() < _MIN_WIDTH:
            raise ValueError(f"step {step:g} is too fine for coefficient tables of {_CDF_PRECISION}-bit "
                             f"precision ({widths.min():.3g} deviations; at least {_MIN_WIDTH:g})")
        unique, self._table_index = np.unique(widths, return_inverse=True)
        self._cdfs = [gaussian_cdf(w) for w in unique]
        self._offsets = [-table_half_width(w) for w in unique]

    def model_bytes(self) -> bytes:
        return self.basis.model_bytes(self.k)

    # ----------------------------------------------------------------- encode / decode

    def encode(self, buf: Any) -> bytes:
        x = np.asarray(ensure_ndarray_like(buf))
        fields = x.reshape(-1, *self.basis.grid_shape) if x.shape != self.basis.grid_shape else x[None]
        if fields.shape[1:] != self.basis.grid_shape:
            raise ValueError(f"fields of shape {x.shape} do not match the basis grid {self.basis.grid_shape}")
        if np.isinf(fields).any():
            raise ValueError("fields hold inf values")
        nan = np.isnan(fields)
        own_mask = not (nan == self.basis.missing).all()
        out = bytearray(encode_uvarint(len(fields)) + bytes([_FLAG_MASK if own_mask else 0]))
        if own_mask:
            out += _section(zlib.compress(np.packbits(nan).tobytes(), 9))
        base = np.broadcast_to(self.basis.mean.astype(np.float64), fields.shape)
        if self.k:
            symbols = self._symbols(fields)
            out += _section(self._encode_symbols(symbols.reshape(-1)))
            base = self._reconstruct(symbols)
        if self.residual is not None:
            resid = np.where(nan, 0.0, fields - base)
            for r in resid:
                out += _section(ensure_bytes(self.residual.encode(np.ascontiguousarray(r))))
        return bytes(out)

    def decode(self, buf: Any, out: Any = None) -> np.ndarray:
        data = memoryview(ensure_bytes(buf))
        n, pos = _read_uvarint(data, 0)
        if pos >= len(data) or n < 1:
            raise BaselineFormatError("baseline chunk: truncated header")
        flags, pos = data[pos], pos + 1
        shape = (n, *self.basis.grid_shape)
        if flags & _FLAG_MASK:
            packed, pos = _read_section(data, pos)
            bits = np.unpackbits(np.frombuffer(zlib.decompress(packed), np.uint8))
            if bits.size < math.prod(shape):
                raise BaselineFormatError("baseline chunk: the NaN mask is shorter than the fields")
            nan = bits[: math.prod(shape)].reshape(shape).astype(bool)
        else:
            nan = np.broadcast_to(self.basis.missing, shape)
        base = np.broadcast_to(self.basis.mean.astype(np.float64), shape)
        if self.k:
            string, pos = _read_section(data, pos)
            _, cdfs, lengths, offsets = self._tables(self._table_index)
            symbols = decode_with_indexes(string, np.tile(self._table_index, n), RansTables.build(cdfs, lengths, offsets))
            base = self._reconstruct(np.asarray(symbols, np.int64).reshape(n, self.k))
        values = np.array(base)
        if self.residual is not None:
            for i in range(n):
                section, pos = _read_section(data, pos)
                r = np.asarray(ensure_ndarray_like(self.residual.decode(section)), np.float64)
                values[i] += r.reshape(self.basis.grid_shape)
        if pos != len(data):
            raise BaselineFormatError(f"baseline chunk: {len(data) - pos} bytes left over")
        decoded = np.where(nan, np.nan, values).astype(np.float32)
        if out is not None:
            np.copyto(np.asarray(out).reshape(decoded.shape), decoded)
            return out
        return decoded

    # ----------------------------------------------------------------- EOF coefficients

    def _symbols(self, fields: np.ndarray) -> np.ndarray:
        """Each field's anomaly coefficients over their quantisation steps, rounded,
        ``(n, k)``; the missing points of a field count as zero anomaly."""
        anomaly = np.nan_to_num(fields.astype(np.float64) - self.basis.mean, nan=0.0)
        coeffs = anomaly.reshape(len(fields), -1) @ self.basis.eofs[: self.k].astype(np.float64).T
        return np.round(coeffs / self._steps).astype(np.int64)

    def _reconstruct(self, symbols: np.ndarray) -> np.ndarray:
        flat = (symbols * self._steps) @ self.basis.eofs[: self.k].astype(np.float64)
        return self.basis.mean.astype(np.float64) + flat.reshape(len(symbols), *self.basis.grid_shape)

    def _tables(self, indexes: np.ndarray) -> tuple[list[int], list[list[int]], list[int], list[int]]:
        """compressai's ``*_with_indexes`` arguments after the symbols: each symbol's table
        (``indexes``), the tables, their sizes and offsets."""
        return indexes.tolist(), self._cdfs, [len(c) for c in self._cdfs], self._offsets

    def _encode_symbols(self, symbols: np.ndarray) -> bytes:
        """The rANS string of ``symbols``, ``(n * k,)`` in field order, each coefficient
        under its table (through the library's overrun-safe encoder)."""
        indexes = np.tile(self._table_index, symbols.size // self.k)
        return encode_with_indexes(symbols, indexes, *self._tables(indexes)[1:])


# ---------------------------------------------------------------------------- framing


def _read_uvarint(data: memoryview, pos: int) -> tuple[int, int]:
    try:
        return read_uvarint(data, pos, "a length")
    except ChunkFormatError as e:
        raise BaselineFormatError(f"baseline chunk: {e}") from None


def _section(payload: bytes) -> bytes:
    return encode_uvarint(len(payload)) + payload


def _read_section(data: memoryview, pos: int) -> tuple[bytes, int]:
    size, pos = _read_uvarint(data, pos)
    if pos + size > len(data):
        raise BaselineFormatError("baseline chunk: a section runs past the end")
    return bytes(data[pos : pos + size]), pos + size


def training_fields(data_cfg: DataConfig, split: dict[str, Any]) -> np.ndarray:
    """The training fields of a model's recorded data split (``artifact.split``), as its
    config reads them (regridding included): what the baselines are fitted on."""
    source = FieldSource(open_variable(data_cfg), data_cfg.grid_dims)
    return source.load(source.indices_along(split["dim"], split["positions"]["train"]))
