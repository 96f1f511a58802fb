"""Coding flat latent vectors ``phi`` of shape ``(B, D)`` into bytes (method.md section 4).

- :class:`LatentCoder` (VC-INR): per-dimension normalisation, analysis ``g_a``, rounding,
  compressai's factorised-prior ``EntropyBottleneck`` with its rANS coder, synthesis ``g_s``.
- :class:`~vcinr_sci.coding.transform.GaussianLatentCoder`: a fixed linear transform of
  the latents and per-component Gaussian tables at one step (classic transform coding).
- :class:`UniformQuantiser` (COIN++ baseline): ``b``-bit uniform quantisation of phi.

Both give ``compress(phi) -> bytes`` for a whole batch, ``decompress(data, n)`` for ``n``
vectors, and ``quantise(phi)`` with exactly the values ``decompress(compress(phi))``
returns, without the bytes. :func:`coder_spec` / :func:`coder_state` / :func:`load_coder`
save and restore either as JSON plus plain tensors (safetensors-ready).
"""

from __future__ import annotations

import copy
import zlib
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vcinr_sci.coding._compressai import EntropyBottleneck
from vcinr_sci.coding.coefficients import SPEC_KIND as COEFFICIENTS_KIND
from vcinr_sci.coding.coefficients import CoefficientCoder
from vcinr_sci.coding.hybrid import SPEC_KIND as HYBRID_KIND
from vcinr_sci.coding.hybrid import HybridCoder
from vcinr_sci.coding.quantiser import UniformQuantiser, check_batch, check_n
from vcinr_sci.coding.rans import RansTables, decode_with_indexes, encode_with_indexes
from vcinr_sci.coding.transform import SPEC_KIND as GAUSSIAN_KIND
from vcinr_sci.coding.transform import GaussianLatentCoder

SPEC_VERSION = 1
_CDF_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length")
# compressai's rANS bypass coding hangs on symbols near 2**28 (an int32 overflow), so
# symbols are kept far below that; a trained coder never comes near this bound.
_MAX_SYMBOL = 2**24
_CRC_BYTES = 4






class ResidualMLP(nn.Sequential):
    """Linear(in, width), ``blocks`` x [x + Linear-SELU-Linear(x)], Linear(width, out)."""

    def __init__(self, in_features: int, out_features: int, width: int, blocks: int):
        super().__init__(
            nn.Linear(in_features, width),
            *(_Residual(width) for _ in range(blocks)),
            nn.Linear(width, out_features),
        )


