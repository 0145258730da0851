"""`prepare`: mesh files or folders -> a dataset folder (meshes, splits, per-shape sample caches).

    python -m occnet_backend prepare scans/ chair.glb --out data/ [--points 200000 --surface-ratio 0.5
        --split 0.8,0.1,0.1 --seed 0 --workers 2] [--events jsonl]

With no inputs, prepares the meshes already in ``--out``/meshes (what the Blender add-on writes).
Shapes whose cache is up to date are skipped, so re-running after adding or editing a mesh only
resamples what changed. Bad input (an unreadable mesh, a point cloud, duplicate ids...) prints one
line per problem on stderr, emits an ``error`` event, and exits 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--split must be three numbers like 0.8,0.1,0.1, got {text!r}") from None
    if len(parts) != 3 or min(parts) < 0 or abs(sum(parts) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(f"--split must be three numbers >= 0 summing to 1, got {text!r}")
    return parts  # type: ignore[return-value]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", type=Path, help="mesh files or folders (searched recursively)")
    parser.add_argument("--out", type=Path, required=True, help="dataset folder to write (DATA_ROOT)")
    parser.add_argument("--points", type=int, default=200_000, help="labelled points cached per shape")
    parser.add_argument("--surface-ratio", type=float, default=0.5, help="fraction of them near the surface")
    parser.add_argument("--surface-points", type=int, default=100_000, help="surface points with normals per shape")
    parser.add_argument("--split", type=_fractions, default=None, help="train,val,test fractions (default 0.8,0.1,0.1; "
                        "existing split files that cover all meshes are kept unless this is given)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="parallel processes")
    parser.add_argument("--force", action="store_true", help="rebuild every cache even if up to date")
    parser.add_argument("--events", choices=["jsonl"], help="write JSON-lines events on stdout")


def run(args: argparse.Namespace, events) -> int:
    from tqdm import tqdm

    from occnet_backend.cli import CommandError
    from occnet_backend.data.folder import DatasetError, PrepareError, prepare_dataset
    from occnet_backend.data.sampling import SamplingConfig

    started = time.time()
    try:
        config = SamplingConfig.from_counts(args.points, args.surface_ratio, args.surface_points, seed=args.seed)
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
    except ValueError as err:
        raise CommandError(str(err)) from None

    bar = tqdm(total=0, unit="shape", desc="prepare", file=sys.stderr, dynamic_ncols=True)

    def on_progress(done: int, total: int, result: dict) -> None:
        if done == 0:
            bar.total = total
            bar.refresh()
            events.emit("start", total=total, out=str(args.out.resolve()), workers=args.workers)
            return
        bar.update(1)
        bar.set_postfix_str(f"{result['shape_id']}: {result['status']}")
        elapsed = time.time() - started
        fields = {"shape_id": result["shape_id"], "status": result["status"]}
        if result["status"] == "error":
            fields["message"] = result["message"]
        events.emit("progress", step=done, total=total, eta_s=elapsed / done * (total - done), **fields)

    try:
        report = prepare_dataset(
            args.out, args.inputs, config=config, split=args.split, seed=args.seed,
            workers=args.workers, force=args.force, on_progress=on_progress,
        )
    except PrepareError as err:
        r = err.report
        raise CommandError(*[e["message"] for e in r.errors], prepared=len(r.shapes), failed=len(r.errors)) from None
    except DatasetError as err:
        raise CommandError(str(err)) from None
    finally:
        bar.close()
    seconds = time.time() - started
    sizes = {k: len(v) for k, v in report.splits.items()}
    events.emit(
        "done", status="ok", out=str(Path(report.data_root).resolve()), shapes=len(report.shapes),
        built=len(report.built), cached=len(report.cached), splits=sizes, seconds=round(seconds, 2),
    )
    print(
        f"prepared {len(report.shapes)} shapes in {args.out} ({len(report.built)} sampled, {len(report.cached)} up to date; "
        f"train/val/test {sizes['train']}/{sizes['val']}/{sizes['test']}) in {seconds:.1f} s",
        file=sys.stderr,
    )
    return 0
