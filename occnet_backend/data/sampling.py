"""Training samples for one shape: uniform, near-surface and surface points, with labels.

Why three kinds of points: uniform points in [-0.55, 0.55]³ teach the network the empty space
and are what IoU is measured on; near-surface points (surface samples plus Gaussian noise at a
fine and a coarse scale) put the training signal where the decision boundary is; surface points
with normals are the ground truth for Chamfer distance and normal consistency.

Every labelled point is rounded to float16 *before* it is labelled, so the stored points and
their labels agree exactly (the cache stores float16 points, as the reference implementation does).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from occnet_backend.data.labels import BOUNDARY_OFFSET, exact_surface, inside, sealed, signed_distance_and_closest
from occnet_backend.data.meshes import MeshError, normalization, to_unit_cube
from occnet_contract.settings import EVAL_BOX



@dataclass(frozen=True)
class SamplingConfig:
    """How many points of each kind a shape's cache holds, and how they are drawn.

    Part of the cache key: changing any field rebuilds the caches that were made differently.
    """

    num_uniform: int = 100_000
    num_near: int = 100_000
    num_surface: int = 100_000
    noise_scales: tuple[float, ...] = (0.005, 0.05)  # unit-cube units; the near points split evenly
    uniform_box: float = EVAL_BOX
    seed: int = 0
    near_per_area: float = 0.0
    """Near-surface points per unit of surface area (in the unit cube) at least: a shape with more
    surface than `num_near / near_per_area` gets more near points than `num_near`, so their density
    does not drop (0: always `num_near`)."""
    max_near: int = 0
    """... but at most this many from that density (0: no bound; never fewer than `num_near`)."""

    def __post_init__(self) -> None:
        if min(self.num_uniform, self.num_near, self.num_surface) < 0:
            raise ValueError(f"point counts must be >= 0, got {self}")
        if self.num_uniform + self.num_near == 0:
            raise ValueError("num_uniform + num_near must be > 0: there would be nothing to train on")
        if not self.noise_scales or min(self.noise_scales) <= 0:
            raise ValueError(f"noise_scales must be positive, got {self.noise_scales}")
        if self.uniform_box <= 0:
            raise ValueError(f"uniform_box must be > 0, got {self.uniform_box}")
        if not self.near_per_area >= 0:
            raise ValueError(f"near_per_area must be >= 0, got {self.near_per_area}")
        if self.max_near < 0:
            raise ValueError(f"max_near must be >= 0, got {self.max_near}")

    @classmethod
    def from_counts(cls, num_points: int, surface_ratio: float, num_surface: int = 100_000, seed: int = 0):
        """`num_points` labelled points, `surface_ratio` of them near the surface (the CLI's terms)."""
        if num_points < 1:
            raise ValueError(f"--points must be >= 1, got {num_points}")
        if not 0.0 <= surface_ratio <= 1.0:
            raise ValueError(f"--surface-ratio must be in [0, 1], got {surface_ratio}")
        num_near = int(round(num_points * surface_ratio))
        return cls(num_uniform=num_points - num_near, num_near=num_near, num_surface=num_surface, seed=seed)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["noise_scales"] = [float(s) for s in self.noise_scales]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SamplingConfig:
        d = dict(d)
        if "noise_scales" in d:
            d["noise_scales"] = tuple(float(s) for s in d["noise_scales"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


SEGMENT_BAND = 0.02
"""Points nearer the surface than this (unit-cube units) may be drawn along their distance
(`dataset.along_the_distance`)."""


def along_the_distance_is_exact(v: np.ndarray, f: np.ndarray, points: np.ndarray, closest: np.ndarray,
                                occupancy: np.ndarray) -> np.ndarray:
    """float16 [N, 3]: from each point to its closest surface point, or 0 where the way there is no
    segment of exact distances: farther than SEGMENT_BAND, or where the side just short of the
    surface is not the point's own. That happens at an open mesh's holes (the winding number
    changes its side across a hole, where no face is), and a segment across it would teach the
    wrong side: drawn along every segment, pyvista's open airplane lost 0.011 IoU; with this check,
    0.002 (BENCHMARKS.md). A `sealed` mesh measured to its `exact_surface` has no such place (its side
    changes only across that surface, which the way to the closest surface point does not cross), so it
    is not asked: no label of seven such package meshes failed the check, which cost a heatsink's 469k
    points 1.5 s. A sealed mesh with faces inside its own volume (the cow's) is still asked: its closest
    points are found to a tolerance, and 5 of the cow's 63k failed (BENCHMARKS.md)."""
    to_surface = closest - points
    length = np.linalg.norm(to_surface, axis=1)
    near = np.flatnonzero((length < SEGMENT_BAND) & (length > 4 * BOUNDARY_OFFSET))
    exact = np.zeros(len(points), dtype=bool)
    if sealed(v, f) and exact_surface(v, f):
        exact[near] = True
    else:
        short = closest[near] - BOUNDARY_OFFSET * to_surface[near] / length[near, None]
        exact[near] = inside(v, f, short) == occupancy[near]
    return np.where(exact[:, None], to_surface, 0.0).astype(np.float16)


def sample_shape(vertices: np.ndarray, faces: np.ndarray, config: SamplingConfig, seed: int | None = None) -> dict:
    """Normalise a validated triangle soup to the unit cube and draw its labelled points.

    Returns a dict of arrays in unit-cube coordinates: uniform_points / near_points (float16
    [N, 3]) with uniform_occupancy / near_occupancy (bool [N]) and uniform_sdf / near_sdf (float16
    [N], signed distance to the surface, negative inside: the source of soft training targets),
    uniform_to_surface / near_to_surface (float16 [N, 3], from the point to its closest surface point
    where the way there is a segment of exact distances, else 0: `along_the_distance_is_exact`),
    surface_points (float32) and
    surface_normals (float16, unit length, the face's outward normal), center (float64 [3]),
    scale (float), bbox (float32 [2, 3], the shape's unit-cube bounds). `seed` defaults to the
    config's seed (pass a per-shape seed for independent shapes).
    """
    import trimesh

    center, scale = normalization(vertices)
    v = to_unit_cube(vertices, center, scale)
    f = np.asarray(faces, dtype=np.int64)
    rng = np.random.default_rng(config.seed if seed is None else seed)
    mesh = trimesh.Trimesh(v, f, process=False, validate=False)
    areas = mesh.area_faces
    if not np.isfinite(areas).all() or areas.sum() <= 0:
        raise MeshError("the mesh has no surface area after normalisation; check for degenerate faces")

    by_area = math.ceil(config.near_per_area * float(areas.sum()))
    num_near = max(config.num_near, min(by_area, config.max_near) if config.max_near else by_area)
    n_draw = config.num_surface + num_near
    surface = np.zeros((0, 3))
    face_index = np.zeros(0, dtype=np.int64)
    if n_draw:
        surface, face_index = trimesh.sample.sample_surface(mesh, n_draw, seed=rng)
    normals = mesh.face_normals[face_index] if n_draw else np.zeros((0, 3))

    near_base = surface[config.num_surface :]
    scales = np.asarray(config.noise_scales, dtype=np.float64)
    sigma = scales[np.arange(len(near_base)) % len(scales)][:, None]
    near = near_base + rng.normal(size=near_base.shape) * sigma
    uniform = rng.uniform(-config.uniform_box, config.uniform_box, size=(config.num_uniform, 3))

    # round first, then label the rounded points: stored points and labels agree exactly
    query = np.concatenate([uniform, near]).astype(np.float16)
    labelled = query.astype(np.float64)
    sdf, closest = signed_distance_and_closest(v, f, labelled)
    occupancy = sdf < 0
    to_surface = along_the_distance_is_exact(v, f, labelled, closest, occupancy)
    sdf = sdf.astype(np.float16)
    sdf[occupancy & (sdf >= 0)] = -np.float16(6e-8)  # a distance that rounded to 0 keeps its side
    return {
        "uniform_points": query[: config.num_uniform],
        "uniform_occupancy": occupancy[: config.num_uniform],
        "uniform_sdf": sdf[: config.num_uniform],
        "near_points": query[config.num_uniform :],
        "near_occupancy": occupancy[config.num_uniform :],
        "near_sdf": sdf[config.num_uniform :],
        "uniform_to_surface": to_surface[: config.num_uniform],
        "near_to_surface": to_surface[config.num_uniform :],
        "surface_points": surface[: config.num_surface].astype(np.float32),
        "surface_normals": normals[: config.num_surface].astype(np.float16),
        "center": np.asarray(center, dtype=np.float64),
        "scale": float(scale),
        "bbox": np.stack([v.min(axis=0), v.max(axis=0)]).astype(np.float32),
    }


def pack_occupancy(occupancy: np.ndarray) -> np.ndarray:
    """Bool [N] -> uint8 [ceil(N/8)] (8× smaller on disk); unpack with the count N."""
    return np.packbits(np.asarray(occupancy, dtype=bool).reshape(-1))


def unpack_occupancy(packed: np.ndarray, count: int) -> np.ndarray:
    """uint8 bit-packed occupancies -> bool [count]."""
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8))
    if len(bits) < count:
        raise ValueError(f"packed occupancies hold {len(bits)} bits, expected at least {count}")
    return bits[:count].astype(bool)