class _Residual(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(width, width), nn.SELU(), nn.Linear(width, width))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class LatentCoder(nn.Module):
    """Nonlinear transform coder for latents: ``phi -> z = g_a(norm(phi)) -> z_hat ->
    phi_hat = denorm(g_s(z_hat))``, with a factorised prior on ``z`` (``dim_y`` channels).

    Workflow: :meth:`set_stats` on the training latents; train :meth:`forward`'s output
    with :func:`rd_loss` on :meth:`parameters_main` and :meth:`aux_loss` on
    :meth:`parameters_aux`; then :meth:`update` once to build the coding tables, and save.
    """

    def __init__(self, latent_dim: int, dim_y: int, width: int, blocks: int):
        super().__init__()
        self.latent_dim, self.dim_y, self.width, self.blocks = latent_dim, dim_y, width, blocks
        self.register_buffer("phi_mean", torch.zeros(latent_dim))
        self.register_buffer("phi_std", torch.ones(latent_dim))
        self.g_a = ResidualMLP(latent_dim, dim_y, width, blocks)
        self.g_s = ResidualMLP(dim_y, latent_dim, width, blocks)
        # Named explicitly so the byte format does not follow compressai's global default.
        self.entropy_bottleneck = EntropyBottleneck(dim_y, entropy_coder="ans")

    @torch.no_grad()
    def set_stats(self, phi: Tensor) -> None:
        """Per-dimension mean and std of the training latents ``phi`` (B, D)."""
        check_batch(phi, self.latent_dim)
        std = phi.float().std(dim=0, unbiased=False)
        self.phi_mean.copy_(phi.float().mean(dim=0))
        self.phi_std.copy_(torch.where(std > 0, std, torch.ones_like(std)))  # constant dims

    def _analysis(self, phi: Tensor) -> Tensor:
        check_batch(phi, self.latent_dim, finite=False)  # no device sync per training step
        return self.g_a((phi.to(self.phi_mean) - self.phi_mean) / self.phi_std)

    def _synthesis(self, z: Tensor) -> Tensor:
        return self.g_s(z) * self.phi_std + self.phi_mean

    def forward(self, phi: Tensor) -> tuple[Tensor, Tensor]:
        """``(phi_tilde, bits)``: reconstruction and estimated bits per vector, shape (B,).

        In training mode ``z`` gets uniform noise (the bottleneck does it); in eval mode
        it is rounded as in :meth:`quantise`, so ``bits`` estimates the coded size.
        """
        z_tilde, likelihoods = self.entropy_bottleneck(self._analysis(phi))
        bits = -torch.log2(likelihoods).sum(dim=1)
        return self._synthesis(z_tilde), bits

    def parameters_main(self) -> list[nn.Parameter]:
        """Everything trained by the rate-distortion loss (all but the quantiles)."""
        aux = self.entropy_bottleneck.quantiles
        return [p for p in self.parameters() if p is not aux]

    def parameters_aux(self) -> list[nn.Parameter]:
        """The bottleneck's quantiles, trained by :meth:`aux_loss` alone."""
        return [self.entropy_bottleneck.quantiles]

    def aux_loss(self) -> Tensor:
        return self.entropy_bottleneck.loss()

    @torch.no_grad()
    def update(self, update_quantiles: bool = False) -> None:
        """Build the entropy coder's CDF tables, always on the CPU (CDFs built on another
        device can differ and break decoding elsewhere). Call after training and before
        saving; the saved tables are what decoders use, so never rebuild them on the
        decoding side. ``update_quantiles`` first re-fits the quantiles by bisection.
        """
        eb = self.entropy_bottleneck
        device = eb.quantiles.device
        cpu_eb = eb if device.type == "cpu" else copy.deepcopy(eb).cpu()
        cpu_eb.update(force=True, update_quantiles=update_quantiles)
        if cpu_eb is not eb:
            eb.quantiles.copy_(cpu_eb.quantiles)
            for name in _CDF_BUFFERS:
                setattr(eb, name, getattr(cpu_eb, name).to(device))

    # Symbols are round(z - median), as in compressai, so medians cost no bits.
    def _medians(self) -> Tensor:
        return self.entropy_bottleneck.quantiles[:, 0, 1].detach()

    def _symbols(self, z: Tensor) -> Tensor:
        symbols = torch.round(z - self._medians().to(z.device))
        if not torch.isfinite(symbols).all():
            raise ValueError("phi holds NaN or infinite values (or maps to them)")
        if symbols.abs().max() > _MAX_SYMBOL:
            raise ValueError(f"a latent maps to a symbol beyond +-{_MAX_SYMBOL}: input far outside the training range")
        return symbols.to(torch.int32)

    def _dequantise(self, symbols: Tensor) -> Tensor:
        return self._synthesis(symbols.to(self.phi_mean) + self._medians())

    def _tables(self) -> tuple[list[list[int]], list[int], list[int]]:
        eb = self.entropy_bottleneck
        if eb._quantized_cdf.numel() == 0:
            raise ValueError("the entropy coder has no CDF tables: call coder.update() after training")
        return eb._quantized_cdf.tolist(), eb._cdf_length.tolist(), eb._offset.tolist()

    @torch.no_grad()
    def quantise(self, phi: Tensor) -> Tensor:
        """``decompress(compress(phi))`` exactly, on the coder's device, without the bytes."""
        return self._dequantise(self._symbols(self._analysis(phi)))

    @torch.no_grad()
    def compress(self, phi: Tensor) -> bytes:
        """One rANS string for the whole batch (a string per vector would cost ~6 bytes
        of coder overhead each), prefixed by a CRC-32 of it (4 bytes, so corrupt or
        truncated data is refused before it reaches compressai's unchecked C++ decoder).
        The number of vectors is not stored: the caller keeps it."""
        cdf, cdf_length, offset = self._tables()
        symbols = self._symbols(self._analysis(phi)).cpu()
        indexes = list(range(self.dim_y)) * symbols.shape[0]
        payload = encode_with_indexes(symbols.reshape(-1).numpy(), indexes, cdf, cdf_length, offset)
        return zlib.crc32(payload).to_bytes(_CRC_BYTES, "little") + payload

    @torch.no_grad()
    def decompress(self, data: bytes, n: int) -> Tensor:
        """The ``(n, D)`` latents coded in ``data``, on the coder's device. ``n`` must be
        the count given to :meth:`compress`: the string does not record it, and a wrong
        ``n`` decodes garbage."""
        check_n(n)
        cdf, cdf_length, offset = self._tables()
        crc, payload = data[:_CRC_BYTES], bytes(data[_CRC_BYTES:])
        # A rANS string is whole 32-bit words, at least the two of the final state.
        if len(payload) < 8 or len(payload) % 4:
            raise ValueError(f"latent code of {len(data)} bytes is truncated or not a latent coder string")
        if zlib.crc32(payload) != int.from_bytes(crc, "little"):
            raise ValueError("latent code checksum mismatch: the bytes are corrupt or truncated")
        values = decode_with_indexes(payload, np.tile(np.arange(self.dim_y), n), RansTables.build(cdf, cdf_length, offset))
        symbols = torch.from_numpy(values).reshape(n, self.dim_y)
        return self._dequantise(symbols.to(self.phi_mean.device))


def rd_loss(bits: Tensor, distortion: Tensor, lam: float, num_values: int) -> Tensor:
    """``rate + lam * distortion``, the coder's training loss (equation 5).

    ``bits`` (B,) are the estimated bits of the batch's latents; ``num_values`` is the
    number of data values the batch represents (items x grid points x channels), so the
    rate is in bits per value. ``distortion`` is the MSE measured by the caller on the
    (normalised) data through the frozen INR, not on phi. ``lam`` thus has units of bits
    per value per unit MSE; the paper's lambdas, on other units, do not carry over.
    """
    if num_values <= 0:
        raise ValueError(f"num_values must be positive, got {num_values}")
    return bits.sum() / num_values + lam * distortion


