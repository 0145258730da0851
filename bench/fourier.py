"""Fourier features on vs off: IoU reached per second of training on a real mesh (Suzanne).

Same data, same steps, same seed; only the input encoding differs. Also counts connected
components of the extracted mesh (floaters) because fast convergence is worthless if the
surface grows blobs in empty space.

    .venv/bin/python bench/fourier.py [--steps 300]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import trimesh

from common import labelled_pool, machine, suzanne
from occnet_backend.data.labels import inside
from occnet_backend.models.network import OccupancyNetwork


def run(config: dict, pool, test, steps: int, batch: int = 8192) -> dict:
    torch.manual_seed(0)
    points, occ = pool
    model = OccupancyNetwork(**config)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    curve = []
    elapsed = 0.0
    for step in range(1, steps + 1):
        start = time.perf_counter()
        idx = torch.randint(len(points), (batch,), generator=gen)
        loss = model.compute_loss(model(points[idx]), occ[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        elapsed += time.perf_counter() - start
        if step % 50 == 0:
            pred = model.predict_logits(test[0]).numpy() >= 0
            curve.append((round(elapsed, 1), float((pred & test[1]).sum() / (pred | test[1]).sum())))
    out = model.extract_mesh(resolution=128)
    mesh = trimesh.Trimesh(out["vertices"], out["faces"])
    return {"curve": curve, "components": len(mesh.split(only_watertight=False)), "watertight": mesh.is_watertight}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    vertices, faces = suzanne()
    v, *pool = labelled_pool(vertices, faces)
    _, *pool_055 = labelled_pool(vertices, faces, uniform_box=0.55)
    test_pts = np.random.default_rng(1).uniform(-0.55, 0.55, (100_000, 3)).astype(np.float32)
    test = (torch.from_numpy(test_pts), inside(v, faces, test_pts))
    configs = {
        "plain (no Fourier)": dict(fourier_frequencies=0),
        "Fourier 64, sigma 1": dict(fourier_frequencies=64, fourier_scale=1.0),
        "Fourier 64, sigma 2": dict(fourier_frequencies=64, fourier_scale=2.0),
        "Fourier 64, sigma 4": dict(fourier_frequencies=64, fourier_scale=4.0),
        "sigma 2, box 0.55": dict(fourier_frequencies=64, fourier_scale=2.0),
    }
    print(f"machine: {machine()}")
    print(f"Suzanne (subdiv 2, {len(faces)} faces), width 128 x 5 blocks, {args.steps} steps x 8192 points, Adam 1e-3")
    print("training points: half near the surface, half uniform in [-0.6, 0.6]³ (last row: [-0.55, 0.55]³)")
    print(f"{'encoding':<22} {'IoU at (seconds)':<60} {'components':>10} {'closed':>7}")
    for name, config in configs.items():
        r = run(config, pool_055 if "0.55" in name else pool, test, args.steps)
        curve = "  ".join(f"{iou:.3f}@{t:.0f}s" for t, iou in r["curve"])
        print(f"{name:<22} {curve:<60} {r['components']:>10} {str(r['watertight']):>7}", flush=True)


if __name__ == "__main__":
    main()
