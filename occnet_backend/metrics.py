"""Reconstruction metrics in the numbers the literature uses, and mesh quality statistics.

Protocol (the reference Occupancy Networks evaluation, so results sit beside published tables):

- Every input is in **unit-cube coordinates**: the ground-truth shape normalised so its bounding
  box is centred at the origin with longest side 1 (``occnet_backend.meshes.to_unit_cube``).
- **IoU** on uniform points in [-0.55, 0.55]³ (100k in the dataset cache) with ground-truth
  labels; the predicted mesh labels the same points by generalised winding number.
- **Chamfer-L1** = ½(accuracy + completeness), where accuracy is the mean distance from points
  sampled on the predicted surface to the nearest ground-truth surface point and completeness the
  mean distance the other way; **Chamfer-L2** = ½(mean squared accuracy + mean squared
  completeness), i.e. squared distances, as the reference code reports it. Distances are in
  unit-cube units and are **not multiplied by 10** (some papers print Chamfer-L1 ×10 or ×100;
  multiply yourself when comparing with those tables).
- **Normal consistency** = mean |cos| between each sampled normal and the normal of its nearest
  neighbour on the other surface, averaged over both directions (|dot| so that an inside-out
  surface is not punished: orientation is a mesh-quality issue, reported separately as `volume`).
- **F-score** at distance τ = harmonic mean of precision (share of predicted samples within τ of
  the ground truth) and recall (share of ground-truth samples within τ of the prediction), at
  τ = 0.5%, 1% and 2% of the unit cube's side (0.005, 0.01, 0.02); 1% is the headline number.

An empty predicted mesh is a legitimate (terrible) result, not an error: IoU 0, infinite
Chamfer distances, F-scores 0 and normal consistency 0, so a batch evaluation never crashes on it.

Nearest neighbours use scipy's ``cKDTree`` on all cores: 100k against 100k points in ~0.15 s on
two cores when the surfaces are close (a chunked ``torch.cdist`` takes 30-60 s). Queries far from
the other surface are slower (a k-d tree must rule out many cells): two concentric spheres 0.1
apart take 2-5 s, so a very poor reconstruction costs seconds, not minutes.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

FSCORE_THRESHOLDS: tuple[float, ...] = (0.005, 0.01, 0.02)
"""F-score distance thresholds in unit-cube units: 0.5%, 1% and 2% of the cube's side."""

HEADLINE_FSCORE_THRESHOLD = 0.01
"""The threshold of the plain ``'fscore'`` key: 1% of the unit cube."""

NUM_SAMPLES = 100_000
"""Points sampled on the predicted surface for Chamfer distance, normal consistency and F-score."""

KDTREE_LEAFSIZE = 64
"""cKDTree leaf size; see `nearest_neighbors`."""

DEGENERATE_AREA_RELATIVE = 1e-12
"""A face is degenerate when its area is below this times the squared bounding-box diagonal
(zero at float32 precision), or when it uses the same vertex twice."""


def fscore_key(threshold: float) -> str:
    """The result key of the F-score at `threshold` (unit-cube units), e.g. 0.01 -> 'fscore_0.01'."""
    return f"fscore_{threshold:g}"


# --- argument checking -------------------------------------------------------------------------


def _points(name: str, array, allow_empty: bool = True) -> np.ndarray:
    a = np.asarray(array)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"{name} must be an array of shape [N, 3], got shape {a.shape}")
    if not allow_empty and len(a) == 0:
        raise ValueError(f"{name} is empty: at least one point is needed")
    a = a.astype(np.float64, copy=False)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return a


def _mesh(vertices, faces) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(vertices)
    f = np.asarray(faces)
    if v.size == 0:
        v = v.reshape(0, 3)
    if f.size == 0:
        f = f.reshape(0, 3)
    v = _points("vertices", v)
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must be an integer array of shape [F, 3] (triangles), got shape {f.shape}")
    if len(f) and not np.issubdtype(f.dtype, np.integer):
        if not np.array_equal(f, np.round(f)):
            raise ValueError(f"faces must hold integer vertex indices, got dtype {f.dtype}")
    f = f.astype(np.int64, copy=False)
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(
            f"faces index vertices out of range: indices span [{f.min()}, {f.max()}] but there are {len(v)} vertices"
        )
    return v, f


def _occupancy(name: str, array) -> np.ndarray:
    """Bool occupancy: bools as they are, numbers thresholded at 0.5 (probabilities or 0/1 labels)."""
    a = np.asarray(array)
    if a.dtype == bool:
        return a
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be boolean or numeric occupancy, got dtype {a.dtype}")
    return a >= 0.5


