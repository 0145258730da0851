"""Inside/outside labels by generalised winding number.

Ray parity and ``trimesh.contains`` are wrong on open meshes and overlapping parts, and slow
without embree. The generalised winding number (libigl's fast, hierarchical approximation) is
≈1 inside, ≈0 outside, and degrades gracefully across holes; 0.5 is the decision level.
"""

from __future__ import annotations

import numpy as np

WINDING_THRESHOLD = 0.5


def winding_numbers(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Generalised winding number of each query point, float64 [N]."""
    import igl

    v = np.ascontiguousarray(vertices, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64)
    q = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
    if len(q) == 0:
        return np.zeros(0, dtype=np.float64)
    return igl.fast_winding_number(v, f, q)


def inside(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bool [N]: which points lie inside the (possibly open, overlapping) mesh.

    Uses |w| so that a mesh whose faces all point inward is still labelled correctly.
    """
    return np.abs(winding_numbers(vertices, faces, points)) > WINDING_THRESHOLD
