"""The shared implicit neural representation and how a latent conditions it.

Both models map coordinates ``(B, N, d)`` (or shared ``(N, d)``) and latents ``(B, D)``
to values ``(B, N, out_dim)``, batched over items with no Python loop over items.

- :class:`GatedSiren` (VC-INR): hidden layer l computes
  ``sin(w0 * ((sigmoid(U_l V_l^T) * W_l) c + b_l))`` with low-rank ``U_l, V_l`` predicted
  per item from the latent by :class:`LatentToGates`.
- :class:`ShiftSiren` (Functa / COIN++): ``sin(w0 * (W_l c + b_l + s_l))`` with shifts
  ``s = W' phi + b'``.

The first layer's frequency is ``model.w0_initial`` times :func:`first_layer_scale` of
the training grid, so that it means the same on a regional grid as on a global one.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from vcinr_sci.config import Config, ModelConfig

if TYPE_CHECKING:
    from vcinr_sci.data.grids import Grid

# The coordinate span SIREN's w0 = 30 is set for: [-1, 1], a global grid on the unit sphere
GLOBAL_SPAN = 2.0


def first_layer_scale(grid: Grid) -> float:
    """How much faster than ``model.w0_initial`` the first layer oscillates on ``grid``:
    :data:`GLOBAL_SPAN` over the grid's :meth:`~Grid.coordinate_span`, rounded to 0.01,
    at least 1. The UK's 33 x 49 points at 0.25 degrees span 0.134 of the unit sphere,
    where w0 = 30 gives the first layer under one oscillation across the region (scale
    14.92); a global grid whose points stop short of the poles (1.0003) keeps exactly
    w0_initial."""
    span = grid.coordinate_span()
    return 1.0 if span <= 0 else max(1.0, round(GLOBAL_SPAN / span, 2))


def _siren_uniform_(weight: torch.Tensor, w0: float, first: bool, gain: float = 1.0) -> None:
    fan_in = weight.shape[1]
    bound = (1.0 / fan_in) if first else math.sqrt(6.0 / fan_in) / w0
    with torch.no_grad():
        weight.uniform_(-bound * gain, bound * gain)


def _as_batched(coords: torch.Tensor, batch: int) -> torch.Tensor:
    if coords.dim() == 2:
        return coords.unsqueeze(0).expand(batch, -1, -1)
    if coords.dim() != 3 or coords.shape[0] != batch:
        raise ValueError(f"coords must be (N, d) or ({batch}, N, d), got {tuple(coords.shape)}")
    return coords


class LatentToGates(nn.Module):
    """phi -> LayerNorm -> residual LeakyReLU MLP -> one vector of all U_l, V_l."""

    def __init__(self, latent_dim: int, out_features: int, width: int, blocks: int):
        super().__init__()
        self.norm = nn.LayerNorm(latent_dim)
        self.inp = nn.Linear(latent_dim, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LeakyReLU(), nn.Linear(width, width), nn.LeakyReLU(), nn.Linear(width, width))
            for _ in range(blocks)
        )
        self.out = nn.Sequential(nn.LeakyReLU(), nn.Linear(width, out_features))

    def forward(self, phi: torch.Tensor) -> torch.Tensor:
        h = self.inp(self.norm(phi))
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


class _SirenBase(nn.Module):
    """Shared SIREN body: sine layers ``layers[0..depth-1]`` and a linear head."""

    def __init__(self, coord_dim: int, out_dim: int, cfg: ModelConfig, first_scale: float, hidden_gain: float = 1.0):
        super().__init__()
        if cfg.depth < 1 or cfg.width < 1 or cfg.latent_dim < 1:
            raise ValueError("depth, width and latent_dim must be positive")
        self.cfg = cfg
        self.coord_dim, self.out_dim, self.latent_dim = coord_dim, out_dim, cfg.latent_dim
        dims = [coord_dim] + [cfg.width] * cfg.depth
        self.layers = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(cfg.depth))
        for i, layer in enumerate(self.layers):
            _siren_uniform_(layer.weight, cfg.w0, first=i == 0, gain=1.0 if i == 0 else hidden_gain)
        self.head = nn.Linear(cfg.width, out_dim)
        _siren_uniform_(self.head.weight, cfg.w0, first=False)
        with torch.no_grad():  # targets are normalised to [0, 1]: start at its middle
            self.head.bias.fill_(0.5)
        # A buffer, so the artifact keeps the training grid's scale for any coordinates
        # the model is evaluated at later (sample() off the grid).
        self.register_buffer("w0_initial_scale", torch.tensor(float(first_scale)))
        # The spread of the targets, in which the head's output is measured (see
        # :func:`scaled_targets`); 1 unless training sets it.
        self.register_buffer("output_scale", torch.tensor(1.0))

    def w0_of(self, i: int) -> float | torch.Tensor:
        return self.cfg.w0_initial * self.w0_initial_scale if i == 0 else self.cfg.w0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Weights saved before the scale was kept (artifacts, checkpoints) ran at w0_initial.
        state_dict.setdefault(prefix + "w0_initial_scale", torch.tensor(1.0))
        state_dict.setdefault(prefix + "output_scale", torch.tensor(1.0))  # and before the output scale
        scale = state_dict[prefix + "output_scale"]
        if scale.numel() != 1 or not (torch.isfinite(scale).all() and scale.item() > 0):
            raise ValueError("output_scale must be one finite positive number")  # the inner loop divides by it
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def initial_latent(self) -> torch.Tensor:
        """The starting point phi_0 of the inner loop (before meta-learning)."""
        raise NotImplementedError


class GatedSiren(_SirenBase):
    """SIREN with low-rank soft gates on its weights, predicted from the latent."""

    def __init__(self, coord_dim: int, out_dim: int, cfg: ModelConfig, first_scale: float = 1.0):
        # sigmoid(U V^T) is 0.5 at init: doubling the gated weights keeps SIREN's
        # activation statistics.
        super().__init__(coord_dim, out_dim, cfg, first_scale, hidden_gain=2.0)
        if cfg.gate_first_layer:
            _siren_uniform_(self.layers[0].weight, cfg.w0_initial, first=True, gain=2.0)
        self.gated = [i for i in range(cfg.depth) if i > 0 or cfg.gate_first_layer]
        if not self.gated:
            raise ValueError("GatedSiren has nothing to gate: use depth >= 2 or gate_first_layer")
        r = cfg.gate_rank
        self.gate_sizes: list[tuple[int, int]] = [
            (int(self.layers[i].out_features), int(self.layers[i].in_features)) for i in self.gated
        ]
        total = sum((m + n) * r for m, n in self.gate_sizes)
        self.to_gates = LatentToGates(cfg.latent_dim, total, cfg.mod_width, cfg.mod_blocks)

    def initial_latent(self) -> torch.Tensor:
        # LayerNorm makes the model invariant to phi's scale, so |phi_0| acts as an
        # inverse inner step size: a small phi_0 lets three steps move the output.
        return 0.01 * torch.randn(self.latent_dim)

    def gates(self, phi: torch.Tensor) -> list[torch.Tensor]:
        """Per-item gate matrices ``sigmoid(U V^T)``, one ``(B, m, n)`` per gated layer."""
        flat = self.to_gates(phi)
        r, out, start = self.cfg.gate_rank, [], 0
        for m, n in self.gate_sizes:
            u = flat[:, start : start + m * r].reshape(-1, m, r)
            start += m * r
            v = flat[:, start : start + n * r].reshape(-1, n, r)
            start += n * r
            out.append(torch.sigmoid(u @ v.transpose(1, 2)))
        return out

    def forward(self, coords: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        h = _as_batched(coords, phi.shape[0])
        gates = dict(zip(self.gated, self.gates(phi)))
        for i, layer in enumerate(self.layers):
            if i in gates:
                w = gates[i] * layer.weight  # (B, m, n)
                pre = torch.baddbmm(layer.bias.view(1, 1, -1), h, w.transpose(1, 2))
            else:
                pre = layer(h)
            h = torch.sin(self.w0_of(i) * pre)
        return self.head(h) * self.output_scale


class ShiftSiren(_SirenBase):
    """Functa / COIN++ baseline: a linear map from phi to per-layer shifts of every sine layer."""

    def __init__(self, coord_dim: int, out_dim: int, cfg: ModelConfig, first_scale: float = 1.0):
        super().__init__(coord_dim, out_dim, cfg, first_scale)
        self.to_shifts = nn.Linear(cfg.latent_dim, cfg.width * cfg.depth)

    def initial_latent(self) -> torch.Tensor:
        # COIN++: phi_0 = 0, with the shift map at its default (non-zero) init so that
        # the inner loop's gradient w.r.t. phi does not vanish.
        return torch.zeros(self.latent_dim)

    def forward(self, coords: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        h = _as_batched(coords, phi.shape[0])
        shifts = self.to_shifts(phi).reshape(phi.shape[0], self.cfg.depth, 1, self.cfg.width)
        for i, layer in enumerate(self.layers):
            h = torch.sin(self.w0_of(i) * (layer(h) + shifts[:, i]))
        return self.head(h) * self.output_scale


def centred_targets(config: Config) -> bool:
    """Whether ``config``'s INR learns targets centred on 0 and starts there (see
    :func:`build_inr`): a hybrid's residuals, or values less the mean field. Values less
    their item's mean are centred too, but the demo's INR (``subtract_item_mean``) ended
    0.4 dB lower on its test years started at 0 (38.94 against 39.35 dB after 800
    steps), so it keeps the start at 0.5."""
    return config.model.kind == "hybrid" or config.data.subtract_mean_field


def scaled_targets(config: Config) -> bool:
    """Whether ``config``'s INR measures its targets in units of their spread (the
    ``output_scale`` set from the training items, see
    :func:`vcinr_sci.model.training.set_output_scale`): a hybrid's residuals. Their
    spread is a data set's, from 0.0045 (CCSM TREFHT less 8 EOFs) to 0.03 (ERA5 UK) of
    the normalised range; in raw units the inner loop's gradient scales with its square,
    so one initial step size cannot suit them all (CCSM learned nothing at step 1)."""
    return config.model.kind == "hybrid"


def build_inr(coord_dim: int, cfg: ModelConfig, out_dim: int = 1, centred: bool = False,
              grid: Grid | None = None) -> _SirenBase:
    """The INR of ``cfg``. ``centred``: its targets are centred on 0 (anomalies from the
    item mean, the mean field or a linear model), so its output starts at 0, not at the
    middle of [0, 1]: a start at 0.5 put step 0 far below what a zero output gives, and
    the first hundred or so outer steps went on unlearning it. ``grid``: the training
    grid, whose :func:`first_layer_scale` the first layer's frequency takes (None: 1)."""
    scale = 1.0 if grid is None else first_layer_scale(grid)
    if cfg.conditioning == "gated":
        net: _SirenBase = GatedSiren(coord_dim, out_dim, cfg, scale)
    elif cfg.conditioning == "shift":
        net = ShiftSiren(coord_dim, out_dim, cfg, scale)
    else:
        raise ValueError(f"unknown conditioning {cfg.conditioning!r} (gated | shift)")
    if centred:
        with torch.no_grad():
            net.head.bias.zero_()
    return net
