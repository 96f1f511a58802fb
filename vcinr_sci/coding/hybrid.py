"""A hybrid model's quality level: the bytes of one chunk's latents in one of its modes.

A hybrid model (``model.kind: hybrid``) is the linear model (mean and ``K`` EOFs) plus an
INR meta-learned on what the mean and the leading ``H`` EOFs leave. Each chunk is coded
in one mode, chosen by the encoder (:class:`~vcinr_sci.model.kinds.HybridKind`):

- mode 0: the ``K`` coefficients alone (``full``, the linear model's own coder);
- mode ``j >= 1``: the ``H`` leading coefficients (``head``, at the same step) plus the
  INR's latents coded by ``latents[j - 1]`` (a learned coder or a uniform quantiser).

String layout: a coefficient string starts with its own mode byte (0 or 1,
:mod:`vcinr_sci.coding.coefficients`); the hybrid mode ``j`` rides in that byte's upper
bits (``byte = coefficient mode | j << 1``), so a mode-0 chunk is byte for byte the
linear model's and never costs more. Mode 0: ``full``'s string; mode ``j``: that byte,
the ``uvarint`` length of the rest of ``head``'s string, that rest, then
``latents[j - 1]``'s string. Every part is decoded by a bounded decoder
(:mod:`vcinr_sci.coding.rans`), so a crafted mode or length only ever fails with
:class:`ValueError` / ``ChunkFormatError``.

Decoded, a chunk's ``n`` items are one tensor ``(n, K + L + 1)`` float64: the ``K``
coefficients (zero past ``H`` in the modes with latents), the ``L`` latents (zero in
mode 0) and a flag, 1 where the INR's output is added.
"""

from __future__ import annotations

from typing import Iterator, Protocol

import torch
from torch import Tensor

from vcinr_sci.coding.coefficients import CoefficientCoder
from vcinr_sci.coding.varint import encode_uvarint, read_uvarint


class LatentStringCoder(Protocol):
    """What a hybrid level needs of the INR's latent coder (a learned coder or a
    uniform quantiser, :mod:`vcinr_sci.coding.coder`)."""

    latent_dim: int

    def compress(self, phi: Tensor) -> bytes: ...

    def decompress(self, data: bytes, n: int) -> Tensor: ...

SPEC_KIND = "hybrid"
LINEAR_ONLY = 0
MAX_MODES = 127  # modes 1.. in the seven upper bits of the coefficient string's mode byte


class HybridCoder:
    """Coefficient coders ``full`` (``K`` components) and ``head`` (the leading ``H``,
    same step) and the INR's latent coders ``latents``: one mode each (see the module doc).
    ``typical_bits`` and ``typical_error``: each latent coder's bits and squared error
    (normalised units) per item as measured on tuning items (an encoder skips the INR
    where even 3/4 of the cost they give outweighs the linear model's; 0: unknown,
    never skipped)."""

    def __init__(self, full: CoefficientCoder, head: CoefficientCoder,
                 latents: list[LatentStringCoder], typical_bits: list[float] | None = None,
                 typical_error: list[float] | None = None):
        if not isinstance(full, CoefficientCoder) or not isinstance(head, CoefficientCoder):
            raise ValueError("a hybrid level's full and head parts must be coefficient coders")
        if head.latent_dim > full.latent_dim or head.step != full.step:
            raise ValueError(f"a hybrid level's head ({head.latent_dim} coefficients, step {head.step:.3g}) must "
                             f"lead its full coder ({full.latent_dim}, step {full.step:.3g})")
        if not latents or len({z.latent_dim for z in latents}) != 1 or len(latents) > MAX_MODES:
            raise ValueError(f"a hybrid level needs 1-{MAX_MODES} latent coders of one latent size")
        self.full, self.head, self.latents = full, head, list(latents)
        self.typical_bits = [float(b) for b in typical_bits] if typical_bits is not None else [0.0] * len(latents)
        self.typical_error = [float(e) for e in typical_error] if typical_error is not None else [0.0] * len(latents)
        for typical in (self.typical_bits, self.typical_error):
            if len(typical) != len(latents) or not all(b >= 0 for b in typical):
                raise ValueError("a hybrid level needs one non-negative typical bit count and error per latent coder")

    @property
    def step(self) -> float:
        return self.full.step

    @property
    def components(self) -> int:
        return self.full.latent_dim

    @property
    def head_components(self) -> int:
        return self.head.latent_dim

    @property
    def inr_latent_dim(self) -> int:
        return self.latents[0].latent_dim

    @property
    def latent_dim(self) -> int:
        return self.components + self.inr_latent_dim + 1

    def scaled(self, exponent: int) -> "HybridCoder":
        """This level with both coefficient coders at ``step * step_factor(exponent)``
        (:meth:`CoefficientCoder.scaled`), the latent coders as they are."""
        if exponent == 0:
            return self
        return HybridCoder(self.full.scaled(exponent), self.head.scaled(exponent), self.latents,
                           self.typical_bits, self.typical_error)

    def parts(self) -> Iterator[tuple[str, object]]:
        """``(name, coder)`` of every part, in a fixed order (for storage)."""
        yield "full", self.full
        yield "head", self.head
        for i, z in enumerate(self.latents):
            yield f"z{i}", z

    def to(self, device: torch.device) -> "HybridCoder":
        """The latent coders moved to ``device`` (the INR's); the coefficient coders stay on the CPU."""
        self.latents = [z.to(device) if isinstance(z, torch.nn.Module) else z for z in self.latents]
        return self

    @staticmethod
    def mode(data: bytes) -> int:
        """The mode of a chunk's string (0: the linear model alone)."""
        return data[0] >> 1 if data else LINEAR_ONLY

    @staticmethod
    def pack(mode: int, coefficients: bytes, latents: bytes = b"") -> bytes:
        """One chunk's string in ``mode`` from its parts' strings."""
        if mode == LINEAR_ONLY:
            return coefficients
        rest = coefficients[1:]
        return bytes([coefficients[0] | mode << 1]) + encode_uvarint(len(rest)) + rest + latents

    def decompress(self, data: bytes, n: int) -> Tensor:
        """The ``(n, K + L + 1)`` float64 tensor of a chunk's ``n`` items (module doc)."""
        if not data:
            raise ValueError("hybrid latent string is empty")
        mode, k, h = self.mode(data), self.components, self.head_components
        out = torch.zeros(n, self.latent_dim, dtype=torch.float64)
        if mode == LINEAR_ONLY:
            out[:, :k] = self.full.decompress(bytes(data), n)
            return out
        if mode > len(self.latents):
            raise ValueError(f"hybrid latent string: mode {mode}, the level has {len(self.latents)} latent coders")
        length, pos = read_uvarint(data, 1, "hybrid coefficient string length")
        if pos + length > len(data):
            raise ValueError("hybrid latent string: the coefficient string runs past the end")
        out[:, :h] = self.head.decompress(bytes([data[0] & 1]) + bytes(data[pos : pos + length]), n)
        out[:, k : k + self.inr_latent_dim] = self.latents[mode - 1].decompress(bytes(data[pos + length :]), n).cpu().double()
        out[:, -1] = 1.0
        return out
