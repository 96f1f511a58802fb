"""The uniform quantiser: the learned coder's baseline, a fixed number of bits per
latent dimension, stored like a coder under quality levels ``u<bits>``."""

from __future__ import annotations

import math

import numpy as np
import torch
from numcodecs import Zstd
from torch import Tensor

from vcinr_sci.coding.zstd import zstd_exact


class UniformQuantiser:
    """COIN++'s baseline: phi clipped to mean +- ``clip_std`` std (global scalars from the
    training latents), cut into ``2**bits`` equal bins, each value sent as its bin index
    and decoded to the bin centre; inside the clip range the error is at most half a bin.

    ``compress`` packs the indices at ``bits`` bits per value with numpy; with
    ``entropy_code=True`` it instead compresses the indices (one byte each, two above 8
    bits) with numcodecs' Zstd, whose Huffman/FSE stages act as the entropy coder.
    """

    def __init__(
        self, latent_dim: int, bits: int, clip_std: float = 3.0, entropy_code: bool = False, zstd_level: int = 19
    ):
        if not 1 <= bits <= 16:
            raise ValueError(f"bits must be in 1..16, got {bits}")
        self.latent_dim, self.bits, self.clip_std = latent_dim, bits, clip_std
        self.entropy_code, self.zstd_level = entropy_code, zstd_level
        self.mean: Tensor | None = None
        self.std: Tensor | None = None

    def fit(self, phi: Tensor) -> None:
        """Global mean and std of the training latents."""
        check_batch(phi, self.latent_dim)
        self.mean = phi.detach().float().mean().cpu()
        self.std = phi.detach().float().std(unbiased=False).clamp_min(1e-12).cpu()

    def _grid(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if self.mean is None or self.std is None:
            raise ValueError("UniformQuantiser is not fitted: call fit() or load_coder()")
        lo = (self.mean - self.clip_std * self.std).to(device)
        step = (2 * self.clip_std * self.std / 2**self.bits).to(device)
        return lo, step

    def _indices(self, phi: Tensor) -> Tensor:
        check_batch(phi, self.latent_dim)
        lo, step = self._grid(phi.device)
        return torch.floor((phi.float() - lo) / step).clamp(0, 2**self.bits - 1).to(torch.int64)

    def _values(self, indices: Tensor) -> Tensor:
        lo, step = self._grid(indices.device)
        return lo + (indices.float() + 0.5) * step

    def quantise(self, phi: Tensor) -> Tensor:
        """``decompress(compress(phi))`` exactly, on phi's device."""
        return self._values(self._indices(phi))

    def compress(self, phi: Tensor) -> bytes:
        """The batch's indices, row-major, packed or Zstd-coded (see the class doc)."""
        indices = self._indices(phi).cpu().numpy()
        if self.entropy_code:
            dtype = np.uint8 if self.bits <= 8 else np.dtype("<u2")
            return Zstd(level=self.zstd_level).encode(indices.astype(dtype).tobytes())
        shifts = np.arange(self.bits - 1, -1, -1, dtype=np.int64)
        bit_planes = ((indices.reshape(-1, 1) >> shifts) & 1).astype(np.uint8)
        return np.packbits(bit_planes.reshape(-1)).tobytes()

    def decompress(self, data: bytes, n: int) -> Tensor:
        """The ``(n, D)`` latents in ``data``, on the CPU."""
        check_n(n)
        count = n * self.latent_dim
        if self.entropy_code:
            dtype = np.uint8 if self.bits <= 8 else np.dtype("<u2")
            # the frame's declared size is checked before Zstd allocates it: the bytes are untrusted
            raw = zstd_exact(data, count * np.dtype(dtype).itemsize, "uniform-quantised latents")
            indices = np.frombuffer(raw, dtype=dtype).astype(np.int64)
            if indices.max() >= 2**self.bits:
                raise ValueError(f"uniform-quantised latents: an index exceeds {self.bits} bits (corrupt data)")
        else:
            expected = math.ceil(count * self.bits / 8)
            if len(data) != expected:
                raise ValueError(f"uniform-quantised latents: {len(data)} bytes, expected {expected} ({count} values)")
            bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
            if bits[count * self.bits :].any():
                raise ValueError("uniform-quantised latents: nonzero padding bits (corrupt data)")
            weights = 1 << np.arange(self.bits - 1, -1, -1, dtype=np.int64)
            indices = bits[: count * self.bits].reshape(count, self.bits).astype(np.int64) @ weights
        return self._values(torch.from_numpy(indices).reshape(n, self.latent_dim))


def check_batch(phi: Tensor, dim: int, finite: bool = True) -> None:
    if phi.dim() != 2 or phi.shape[0] == 0 or phi.shape[1] != dim:
        raise ValueError(f"phi must be a non-empty (B, {dim}) batch, got shape {tuple(phi.shape)}")
    if finite and not torch.isfinite(phi).all():
        raise ValueError("phi holds NaN or infinite values")


def check_n(n: int) -> None:
    if n <= 0:
        raise ValueError(f"n (number of vectors) must be positive, got {n}")
