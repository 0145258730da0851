"""Training throughput against the machine's own matmul roofline, fp32 vs bf16 autocast, width 128/256.

The roofline is this machine's measured fp32 matmul rate (best of a few large square products).
A training step of a ResNet-FC costs about 3x its forward matmul FLOPs (forward, plus grad of
inputs and of weights), so   fraction = 3 * forward_flops_per_point * points_per_s / peak.
Throughput is measured through `OccupancyTrainer` itself (one batch of 8192 points per step,
a fixed in-memory batch so data loading is not what is timed), so the trainer's overhead counts.

    .venv/bin/python bench/training.py [--steps 20] [--points 8192] [--no-append]

Appends today's numbers as a section to BENCHMARKS.md (append only).
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import machine  # noqa: E402

from occnet_backend.allocator import keep_freed_memory  # noqa: E402
from occnet_backend.models.network import ConditionalOccupancyNetwork  # noqa: E402
from occnet_backend.models.network import OccupancyNetwork  # noqa: E402
from occnet_backend.training.trainer import OccupancyTrainer  # noqa: E402


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-`repeats` rate of an n x n x n product (2n³ FLOPs)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def forward_flops_per_point(width: int, layers: int, frequencies: int) -> float:
    """Matmul FLOPs of one point through the network (2 per multiply-add)."""
    encoded = 3 + 2 * frequencies
    macs = encoded * width + layers * 2 * width * width + width
    return 2.0 * macs


def measure(model: torch.nn.Module, points: int, steps: int, amp: str | bool, shapes: int = 1) -> float:
    """Training points/s through OccupancyTrainer on a fixed batch."""
    torch.manual_seed(0)
    per_shape = points // shapes
    pts = torch.rand(shapes, per_shape, 3) * 1.2 - 0.6
    batch = {"points": pts, "occupancy": (pts.norm(dim=-1, keepdim=True) < 0.35).float(),
             "shape_index": torch.arange(shapes)}
    trainer = OccupancyTrainer(model, [batch], device="cpu", amp=amp, progress_bar=False)
    for _ in range(3):
        trainer.train_step(batch)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batch)
    return shapes * per_shape * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--points", type=int, default=8192)
    parser.add_argument("--no-append", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    out = io.StringIO()

    def say(text: str = "") -> None:
        print(text, flush=True)
        out.write(text + "\n")

    say(f"machine: {machine()}, {torch.get_num_threads()} torch threads")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    say(f"load average before: {load:.2f} (other processes on these cores slow every number)")
    peak32 = matmul_gflops(torch.float32)
    peak16 = matmul_gflops(torch.bfloat16)
    say(f"matmul 2048^3: fp32 {peak32:.1f} GFLOP/s (the roofline), bf16 {peak16:.1f} GFLOP/s")
    say(f"OccupancyTrainer.train_step, {args.points} points per step, 5 blocks, Fourier 64, Adam, {args.steps} timed steps")
    say(f"{'model':<34} {'precision':<21} {'points/s':>10} {'GFLOP/s':>8} {'of fp32 roofline':>17} "
        f"{'of own roofline':>16}")
    rows = []
    # the baseline: glibc malloc as a plain `import torch` leaves it (measured first: tuning is one-way)
    torch.manual_seed(0)
    model = OccupancyNetwork(dim_hidden=128, num_layers=5, fourier_frequencies=64)
    rate = measure(model, args.points, args.steps, False)
    rows.append(("OccupancyNetwork width 128", "fp32, default malloc", rate, forward_flops_per_point(128, 5, 64)))
    keep_freed_memory()  # what `python -m occnet_backend` does; every row below runs with it
    for width in (128, 256):
        for amp, label in ((False, "fp32"), ("bf16", "bf16 amp")):
            torch.manual_seed(0)
            model = OccupancyNetwork(dim_hidden=width, num_layers=5, fourier_frequencies=64)
            rate = measure(model, args.points, args.steps, amp)
            rows.append((f"OccupancyNetwork width {width}", label, rate, forward_flops_per_point(width, 5, 64)))
    for amp, label in ((False, "fp32"), ("bf16", "bf16 amp")):
        torch.manual_seed(0)
        model = ConditionalOccupancyNetwork(num_shapes=4, dim_hidden=128, num_layers=5, fourier_frequencies=64)
        rate = measure(model, args.points, args.steps, amp, shapes=4)
        rows.append(("Conditional width 128, 4 codes", label, rate, forward_flops_per_point(128, 5, 64)))
    for name, label, rate, flops in rows:
        achieved = 3 * flops * rate / 1e9
        own = peak16 if label.startswith("bf16") else peak32
        say(f"{name:<34} {label:<21} {rate:>10,.0f} {achieved:>8.1f} {achieved / peak32:>16.0%} {achieved / own:>16.0%}")

    if not args.no_append:
        path = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
        section = (f"\n## Training throughput vs matmul roofline (`bench/training.py`, {datetime.date.today()})\n\n"
                   f"```\n{out.getvalue()}```\n")
        with open(path, "a") as f:
            f.write(section)
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
