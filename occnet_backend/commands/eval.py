"""`eval`: score a checkpoint on a split of a dataset folder with the standard metrics.

    python -m occnet_backend eval --checkpoint RUN/checkpoint.pt --data DATA_ROOT [--split test]
        --out DIR [--resolution 128 --threshold 0.5 --device auto]

Writes DIR/metrics.csv (one row per shape) and DIR/metrics.json (per shape, mean and median).
Takes every checkpoint this project writes (`fit`, `train`) and both dataset layouts it reads: a
dataset folder (``meshes/`` + split lists, `prepare`'s) and the reference's preprocessed ShapeNet
(category folders with ``<split>.lst``, ``points.npz`` and ``pointcloud.npz``), found out from the
folder itself. As in the reference protocol: a shape the model has a learned code for uses that
code (code models are scored on their training shapes); any other shape needs a model with an
encoder (its code is encoded from the shape's labelled points, i.e. unseen shapes); an
unconditional `train` model is scored against every shape (a `fit` checkpoint only on the shapes it
fitted). Means skip non-finite values (an empty
reconstruction has infinite Chamfer) and say how many shapes they skipped.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import statistics
import sys
from pathlib import Path

from occnet_contract.settings import EVAL_BOX, RESOLUTIONS, FitSettings



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (DATA_ROOT)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--out", type=Path, required=True, help="folder for metrics.csv and metrics.json")
    d = FitSettings()
    parser.add_argument("--resolution", type=int, default=d.resolution, choices=RESOLUTIONS)
    parser.add_argument("--threshold", type=float, default=d.threshold)
    parser.add_argument("--device", default=d.device)


def _logit_fn(model, payload: dict, shape_id: str, sample: dict):
    import numpy as np

    from occnet_backend.fitting import FIT_FORMAT

    known = list(payload.get("shape_ids") or [])
    if not model.conditional and payload.get("format") != FIT_FORMAT:
        return model.logit_fn()  # a train run's one function (e.g. a category): scored on every shape
    if shape_id in known and (not model.conditional or model.num_shapes):
        return model.logit_fn(shape_index=known.index(shape_id))
    if model.encoder is None:
        raise ValueError(
            f"the checkpoint has no code for shape {shape_id!r} (it knows {known}) and no "
            "encoder to encode it; evaluate on the shapes it was trained on"
        )
    points = np.concatenate([sample["uniform_points"], sample.get("near_points", np.zeros((0, 3), np.float32))])
    occupancy = np.concatenate([sample["uniform_occupancy"], sample.get("near_occupancy", np.zeros(0, bool))])
    pick = np.random.default_rng(0).choice(len(points), min(model.encoder_points, len(points)), replace=False)
    code = model.encode_shape(points[pick], occupancy[pick].astype(np.float32))
    return model.logit_fn(condition=code)


def evaluation_samples(data: Path, split: str):
    """(shape id, sample) pairs of `split` in either layout; a sample has uniform points with
    occupancy and surface points with normals, in the shape's unit-cube frame."""
    if (data / "meshes").is_dir() or (data / f"{split}.json").is_file():
        from occnet_backend.data.folder import ensure_caches, load_samples, read_split

        shape_ids = read_split(data, split)
        if not shape_ids:
            raise ValueError(f"{data / (split + '.json')}: the {split!r} split is empty")
        ensure_caches(data, shape_ids)
        for sid in shape_ids:
            yield sid, load_samples(data, sid)
        return
    from occnet_backend.data.shapenet import list_models, read_pointcloud_npz, read_points_npz

    for cat, model in list_models(data, split):
        points, occupancy = read_points_npz(data / cat / model / "points.npz")
        surface, normals = read_pointcloud_npz(data / cat / model / "pointcloud.npz")
        yield f"{cat}_{model}", {"uniform_points": points, "uniform_occupancy": occupancy,
                                 "surface_points": surface, "surface_normals": normals}


def _score(model, payload: dict, sid: str, sample: dict, args: argparse.Namespace) -> dict:
    import numpy as np

    from occnet_backend.extraction import extract_mesh
    from occnet_backend.metrics import evaluate_mesh

    mesh = extract_mesh(_logit_fn(model, payload, sid, sample), resolution=args.resolution, threshold=args.threshold,
                        distance_scale=model.distance_scale)
    in_box = np.all(np.abs(sample["uniform_points"]) <= EVAL_BOX, axis=1)
    return evaluate_mesh(mesh["vertices"], mesh["faces"], sample["surface_points"], sample["surface_normals"],
                         sample["uniform_points"][in_box], sample["uniform_occupancy"][in_box])


def run(args: argparse.Namespace, events) -> int:
    from occnet_backend.cli import CommandError
    from occnet_backend.extraction import threshold_to_logit
    from occnet_backend.signals import signals_deferred
    from occnet_backend.training.checkpoints import load_checkpoint, model_from_payload
    from occnet_backend.training.precision import resolve_device
    from occnet_contract.files import atomic_write_bytes, atomic_write_json
    from occnet_contract.protocol import jsonable

    try:
        threshold_to_logit(args.threshold)
        payload = load_checkpoint(args.checkpoint)
        model = model_from_payload(payload, args.checkpoint).to(resolve_device(args.device)).eval()
        rows = {}
        with signals_deferred() as stop:
            for sid, sample in evaluation_samples(args.data, args.split):
                if stop():
                    raise KeyboardInterrupt  # between shapes: nothing written, exit 130
                rows[sid] = _score(model, payload, sid, sample, args)
                print(f"{sid}: IoU {rows[sid]['iou']:.3f}  Chamfer-L1 {rows[sid]['chamfer_l1']:.4f}", file=sys.stderr)
            if stop():
                raise KeyboardInterrupt
    except ValueError as err:
        raise CommandError(str(err)) from None
    keys = list(next(iter(rows.values())))
    summary: dict = {"shapes": rows, "mean": {}, "median": {}, "skipped_non_finite": {}}
    for key in keys:
        values = [float(r[key]) for r in rows.values()]
        finite = [v for v in values if math.isfinite(v)]
        summary["mean"][key] = statistics.fmean(finite) if finite else math.nan
        summary["median"][key] = statistics.median(finite) if finite else math.nan
        summary["skipped_non_finite"][key] = len(values) - len(finite)
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["shape_id", *keys])
    for sid, r in rows.items():
        writer.writerow([sid, *(r[k] for k in keys)])
    writer.writerow(["mean", *(summary["mean"][k] for k in keys)])
    atomic_write_bytes(args.out / "metrics.csv", table.getvalue().encode())
    atomic_write_json(args.out / "metrics.json", jsonable(summary))
    m = summary["mean"]
    print(f"mean over {len(rows)} shapes: IoU {m['iou']:.3f}  Chamfer-L1 {m['chamfer_l1']:.4f} (unit cube, not x10)  "
          f"NC {m['normal_consistency']:.3f}  F@1% {m['fscore']:.3f} -> {args.out}", file=sys.stderr)
    return 0