Coder = LatentCoder | UniformQuantiser | CoefficientCoder | GaussianLatentCoder | HybridCoder


def coder_spec(coder: Coder) -> dict[str, Any]:
    """JSON-able description from which :func:`load_coder` rebuilds ``coder``."""
    if isinstance(coder, CoefficientCoder | GaussianLatentCoder):
        return coder.spec()
    if isinstance(coder, HybridCoder):
        return {"kind": HYBRID_KIND, "version": SPEC_VERSION, "typical_bits": coder.typical_bits,
                "typical_error": coder.typical_error,
                "parts": {name: coder_spec(part) for name, part in coder.parts()}}  # type: ignore[arg-type]
    if isinstance(coder, LatentCoder):
        args = {"latent_dim": coder.latent_dim, "dim_y": coder.dim_y, "width": coder.width, "blocks": coder.blocks}
        return {"kind": "latent_coder", "version": SPEC_VERSION, **args}
    spec: dict[str, Any] = {"latent_dim": coder.latent_dim, "bits": coder.bits, "clip_std": coder.clip_std}
    spec |= {"entropy_code": coder.entropy_code, "zstd_level": coder.zstd_level}
    return {"kind": "uniform", "version": SPEC_VERSION, **spec}


def coder_state(coder: Coder) -> dict[str, Tensor]:
    """All of ``coder``'s tensors, on the CPU and contiguous (the CDF tables included)."""
    if isinstance(coder, CoefficientCoder | GaussianLatentCoder):
        return coder.state()
    if isinstance(coder, HybridCoder):
        # cloned: levels share their latent coders, and a file holds each tensor once
        return {f"{name}.{k}": v.clone() for name, part in coder.parts() for k, v in coder_state(part).items()}  # type: ignore[arg-type]
    if isinstance(coder, LatentCoder):
        return {k: v.detach().cpu().contiguous() for k, v in coder.state_dict().items()}
    if coder.mean is None or coder.std is None:
        raise ValueError("UniformQuantiser is not fitted: nothing to save")
    return {"mean": coder.mean.clone(), "std": coder.std.clone()}


def load_coder(spec: dict[str, Any], state: dict[str, Tensor]) -> Coder:
    """A fresh coder built from ``spec`` with ``state`` restored, in eval mode."""
    if spec.get("version") != SPEC_VERSION:
        raise ValueError(f"coder spec version {spec.get('version')} is not supported (expected {SPEC_VERSION})")
    args = {k: v for k, v in spec.items() if k not in ("kind", "version")}
    kind = spec.get("kind")
    if kind == COEFFICIENTS_KIND:
        return CoefficientCoder.load(spec, state)
    if kind == GAUSSIAN_KIND:
        return GaussianLatentCoder.load(spec, state)
    if kind == HYBRID_KIND:
        return _load_hybrid(spec, state)
    if kind == "uniform":
        quantiser = UniformQuantiser(**args)
        if set(state) != {"mean", "std"}:
            raise ValueError(f"uniform quantiser state needs tensors mean and std, got {sorted(state)}")
        quantiser.mean, quantiser.std = state["mean"].float().cpu(), state["std"].float().cpu()
        return quantiser
    if kind != "latent_coder":
        raise ValueError(f"unknown coder kind {kind!r} (expected 'latent_coder', 'uniform', '{COEFFICIENTS_KIND}', "
                         f"'{GAUSSIAN_KIND}' or '{HYBRID_KIND}')")
    coder = LatentCoder(**args)
    # A fresh bottleneck's CDF buffers are empty; load_state_dict needs the saved shapes.
    for name in _CDF_BUFFERS:
        key = f"entropy_bottleneck.{name}"
        if key in state:
            getattr(coder.entropy_bottleneck, name).resize_(state[key].shape)
    try:
        coder.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"coder state does not match its spec {spec}: {e}") from None
    return coder.eval()


def _load_hybrid(spec: dict[str, Any], state: dict[str, Tensor]) -> HybridCoder:
    parts = spec.get("parts")
    if not isinstance(parts, dict) or not {"full", "head"} <= set(parts):
        raise ValueError("a hybrid coder spec needs parts 'full', 'head' and z0..")
    built: dict[str, Any] = {}
    for name, part in parts.items():
        if not isinstance(part, dict) or part.get("kind") == HYBRID_KIND:
            raise ValueError(f"hybrid coder part {name!r} is not a coefficient or latent coder spec")
        built[name] = load_coder(part, {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")})
    latents = [built[f"z{i}"] for i in range(len(parts) - 2) if f"z{i}" in built]
    if len(latents) != len(parts) - 2:
        raise ValueError("hybrid coder parts must be full, head and z0..z<n-1>")
    return HybridCoder(built["full"], built["head"], latents, spec.get("typical_bits"), spec.get("typical_error"))
