"""`fit`: meshes in, reconstructions out, in one call: prepare -> train -> extract -> evaluate.

This is what the Blender add-on runs. One mesh trains an `OccupancyNetwork` on a learned feature grid,
with soft targets from the signed distance (a close fit in seconds); several train one
`ConditionalOccupancyNetwork` on a shared grid with a learned code per shape, whose logits are kept
a signed distance everywhere (`distance_loss`), so the add-on's shape sliders blend the shapes'
distance fields. Training stops once the surface stops improving on
held-out points (`training.early_stopping`), at `steps` at the latest. Before training, each
shape's direct field (`direct_field`, no network) is written as a preview. Every output is written
atomically into the output folder:

    OUT/data/                 the dataset folder (meshes, splits, sample caches)
    OUT/preview/<id>.ply      the preview, in its input's own coordinates
    OUT/meshes/<id>.ply       each reconstruction, in its input's own coordinates
    OUT/checkpoint.pt         the trained model + each shape's normalisation (for `serve`)
    OUT/grids.pt              each shape's extraction grid, so that `serve` starts warm (`warm_grids`)
    OUT/metrics.json          per-shape metrics and timings
    OUT/training_curve.png    loss and IoU per step
    OUT/slices_<id>.png       predicted vs true occupancy on three axis-aligned slices
"""

from __future__ import annotations

import importlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from occnet_backend.events import NULL_EVENTS, EventWriter
from occnet_contract.files import atomic_write_json
from occnet_contract.ply import write_ply
from occnet_contract.protocol import jsonable
from occnet_backend.direct_field import DISTANCE_SCALE
from occnet_backend.training.early_stopping import CHECK_EVERY
from occnet_backend.warm_grids import GRIDS_FILE, save_grids
from occnet_contract.settings import EVAL_BOX, PREVIEW_RESOLUTION, SHAPES_PER_STEP, TRAIN_BOX, FitSettings

if TYPE_CHECKING:
    from occnet_backend.data.meshes import LoadedMesh

log = logging.getLogger(__name__)

