"""The parts an occupancy network is built from.

- `FourierFeatures`: random Fourier features of the query point (Tancik et al., 2020): a small MLP
  fits fine detail in a few hundred steps.
- `ResnetDecoder`: the reference implementation's ResNet-FC (residual blocks of two linear layers,
  each block's last layer zero-initialised so every block starts as the identity). Conditioned on
  a shape code, its normalisation is *conditional batch norm* (y = γ(c)·BN(x) + β(c), de Vries et
  al. 2017) with γ starting at 1 and β at 0, and the code is also added to the first hidden layer.
- `PointNetEncoder`: labelled points of a shape -> its code (the paper's ONet encoder).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("batch", "none")


class FourierFeatures(nn.Module):
    """x -> [x, sin(2π Bx), cos(2π Bx)] with a fixed Gaussian matrix B ~ N(0, scale²).

    B is a buffer (saved with the checkpoint, never trained) drawn from a fixed generator so that
    two networks built with the same arguments encode identically.
    """

    def __init__(self, dim_input: int, num_frequencies: int, scale: float, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("B", torch.randn(dim_input, num_frequencies, generator=generator) * scale)
        self.dim_output = dim_input + 2 * num_frequencies

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # always fp32: under bf16 autocast x @ B would round the phase by up to ~0.1 rad at σ 2
        with torch.autocast(x.device.type, enabled=False):
            projected = 2 * math.pi * (x.float() @ self.B.float())
        return torch.cat([x, torch.sin(projected), torch.cos(projected)], dim=-1)


class Norm(nn.Module):
    """Normalisation of hidden features [B, N, W], optionally conditioned on codes [B, C].

    Statistics are taken over every point of every shape in the batch. Unconditioned: batch norm
    with its own affine part (``norm='batch'``) or nothing. Conditioned: the affine part is
    predicted from the code (γ's layer starts at weight 0, bias 1; β's at 0, 0, so at
    initialisation the layer is a plain normalisation); ``norm='none'`` keeps only that affine
    part (FiLM), which needs no running statistics.
    """

    def __init__(self, width: int, dim_condition: int = 0, norm: str = "none"):
        super().__init__()
        self.bn = nn.BatchNorm1d(width, affine=dim_condition == 0) if norm == "batch" else None
        self.gamma = nn.Linear(dim_condition, width) if dim_condition else None
        self.beta = nn.Linear(dim_condition, width) if dim_condition else None
        if dim_condition:
            nn.init.zeros_(self.gamma.weight)
            nn.init.ones_(self.gamma.bias)
            nn.init.zeros_(self.beta.weight)
            nn.init.zeros_(self.beta.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        if self.bn is not None:
            x = self.bn(x.reshape(-1, x.shape[-1])).reshape(x.shape)
        if self.gamma is None:
            return x
        return torch.addcmul(self.beta(c).unsqueeze(1), self.gamma(c).unsqueeze(1), x)


class ResnetBlock(nn.Module):
    """Pre-activation residual block; the last layer starts at zero so the block is the identity."""

    def __init__(self, width: int, dim_condition: int = 0, norm: str = "none", dropout_prob: float = 0.0):
        super().__init__()
        self.norm_0 = Norm(width, dim_condition, norm)
        self.norm_1 = Norm(width, dim_condition, norm)
        self.fc_0 = nn.Linear(width, width)
        self.fc_1 = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout_prob) if dropout_prob > 0 else nn.Identity()
        nn.init.zeros_(self.fc_1.weight)
        nn.init.zeros_(self.fc_1.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        h = self.fc_0(F.relu(self.norm_0(x, c)))
        h = self.fc_1(self.dropout(F.relu(self.norm_1(h, c))))
        return x + h


class ResnetDecoder(nn.Module):
    """Encoded points [B, N, E] (+ codes [B, C] when conditioned) -> logits [B, N]."""

    def __init__(self, dim_encoded: int, width: int, num_layers: int, dim_condition: int = 0, norm: str = "none",
                 dropout_prob: float = 0.0):
        super().__init__()
        self.fc_in = nn.Linear(dim_encoded, width)
        self.fc_c = nn.Linear(dim_condition, width) if dim_condition else None
        self.blocks = nn.ModuleList(ResnetBlock(width, dim_condition, norm, dropout_prob) for _ in range(num_layers))
        self.norm_out = Norm(width, dim_condition, norm)
        self.fc_out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc_in(x)
        if self.fc_c is not None:
            h = h + self.fc_c(c).unsqueeze(1)
        for block in self.blocks:
            h = block(h, c)
        return self.fc_out(F.relu(self.norm_out(h, c))).squeeze(-1)


class PointNetEncoder(nn.Module):
    """Labelled points [B, M, 3] + occupancy [B, M] -> code [B, C] (ResNet-PointNet of the reference).

    Each point carries its occupancy as a 4th channel (±1), so the encoder sees both where the
    surface is and which side is inside. Max-pooled global features are fed back to every point
    between blocks, as in the reference implementation's ``ResnetPointnet``.
    """

    def __init__(self, dim_condition: int = 128, dim_hidden: int = 128, num_blocks: int = 3):
        super().__init__()
        self.fc_in = nn.Linear(4, 2 * dim_hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Linear(2 * dim_hidden, dim_hidden), nn.ReLU(), nn.Linear(dim_hidden, dim_hidden))
            for _ in range(num_blocks)
        )
        self.shortcuts = nn.ModuleList(nn.Linear(2 * dim_hidden, dim_hidden, bias=False) for _ in range(num_blocks))
        self.fc_out = nn.Linear(dim_hidden, dim_condition)

    def forward(self, points: torch.Tensor, occupancy: torch.Tensor) -> torch.Tensor:
        x = torch.cat([points, occupancy.unsqueeze(-1) * 2 - 1], dim=-1)
        h = self.fc_in(x)
        for i, (block, shortcut) in enumerate(zip(self.blocks, self.shortcuts)):
            h = shortcut(h) + block(h)
            if i < len(self.blocks) - 1:
                pooled = h.max(dim=1, keepdim=True).values.expand_as(h)
                h = torch.cat([h, pooled], dim=-1)
        return self.fc_out(F.relu(h.max(dim=1).values))


def upgrade_state_dict(state: dict[str, torch.Tensor], conditional: bool) -> dict[str, torch.Tensor]:
    """Weights saved before the decoder became its own part (checkpoints of version 0.1.0 up to
    December 2026) renamed to today's layout, so results in saved .blend files keep their sliders."""
    if "fc_out.weight" not in state:
        return state
    out = {}
    for key, value in state.items():
        head = key.split(".")[0]
        if head in ("fc_in", "fc_p", "fc_c", "blocks", "norm_out", "fc_out"):
            key = "decoder." + key.replace("fc_p.", "fc_in.", 1)
            parts = key.split(".")
            if not conditional and parts[-2].startswith("norm_"):  # nn.BatchNorm1d -> Norm.bn
                key = ".".join(parts[:-1] + ["bn", parts[-1]])
        out[key] = value
    return out
