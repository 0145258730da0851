"""The direct field: a surface straight from the source mesh's signed distance, no network.

Its distance is exact and its sign is the winding number's (`data.labels.signed_distance`), the
same field `fit`'s training targets come from, so it is the honest ceiling a learned surface is
measured against (bench/quality.py), and what `fit` shows as a preview while the network trains. What it cannot give, the network does: a continuous function to extract at any
resolution without the mesh, smooth normals, and codes that morph between shapes.
"""

from __future__ import annotations

import numpy as np

from occnet_backend.data.labels import signed_distance
from occnet_backend.extraction import extract_mesh

DISTANCE_SCALE = 0.004
"""Unit-cube distance per logit: the field's logits are -sdf / DISTANCE_SCALE, so the 0.5
threshold is the surface and a threshold slider moves it by a small offset either way."""


def direct_field(vertices: np.ndarray, faces: np.ndarray, exact: bool = True):
    """points [N, 3] -> logits [N] of the mesh (vertices in the coordinates the points are in).
    `exact=False`: distances near partly covered faces too small (`labels.exposed_distance`), for a
    quick look."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    return lambda points: (-signed_distance(v, f, points, exact=exact) / DISTANCE_SCALE).astype(np.float32)


def direct_field_mesh(vertices: np.ndarray, faces: np.ndarray, resolution: int, method: str = "mise",
                      exact: bool = True) -> dict:
    """The direct field's surface in the extraction box (unit-cube vertices in, unit-cube mesh out):
    `extraction.extract_mesh`'s result, plain marching cubes of the sampled distance (no vertex
    placed on the field between nodes): the ceiling as bench/quality.py defines it, and a preview
    that costs no distance query beyond its grid."""
    return extract_mesh(direct_field(vertices, faces, exact), resolution=resolution, method=method,
                        distance_scale=DISTANCE_SCALE, edge_steps=0, denoise=False)