FIT_FORMAT = "occnet-fit-1"
GRID_DECODER = {"dim_hidden": 64, "num_layers": 1, "conditioning": "input"}
"""A grid network's decoder: the features carry the detail, so a small one is enough and a step
costs a third of the Fourier network's; with several shapes, the code only says which one, so it enters
at the input (`parts.CONDITIONINGS`; BENCHMARKS.md)."""
NEAR_AREA = 1.0
"""Surface area (in the unit cube) that the near-surface half of a cache (`cached_points`) covers in a fit
of one shape: a shape with more surface (most package meshes 0.5-5 units, a heatsink's fins 12.7) gets more
near points, at the same density, up to the surface at which the grid's finest level halves (`overflow_area`:
there its cells grow four times as large). Why this density: at 256 cells the surface crosses about 45k
finest-level cells a unit, and the fit learns that level from the segments of exact distances between its
near points and the surface (`dataset.along_the_distance`); with a quarter of them it was bumpy between
them: a camera's normal consistency 0.018 below its direct field's, 0.004 with this (BENCHMARKS.md)."""
NEAR_AREA_SHAPES = 4.0
"""The same for a fit of several shapes (up to the same bound). Why less dense: each of its shapes trains on
1024-4096 points a step, not 8192, so its cache is drawn from 2-8 times less; at a single fit's density the
4- and 8-shape fits trained to their limit of 600 steps (0.75x / 0.61x the single fits' time instead of
0.57-0.62x) and the 8-shape airplane ended 0.027 below its single fit instead of 0.020 (BENCHMARKS.md)."""
LATER_IMPORTS = ("torch._dynamo", "matplotlib.figure", "matplotlib.backends.backend_agg")
"""Modules a fit needs only after its labels: the optimizer's first step imports torch._dynamo (1.3-1.9 s
on 2 cores), the pictures matplotlib (0.5 s). `fit_meshes` imports them on a thread while the labels
are computed, which mostly run in libigl and numpy without the GIL (BENCHMARKS.md)."""
PREPARE_IMPORTS = ("trimesh", "igl", "skimage.measure", "scipy.sparse.csgraph")
"""What preparing and the previews import: imported on the main thread before LATER_IMPORTS start on
theirs. Why: an interrupt (the add-on's Cancel is a SIGINT) that lands inside an import can be
swallowed by a library's guarded optional imports (trimesh's `except BaseException`), and an import
beside the thread's takes longer: a Cancel during prepare then ran on to the end (tests/test_faults.py)."""
NEAR_SHARE_SHAPES = 0.3
"""Share of near-surface points in a training step of a model whose shapes' fields blend (`blends_fields`:
a grid model of several shapes; any other model trains on half), at least NEAR_POINTS_PER_SHAPE of each
shape's points (`near_share`). Why: such a model's logits are kept a signed distance everywhere
(`distance_loss`), and a blend's surface runs where every shape is far from its own surface, where only
the uniform points teach the field. With half of them near, the README demo's nut + ant half-way surface
at 128³ had 1.5x the area of the exact fields' blend (a cloud of bumps) and the nut 9 specks in its hole;
with 0.3: 1.16x and no specks. On bench/morph.py's paths: Suzanne -> torus 2.72 -> 1.10x, 4 shapes worst
3.37 -> 1.59x; with 0.4 for every such model instead: Suzanne -> torus 1.00 -> 1.10x, 4 shapes' median 1.05 -> 1.13x
and their ant 0.973 -> 0.968 (BENCHMARKS.md)."""
NEAR_POINTS_PER_SHAPE = 410
"""Near-surface points of each shape in a step, at least (up to half its points). Why: an 8-shape model
(1024 points a shape) had 307 at NEAR_SHARE_SHAPES, and its thin shapes trailed their single fits (airplane
-0.027, ant -0.013); with 410 (a share of 0.4) -0.020 and -0.001, every other shape as close or closer,
the same 475 steps, its half-way areas as smooth (median 1.06 -> 1.07x, worst 1.32 -> 1.29x; BENCHMARKS.md)."""


def near_share(blends_fields: bool, points_per_shape: int) -> float:
    """The share of near-surface points in each shape's `points_per_shape` of a training step."""
    if not blends_fields:
        return 0.5
    return min(0.5, max(NEAR_SHARE_SHAPES, NEAR_POINTS_PER_SHAPE / points_per_shape))


HOLDOUT_POINTS = 4096
"""Near-surface and uniform points of each shape's cache kept out of training, for early stopping
(at most a tenth of the cache)."""


