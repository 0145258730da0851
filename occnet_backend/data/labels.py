"""Inside/outside labels by generalised winding number.

Ray parity and ``trimesh.contains`` are wrong on open meshes and overlapping parts, and slow
without embree. The generalised winding number (libigl's fast, hierarchical approximation) is
≈1 inside, ≈0 outside, and degrades gracefully across holes; 0.5 is the decision level.
"""

from __future__ import annotations

import numpy as np

WINDING_THRESHOLD = 0.5


CHUNK_POINTS = 4_000_000
"""Query points per libigl call. Each call rebuilds the face hierarchy (about 2 s for 1.3 M faces
here), so chunks are large: they only bound the float64 copies of huge query sets (e.g. a 256³
grid = 16.8 M points = 400 MB as float64), while memory for the mesh itself is fixed per call."""


MAX_EDGE = 0.05
"""Longest edge, as a fraction of the mesh's longest side, of the triangles libigl's winding-number
hierarchy is built from. CAD exports are full of long slivers whose bounding boxes overlap, which
make the hierarchy useless: splitting edges longer than this first (it adds no new surface, only
smaller triangles on it) labels a differential gear's points 3.4x faster, a heatsink's 4.1x
(BENCHMARKS.md); the winding numbers differ by at most ~0.015 (both are approximations)."""

MAX_SPLIT_FACES = 2_000_000  # a mesh that would split into more is used as it is (memory)
_SPLIT_CACHE: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}


