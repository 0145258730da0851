"""Pictures a person can look at: occupancy slices and training curves, as PNG files.

Why these two: a number like "IoU 0.93" does not say *where* a reconstruction is wrong; three
slices through the shape, prediction against ground-truth labels, show it at a glance (a missed
thin part, a floating blob, a filled-in hole). Training curves show whether more steps would help.

Everything draws on a bare ``matplotlib.figure.Figure`` rendered by Agg: no pyplot state, no
display, no window (safe in a headless subprocess, a ``blender --background`` job or a thread).
Every PNG has a fixed, documented pixel size (`SLICES_SIZE_PX`, `CURVES_SIZE_PX`) and is written
atomically (temporary file in the same folder, then renamed), so a viewer or the Blender add-on
polling the folder never reads half an image.

Slice geometry follows the extraction grid (``occnet_backend.extraction``): the box
[-0.55, 0.55]³ of the unit-cube-normalised shape, grids indexed [x, y, z] with samples on the
box's faces. Slices are the planes x = 0, y = 0 and z = 0, drawn with z up (Blender's up axis).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, Union

import numpy as np

from occnet_contract.settings import EVAL_BOX

if TYPE_CHECKING:  # imported lazily at run time: torch and matplotlib are slow to import
    from matplotlib.figure import Figure

DPI = 100
SLICES_SIZE_PX = (1500, 1000)
"""(width, height) in pixels of every occupancy-slice image."""
CURVES_SIZE_PX = (1400, 500)
"""(width, height) in pixels of every training-curve image."""
SLICES_LAYOUT = {1: dict(left=0.04, right=0.9, bottom=0.1, top=0.88, wspace=0.22),
                 2: dict(left=0.04, right=0.9, bottom=0.1, top=0.92, wspace=0.22, hspace=0.25)}
CURVES_LAYOUT = dict(left=0.06, right=0.98, bottom=0.13, top=0.85, wspace=0.18)
"""Fixed margins (fractions of the figure) for the fixed pixel sizes: matplotlib's constrained
layout drew every figure twice and cost a fit 1-1.5 s per picture (BENCHMARKS.md)."""


OccupancyFn = Callable[[np.ndarray], Any]
"""points float32 [N, 3] -> N probabilities (or logits with ``logits=True``, or bool labels); a
numpy array or a torch tensor of shape [N] or [N, 1]."""
OccupancySource = Union[OccupancyFn, np.ndarray]
"""A callable (see `OccupancyFn`) or a grid [n, n, n] indexed [x, y, z] over the box."""

_AXES = ("x", "y", "z")
# (fixed axis, horizontal axis, vertical axis) of each slice: z is always vertical when it can be.
_PLANES = ((0, 1, 2), (1, 0, 2), (2, 0, 1))

# Agreement map colours: true negative, true positive, false positive, false negative.
_AGREEMENT_COLORS = ("#ffffff", "#a6a6a6", "#e66101", "#5e3c99")
_AGREEMENT_NAMES = ("empty in both", "occupied in both", "predicted only (extra)", "labels only (missed)")


# --- sampling the slices ------------------------------------------------------------------------


def mesh_occupancy_fn(vertices: np.ndarray, faces: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """points -> bool inside the mesh (generalised winding number): ground-truth labels for
    `plot_occupancy_slices`, computed the way the training labels are."""
    from occnet_backend.metrics import mesh_occupancy

    v = np.asarray(vertices)
    f = np.asarray(faces)
    return lambda points: mesh_occupancy(v, f, points)


def slice_points(resolution: int = 128, box: float = EVAL_BOX) -> np.ndarray:
    """float32 [3, resolution, resolution, 3]: the sample points of the x = 0, y = 0 and z = 0
    slices; [s, row, col] is image row `row` (vertical axis, bottom to top) and column `col`."""
    _check_resolution(resolution)
    _check_box(box)
    axis = np.linspace(-box, box, resolution, dtype=np.float32)
    vertical, horizontal = np.meshgrid(axis, axis, indexing="ij")
    out = np.zeros((3, resolution, resolution, 3), dtype=np.float32)
    for s, (_, h, v) in enumerate(_PLANES):
        out[s, ..., h] = horizontal
        out[s, ..., v] = vertical
    return out


def occupancy_slices(
    source: OccupancySource, resolution: int = 128, box: float = EVAL_BOX, logits: bool = False
) -> np.ndarray:
    """float64 [3, H, W] values in [0, 1] on the slices x = 0, y = 0, z = 0 (rows bottom to top).

    A callable is evaluated once on all 3·resolution² points (one batch: one network pass or one
    winding-number query); a grid [n, n, n] is sliced at its middle index (exactly the centre for
    odd n, as the extraction grids have; half a cell off for even n), and then H = W = n.
    `logits=True` applies the sigmoid; booleans become 0/1.
    """
    if callable(source):
        points = slice_points(resolution, box)
        values = _as_numpy(source(points.reshape(-1, 3)))
        if values.size != 3 * resolution * resolution:
            raise ValueError(
                f"the occupancy callable returned {values.size} values for {3 * resolution * resolution} points; "
                "it must return one value per point (shape [N] or [N, 1])"
            )
        values = values.reshape(3, resolution, resolution)
    else:
        grid = _as_numpy(source)
        if grid.ndim != 3 or len(set(grid.shape)) != 1 or grid.shape[0] < 2:
            raise ValueError(
                f"an occupancy grid must be a cube [n, n, n] (n >= 2) indexed [x, y, z], got shape {grid.shape}; "
                "pass a callable points -> values for anything else"
            )
        c = grid.shape[0] // 2
        # grid[x, y, z]; images are [vertical, horizontal].
        values = np.stack([grid[c, :, :].T, grid[:, c, :].T, grid[:, :, c].T])
    values = values.astype(np.float64)
    if logits:
        values = 0.5 * (1.0 + np.tanh(0.5 * values))  # the sigmoid, without overflow warnings
    if np.isnan(values).any():
        raise ValueError("occupancy values contain NaN")
    return values


# --- figures ------------------------------------------------------------------------------------


def occupancy_slices_figure(
    prediction: OccupancySource,
    labels: OccupancySource | None = None,
    *,
    resolution: int = 128,
    box: float = EVAL_BOX,
    threshold: float = 0.5,
    logits: bool = False,
    title: str | None = None,
) -> Figure:
    """The figure of `plot_occupancy_slices` (for callers that log it or draw more on it)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be a probability strictly between 0 and 1, got {threshold!r}")
    pred = occupancy_slices(prediction, resolution, box, logits=logits)
    true = None if labels is None else occupancy_slices(labels, resolution, box)
    if true is not None and true.shape != pred.shape:
        raise ValueError(
            f"prediction slices {pred.shape[1:]} and label slices {true.shape[1:]} differ in size: "
            "pass grids of the same size, or callables"
        )

    fig = _figure(SLICES_SIZE_PX)
    rows = 1 if true is None else 2
    axes = fig.subplots(rows, 3, squeeze=False, gridspec_kw=SLICES_LAYOUT[rows])
    n = pred.shape[-1]
    edge = box * n / (n - 1)  # pixel centres on the samples, the outer ones on the box's faces
    extent = (-edge, edge, -edge, edge)
    agreement_cmap = ListedColormap(_AGREEMENT_COLORS)
    image = None
    for s, (fixed, h, v) in enumerate(_PLANES):
        ax = axes[0, s]
        image = ax.imshow(pred[s], origin="lower", extent=extent, vmin=0.0, vmax=1.0, cmap="viridis",
                          interpolation="nearest")
        _contour(ax, pred[s], threshold, extent, colors="white", linestyles="solid")
        heading = f"{_AXES[fixed]} = 0"
        if true is not None:
            _contour(ax, true[s], 0.5, extent, colors="red", linestyles="dashed")
            p, t = pred[s] >= threshold, true[s] >= 0.5
            union = np.count_nonzero(p | t)
            slice_iou = np.count_nonzero(p & t) / union if union else 1.0
            heading += f"   slice IoU {slice_iou:.3f}"
            category = np.where(t, np.where(p, 1, 3), np.where(p, 2, 0))
            ax2 = axes[1, s]
            ax2.imshow(category, origin="lower", extent=extent, cmap=agreement_cmap, vmin=-0.5, vmax=3.5,
                       interpolation="nearest")
            ax2.set_xlabel(_AXES[h])
            ax2.set_ylabel(_AXES[v])
            ax2.set_title(f"{_AXES[fixed]} = 0: prediction vs labels")
        ax.set_title(heading)
        ax.set_xlabel(_AXES[h])
        ax.set_ylabel(_AXES[v])
    top = axes[0, -1].get_position()
    cbar = fig.colorbar(image, cax=fig.add_axes((top.x1 + 0.03, top.y0, 0.012, top.height)))
    cbar.set_label(f"predicted occupancy (white line: threshold {threshold:g})")
    if true is not None:
        handles = [Patch(facecolor=c, edgecolor="black", label=n) for c, n in zip(_AGREEMENT_COLORS, _AGREEMENT_NAMES)]
        handles.append(Patch(facecolor="none", edgecolor="red", linestyle="dashed", label="label boundary (top row)"))
        fig.legend(handles=handles, loc="lower center", ncol=5, frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def training_curves_figure(
    history: Mapping[str, Sequence] | Sequence[Mapping[str, Any]], title: str | None = None
) -> Figure:
    """The figure of `plot_training_curves`."""
    columns = _history_columns(history)
    fig = _figure(CURVES_SIZE_PX)
    ax_loss, ax_iou = fig.subplots(1, 2, gridspec_kw=CURVES_LAYOUT)
    n = max((len(c) for c in columns.values()), default=0)
    x_name = "step" if "step" in columns else "record"
    x = columns["step"] if "step" in columns else np.arange(n, dtype=np.float64)
    loss_keys = [k for k in columns if "loss" in k.lower()]
    iou_keys = [k for k in columns if "iou" in k.lower()]

    for ax, keys, what in ((ax_loss, loss_keys, "loss"), (ax_iou, iou_keys, "IoU")):
        drawn = 0
        for k in keys:
            y = columns[k]
            ok = np.isfinite(y) & np.isfinite(x)
            if not ok.any():
                continue
            xs, ys = x[ok], y[ok]
            dense = ok.sum() > 0.5 * n  # logged every step (training) vs now and then (validation)
            if dense and len(ys) >= 20:
                line = ax.plot(xs, ys, alpha=0.25, linewidth=0.8)[0]
                ax.plot(xs, _moving_average(ys, max(2, len(ys) // 50)), color=line.get_color(),
                        linewidth=1.8, label=f"{k} (last {ys[-1]:.4g})")
            else:
                ax.plot(xs, ys, marker="o" if not dense else None, markersize=3, label=f"{k} (last {ys[-1]:.4g})")
            drawn += 1
        ax.set_xlabel(x_name)
        ax.set_ylabel(what)
        ax.grid(True, alpha=0.3)
        if drawn:
            ax.legend(loc="best")
            if what == "loss" and all(np.nanmin(columns[k]) > 0 for k in keys if np.isfinite(columns[k]).any()):
                ax.set_yscale("log")
            if what == "IoU":
                ax.set_ylim(0.0, 1.02)
        else:
            ax.text(0.5, 0.5, f"no {what} recorded yet", ha="center", va="center", transform=ax.transAxes)
    ax_loss.set_title("loss (faint: per step, bold: moving average)" if n >= 20 else "loss")
    ax_iou.set_title("IoU")
    if title:
        fig.suptitle(title)
    return fig


# --- files --------------------------------------------------------------------------------------


def plot_occupancy_slices(
    prediction: OccupancySource,
    labels: OccupancySource | None,
    out_png: str | os.PathLike,
    *,
    resolution: int = 128,
    box: float = EVAL_BOX,
    threshold: float = 0.5,
    logits: bool = False,
    title: str | None = None,
) -> Path:
    """Write a PNG (`SLICES_SIZE_PX` pixels) of prediction vs ground truth on three slices.

    Top row: predicted occupancy on the planes x = 0, y = 0, z = 0 through the centre of
    [-box, box]³ (unit-cube coordinates), with the predicted surface (white) and the labels'
    surface (red, dashed), and each slice's IoU. Bottom row: where prediction and labels agree,
    and where the prediction has extra (orange) or missing (purple) occupancy.

    `prediction`: a callable points [N, 3] -> probabilities [N] (e.g. a model's
    ``predict_logits`` with ``logits=True``) or a grid [n, n, n] indexed [x, y, z] (e.g. the
    extraction's dense grid of logits). `labels`: a callable (e.g. ``mesh_occupancy_fn(v, f)``
    for the ground-truth mesh), a grid, or None for the prediction alone. Callables are sampled
    at `resolution`² points per slice. Returns the path written.
    """
    fig = occupancy_slices_figure(prediction, labels, resolution=resolution, box=box, threshold=threshold,
                                  logits=logits, title=title)
    return save_png(fig, out_png)


def plot_training_curves(
    history: Mapping[str, Sequence] | Sequence[Mapping[str, Any]], out_png: str | os.PathLike, title: str | None = None
) -> Path:
    """Write a PNG (`CURVES_SIZE_PX` pixels): loss (left, log scale) and IoU (right) against step.

    `history` is either columns ``{'step': [...], 'loss': [...], 'iou': [...]}`` or records
    ``[{'step': 1, 'loss': ..., 'iou': ...}, ...]`` (``OccupancyTrainer.history``). Every key
    containing 'loss' goes left and every key containing 'iou' right (so ``val_loss`` /
    ``val_iou`` appear beside the training curves; records that lack a key are skipped, and
    sparse series such as validation are drawn with markers). Per-step series are drawn faint
    with a bold moving average. Without a 'step' key the record index is the x axis. An empty
    history gives a valid image saying nothing was recorded. Returns the path written.
    """
    return save_png(training_curves_figure(history, title=title), out_png)


def save_png(figure: Figure, out_png: str | os.PathLike) -> Path:
    """Render `figure` with Agg at its own size and write it atomically; returns the path."""
    from occnet_contract.files import atomic_write_bytes

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi)
    return atomic_write_bytes(out_png, buffer.getvalue())


# --- helpers ------------------------------------------------------------------------------------


def _figure(size_px: tuple[int, int]) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(size_px[0] / DPI, size_px[1] / DPI), dpi=DPI)


def _as_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, possibly on the GPU
        values = values.detach().float().cpu().numpy()
    return np.asarray(values)


def _check_resolution(resolution: int) -> None:
    if not isinstance(resolution, (int, np.integer)) or isinstance(resolution, bool) or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2 (pixels per slice side), got {resolution!r}")


def _check_box(box: float) -> None:
    if not isinstance(box, (int, float)) or not math.isfinite(box) or box <= 0:
        raise ValueError(f"box must be a positive half-width (unit-cube units, e.g. 0.55), got {box!r}")


def _contour(ax, values: np.ndarray, level: float, extent, **style) -> None:
    """A level line, only where there is one (matplotlib warns on a constant image)."""
    if values.min() < level <= values.max():
        ax.contour(values, levels=[level], origin="lower", extent=extent, linewidths=1.2, **style)


def _history_columns(history) -> dict[str, np.ndarray]:
    """Columns of floats (NaN where a record lacks the key); non-numeric keys are dropped."""
    if isinstance(history, Mapping):
        raw = {str(k): list(v) if not isinstance(v, (str, bytes)) and hasattr(v, "__len__") else None
               for k, v in history.items()}
        bad = [k for k, v in raw.items() if v is None]
        if bad:
            raise ValueError(f"history columns must be sequences of numbers; {bad} are not")
        lengths = {len(v) for v in raw.values()}
        if len(lengths) > 1:
            raise ValueError(f"history columns differ in length: { {k: len(v) for k, v in raw.items()} }")
        records = [dict(zip(raw, row)) for row in zip(*raw.values())]
    elif isinstance(history, Sequence) and not isinstance(history, (str, bytes)):
        records = list(history)
        if not all(isinstance(r, Mapping) for r in records):
            raise ValueError("history must be a dict of columns or a list of dict records (e.g. trainer.history)")
    else:
        raise ValueError(f"history must be a dict of columns or a list of dict records, got {type(history).__name__}")
    keys: dict[str, None] = {}
    for r in records:
        keys.update(dict.fromkeys(str(k) for k in r))
    columns: dict[str, np.ndarray] = {}
    for k in keys:
        col = np.full(len(records), np.nan)
        numeric = False
        for i, r in enumerate(records):
            value = r.get(k)
            if isinstance(value, bool) or value is None:
                continue
            try:
                col[i] = float(value)
                numeric = True
            except (TypeError, ValueError):
                continue
        if numeric:
            columns[k] = col
    return columns


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to `window` values (shorter at the start, so no lag artefacts)."""
    c = np.cumsum(np.concatenate([[0.0], values]))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)