def _thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    t = tuple(float(x) for x in thresholds)
    if any(not math.isfinite(x) or x <= 0 for x in t):
        raise ValueError(f"F-score thresholds must be positive distances (unit-cube units), got {thresholds!r}")
    return t


# --- IoU ----------------------------------------------------------------------------------------


def iou(pred_occupancy: np.ndarray, gt_occupancy: np.ndarray) -> float:
    """Intersection over union of two occupancy arrays of the same shape (all elements pooled).

    Booleans are used as they are; numbers (probabilities, 0/1 labels) count as occupied at >= 0.5,
    as in the reference ``compute_iou``. When neither array has an occupied element the two agree
    everywhere and the IoU is 1.0 (the reference code would divide 0 by 0).
    """
    pred = _occupancy("pred_occupancy", pred_occupancy)
    gt = _occupancy("gt_occupancy", gt_occupancy)
    if pred.shape != gt.shape:
        raise ValueError(f"occupancy shapes differ: prediction {pred.shape} vs ground truth {gt.shape}")
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(pred & gt) / union)


def mesh_occupancy(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bool [N]: which `points` lie inside the mesh (generalised winding number; empty mesh -> none).

    The winding number rather than ray parity, so that a predicted mesh with a crack or
    self-overlapping parts is still labelled sensibly (see ``occnet_backend.data.labels``).
    """
    v, f = _mesh(vertices, faces)
    p = _points("points", points)
    if len(f) == 0 or len(p) == 0:
        return np.zeros(len(p), dtype=bool)
    from occnet_backend.data.labels import inside

    return inside(v, f, p)


def mesh_iou(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray, occupancy: np.ndarray) -> float:
    """IoU of a predicted mesh against ground-truth labels `occupancy` [N] at `points` [N, 3].

    The reference protocol: `points` are the (100k) uniform points in [-0.55, 0.55]³ of the
    unit-cube-normalised shape. An empty mesh occupies nothing, so its IoU is 0 (if the ground
    truth occupies anything).
    """
    p = _points("points", points)
    occ = np.asarray(occupancy)
    if occ.ndim == 2 and occ.shape[1] == 1:  # the dataset's [N, 1] layout
        occ = occ[:, 0]
    if occ.shape != (len(p),):
        raise ValueError(f"occupancy must have one label per point: {len(p)} points but occupancy shape {occ.shape}")
    return iou(mesh_occupancy(vertices, faces, p), occ)


# --- surface samples ----------------------------------------------------------------------------


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, count: int = NUM_SAMPLES, seed: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """`count` points uniformly distributed over the mesh's area, with their faces' unit normals.

    Returns (points float64 [count, 3], normals float64 [count, 3]); both empty when the mesh has
    no area. Faces are picked with probability proportional to their area (degenerate faces are
    never picked, so every normal is well defined) and points uniformly within each face.
    Deterministic for a given `seed` (the same seed gives the same points on the same mesh).
    """
    v, f = _mesh(vertices, faces)
    if not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    empty = np.zeros((0, 3), dtype=np.float64)
    if len(f) == 0 or count == 0:
        return empty, empty.copy()
    tri = v[f]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    double_area = np.linalg.norm(cross, axis=1)
    total = double_area.sum()
    if not total > 0:
        return empty, empty.copy()
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(double_area)
    face_index = np.searchsorted(cumulative, rng.random(count) * cumulative[-1], side="right")
    face_index = np.minimum(face_index, len(f) - 1)  # guards the r * total == total rounding edge
    # Uniform point in a triangle: reflect the unit square's upper half onto the lower one.
    uv = rng.random((count, 2))
    flip = uv.sum(axis=1) > 1.0
    uv[flip] = 1.0 - uv[flip]
    t = tri[face_index]
    points = t[:, 0] + uv[:, :1] * (t[:, 1] - t[:, 0]) + uv[:, 1:] * (t[:, 2] - t[:, 0])
    normals = cross[face_index] / double_area[face_index, None]
    return points, normals


# --- point cloud distances ----------------------------------------------------------------------


def nearest_neighbors(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each `source` point, the Euclidean distance to and index of its nearest `target` point.

    Returns (distances float64 [N], indices int64 [N]); distances are inf and indices -1 when
    `target` is empty. Uses a ``cKDTree`` over `target` queried on all cores.
    """
    from scipy.spatial import cKDTree

    s = _points("source", source)
    t = _points("target", target)
    if len(t) == 0:
        return np.full(len(s), np.inf), np.full(len(s), -1, dtype=np.int64)
    if len(s) == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    # Unbalanced (sliding-midpoint) tree with larger leaves: as fast as the default on close
    # surfaces and 2-4x faster when many points are far from the target (a poor reconstruction,
    # floating blobs), where the default balanced tree degrades most.
    tree = cKDTree(t, leafsize=KDTREE_LEAFSIZE, balanced_tree=False)
    dist, idx = tree.query(s, k=1, workers=-1)
    return dist, idx.astype(np.int64, copy=False)


def _unit(normals: np.ndarray) -> np.ndarray:
    n = normals.astype(np.float64, copy=False)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return n / np.where(length > 0, length, 1.0)  # zero normals stay zero (count as inconsistent)


def _abs_cos(src_normals: np.ndarray, tgt_normals: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.abs(np.einsum("ij,ij->i", _unit(src_normals), _unit(tgt_normals)[idx]))


def _fscore(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def point_cloud_metrics(
    pred_points: np.ndarray,
    gt_points: np.ndarray,
    pred_normals: np.ndarray | None = None,
    gt_normals: np.ndarray | None = None,
    fscore_thresholds: Sequence[float] = FSCORE_THRESHOLDS,
) -> dict[str, float]:
    """Chamfer distances, normal consistency and F-scores between two surface samples.

    One nearest-neighbour query in each direction serves every number. All distances are in the
    units of the inputs: unit-cube units for the protocol, not ×10. Keys:

    - ``accuracy``: mean distance, predicted -> ground truth (how far the prediction strays);
      ``completeness``: mean distance, ground truth -> predicted (how much of the shape is missed).
    - ``chamfer_l1`` = ½(accuracy + completeness).
    - ``accuracy_l2`` / ``completeness_l2``: mean *squared* distances; ``chamfer_l2`` = their mean.
    - ``normal_accuracy`` / ``normal_completeness``: mean |cos| to the nearest neighbour's normal
      in each direction; ``normal_consistency`` = their mean (NaN when normals are not given).
    - ``fscore_<τ>`` for each threshold (see `fscore_key`), and ``fscore`` at τ = 0.01 when 0.01
      is among the thresholds.

    An empty prediction gives infinite distances, F-scores 0 and normal consistency 0. The
    ground truth must not be empty.
    """
    pred = _points("pred_points", pred_points)
    gt = _points("gt_points", gt_points, allow_empty=False)
    with_normals = pred_normals is not None or gt_normals is not None
    if with_normals:
        if pred_normals is None or gt_normals is None:
            raise ValueError("give both pred_normals and gt_normals for normal consistency, or neither")
        pn = _points("pred_normals", pred_normals)
        gn = _points("gt_normals", gt_normals)
        if pn.shape != pred.shape:
            raise ValueError(f"pred_normals shape {pn.shape} does not match pred_points shape {pred.shape}")
        if gn.shape != gt.shape:
            raise ValueError(f"gt_normals shape {gn.shape} does not match gt_points shape {gt.shape}")
    thresholds = _thresholds(fscore_thresholds)

    out: dict[str, float] = {}
    if len(pred) == 0:
        inf = math.inf
        out.update(accuracy=inf, completeness=inf, chamfer_l1=inf, accuracy_l2=inf, completeness_l2=inf, chamfer_l2=inf)
        nc = 0.0 if with_normals else math.nan
        out.update(normal_accuracy=nc, normal_completeness=nc, normal_consistency=nc)
        for t in thresholds:
            out[fscore_key(t)] = 0.0
    else:
        d_acc, i_acc = nearest_neighbors(pred, gt)  # prediction -> ground truth
        d_comp, i_comp = nearest_neighbors(gt, pred)  # ground truth -> prediction
        accuracy, completeness = float(d_acc.mean()), float(d_comp.mean())
        accuracy_l2, completeness_l2 = float(np.square(d_acc).mean()), float(np.square(d_comp).mean())
        out.update(
            accuracy=accuracy,
            completeness=completeness,
            chamfer_l1=0.5 * (accuracy + completeness),
            accuracy_l2=accuracy_l2,
            completeness_l2=completeness_l2,
            chamfer_l2=0.5 * (accuracy_l2 + completeness_l2),
        )
        if with_normals:
            normal_accuracy = float(_abs_cos(pn, gn, i_acc).mean())
            normal_completeness = float(_abs_cos(gn, pn, i_comp).mean())
            out.update(
                normal_accuracy=normal_accuracy,
                normal_completeness=normal_completeness,
                normal_consistency=0.5 * (normal_accuracy + normal_completeness),
            )
        else:
            out.update(normal_accuracy=math.nan, normal_completeness=math.nan, normal_consistency=math.nan)
        for t in thresholds:
            out[fscore_key(t)] = _fscore(float(np.mean(d_acc < t)), float(np.mean(d_comp < t)))
    if HEADLINE_FSCORE_THRESHOLD in thresholds:
        out["fscore"] = out[fscore_key(HEADLINE_FSCORE_THRESHOLD)]
    return out


def chamfer_l1(pred_points: np.ndarray, gt_points: np.ndarray) -> float:
    """½(accuracy + completeness): mean nearest-neighbour distance, averaged over both directions.

    In the units of the inputs (unit-cube units under the protocol; not ×10). inf if `pred_points`
    is empty.
    """
    return point_cloud_metrics(pred_points, gt_points, fscore_thresholds=())["chamfer_l1"]


def chamfer_l2(pred_points: np.ndarray, gt_points: np.ndarray) -> float:
    """½(mean squared accuracy + mean squared completeness), squared input units; inf if empty."""
    return point_cloud_metrics(pred_points, gt_points, fscore_thresholds=())["chamfer_l2"]


def normal_consistency(
    pred_points: np.ndarray, pred_normals: np.ndarray, gt_points: np.ndarray, gt_normals: np.ndarray
) -> float:
    """Mean |cos| between normals of nearest neighbours, averaged over both directions, in [0, 1].

    The absolute value makes it orientation-blind, as in the reference code. 0 if the prediction
    is empty.
    """
    return point_cloud_metrics(pred_points, gt_points, pred_normals, gt_normals, fscore_thresholds=())[
        "normal_consistency"
    ]


def fscore(pred_points: np.ndarray, gt_points: np.ndarray, threshold: float = HEADLINE_FSCORE_THRESHOLD) -> float:
    """F-score at distance `threshold` (input units; 0.01 = 1% of the unit cube), in [0, 1]."""
    return point_cloud_metrics(pred_points, gt_points, fscore_thresholds=(threshold,))[fscore_key(threshold)]


# --- mesh quality -------------------------------------------------------------------------------


def mesh_quality(vertices: np.ndarray, faces: np.ndarray, merge_vertices: bool = True) -> dict[str, float | int | bool]:
    """Topology and validity statistics of a triangle mesh: what a user needs before booleans,
    3D printing or a modifier stack.

    `merge_vertices` first welds vertices with exactly equal coordinates, so that a mesh stored
    as a triangle soup (STL, per-face PLY) is judged by its shape, not its file layout (trimesh
    does the same on load). Topology is computed over the faces; unreferenced vertices are ignored.

    Keys:
    - ``vertices``, ``faces``: the counts as given (before welding).
    - ``watertight``: at least one face and every edge shared by exactly two faces.
    - ``boundary_edges``: edges with one face (holes); ``non_manifold_edges``: edges with 3+ faces.
    - ``components``: connected pieces (faces connected through shared vertices).
    - ``euler_characteristic``: V - E + F over referenced, welded vertices (2 - 2·genus per closed
      component, e.g. 2 for a sphere, 0 for a torus).
    - ``degenerate_faces``: faces using a vertex twice or of zero area (below
      `DEGENERATE_AREA_RELATIVE` times the squared bounding-box diagonal).
    - ``volume``: signed enclosed volume (cubic input units) by the divergence theorem; meaningful
      for watertight meshes, and negative when the faces point inward (the mesh is inside out).
    """
    v, f = _mesh(vertices, faces)
    stats: dict[str, float | int | bool] = {"vertices": int(len(v)), "faces": int(len(f))}
    if len(f) == 0:
        stats.update(watertight=False, boundary_edges=0, non_manifold_edges=0, components=0,
                     euler_characteristic=0, degenerate_faces=0, volume=0.0)
        return stats
    if merge_vertices:
        fw = _weld_ids(v)[f]
    else:
        fw = f

    # Edges as sorted vertex pairs encoded in one int64 key (np.unique on 1-D keys is fast).
    a = fw[:, [0, 1, 2]].reshape(-1)
    b = fw[:, [1, 2, 0]].reshape(-1)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    proper = lo != hi  # an edge from a vertex to itself belongs to a collapsed face only
    n_ids = int(fw.max()) + 1
    keys, counts = np.unique(lo[proper] * n_ids + hi[proper], return_counts=True)
    boundary = int(np.count_nonzero(counts == 1))
    non_manifold = int(np.count_nonzero(counts > 2))

    referenced = np.unique(fw)
    euler = int(len(referenced) - len(keys) + len(f))

    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n_ids, n_ids))
    _, labels = connected_components(graph, directed=False)
    components = int(len(np.unique(labels[referenced])))

    tri = v[f]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = 0.5 * np.linalg.norm(cross, axis=1)
    diagonal2 = float(np.sum(np.square(v[f.reshape(-1)].max(axis=0) - v[f.reshape(-1)].min(axis=0))))
    collapsed = (fw[:, 0] == fw[:, 1]) | (fw[:, 1] == fw[:, 2]) | (fw[:, 2] == fw[:, 0])
    degenerate = int(np.count_nonzero(collapsed | (area <= DEGENERATE_AREA_RELATIVE * diagonal2)))
    volume = float(np.einsum("ij,ij->i", tri[:, 0], cross).sum() / 6.0)

    stats.update(
        watertight=bool(boundary == 0 and non_manifold == 0 and len(keys) > 0),
        boundary_edges=boundary,
        non_manifold_edges=non_manifold,
        components=components,
        euler_characteristic=euler,
        degenerate_faces=degenerate,
        volume=volume,
    )
    return stats


def _weld_ids(vertices: np.ndarray) -> np.ndarray:
    """int64 [V]: one id per distinct position (exact equality). A lexsort of the columns is ~3x
    faster than ``np.unique(axis=0)`` (0.04 s vs 0.13 s for 164k vertices)."""
    order = np.lexsort((vertices[:, 2], vertices[:, 1], vertices[:, 0]))
    ordered = vertices[order]
    new = np.ones(len(vertices), dtype=bool)
    new[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    ids = np.empty(len(vertices), dtype=np.int64)
    ids[order] = np.cumsum(new) - 1
    return ids


# --- everything at once -------------------------------------------------------------------------


def evaluate_mesh(
    pred_vertices: np.ndarray,
    pred_faces: np.ndarray,
    gt_surface_points: np.ndarray,
    gt_surface_normals: np.ndarray | None = None,
    uniform_points: np.ndarray | None = None,
    uniform_occupancy: np.ndarray | None = None,
    num_samples: int = NUM_SAMPLES,
    seed: int | None = 0,
    fscore_thresholds: Sequence[float] = FSCORE_THRESHOLDS,
) -> dict[str, float | int | bool]:
    """Every metric of a predicted mesh against one ground-truth shape, as one flat dict.

    All inputs are in unit-cube coordinates (the ground truth's normalisation, see the module
    docstring): the dataset cache's ``surface_points`` / ``surface_normals`` and
    ``uniform_points`` / ``uniform_occupancy`` fit as they are. `num_samples` points are drawn on
    the predicted surface (seeded, so reruns give identical numbers).

    Keys: ``iou`` (NaN when no uniform points are given), everything of `point_cloud_metrics`
    (``chamfer_l1``, ``chamfer_l2``, ``accuracy``, ``completeness``, ``accuracy_l2``,
    ``completeness_l2``, ``normal_consistency``, ``normal_accuracy``, ``normal_completeness``,
    ``fscore``, ``fscore_0.005``, ``fscore_0.01``, ``fscore_0.02``), everything of `mesh_quality`
    (``vertices``, ``faces``, ``watertight``, ``boundary_edges``, ``non_manifold_edges``,
    ``components``, ``euler_characteristic``, ``degenerate_faces``, ``volume``) and
    ``num_samples`` (points actually sampled on the prediction: 0 for an empty mesh).
    Distances are unit-cube units, not ×10.
    """
    v, f = _mesh(pred_vertices, pred_faces)
    gt = _points("gt_surface_points", gt_surface_points, allow_empty=False)
    if (uniform_points is None) != (uniform_occupancy is None):
        raise ValueError("give both uniform_points and uniform_occupancy for IoU, or neither")
    thresholds = _thresholds(fscore_thresholds)

    out: dict[str, float | int | bool] = {}
    if uniform_points is None:
        out["iou"] = math.nan
    else:
        out["iou"] = mesh_iou(v, f, uniform_points, uniform_occupancy)
    pred_points, pred_normals = sample_surface(v, f, num_samples, seed=seed)
    with_normals = gt_surface_normals is not None
    out.update(
        point_cloud_metrics(
            pred_points, gt,
            pred_normals if with_normals else None,
            gt_surface_normals if with_normals else None,
            fscore_thresholds=thresholds,
        )
    )
    out.update(mesh_quality(v, f))
    out["num_samples"] = int(len(pred_points))
    return out
