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

from occnet_contract.protocol import EXIT_CANCELLED
from occnet_contract.settings import FitSettings

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("meshes", nargs="+", type=Path, help="mesh files (obj, ply, off, stl, glb); several = one model")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    FitSettings.add_arguments(parser)
    parser.add_argument("--events", choices=["jsonl"], help="write JSON-lines events on stdout (for the add-on)")


def run(args: argparse.Namespace, events) -> int:
    from occnet_backend.cli import CommandError
    from occnet_backend.fitting import fit_meshes

    try:
        settings = FitSettings.from_namespace(args)
        result = fit_meshes(args.meshes, args.out, settings, events)
    except ValueError as err:  # SettingsError, and what fit_meshes refuses (a mesh, the output folder)
        raise CommandError(str(err)) from None
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
