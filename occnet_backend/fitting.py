"""`fit`: meshes in, reconstructions out, in one call: prepare -> train -> extract -> evaluate.

This is what the Blender add-on runs. One mesh trains an `OccupancyNetwork`; several train one
`ConditionalOccupancyNetwork` with a learned code per shape, so the add-on's shape-code sliders can
blend between them. Every output is written atomically into the output folder:

    OUT/data/                 the dataset folder (meshes, splits, sample caches)
    OUT/meshes/<id>.ply       each reconstruction, in its input's own coordinates
    OUT/checkpoint.pt         the trained model + each shape's normalisation (for `serve`)
    OUT/metrics.json          per-shape metrics and timings
    OUT/training_curve.png    loss and IoU per step
    OUT/slices_<id>.png       predicted vs true occupancy on three axis-aligned slices
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from occnet_backend.events import NULL_EVENTS, EventWriter, jsonable
from occnet_backend.files import atomic_write_bytes, write_ply

log = logging.getLogger(__name__)

IOU_BOX = 0.55  # the reference protocol's IoU box; training samples a wider box (see models.py)
TRAIN_BOX = 0.6


@dataclass
class FitSettings:
    """Everything `fit` can be told. Defaults are measured (BENCHMARKS.md) for 2 CPU cores."""

    steps: int = 600
    points: int = 8192  # labelled points per training step, over all shapes in the batch
    resolution: int = 128
    threshold: float = 0.5
    device: str = "auto"
    width: int = 128
    depth: int = 5
    fourier_frequencies: int = 64
    fourier_scale: float = 2.0
    lr: float = 1e-3
    seed: int = 0
    cached_points: int = 200_000  # labelled points cached per shape by `prepare`
    workers: int = 2

    def check(self) -> None:
        for name in ("steps", "points", "width", "depth", "cached_points", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.fourier_frequencies < 0:
            raise ValueError(f"--fourier-frequencies must be >= 0 (0 turns them off), got {self.fourier_frequencies}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")


@dataclass
class FitResult:
    shape_ids: list[str]
    mesh_paths: dict[str, Path]
    checkpoint: Path
    metrics: dict
    status: str = "ok"
    history: list[dict] = field(default_factory=list)


def build_model(num_shapes: int, s: FitSettings) -> torch.nn.Module:
    from occnet_backend.models import OccupancyNetwork

    common = dict(
        dim_hidden=s.width, num_layers=s.depth, fourier_frequencies=s.fourier_frequencies, fourier_scale=s.fourier_scale
    )
    if num_shapes == 1:
        return OccupancyNetwork(**common)
    from occnet_backend.conditional import ConditionalOccupancyNetwork

    return ConditionalOccupancyNetwork(num_shapes=num_shapes, **common)


def fit_meshes(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    settings: FitSettings | None = None,
    events: EventWriter = NULL_EVENTS,
) -> FitResult:
    """Reconstruct every input mesh; see the module docstring for what is written.

    Raises ValueError (MeshError, DatasetError...) with a message naming the bad input.
    """
    from occnet_backend.datafolder import load_samples, prepare_dataset
    from occnet_backend.datafolder import mesh_path as report_mesh_path
    from occnet_backend.dataset import OccupancyDataset
    from occnet_backend.sampling import SamplingConfig
    from occnet_backend.training import OccupancyTrainer, resolve_device

    s = settings or FitSettings()
    s.check()
    if not inputs:
        raise ValueError("give at least one mesh file to fit")
    out_dir = Path(out_dir)
    timings: dict[str, float] = {}
    device = resolve_device(s.device)

    # 1. prepare: labelled samples per shape (uniform points in a box wider than the IoU box)
    start = time.perf_counter()
    events.emit("stage", name="prepare")
    num_near = s.cached_points // 2
    config = SamplingConfig(
        num_uniform=s.cached_points - num_near, num_near=num_near, uniform_box=TRAIN_BOX, seed=s.seed
    )
    report = prepare_dataset(out_dir / "data", inputs, config=config, split=(1.0, 0.0, 0.0), seed=s.seed,
                             workers=min(s.workers, len(inputs)))
    timings["prepare_s"] = time.perf_counter() - start

    # 2. train one model on all shapes
    start = time.perf_counter()
    events.emit("stage", name="train")
    torch.manual_seed(s.seed)
    dataset = OccupancyDataset(out_dir / "data", split="train", seed=s.seed, preload=True,
                               num_points=max(1, s.points // min(len(report.shapes), 4)))
    shape_ids = list(dataset.shape_ids)
    loader = DataLoader(dataset, batch_size=min(len(shape_ids), 4), shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(s.seed))
    model = build_model(len(shape_ids), s)
    trainer = OccupancyTrainer(model, loader, device=device, lr=s.lr, events=events)
    status = "ok"
    try:
        trainer.train(max_steps=s.steps)
    except KeyboardInterrupt:  # SIGINT from the add-on's Cancel (and SIGTERM, see commands/fit.py)
        status = "cancelled"
    history = trainer.history
    timings["train_s"] = time.perf_counter() - start

    samples = {sid: load_samples(out_dir / "data", sid) for sid in shape_ids}
    checkpoint = save_fit_checkpoint(
        out_dir / "checkpoint.pt", model, shape_ids,
        centers=np.stack([samples[sid]["center"] for sid in shape_ids]),
        scales=np.array([samples[sid]["scale"] for sid in shape_ids]),
    )
    events.emit("checkpoint", path=str(checkpoint.resolve()))
    if status == "cancelled":
        return FitResult(shape_ids, {}, checkpoint, {}, status, history)

    # 3. extract and 4. evaluate each shape
    from occnet_backend.extraction import extract_mesh
    from occnet_backend.meshes import load_mesh, to_unit_cube
    from occnet_backend.metrics import evaluate_mesh
    from occnet_backend.viz import mesh_occupancy_fn, plot_occupancy_slices, plot_training_curves

    events.emit("stage", name="extract")
    per_shape, mesh_paths = {}, {}
    for index, sid in enumerate(shape_ids):
        start = time.perf_counter()
        logit_fn = shape_logit_fn(model, index)
        mesh = extract_mesh(logit_fn, resolution=s.resolution, threshold=s.threshold)
        extract_s = time.perf_counter() - start
        sample = samples[sid]
        world = (mesh["vertices"].astype(np.float64) * sample["scale"] + sample["center"]).astype(np.float32)
        mesh_paths[sid] = write_ply(out_dir / "meshes" / f"{sid}.ply", world, mesh["faces"])
        events.emit("mesh", shape_id=sid, path=str(mesh_paths[sid].resolve()))

        start = time.perf_counter()
        in_box = np.all(np.abs(sample["uniform_points"]) <= IOU_BOX, axis=1)
        metrics = evaluate_mesh(
            mesh["vertices"], mesh["faces"], sample["surface_points"], sample["surface_normals"],
            sample["uniform_points"][in_box], sample["uniform_occupancy"][in_box],
        )
        source = load_mesh(report_mesh_path(out_dir / "data", sid))
        plot_occupancy_slices(
            logit_fn, mesh_occupancy_fn(to_unit_cube(source.vertices, sample["center"], sample["scale"]), source.faces),
            out_dir / f"slices_{sid}.png", logits=True, title=f"{sid}: prediction vs labels",
        )
        metrics.update(extract_s=extract_s, evaluate_s=time.perf_counter() - start,
                       evaluations=mesh["stats"]["evaluations"])
        per_shape[sid] = metrics
        events.emit("metrics", shape_id=sid, **metrics)
    plot_training_curves(history, out_dir / "training_curve.png", title="fit")
    summary = {"shapes": per_shape, "timings": timings, "device": str(device), "settings": s.__dict__}
    atomic_write_bytes(out_dir / "metrics.json", json.dumps(jsonable(summary), indent=2).encode())
    return FitResult(shape_ids, mesh_paths, checkpoint, summary, status, history)


def shape_logit_fn(model: torch.nn.Module, index: int):
    """points -> logits of learned shape `index` (the only shape of an unconditional model)."""
    if hasattr(model, "code_weights_logit_fn"):
        weights = np.zeros(model.num_shapes)
        weights[index] = 1.0
        return model.code_weights_logit_fn(weights)
    return model.predict_logits


def save_fit_checkpoint(path: Path, model: torch.nn.Module, shape_ids: list[str], centers: np.ndarray,
                        scales: np.ndarray) -> Path:
    """Model class, constructor config and weights, plus each shape's normalisation, for `serve`.

    Only tensors and plain containers, so `torch.load(..., weights_only=True)` reads it.
    """
    import io

    payload = {
        "format": "occnet-fit-1",
        "model_class": type(model).__name__,
        "model_config": dict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "shape_ids": list(shape_ids),
        "centers": torch.as_tensor(centers, dtype=torch.float64),
        "scales": torch.as_tensor(scales, dtype=torch.float64),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_fit_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """(model with weights, payload) from a `fit` checkpoint; ValueError naming the file otherwise.

    Loaded with weights_only=True: a checkpoint cannot run code. Only our own model classes are
    rebuilt, from the constructor config stored beside the weights.
    """
    import pickle
    import zipfile

    from occnet_backend.models import OccupancyNetwork

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint; run `python -m occnet_backend fit ... --out DIR` first")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, OSError) as err:
        raise ValueError(f"{path}: not a readable checkpoint ({type(err).__name__}); it is corrupt or "
                         f"not written by occnet_backend: run fit again") from None
    if not isinstance(payload, dict) or payload.get("format") != "occnet-fit-1":
        raise ValueError(f"{path}: not a checkpoint written by `occnet_backend fit` (format occnet-fit-1)")
    classes = {"OccupancyNetwork": OccupancyNetwork}
    if payload["model_class"] == "ConditionalOccupancyNetwork":
        from occnet_backend.conditional import ConditionalOccupancyNetwork

        classes["ConditionalOccupancyNetwork"] = ConditionalOccupancyNetwork
    if payload["model_class"] not in classes:
        raise ValueError(f"{path}: unknown model class {payload['model_class']!r}")
    model = classes[payload["model_class"]](**payload["model_config"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not match the stored model config ({err})") from None
    return model, payload
