"""`synthetic`: train on one analytic shape and write the extracted mesh: a self-check of the install."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from occnet_backend.data.synthetic import SHAPES

    parser.add_argument("--shape", choices=SHAPES, default="torus")
    parser.add_argument("--out", type=Path, default=Path("out/synthetic"), help="output folder")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--points", type=int, default=8192, help="points per training step")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--events", choices=["jsonl"], help="write JSON-lines events on stdout")


def run(args: argparse.Namespace, events) -> int:
    import numpy as np
    import torch
    import trimesh
    from torch.utils.data import DataLoader

    from occnet_backend.cli import CommandError
    from occnet_contract.files import atomic_write_bytes
    from occnet_contract.settings import EVAL_BOX
    from occnet_backend.models.network import OccupancyNetwork
    from occnet_backend.data.synthetic import SyntheticOccupancyDataset
    from occnet_backend.training.trainer import OccupancyTrainer

    try:
        torch.manual_seed(args.seed)
        dataset = SyntheticOccupancyDataset(num_samples=1, shapes=[args.shape], num_points=args.points, seed=args.seed)
        model = OccupancyNetwork(fourier_frequencies=64, fourier_scale=2.0)
        trainer = OccupancyTrainer(model, DataLoader(dataset, batch_size=1), device=args.device, events=events)
        trainer.train(max_steps=args.steps)
        out = model.extract_mesh(resolution=args.resolution, threshold=args.threshold)
    except ValueError as err:
        raise CommandError(str(err)) from None
    shape = dataset.shapes[0]
    pts = np.random.default_rng(args.seed).uniform(-EVAL_BOX, EVAL_BOX, (100_000, 3)).astype(np.float32)
    pred = model.predict_probability(pts).numpy() >= args.threshold
    true = shape.contains(pts)
    iou = float((pred & true).sum() / max((pred | true).sum(), 1))
    mesh = trimesh.Trimesh(out["vertices"], out["faces"], process=False)
    path = atomic_write_bytes(args.out / f"{args.shape}.ply", mesh.export(file_type="ply"))
    events.emit("mesh", shape_id=args.shape, path=str(path.resolve()))
    events.emit("done", status="ok", iou=iou)
    print(
        f"{args.shape}: IoU {iou:.3f}, volume {mesh.volume:.4f} (analytic {shape.volume:.4f}), "
        f"watertight {mesh.is_watertight}, {len(mesh.vertices)} vertices -> {path}",
        file=sys.stderr,
    )
    return 0
