"""Extraction: MISE vs dense grid at 128³ and 256³ on a trained model (Suzanne), in one run.

Reports network evaluations, seconds, peak RSS of a fresh process per case (so one case's memory
does not hide another's), and the IoU between the MISE and dense meshes.

    .venv/bin/python bench/extraction.py [--steps 300] [--width 128]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import labelled_pool, machine, suzanne
from occnet_backend.data.labels import inside
from occnet_backend.models.network import OccupancyNetwork


def train(width: int, steps: int) -> OccupancyNetwork:
    vertices, faces = suzanne()
    _, points, occ = labelled_pool(vertices, faces)
    torch.manual_seed(0)
    model = OccupancyNetwork(dim_hidden=width, fourier_frequencies=64, fourier_scale=2.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        idx = torch.randint(len(points), (8192,))
        loss = model.compute_loss(model(points[idx]), occ[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def child(model_path: str, width: int, method: str, resolution: int, mesh_path: str) -> None:
    # Linux carries the parent's peak RSS across fork+exec; reset it so we measure this case alone.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    model = OccupancyNetwork(dim_hidden=width, fourier_frequencies=64, fourier_scale=2.0)
    model.load_state_dict(torch.load(model_path, weights_only=True))
    start = time.perf_counter()
    out = model.extract_mesh(resolution=resolution, method=method)
    seconds = time.perf_counter() - start
    np.savez(mesh_path, vertices=out["vertices"], faces=out["faces"])
    peak_mb = peak_rss_mb()
    print(json.dumps({"evaluations": out["stats"]["evaluations"], "seconds": seconds, "peak_rss_mb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--child", nargs=4, metavar=("MODEL", "METHOD", "RES", "MESH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.width, args.child[1], int(args.child[2]), args.child[3])
        return
    print(f"machine: {machine()}")
    print(f"model: width {args.width} x 5 blocks, Fourier 64, trained {args.steps} steps on Suzanne")
    with tempfile.TemporaryDirectory() as tmp:
        model_path = str(Path(tmp) / "model.pt")
        torch.save(train(args.width, args.steps).state_dict(), model_path)
        probe = np.random.default_rng(0).uniform(-0.55, 0.55, (200_000, 3))
        print(f"{'res':>4} {'method':>6} {'evaluations':>12} {'seconds':>8} {'peak RSS MB':>12} {'IoU vs dense':>13}")
        for res in args.resolutions:
            results, labels = {}, {}
            for method in ("dense", "mise"):
                mesh_path = str(Path(tmp) / f"{method}{res}.npz")
                cmd = [sys.executable, __file__, "--width", str(args.width), "--child", model_path, method, str(res), mesh_path]
                results[method] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                mesh = np.load(mesh_path)
                labels[method] = inside(mesh["vertices"], mesh["faces"], probe)
            iou = (labels["dense"] & labels["mise"]).sum() / (labels["dense"] | labels["mise"]).sum()
            for method in ("dense", "mise"):
                r = results[method]
                shown = "-" if method == "dense" else f"{iou:.5f}"
                print(f"{res:>4} {method:>6} {r['evaluations']:>12,} {r['seconds']:>8.2f} {r['peak_rss_mb']:>12.0f} {shown:>13}")
            ratio = results["dense"]["evaluations"] / results["mise"]["evaluations"]
            speed = results["dense"]["seconds"] / results["mise"]["seconds"]
            print(f"{res:>4}  MISE: {ratio:.1f}x fewer evaluations, {speed:.1f}x faster", flush=True)


if __name__ == "__main__":
    main()
