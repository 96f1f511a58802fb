"""compressai's hyperprior on latent vectors: a comparison candidate for issue 24
(``examples/bench_latent_coders.py --learned``), not a coder the codec reads.

:class:`HyperpriorLatentCoder` is :class:`~vcinr_sci.coding.coder.LatentCoder` (the same
``g_a`` / ``g_s`` residual MLPs around per-dimension normalisation) with its factorised
prior replaced by a conditional Gaussian one, as in Ballé et al. 2018 (compressai's
``ScaleHyperprior``) or Minnen et al. 2018 without context (``MeanScaleHyperprior``):

    y = g_a(norm(phi)),  z = h_a(|y|) (scale) or h_a(y) (mean-scale),
    z_hat under compressai's EntropyBottleneck (factorised, learned),
    (scales[, means]) = h_s(z_hat),  y_hat under compressai's GaussianConditional,
    phi_hat = denorm(g_s(y_hat)).

A field's side information ``z`` lets the prior follow how large that field's latents
are, which a factorised prior (or the Gaussian transform coder's fixed deviations) cannot.

A chunk's latents are one rANS string (compressai's encoder, our bounds-checked decoder):
all of ``z`` first, then all of ``y``. A decoder reads ``z``, derives ``y``'s tables from
it, and decodes the string again with ``y``'s indexes appended, so the side information
costs no second string. The tables come from ``h_s`` in float32 on this machine; another
machine could pick other tables (the hyperprior's known cross-platform hazard). That is
one reason it stays a bench candidate: its bytes never reach a decoder from a store.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from vcinr_sci.coding._compressai import EntropyBottleneck, GaussianConditional
from vcinr_sci.coding.coder import LatentCoder, ResidualMLP
from vcinr_sci.coding.quantiser import check_n
from vcinr_sci.coding.rans import RansTables, decode_with_indexes, encode_with_indexes
from vcinr_sci.config import CoderConfig
from vcinr_sci.data.items import ItemSet
from vcinr_sci.model.coder_training import cosine_schedule, sample_coder_batch, train_step

# compressai's get_scale_table() (models/google.py), whose package import needs torchvision
SCALE_TABLE = torch.exp(torch.linspace(math.log(0.11), math.log(256), 64))


class HyperpriorLatentCoder(LatentCoder):
    """Latents ``(B, D)`` <-> bytes under a learned hyperprior (see the module doc).

    ``LatentCoder``'s normalisation, transforms, workflow and aux loss (its bottleneck
    now codes the side channels ``z``): :meth:`set_stats`, train ``forward``'s output
    with ``rd_loss`` on :meth:`parameters_main` and :meth:`aux_loss` on
    :meth:`parameters_aux`, :meth:`update`, then :meth:`compress` / :meth:`decompress` /
    :meth:`quantise`. Not savable as a ``LatentCoder``: the bench keeps it in memory."""

    def __init__(self, latent_dim: int, dim_y: int, hyper_dim: int, width: int, blocks: int, mean_scale: bool):
        super().__init__(latent_dim, dim_y, width, blocks)
        self.hyper_dim, self.mean_scale = hyper_dim, mean_scale
        self.h_a = ResidualMLP(dim_y, hyper_dim, width, 1)
        self.h_s = ResidualMLP(hyper_dim, 2 * dim_y if mean_scale else dim_y, width, 1)
        self.entropy_bottleneck = EntropyBottleneck(hyper_dim, entropy_coder="ans")
        self.gaussian_conditional = GaussianConditional(None, entropy_coder="ans")

    def _hyper(self, y: Tensor) -> Tensor:
        return self.h_a(y if self.mean_scale else y.abs())

    def _prior(self, z_hat: Tensor) -> tuple[Tensor, Tensor | None]:
        """``y``'s scales and means (None for the scale hyperprior) given ``z_hat``."""
        params = self.h_s(z_hat)
        if not self.mean_scale:
            return params, None
        scales, means = params.chunk(2, dim=1)
        return scales, means

    def forward(self, phi: Tensor) -> tuple[Tensor, Tensor]:
        """``(phi_tilde, bits)``: reconstruction and estimated bits of ``y`` and ``z`` per
        vector, (B,); noise in training mode, rounding in eval mode."""
        y = self._analysis(phi)
        z_tilde, z_likelihoods = self.entropy_bottleneck(self._hyper(y))
        scales, means = self._prior(z_tilde)
        y_tilde, y_likelihoods = self.gaussian_conditional(y, scales, means)
        bits = -torch.log2(y_likelihoods).sum(dim=1) - torch.log2(z_likelihoods).sum(dim=1)
        return self._synthesis(y_tilde), bits

    @torch.no_grad()
    def update(self, update_quantiles: bool = False) -> None:
        """Build both entropy models' CDF tables (on the CPU) after training."""
        self.cpu()
        self.entropy_bottleneck.update(force=True, update_quantiles=update_quantiles)
        self.gaussian_conditional.update_scale_table(SCALE_TABLE, force=True)
        eb, gc = self.entropy_bottleneck, self.gaussian_conditional
        cdfs = eb._quantized_cdf.tolist() + gc._quantized_cdf.tolist()
        self._coding_tables = (cdfs, eb._cdf_length.tolist() + gc._cdf_length.tolist(), eb._offset.tolist() + gc._offset.tolist())
        self._decode_tables = RansTables.build(*self._coding_tables)

    def _coded(self, phi: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """``z`` and ``y`` symbols of ``phi``, ``y``'s table indexes and means."""
        y = self._analysis(phi.cpu())
        z_symbols = torch.round(self._hyper(y) - self._medians())
        scales, means = self._prior(z_symbols + self._medians())
        y_symbols = torch.round(y - (0 if means is None else means))
        if not (torch.isfinite(z_symbols).all() and torch.isfinite(y_symbols).all()):
            raise ValueError("phi holds NaN or infinite values (or maps to them)")
        return z_symbols, y_symbols, self.gaussian_conditional.build_indexes(scales), means

    def _from_symbols(self, y_symbols: Tensor, means: Tensor | None) -> Tensor:
        return self._synthesis(y_symbols + (0 if means is None else means))

    @torch.no_grad()
    def quantise(self, phi: Tensor) -> Tensor:
        """``decompress(compress(phi))`` exactly, without the bytes (on the CPU)."""
        _, y_symbols, _, means = self._coded(phi)
        return self._from_symbols(y_symbols, means)

    def _z_indexes(self, n: int) -> np.ndarray:
        return np.tile(np.arange(self.hyper_dim, dtype=np.int32), n)

    @torch.no_grad()
    def compress(self, phi: Tensor) -> bytes:
        """One rANS string: the ``z`` of every vector, then every ``y``. The count of
        vectors is not stored: the caller keeps it."""
        z_symbols, y_symbols, y_indexes, _ = self._coded(phi)
        symbols = torch.cat([z_symbols.reshape(-1), y_symbols.reshape(-1)]).to(torch.int64).numpy()
        indexes = np.concatenate([self._z_indexes(len(phi)), y_indexes.reshape(-1).numpy() + self.hyper_dim])
        return encode_with_indexes(symbols, indexes, *self._coding_tables)

    @torch.no_grad()
    def decompress(self, data: bytes, n: int) -> Tensor:
        """The ``(n, D)`` latents of :meth:`compress`'s string (``n`` as given to it)."""
        check_n(n)
        z_indexes = self._z_indexes(n)
        z_symbols = torch.from_numpy(decode_with_indexes(data, z_indexes, self._decode_tables)).float()
        scales, means = self._prior(z_symbols.reshape(n, self.hyper_dim) + self._medians())
        y_indexes = self.gaussian_conditional.build_indexes(scales).reshape(-1).numpy() + self.hyper_dim
        symbols = decode_with_indexes(data, np.concatenate([z_indexes, y_indexes.astype(np.int32)]), self._decode_tables)
        y_symbols = torch.from_numpy(symbols[z_indexes.size :]).float().reshape(n, self.dim_y)
        return self._from_symbols(y_symbols, means)


def train_coders(model, coders: list[nn.Module], lambdas: list[float], phi: Tensor, items: ItemSet,
                 cc: CoderConfig) -> None:
    """Train ``coders`` (one per lambda, each with ``forward``/``parameters_main``/
    ``parameters_aux``/``aux_loss``/``update``) on the latents ``phi`` of ``items`` through
    the frozen INR ``model``, with ``pipelines.train_coder``'s objective and schedule
    (``cc``: steps, batch, points a step, Adam with cosine decay), in one process, then
    build their tables."""
    torch.manual_seed(cc.seed)
    optimiser = torch.optim.Adam([p for c in coders for p in c.parameters_main()], lr=cc.lr)
    aux_optimiser = torch.optim.Adam([p for c in coders for p in c.parameters_aux()], lr=cc.aux_lr)
    schedule = cosine_schedule(optimiser, cc)
    per_item = items.points_per_item
    for step in range(1, cc.steps + 1):
        idx, points = sample_coder_batch(np.random.default_rng([cc.seed, step]), cc, len(phi), per_item)
        batch = items.batch(idx, points)
        stats = train_step(model, coders, lambdas, optimiser, aux_optimiser, phi[idx], batch, len(idx) * per_item)
        schedule.step()
        if step % cc.log_every == 0 or step == cc.steps:
            print(f"coder step {step}/{cc.steps}: " + ", ".join(f"bpv {s['bpv']:.4f} mse {s['mse']:.3g}" for s in stats),
                  flush=True)
    for coder in coders:
        coder.eval()
        coder.update()
