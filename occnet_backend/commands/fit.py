"""`fit`: mesh files -> reconstructed meshes, metrics and pictures in one command.

    python -m occnet_backend fit suzanne.ply chair.glb --out runs/fit [--steps 600 --resolution 128
        --threshold 0.5 --device auto --amp auto] [--events jsonl]

Exit codes: 0 done, 1 bad input or failure (one line on stderr, an `error` event), 130 cancelled by
SIGINT/SIGTERM (training stops after the current step; the checkpoint is saved).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from occnet_backend.cli import EXIT_CANCELLED

HELP = "Reconstruct mesh files in one command: prepare, train, extract, evaluate."
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from occnet_backend.fitting import FitSettings
    from occnet_backend.training import AMP_MODES

    d = FitSettings()
    parser.add_argument("meshes", nargs="+", type=Path, help="mesh files (obj, ply, off, stl, glb); several = one model")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--steps", type=int, default=d.steps, help=f"training steps (default {d.steps})")
    parser.add_argument("--points", type=int, default=d.points, help=f"points per training step (default {d.points})")
    parser.add_argument("--resolution", type=int, default=d.resolution, help="marching-cubes grid: 32·2^k (default 128)")
    parser.add_argument("--threshold", type=float, default=d.threshold, help="occupancy probability of the surface")
    parser.add_argument("--device", default=d.device, help="auto (GPU when there is one) | cpu | cuda")
    parser.add_argument("--amp", default=d.amp, choices=AMP_MODES,
                        help="mixed precision: auto = fp16 on a GPU, bf16 on a CPU with native bf16 "
                             "(half the time, same quality), else off")
    parser.add_argument("--width", type=int, default=d.width, help="network width")
    parser.add_argument("--depth", type=int, default=d.depth, help="residual blocks")
    parser.add_argument("--fourier-frequencies", type=int, default=d.fourier_frequencies, help="0 turns them off")
    parser.add_argument("--fourier-scale", type=float, default=d.fourier_scale)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--cached-points", type=int, default=d.cached_points, help="labelled points cached per shape")
    parser.add_argument("--workers", type=int, default=d.workers, help="processes preparing shapes in parallel")
    parser.add_argument("--events", choices=["jsonl"], help="write JSON-lines events on stdout (for the add-on)")


def run(args: argparse.Namespace) -> int:
    from occnet_backend.events import EventWriter
    from occnet_backend.fitting import FitSettings, fit_meshes

    events = EventWriter(enabled=args.events == "jsonl")
    settings = FitSettings(**{k: getattr(args, k) for k in FitSettings.__dataclass_fields__})
    try:
        result = fit_meshes(args.meshes, args.out, settings, events)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        events.emit("error", message=str(err))
        events.emit("done", status="error")
        return 1
    events.emit("done", status=result.status, out=str(args.out.resolve()),
                checkpoint=str(result.checkpoint.resolve()) if result.checkpoint else None)
    if result.status == "cancelled":
        saved = f"checkpoint saved to {result.checkpoint}" if result.checkpoint else "nothing was trained yet"
        print(f"cancelled; {saved}", file=sys.stderr)
        return EXIT_CANCELLED
    for sid, m in result.metrics["shapes"].items():
        print(
            f"{sid}: IoU {m['iou']:.3f}  Chamfer-L1 {m['chamfer_l1']:.4f}  NC {m['normal_consistency']:.3f}  "
            f"F@1% {m['fscore']:.3f}  watertight {m['watertight']}  -> {result.mesh_paths[sid]}",
            file=sys.stderr,
        )
    return 0