def holdout_points(settings: FitSettings) -> int:
    """Near-surface and uniform points each of a fit's shapes holds out of training (`HOLDOUT_POINTS`)."""
    return min(HOLDOUT_POINTS, settings.cached_points // 20)


@dataclass
class FitResult:
    shape_ids: list[str]
    mesh_paths: dict[str, Path]
    checkpoint: Path | None  # None when cancelled before training
    metrics: dict
    status: str = "ok"
    history: list[dict] = field(default_factory=list)


class _EtaAfterTraining:
    """The trainer's events, with each progress ETA extended by what `fit` does after training
    (extraction, evaluation, pictures), so that the add-on's ETA is the time to the result.

    The estimate is measured, not exact: evaluations MISE needs at a resolution (0.2-1.1 M at 128³
    for a grid network's distance-aware MISE, ~600k typical, growing ~res^1.7), network inference at
    ~3.5x the training rate in points/s (the nut's 825k evaluations at 877k/s vs 234k/s in training),
    and about 1.5 s per shape of metrics and slice pictures (2 CPU cores; BENCHMARKS.md)."""

    def __init__(self, events: EventWriter, num_shapes: int, resolution: int):
        self.events, self.num_shapes, self.resolution = events, num_shapes, resolution

    @property
    def enabled(self) -> bool:
        return self.events.enabled

    def after_training_s(self, points_per_s: float) -> float:
        evaluations = 600_000 * (self.resolution / 128) ** 1.7
        return self.num_shapes * (evaluations / (3.5 * max(points_per_s, 1.0)) + 1.5) + 0.5

    def emit(self, event: str, **fields) -> None:
        if event == "progress" and fields.get("eta_s") is not None and fields.get("points_per_s"):
            fields["eta_s"] = fields["eta_s"] + self.after_training_s(float(fields["points_per_s"]))
        self.events.emit(event, **fields)


def resolve_encoding(encoding: str) -> str:
    """'auto' -> 'grid' for any number of shapes: one shape lands within 0.003 IoU (median) of its
    direct field in a third of the Fourier network's time, 2-4 shapes within 0.005 of their single
    fits, with blends of their distance fields (0-4 extra parts on a path where code blends of the
    Fourier network had up to 18: bench/quality.py, bench/morph.py)."""
    return "grid" if encoding == "auto" else encoding


GRID_RESOLUTION = 256
"""Cells per side of the grid's finest level, at most: finer than a 128³ extraction grid, so the learned
surface keeps sharpening at 256³ (BENCHMARKS.md)."""


def grid_resolution(surface_area: float) -> int:
    """Cells per side of the grid's finest level for shapes whose largest has this much surface (unit-cube
    units): GRID_RESOLUTION, halved while that surface would pass through more than twice as many of its
    cells as a hashed level's table has rows. Why: such rows are each shared by several pieces of one
    surface, which the decoder cannot tell apart: the heatsink (12.7 units of fins, 4.4 surface cells a
    row at 256) reached IoU 0.890 at 256 cells and 0.912 at 128 (normal consistency 0.863 -> 0.887);
    most package meshes (0.5-5 units) keep 256. The largest shape's, not all shapes' together: a row
    where two shapes' salted hashes meet (`parts.HashGridEncoding`) is told apart by their codes, which
    the decoder sees; 8 shapes (19 units in all) at 128 cells trailed their single fits by up to 0.027
    IoU, at 256 by 0.013 (BENCHMARKS.md)."""
    cells = GRID_RESOLUTION
    while cells > 16 and surface_area > overflow_area(cells):
        cells //= 2
    return cells


def overflow_area(cells: int) -> float:
    """The surface (unit-cube units) above which a finest level of `cells` cells a side halves (`grid_resolution`)."""
    from occnet_backend.models.parts import LOG2_TABLE_SIZE

    return 2 * (1 << LOG2_TABLE_SIZE) * (2 * TRAIN_BOX / cells) ** 2


def build_model(num_shapes: int, s: FitSettings, surface_area: float = 0.0) -> torch.nn.Module:
    """The network `fit` trains for `num_shapes` shapes, the largest with `surface_area` (`grid_resolution`)."""
    from occnet_backend.models.network import OccupancyNetwork

    encoding = resolve_encoding(s.encoding)
    common = dict(dim_hidden=s.width, num_layers=s.depth, fourier_frequencies=s.fourier_frequencies,
                  fourier_scale=s.fourier_scale, encoding=encoding)
    if encoding == "grid":
        common.update(GRID_DECODER, distance_scale=DISTANCE_SCALE, grid_resolution=grid_resolution(surface_area))
    if num_shapes == 1:
        return OccupancyNetwork(**common)
    from occnet_backend.models.network import ConditionalOccupancyNetwork

    return ConditionalOccupancyNetwork(num_shapes=num_shapes, shape_rows=encoding == "grid", **common)


def fit_meshes(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    settings: FitSettings | None = None,
    events: EventWriter = NULL_EVENTS,
) -> FitResult:
    """Reconstruct every input mesh; see the module docstring for what is written.

    Raises ValueError (MeshError, DatasetError...) with a message naming the bad input.
    """
    from occnet_backend.data.folder import load_samples, mesh_path as report_mesh_path, prepare_dataset
    from occnet_backend.data.meshes import load_mesh
    from occnet_backend.data.dataset import OccupancyDataset
    from occnet_backend.data.sampling import SamplingConfig
    from occnet_backend.training.trainer import OccupancyTrainer
    from occnet_backend.training.precision import resolve_device

    s = (settings or FitSettings()).validate()
    if not inputs:
        raise ValueError("give at least one mesh file to fit")
    out_dir = Path(out_dir)
    check_output_folder(out_dir, [Path(p) for p in inputs])
    timings: dict[str, float] = {}
    device = resolve_device(s.device)
    for name in PREPARE_IMPORTS:
        importlib.import_module(name)
    later_imports = import_in_background(LATER_IMPORTS)

    # 1. prepare: labelled samples per shape (uniform points in a box wider than the IoU box)
    start = time.perf_counter()
    events.emit("stage", name="prepare")
    num_near = s.cached_points // 2
    config = SamplingConfig(
        num_uniform=s.cached_points - num_near, num_near=num_near, uniform_box=TRAIN_BOX, seed=s.seed,
        near_per_area=num_near / (NEAR_AREA if len(inputs) == 1 else NEAR_AREA_SHAPES),
        max_near=math.ceil(num_near / NEAR_AREA * overflow_area(GRID_RESOLUTION)),
    )
    try:
        report = prepare_dataset(out_dir / "data", inputs, config=config, split=(1.0, 0.0, 0.0), seed=s.seed,
                                 workers=min(s.workers, len(inputs)))
    except KeyboardInterrupt:  # SIGINT / SIGTERM while preparing: nothing trained, nothing to save
        log.warning("cancelled while preparing the data")
        return FitResult([], {}, None, {}, "cancelled", [])
    timings["prepare_s"] = time.perf_counter() - start
    samples = {sid: load_samples(out_dir / "data", sid) for sid in report.shapes}
    sources = {sid: load_mesh(report_mesh_path(out_dir / "data", sid)) for sid in report.shapes}

    start = time.perf_counter()
    try:
        write_previews(out_dir, samples, sources, events)
    except KeyboardInterrupt:
        log.warning("cancelled while writing the previews")
        return FitResult([], {}, None, {}, "cancelled", [])
    timings["preview_s"] = time.perf_counter() - start

    # 2. train one model on all shapes
    start = time.perf_counter()
    later_imports.join()  # before the trainer's own imports, so that no module is imported on two threads at once
    events.emit("stage", name="train")
    torch.manual_seed(s.seed)
    encoding = resolve_encoding(s.encoding)
    model = build_model(len(report.shapes), s, max(unit_cube_area(sources[sid], samples[sid]) for sid in report.shapes))
    points_per_shape = max(1, s.points // min(len(report.shapes), SHAPES_PER_STEP))
    near = near_share(model.blends_fields, points_per_shape)
    dataset = OccupancyDataset(out_dir / "data", split="train", seed=s.seed, preload=True, num_points=points_per_shape,
                               soft_targets=DISTANCE_SCALE if encoding == "grid" else 0.0,
                               surface_sampling=near, uniform_sampling=1.0 - near,
                               holdout_points=holdout_points(s))
    shape_ids = list(dataset.shape_ids)
    loader = DataLoader(dataset, batch_size=min(len(shape_ids), SHAPES_PER_STEP), shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(s.seed))
    rounds = steps_per_round(len(shape_ids))
    # SIGINT (the add-on's Cancel) and SIGTERM finish the current step; fit then saves and stops
    trainer = OccupancyTrainer(model, loader, device=device, lr=s.lr, amp=s.amp,
                               events=_EtaAfterTraining(events, len(shape_ids), s.resolution), handle_signals=True,
                               early_stopping=held_out_iou(model, dataset, every=round(CHECK_EVERY * rounds)))
    history = trainer.train(max_steps=round(s.steps * rounds))
    status = trainer.status
    timings["train_s"] = time.perf_counter() - start
    timings["train_steps"] = trainer.step
    timings["converged"] = trainer.converged
    checkpoint = save_fit_checkpoint(
        out_dir / "checkpoint.pt", model, shape_ids,
        centers=np.stack([samples[sid]["center"] for sid in shape_ids]),
        scales=np.array([samples[sid]["scale"] for sid in shape_ids]), settings=s,
    )
    (out_dir / GRIDS_FILE).unlink(missing_ok=True)  # an earlier fit's, which the sliders would only check and drop
    events.emit("checkpoint", path=str(checkpoint.resolve()))
    if status == "cancelled":
        return FitResult(shape_ids, {}, checkpoint, {}, status, history)

    # 3. extract and 4. evaluate each shape; a signal now stops between steps (see signals_deferred)
    from occnet_backend.signals import signals_deferred
    from occnet_backend.viz import plot_training_curves

    events.emit("stage", name="extract")
    per_shape, mesh_paths, grids = {}, {}, []
    with signals_deferred() as stop:
        status = _extract_and_evaluate(model, shape_ids, samples, sources, s, out_dir, events, per_shape, mesh_paths,
                                       grids, stop)
        if status == "cancelled":
            return FitResult(shape_ids, mesh_paths, checkpoint, {}, status, history)
        try:
            save_grids(checkpoint, grids)
        except OSError as err:  # a full disk: the sliders only start colder, so the fit goes on
            log.warning("could not write %s (%s): the sliders will fill their grids themselves", GRIDS_FILE, err)
        plot_training_curves(history, out_dir / "training_curve.png", title="fit")
        precision = str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "float32"
        summary = {"shapes": per_shape, "timings": timings, "device": str(device), "training_precision": precision,
                   "training_precision_reason": trainer.precision, "settings": s.as_dict()}
        atomic_write_json(out_dir / "metrics.json", jsonable(summary))
    return FitResult(shape_ids, mesh_paths, checkpoint, summary, status, history)


def import_in_background(modules: Sequence[str]) -> threading.Thread:
    """A started thread that imports `modules`; one that fails to import is left for its
    user to report (the thread only saves time)."""

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - reported where the module is used
                log.debug("could not import %s ahead of time", name, exc_info=True)

    thread = threading.Thread(target=run, name="fit-imports")
    thread.start()
    return thread


def unit_cube_area(source: LoadedMesh, sample: dict) -> float:
    """Surface area of a shape's source mesh (`LoadedMesh`) in the unit cube its `sample` was drawn in."""
    import trimesh

    from occnet_backend.data.meshes import to_unit_cube

    return float(trimesh.Trimesh(to_unit_cube(source.vertices, sample["center"], sample["scale"]), source.faces,
                                 process=False).area)


def steps_per_round(num_shapes: int) -> float:
    """Steps in which every shape is trained once: 1 for up to SHAPES_PER_STEP shapes, N / SHAPES_PER_STEP
    beyond. `steps` and the held-out checks' spacing are counted in these rounds, so that each shape of a
    large model gets the training a shape of a small one gets: when 8 shapes took 4 a step, 600 steps and a
    check every 25 stopped them at 375 steps, 0.01-0.13 IoU below their single fits (counted in rounds:
    900 steps, within 0.011; BENCHMARKS.md)."""
    return max(1.0, num_shapes / SHAPES_PER_STEP)


def held_out_iou(model: torch.nn.Module, dataset, every: int = CHECK_EVERY):
    """Early stopping on the mean held-out IoU over the shapes (each with its own code), checked
    every `every` steps. A fit of several shapes stops as one of one shape does: with rows of their own in
    the grid their blends are as smooth at that stop (half-way areas 1.00-1.06x the exact fields'; a check
    more had been needed while the shapes shared every row, BENCHMARKS.md)."""
    from occnet_backend.metrics import iou
    from occnet_backend.training.early_stopping import HeldOutIoU

    held = [dataset.holdout(i) for i in range(len(dataset))]

    def evaluate() -> float:
        scores = [iou((model.predict_logits(h["points"], shape_index=i if model.conditional else None) >= 0).numpy(),
                      h["occupancy"]) for i, h in enumerate(held)]
        return sum(scores) / len(scores)

    return HeldOutIoU(evaluate, every=every)


def write_previews(out_dir: Path, samples: dict, sources: dict, events: EventWriter) -> None:
    """Each shape's direct field (its own signed distance, no network) at PREVIEW_RESOLUTION, as
    OUT/preview/<id>.ply in the input's coordinates, announced by a `preview` event. `sources`:
    each shape's `LoadedMesh` (its copy in the dataset folder)."""
    from occnet_backend.data.meshes import to_unit_cube
    from occnet_backend.direct_field import direct_field_mesh

    for sid, sample in samples.items():
        source = sources[sid]
        # the quick distance: a preview should come in a second, and its surface is the exact one's but for
        # specks where open parts overlap (closed parts are measured to their union either way)
        mesh = direct_field_mesh(to_unit_cube(source.vertices, sample["center"], sample["scale"]), source.faces,
                                 PREVIEW_RESOLUTION, exact=False)
        world = (mesh["vertices"].astype(np.float64) * sample["scale"] + sample["center"]).astype(np.float32)
        path = write_ply(out_dir / "preview" / f"{sid}.ply", world, mesh["faces"])
        events.emit("preview", shape_id=sid, path=str(path.resolve()))


def _extract_and_evaluate(model, shape_ids: list[str], samples: dict, sources: dict, s: FitSettings, out_dir: Path,
                          events: EventWriter, per_shape: dict, mesh_paths: dict, grids: list, stop) -> str:
    """Stages 3 and 4 for every shape; 'cancelled' when `stop()` turned true between two steps. Each
    shape's extraction grid is appended to `grids` (its `GridCache.state()`, for `warm_grids`).
    A signal never interrupts scipy or marching cubes (a KeyboardInterrupt raised inside cKDTree
    once crashed the process with a segmentation fault)."""
    from occnet_backend.extraction import GridCache, extract_mesh
    from occnet_backend.data.meshes import to_unit_cube
    from occnet_backend.metrics import evaluate_mesh
    from occnet_backend.viz import mesh_occupancy_fn, plot_occupancy_slices

    for index, sid in enumerate(shape_ids):
        if stop():
            return "cancelled"
        start = time.perf_counter()
        logit_fn = model.logit_fn(shape_index=index)
        cache = GridCache()
        mesh = extract_mesh(logit_fn, resolution=s.resolution, threshold=s.threshold, cache=cache,
                            distance_scale=model.distance_scale)
        grids.append(cache.state())
        extract_s = time.perf_counter() - start
        sample = samples[sid]
        world = (mesh["vertices"].astype(np.float64) * sample["scale"] + sample["center"]).astype(np.float32)
        mesh_paths[sid] = write_ply(out_dir / "meshes" / f"{sid}.ply", world, mesh["faces"])
        events.emit("mesh", shape_id=sid, path=str(mesh_paths[sid].resolve()))
        if stop():
            return "cancelled"

        start = time.perf_counter()
        in_box = np.all(np.abs(sample["uniform_points"]) <= EVAL_BOX, axis=1)
        metrics = evaluate_mesh(
            mesh["vertices"], mesh["faces"], sample["surface_points"], sample["surface_normals"],
            sample["uniform_points"][in_box], sample["uniform_occupancy"][in_box],
        )
        if stop():
            return "cancelled"
        source = sources[sid]
        plot_occupancy_slices(
            logit_fn, mesh_occupancy_fn(to_unit_cube(source.vertices, sample["center"], sample["scale"]), source.faces),
            out_dir / f"slices_{sid}.png", logits=True, title=f"{sid}: prediction vs labels",
        )
        metrics.update(extract_s=extract_s, evaluate_s=time.perf_counter() - start,
                       evaluations=mesh["stats"]["evaluations"])
        per_shape[sid] = metrics
        events.emit("metrics", shape_id=sid, **metrics)
    return "cancelled" if stop() else "ok"


FIT_OUTPUTS = ("data", "preview", "meshes", "checkpoint.pt", GRIDS_FILE, "metrics.json", "training_curve.png", "live")


def check_output_folder(out_dir: Path, inputs: list[Path]) -> None:
    """Refuses an --out that would overwrite an input or mix with a foreign folder's files, and
    starts an earlier fit's folder clean (its other shapes would otherwise be trained again).

    Raises ValueError saying which file and what to do."""
    out = out_dir.resolve()
    written = [out / "data", out / "meshes"]
    for path in inputs:
        real = path.resolve()
        if any(real == w or w in real.parents for w in written):
            raise ValueError(f"{path} lies where fit writes its results (--out {out_dir}: data/, meshes/, "
                             "checkpoint.pt, ...) and could be overwritten; choose an --out folder outside the "
                             "input's folder, e.g. a new one")
    if not out.is_dir():
        return
    foreign = sorted(p.name for p in out.iterdir()
                     if p.name not in FIT_OUTPUTS and not p.name.startswith((".", "slices_")))
    if foreign:
        shown = ", ".join(repr(n) for n in foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise ValueError(f"--out {out_dir} holds files fit did not write ({shown}); give an empty or new folder "
                         "(or the folder of an earlier fit, which is then started clean)")
    from occnet_backend.data.folder import shape_id_from_path

    keep = {shape_id_from_path(p) for p in inputs}
    removed = []
    for stale in sorted((out / "data" / "meshes").glob("*")) if (out / "data" / "meshes").is_dir() else []:
        if stale.is_file() and shape_id_from_path(stale) not in keep:
            sid = shape_id_from_path(stale)
            for path in (stale, out / "data" / "cache" / f"{sid}.npz", out / "meshes" / f"{sid}.ply",
                         out / "preview" / f"{sid}.ply",
                         out / f"slices_{sid}.png"):
                path.unlink(missing_ok=True)
            removed.append(sid)
    if removed:
        log.warning("--out %s held an earlier fit of %s: starting clean (those shapes were removed from it)",
                    out_dir, ", ".join(removed))


def save_fit_checkpoint(path: Path, model: torch.nn.Module, shape_ids: list[str], centers: np.ndarray,
                        scales: np.ndarray, settings: FitSettings | None = None) -> Path:
    """The model (class, config, weights) plus each shape's normalisation, for `serve` and `eval`,
    and the fit's settings (`serve` warms its caches at their resolution and threshold)."""
    from occnet_backend.training.checkpoints import model_payload, save_checkpoint

    return save_checkpoint(path, {
        "format": FIT_FORMAT,
        **model_payload(model),
        "shape_ids": list(shape_ids),
        "centers": torch.as_tensor(centers, dtype=torch.float64),
        "scales": torch.as_tensor(scales, dtype=torch.float64),
        **({"settings": settings.as_dict()} if settings is not None else {}),
    })


def load_fit_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, payload) from a `fit` checkpoint; ValueError naming the file otherwise.

    Read with weights_only=True: a checkpoint cannot run code, and only this package's model
    classes are rebuilt (see occnet_backend.training.checkpoints).
    """
    from occnet_backend.training.checkpoints import load_checkpoint, model_from_payload

    payload = load_checkpoint(path)
    if payload.get("format") != FIT_FORMAT:
        raise ValueError(f"{path}: a training checkpoint, not one written by `occnet_backend fit` "
                         "(it lacks the shapes' normalisation); use the checkpoint.pt that fit wrote")
    ids, centers, scales = payload.get("shape_ids"), payload.get("centers"), payload.get("scales")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise ValueError(f"{path}: the fit checkpoint lists no shape ids (shape_ids must be a list of names)")
    n = len(ids)
    if (not torch.is_tensor(centers) or tuple(centers.shape) != (n, 3) or not torch.is_tensor(scales)
            or tuple(scales.shape) != (n,) or not torch.isfinite(centers).all() or not (scales > 0).all()):
        raise ValueError(f"{path}: the fit checkpoint's normalisation does not fit its {n} shape(s) (it needs "
                         f"centers [{n}, 3] and positive scales [{n}]); the file was edited or damaged")
    model = model_from_payload(payload, path).eval()
    if (model.num_shapes if model.conditional else 1) != n:
        raise ValueError(f"{path}: the model has {model.num_shapes} learned shapes but the checkpoint names {n}")
    return model, payload
