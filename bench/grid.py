"""The grid encoding's backward on a CPU: ours (a weighted bincount per feature) vs the ways
PyTorch offers (autograd of an indexed read, embedding_bag's own backward, index_add_,
scatter_add_); its forward with the points as the last axis vs first, corner rows in int32 vs int64;
and one training step of fit's grid network
(with Adam's per-tensor loop and with the fused Adam fit uses) vs fit's Fourier network.

    .venv/bin/python bench/grid.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from common import machine
from occnet_backend.fitting import GRID_DECODER
from occnet_backend.models.network import OccupancyNetwork
from occnet_backend.models.parts import HashGridEncoding, _Interpolate
from occnet_backend.training.schedule import build_optimizer


def seconds(fn, repeat: int = 20) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    print(f"machine: {machine()}")
    torch.manual_seed(0)
    grid = HashGridEncoding()
    points = torch.rand(8192, 3) * 1.2 - 0.6
    rows = grid.table.shape[0]
    with torch.no_grad():
        index, weights = grid.interpolation(points)
    grad = torch.randn(len(index), grid.features)

    def with_backward(accumulate):
        """The interpolation as an autograd Function whose backward is `accumulate`."""

        class Interpolate(torch.autograd.Function):
            @staticmethod
            def forward(ctx, table, index, weights):
                ctx.save_for_backward(index, weights)
                return F.embedding_bag(index, table, per_sample_weights=weights, mode="sum")

            @staticmethod
            def backward(ctx, g):
                index, weights = ctx.saved_tensors
                return accumulate(index, weights, g), None, None

        def run():
            table = grid.table.detach().requires_grad_(True)
            (Interpolate.apply(table, index, weights) * grad).sum().backward()

        return run

    def index_add(index, weights, g):
        out = g.new_zeros(rows, grid.features)
        return out.index_add_(0, index.reshape(-1), (g.unsqueeze(1) * weights.unsqueeze(-1)).reshape(-1, grid.features))

    def scatter_add(index, weights, g):
        flat = (index.unsqueeze(-1) * grid.features + torch.arange(grid.features)).reshape(-1)
        values = (g.unsqueeze(1) * weights.unsqueeze(-1)).reshape(-1)
        return g.new_zeros(rows * grid.features).scatter_add_(0, flat, values).view(rows, grid.features)

    def autograd_read():
        table = grid.table.detach().requires_grad_(True)
        ((table[index] * weights.unsqueeze(-1)).sum(1) * grad).sum().backward()

    def embedding_bag():
        table = grid.table.detach().requires_grad_(True)
        (F.embedding_bag(index, table, per_sample_weights=weights, mode="sum") * grad).sum().backward()

    def ours():
        table = grid.table.detach().requires_grad_(True)
        (_Interpolate.apply(table, index, weights) * grad).sum().backward()

    print(f"forward + backward of the interpolation, 8192 points x {grid.levels} levels x 8 corners into "
          f"{rows:,} rows:")
    for name, fn in (("ours: bincount per feature", ours), ("backward by index_add_", with_backward(index_add)),
                     ("backward by scatter_add_", with_backward(scatter_add)),
                     ("autograd of table[index]", autograd_read), ("embedding_bag's own", embedding_bag)):
        print(f"  {name:<28} {seconds(fn) * 1000:7.2f} ms")

    cells = grid.cells.view(-1, 1, 1)

    def encoding_points_first(x, rows_dtype=torch.int32, masked_primes=True):
        """The encoding's forward as it was before the points became the last axis ([L, N, 3, 2]
        corners); before that, with int64 rows and the full primes."""
        nd, mask = grid.num_dense, grid.table_size - 1
        position = ((x + grid.box) / (2 * grid.box)).clamp(0, 1).unsqueeze(0) * cells
        low = torch.minimum(position.floor(), cells - 1)
        f = position - low
        corners = torch.stack([low, low + 1], -1).to(rows_dtype)
        primes = grid.primes if masked_primes else torch.tensor([1, 2654435761, 805459861])
        d = corners[:nd] * grid.strides.to(rows_dtype).view(nd, 1, 3, 1)
        h = (corners[nd:] * primes.to(rows_dtype).view(1, 1, 3, 1))
        rows_of = torch.cat([d[..., 0, :, None, None] + d[..., 1, None, :, None] + d[..., 2, None, None, :],
                             (h[..., 0, :, None, None] ^ h[..., 1, None, :, None] ^ h[..., 2, None, None, :]) & mask]
                            ).reshape(grid.levels, -1, 8) + grid.offsets.to(rows_dtype).view(-1, 1, 1)
        ww = torch.stack([1 - f, f], -1)
        wt = (ww[..., 0, :, None, None] * ww[..., 1, None, :, None] * ww[..., 2, None, None, :]).reshape(-1, 8)
        feats = F.embedding_bag(rows_of.reshape(-1, 8), grid.table, per_sample_weights=wt, mode="sum")
        return torch.cat([x, feats.reshape(grid.levels, -1, grid.features).permute(1, 0, 2).reshape(len(x), -1)], -1)

    with torch.no_grad():
        int64 = lambda x: encoding_points_first(x, torch.int64, masked_primes=False)  # noqa: E731
        assert torch.equal(encoding_points_first(points), grid(points)) and torch.equal(int64(points), grid(points))
        print("the encoding's forward, 8192 points (inference):")
        print(f"  {'ours: points last, int32':<28} {seconds(lambda: grid(points), 50) * 1000:7.2f} ms")
        print(f"  {'points first, int32':<28} {seconds(lambda: encoding_points_first(points), 50) * 1000:7.2f} ms")
        print(f"  {'points first, int64':<28} {seconds(lambda: int64(points), 50) * 1000:7.2f} ms")

    print("one training step, 8192 points, fp32 (forward, BCE, backward, Adam):")
    grid_network = OccupancyNetwork(encoding="grid", **GRID_DECODER)
    for name, model, fused in (("grid, Adam per tensor", grid_network, False),
                               ("grid, Adam fused (fit's)", grid_network, True),
                               ("Fourier 64, width 128 x 5", OccupancyNetwork(), True)):
        opt = (build_optimizer("adam", model.parameter_groups(1e-3), 1e-3, 0.0) if fused
               else torch.optim.Adam(model.parameter_groups(1e-3), foreach=False))
        target = (points.norm(dim=1) < 0.4).float()

        def step():
            loss = F.binary_cross_entropy_with_logits(model(points), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        print(f"  {name:<28} {seconds(step) * 1000:7.2f} ms")


if __name__ == "__main__":
    main()
