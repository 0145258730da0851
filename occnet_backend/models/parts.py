"""The parts an occupancy network is built from.

- `FourierFeatures`: random Fourier features of the query point (Tancik et al., 2020): a small MLP
  fits fine detail in a few hundred steps.
- `HashGridEncoding`: a multi-resolution grid of learned features (Müller et al., Instant-NGP,
  2022), trilinearly interpolated: the surface is stored where it is, so a fit converges in a few
  hundred steps on a CPU where an MLP needs thousands.
- `ResnetDecoder`: the reference implementation's ResNet-FC (residual blocks of two linear layers,
  each block's last layer zero-initialised so every block starts as the identity). Conditioned on
  a shape code, its normalisation is *conditional batch norm* (y = γ(c)·BN(x) + β(c), de Vries et
  al. 2017) with γ starting at 1 and β at 0, and the code is also added to the first hidden layer.
- `PointNetEncoder`: labelled points of a shape -> its code (the paper's ONet encoder).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("batch", "none")
CONDITIONINGS = ("norm", "input")
"""Where a decoder takes the shape code: 'norm', its first hidden layer and every normalisation's scale and
shift (conditional batch norm, or FiLM without batch norm: the reference's way, and the code-blending Fourier
network's); 'input', its first hidden layer only: a grid model's, whose features already place each shape's
surface and whose code only says which shape: with the norms' scales too, a step cost 5-34% more and the thin
ant of a 4-shape model ended 0.016 lower (BENCHMARKS.md)."""


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


class _Interpolate(torch.autograd.Function):
    """Σ_k w[i, k] · table[index[i, k]] -> [M, F]; its backward is a weighted `bincount` per feature:
    on a CPU PyTorch's own backward of an indexed read (index_put) or of `embedding_bag` is 3-7x
    slower, `index_add_` and `scatter_add_` 1.6-1.8x (bench/grid.py, BENCHMARKS.md)."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index, weights)
        ctx.rows = table.shape[0]
        return F.embedding_bag(index, table, per_sample_weights=weights, mode="sum")

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        index, weights = ctx.saved_tensors
        flat = index.reshape(-1)
        grad_table = grad.new_empty(ctx.rows, grad.shape[1])
        for k in range(grad.shape[1]):  # one weighted bincount per feature channel
            grad_table[:, k] = torch.bincount(flat, (weights * grad[:, k : k + 1]).reshape(-1), minlength=ctx.rows)
        return grad_table, None, None


HASH_PRIMES = (1, 2654435761, 805459861)  # Instant-NGP's spatial hash


LOG2_TABLE_SIZE = 17
"""Rows of a hashed level's table: 2^17."""


class HashGridEncoding(nn.Module):
    """x -> [x, features of x on `levels` grids from `base_resolution` to `finest_resolution` cells].

    Each level is a grid over [-box, box]³ whose corner features are interpolated trilinearly; a
    coarse level is stored densely, a level with more corners than `table_size` shares a hashed
    table (collisions are resolved by the decoder, which also sees the coarse levels). `fit` sets the
    finest level from the largest shape's surface area (`fitting.grid_resolution`). Features start at ±1e-4.

    With `shapes` > 1 each shape has rows of its own: a copy of the dense levels, and hashed levels whose
    rows are XORed with a salt of the shape's index (shape 0's is 0), so two shapes normalised into the same
    cube share a row only where their hashes collide, not at every point of space. Why: shapes that shared
    every row learned each other's features (Suzanne + torus: held-out IoU 0.838 after 100 steps, two copies
    of Suzanne 0.942), and 8 shapes trailed their single fits by up to 0.014 IoU with twice the features, in
    0.59x their time; with their own rows and 2 features by up to 0.004, in 0.52x, their blends smoother
    (BENCHMARKS.md).
    """

    def __init__(self, dim_input: int = 3, levels: int = 8, features: int = 2, base_resolution: int = 16,
                 finest_resolution: int = 256, log2_table_size: int = LOG2_TABLE_SIZE, box: float = 0.6, seed: int = 0,
                 shapes: int = 1):
        super().__init__()
        if dim_input != 3:
            raise ValueError(f"the grid encoding is three-dimensional, got dim_input={dim_input}")
        if isinstance(shapes, bool) or not isinstance(shapes, int) or shapes < 1:
            raise ValueError(f"shapes must be an integer >= 1 (shapes with rows of their own), got {shapes!r}")
        growth = (finest_resolution / base_resolution) ** (1 / max(levels - 1, 1))
        self.resolutions = [int(round(base_resolution * growth**level)) for level in range(levels)]
        self.table_size = 1 << log2_table_size
        self.box, self.levels, self.features = float(box), levels, features
        sizes = [min((r + 1) ** 3, self.table_size) for r in self.resolutions]
        self.num_dense = sum((r + 1) ** 3 <= self.table_size for r in self.resolutions)
        dense_rows = sum(sizes[: self.num_dense])
        rows = sum(sizes) + (shapes - 1) * dense_rows
        if (max(self.resolutions) + 1) * self.table_size >= 2**31 or rows >= 2**31:
            raise ValueError(f"a grid of {max(self.resolutions)} cells with a table of 2^{log2_table_size} rows does not "
                             "fit 32-bit indices; use a smaller finest_resolution or log2_table_size")
        self.register_buffer("offsets", torch.tensor([0, *np.cumsum(sizes)[:-1].tolist()], dtype=torch.int32),
                             persistent=False)
        self.register_buffer("cells", torch.tensor(self.resolutions, dtype=torch.long), persistent=False)
        self.register_buffer("strides", torch.tensor([[(r + 1) ** 2, r + 1, 1] for r in self.resolutions[: self.num_dense]],
                                                     dtype=torch.int32).reshape(-1, 3), persistent=False)
        self.register_buffer("primes", torch.tensor([p & (self.table_size - 1) for p in HASH_PRIMES], dtype=torch.int32),
                             persistent=False)
        generator = torch.Generator().manual_seed(seed)
        self.shapes = shapes
        # each shape's copy of the dense levels follows the shared layout; its hashed rows are salted
        shifts = [0] + [sum(sizes) + (k - 1) * dense_rows for k in range(1, shapes)]
        self.register_buffer("dense_shift", torch.tensor(shifts, dtype=torch.int32), persistent=False)
        salts = [(k * 0x9E3779B1) % self.table_size for k in range(shapes)]
        self.register_buffer("salts", torch.tensor(salts, dtype=torch.int32), persistent=False)
        self.table = nn.Parameter((torch.rand(int(rows), features, generator=generator) * 2 - 1) * 1e-4)
        self.dim_output = dim_input + levels * features

    def corner_index(self, lower: torch.Tensor, shape: torch.Tensor | None = None) -> torch.Tensor:
        """Lower corners of each point's cells [L, 3, N] -> rows of `table` of the cells' 8 corners
        [L, 8, N], int32, corner k = 4a + 2b + c at lower + (a, b, c). int32: every row and every
        product below fits, in half the memory of int64 (bench/grid.py compares both). A hashed level
        keeps only the low bits of corner x prime, which depend only on the prime's low bits: the
        primes are stored masked. Points are the last, contiguous axis, so every broadcast below runs
        over long rows (2x faster than points first). `shape`: each point's shape [N] (see the class), or
        None for shape 0."""
        lower = lower.int()
        corners = torch.stack([lower, lower + 1], 2)  # [L, 3, 2, N]
        parts = []
        nd = self.num_dense
        if nd:
            d = corners[:nd] * self.strides.view(nd, 3, 1, 1)
            parts.append(d[:, 0, :, None, None] + d[:, 1, None, :, None] + d[:, 2, None, None, :])
        if nd < self.levels:
            h = (corners[nd:] * self.primes.view(1, 3, 1, 1)) & (self.table_size - 1)
            hashed = h[:, 0, :, None, None] ^ h[:, 1, None, :, None] ^ h[:, 2, None, None, :]
            parts.append(hashed if shape is None else hashed ^ self.salts[shape])
        rows = torch.cat(parts).reshape(self.levels, 8, -1) + self.offsets.view(-1, 1, 1)
        if shape is not None and nd:
            rows[:nd] += self.dense_shift[shape]
        return rows

    def interpolation(self, x: torch.Tensor, shape: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Points [N, 3] (of shapes `shape` [N], see `corner_index`) -> (rows [L * N, 8], trilinear weights
        [L * N, 8], fp32), level-major: what `_Interpolate` sums. Points outside the box are clamped to its faces."""
        unit = ((x.float() + self.box) / (2 * self.box)).clamp(0, 1)
        cells = self.cells.view(-1, 1, 1)
        position = unit.t().unsqueeze(0) * cells  # [L, 3, N]
        lower = torch.minimum(position.floor(), cells - 1)
        frac = position - lower
        w = torch.stack([1 - frac, frac], 2)  # [L, 3, 2, N]
        weights = w[:, 0, :, None, None] * w[:, 1, None, :, None] * w[:, 2, None, None, :]
        rows = self.corner_index(lower, shape)
        return rows.transpose(1, 2).reshape(-1, 8), weights.reshape(self.levels, 8, -1).transpose(1, 2).reshape(-1, 8)

    def forward(self, x: torch.Tensor, shape: torch.Tensor | None = None) -> torch.Tensor:
        """Points [..., 3] -> [..., dim_output]; `shape`: each point's shape index [...] on a grid with rows for
        several shapes (`shapes`), else None (shape 0)."""
        lead = x.shape[:-1]
        with torch.autocast(x.device.type, enabled=False):  # positions and weights in fp32
            flat = x.reshape(-1, 3).float()
            if shape is not None:
                shape = shape.reshape(-1).long()
                if shape.shape != flat.shape[:1] or (len(shape) and not 0 <= int(shape.min()) <= int(shape.max()) < self.shapes):
                    raise ValueError(f"shape must hold one index in [0, {self.shapes}) per point")
            rows, weights = self.interpolation(flat, shape)
            features = _Interpolate.apply(self.table, rows, weights.to(self.table.dtype))
            features = features.reshape(self.levels, -1, self.features).permute(1, 0, 2).reshape(len(flat), -1)
            return torch.cat([flat, features], -1).reshape(*lead, self.dim_output)


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
    """Encoded points [B, N, E] (+ codes [B, C] when conditioned) -> logits [B, N].

    `conditioning` (see CONDITIONINGS): 'norm', the code is added to the first hidden layer and sets
    every normalisation's scale and shift; 'input', it is only added to the first hidden layer."""

    def __init__(self, dim_encoded: int, width: int, num_layers: int, dim_condition: int = 0, norm: str = "none",
                 dropout_prob: float = 0.0, conditioning: str = "norm"):
        super().__init__()
        self.fc_in = nn.Linear(dim_encoded, width)
        self.fc_c = nn.Linear(dim_condition, width) if dim_condition else None
        in_norms = dim_condition if conditioning == "norm" else 0
        self.blocks = nn.ModuleList(ResnetBlock(width, in_norms, norm, dropout_prob) for _ in range(num_layers))
        self.norm_out = Norm(width, in_norms, norm)
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