def hierarchy_mesh(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mesh with its long edges split (see MAX_EDGE), float64 / int64; the last few are kept,
    because labelling a shape calls this several times on the same mesh."""
    import hashlib

    import trimesh

    v = np.ascontiguousarray(vertices, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64)
    key = hashlib.blake2b(v.tobytes() + f.tobytes(), digest_size=16).digest()
    if key not in _SPLIT_CACHE:
        edges = np.linalg.norm(v[f] - v[np.roll(f, 1, axis=1)], axis=2).max(axis=1) if len(f) else np.zeros(0)
        longest = float(np.ptp(v, axis=0).max()) if len(v) else 0.0
        splits = np.ceil(np.log2(np.maximum(edges / max(MAX_EDGE * longest, 1e-300), 1.0)))
        if len(f) and longest > 0 and splits.max() > 0 and float((4.0 ** splits).sum()) <= MAX_SPLIT_FACES:
            split_v, split_f = trimesh.remesh.subdivide_to_size(v, f, max_edge=MAX_EDGE * longest, max_iter=20)
            v, f = np.ascontiguousarray(split_v, dtype=np.float64), np.ascontiguousarray(split_f, dtype=np.int64)
        while len(_SPLIT_CACHE) >= 4:
            _SPLIT_CACHE.pop(next(iter(_SPLIT_CACHE)))
        _SPLIT_CACHE[key] = (v, f)
    return _SPLIT_CACHE[key]


def winding_numbers(
    vertices: np.ndarray, faces: np.ndarray, points: np.ndarray, chunk_size: int = CHUNK_POINTS
) -> np.ndarray:
    """Generalised winding number of each query point, float64 [N], in chunks of `chunk_size` points."""
    import igl

    v, f = hierarchy_mesh(vertices, faces)
    q = np.asarray(points).reshape(-1, 3)
    if len(q) == 0:
        return np.zeros(0, dtype=np.float64)
    order = spatial_order(q) if len(q) >= SORT_MIN_POINTS else None
    if order is not None:
        q = q[order]
    if len(q) <= chunk_size:
        w = igl.fast_winding_number(v, f, np.ascontiguousarray(q, dtype=np.float64))
    else:
        w = np.empty(len(q), dtype=np.float64)
        for start in range(0, len(q), chunk_size):
            chunk = np.ascontiguousarray(q[start : start + chunk_size], dtype=np.float64)
            w[start : start + len(chunk)] = igl.fast_winding_number(v, f, chunk)
    if order is None:
        return w
    out = np.empty_like(w)
    out[order] = w
    return out


SORT_MIN_POINTS = 20_000
SORT_GRID = 32


def spatial_order(points: np.ndarray, resolution: int = SORT_GRID) -> np.ndarray:
    """A permutation that groups query points by cell of a coarse grid over their bounding box.

    Why: libigl walks its face hierarchy per query point; neighbouring queries visit the same
    nodes, so grouping them keeps those nodes in cache, and it spreads slow near-surface and fast
    far-away points evenly over libigl's threads (which split the array into contiguous ranges).
    Measured on Suzanne (63k faces, 2 cores): 0.40 M points/s for the training mix in the order it
    was drawn (uniform, then near-surface), 0.65 M shuffled, 0.88 M grid-sorted; sorting (a radix
    sort of 16-bit cell keys) costs ~0.03 s per million points.
    """
    p = np.asarray(points, dtype=np.float64)
    lo, hi = p.min(axis=0), p.max(axis=0)
    cell = np.clip(((p - lo) / np.maximum(hi - lo, 1e-12) * resolution).astype(np.int64), 0, resolution - 1)
    key = (cell[:, 0] * resolution + cell[:, 1]) * resolution + cell[:, 2]
    if resolution**3 <= 1 << 16:  # 16-bit keys: numpy's stable sort is a radix sort, 5x faster
        return np.argsort(key.astype(np.uint16), kind="stable")
    return np.argsort(key)


def inside(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bool [N]: which points lie inside the (possibly open, overlapping) mesh.

    Uses |w| so that a mesh whose faces all point inward is still labelled correctly.
    """
    return np.abs(winding_numbers(vertices, faces, points)) > WINDING_THRESHOLD


BOUNDARY_OFFSET = 1e-4
"""How far off a face (in the mesh's units: fit's are the unit cube's) its two sides are probed."""
PROBE_WEIGHTS = np.array([[1, 1, 1], [4, 1, 1], [1, 4, 1], [1, 1, 4]]) / 6.0  # barycentric, one row per probe


def boundary_faces(vertices: np.ndarray, faces: np.ndarray, offset: float = BOUNDARY_OFFSET) -> np.ndarray:
    """Bool [F]: the faces that bound the labelled volume: inside on one side, outside on the other.

    Why: overlapping parts (kit-bashed models, convex-hull sets, CAD assemblies) leave faces
    *inside* the union, and open flaps leave faces with outside on both sides. The distance to
    such a face is not the distance to the surface: inside a union it would put a "surface" a hair
    away from every internal face, and a network trained on it grows specks there. The side test
    uses the same winding number as the labels, at four spots of each face plus and minus
    `offset` along its normal (a face counts when one spot differs); all faces count when none
    passes (a mesh of only such faces)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    corners = v[f]
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    length = np.linalg.norm(normal, axis=1, keepdims=True)
    normal = np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)
    # the centroid and the centroids of the three corner sub-triangles: a face only partly covered
    # by another part (a stud on a brick) still bounds the volume where it is exposed
    spots = np.einsum("pk,fkd->pfd", PROBE_WEIGHTS, corners).reshape(-1, 3)  # [4F, 3], probe-major
    offsets = offset * np.tile(normal, (len(PROBE_WEIGHTS), 1))
    side = inside(v, f, np.concatenate([spots + offsets, spots - offsets]))
    differs = (side[: len(spots)] != side[len(spots) :]).reshape(len(PROBE_WEIGHTS), len(f))
    bounding = differs.any(axis=0) & (length[:, 0] > 0)
    return bounding if bounding.any() else np.ones(len(f), dtype=bool)


def signed_distance(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray,
                    boundary: np.ndarray | None = None) -> np.ndarray:
    """Distance of each point to the surface, negative inside (by `inside`), float64 [N].

    The surface is the faces that bound the labelled volume (`boundary_faces`; pass them when
    already known), so internal faces of overlapping parts do not count; the distance is exact
    (libigl's AABB tree); the sign is the winding number's, so it agrees with the 0/1 labels
    everywhere, also across the holes of an open mesh, where a distance signed by normals would flip."""
    import igl

    q = np.ascontiguousarray(np.asarray(points).reshape(-1, 3), dtype=np.float64)
    if len(q) == 0:
        return np.zeros(0, dtype=np.float64)
    v = np.ascontiguousarray(vertices, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64)
    outer = boundary_faces(v, f) if boundary is None else boundary
    squared, _, _ = igl.point_mesh_squared_distance(q, v, np.ascontiguousarray(f[outer]))
    distance = np.sqrt(np.maximum(squared, 0.0))
    return np.where(inside(v, f, q), -distance, distance)
