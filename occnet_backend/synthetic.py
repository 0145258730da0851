"""Analytic shapes with exact occupancy, for quick checks without any mesh files.

Each sample is one primitive (sphere, box, cylinder, cone, torus, capsule) in a random pose and
size inside the unit cube. Occupancy is exact (closed-form inside test in the shape's local
frame); surface samples come from a fine tessellation, which is only used to place points near
the surface, never to label them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import trimesh
from scipy.spatial.transform import Rotation
from torch.utils.data import Dataset

SHAPES = ("sphere", "box", "cylinder", "cone", "torus", "capsule")
ALIASES = {"cube": "box"}  # the seed says "sphere, cube, cylinder"
UNIFORM_BOX = 0.6  # wider than the extraction box [-0.55, 0.55]³, or floaters grow at its border


@dataclass
class SyntheticShape:
    """One primitive: `kind`, local parameters, and the local->unit-cube pose (x = R·p·s + t)."""

    kind: str
    params: dict[str, float]
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def _to_local(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, dtype=np.float64) - self.translation) @ self.rotation

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Exact occupancy, bool [N]."""
        p = self._to_local(points)
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        k = self.params
        rho = np.hypot(x, y)
        if self.kind == "sphere":
            return np.linalg.norm(p, axis=1) <= k["radius"]
        if self.kind == "box":
            return np.all(np.abs(p) <= np.array([k["hx"], k["hy"], k["hz"]]), axis=1)
        if self.kind == "cylinder":
            return (rho <= k["radius"]) & (np.abs(z) <= k["half_height"])
        if self.kind == "cone":  # base of `radius` at z = -h, apex at z = +h
            h = k["half_height"]
            return (np.abs(z) <= h) & (rho <= k["radius"] * (h - z) / (2 * h))
        if self.kind == "torus":
            return (rho - k["major_radius"]) ** 2 + z**2 <= k["minor_radius"] ** 2
        if self.kind == "capsule":
            zc = np.clip(z, -k["half_height"], k["half_height"])
            return np.hypot(rho, z - zc) <= k["radius"]
        raise ValueError(f"unknown synthetic shape {self.kind!r}; choose from {SHAPES}")

    @property
    def volume(self) -> float:
        k = self.params
        if self.kind == "sphere":
            return 4 / 3 * np.pi * k["radius"] ** 3
        if self.kind == "box":
            return 8 * k["hx"] * k["hy"] * k["hz"]
        if self.kind == "cylinder":
            return np.pi * k["radius"] ** 2 * 2 * k["half_height"]
        if self.kind == "cone":
            return np.pi * k["radius"] ** 2 * 2 * k["half_height"] / 3
        if self.kind == "torus":
            return 2 * np.pi**2 * k["major_radius"] * k["minor_radius"] ** 2
        if self.kind == "capsule":
            return np.pi * k["radius"] ** 2 * 2 * k["half_height"] + 4 / 3 * np.pi * k["radius"] ** 3
        raise ValueError(f"unknown synthetic shape {self.kind!r}")

    def mesh(self) -> trimesh.Trimesh:
        """A fine tessellation in unit-cube coordinates (for surface sampling and pictures)."""
        k = self.params
        if self.kind == "sphere":
            m = trimesh.creation.icosphere(subdivisions=4, radius=k["radius"])
        elif self.kind == "box":
            m = trimesh.creation.box(extents=[2 * k["hx"], 2 * k["hy"], 2 * k["hz"]])
        elif self.kind == "cylinder":
            m = trimesh.creation.cylinder(radius=k["radius"], height=2 * k["half_height"], sections=96)
        elif self.kind == "cone":
            m = trimesh.creation.cone(radius=k["radius"], height=2 * k["half_height"], sections=96)
            m.apply_translation([0, 0, -k["half_height"]])
        elif self.kind == "torus":
            m = trimesh.creation.torus(k["major_radius"], k["minor_radius"], major_sections=96, minor_sections=48)
        elif self.kind == "capsule":
            m = trimesh.creation.capsule(height=2 * k["half_height"], radius=k["radius"], count=[48, 48])
        else:
            raise ValueError(f"unknown synthetic shape {self.kind!r}")
        transform = np.eye(4)
        transform[:3, :3] = self.rotation
        transform[:3, 3] = self.translation
        m.apply_transform(transform)
        return m


def random_shape(kind: str, rng: np.random.Generator) -> SyntheticShape:
    """A primitive of `kind` with random size and pose that stays inside [-0.5, 0.5]³."""
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    if kind == "sphere":
        params = {"radius": u(0.2, 0.4)}
    elif kind == "box":
        params = {"hx": u(0.12, 0.3), "hy": u(0.12, 0.3), "hz": u(0.12, 0.3)}
    elif kind == "cylinder":
        params = {"radius": u(0.12, 0.25), "half_height": u(0.15, 0.3)}
    elif kind == "cone":
        params = {"radius": u(0.15, 0.3), "half_height": u(0.15, 0.3)}
    elif kind == "torus":
        minor = u(0.06, 0.12)
        params = {"major_radius": u(0.2, 0.3), "minor_radius": minor}
    elif kind == "capsule":
        params = {"radius": u(0.1, 0.18), "half_height": u(0.1, 0.2)}
    else:
        raise ValueError(f"unknown synthetic shape {kind!r}; choose from {SHAPES}")
    shape = SyntheticShape(kind, params, rotation=Rotation.random(random_state=rng).as_matrix())
    # translate as far as the rotated shape's bounds allow, staying inside [-0.5, 0.5]³
    lo, hi = shape.mesh().bounds
    slack = np.clip(0.5 - np.maximum(np.abs(lo), np.abs(hi)), 0.0, None)
    shape.translation = rng.uniform(-slack, slack)
    return shape


def sample_points(
    shape: SyntheticShape,
    num_points: int,
    surface_sampling: float,
    rng: np.random.Generator,
    noise_std: float = 0.02,
) -> tuple[np.ndarray, np.ndarray]:
    """`surface_sampling` of the points near the surface (Gaussian noise), the rest uniform in the box."""
    n_surface = int(round(num_points * surface_sampling))
    surface, _ = trimesh.sample.sample_surface(shape.mesh(), n_surface, seed=int(rng.integers(2**31)))
    near = surface + rng.normal(scale=noise_std, size=surface.shape)
    uniform = rng.uniform(-UNIFORM_BOX, UNIFORM_BOX, size=(num_points - n_surface, 3))
    points = np.concatenate([near, uniform]).astype(np.float32)
    return points, shape.contains(points)


class SyntheticOccupancyDataset(Dataset):
    """`num_samples` analytic shapes, each with fresh points every epoch.

    Shape i (kind and pose) depends only on (seed, i); its points on (seed, i, epoch), so runs
    are reproducible and `set_epoch` gives new points like a DistributedSampler does.
    A sample is {'points': [N, 3], 'occupancy': [N, 1] of 0/1, 'shape_id': str, 'shape_index': int}.
    """

    def __init__(
        self,
        num_samples: int = 100,
        shapes: tuple[str, ...] | list[str] = SHAPES,
        num_points: int = 2048,
        surface_sampling: float = 0.5,
        uniform_sampling: float = 0.5,
        noise_std: float = 0.02,
        seed: int = 0,
    ):
        if isinstance(shapes, str):
            shapes = [shapes]
        shapes = [ALIASES.get(s, s) for s in shapes]
        unknown = [s for s in shapes if s not in SHAPES]
        if unknown or not shapes:
            raise ValueError(f"unknown synthetic shapes {unknown}; choose from {SHAPES} (or 'cube' for 'box')")
        if num_samples < 1 or num_points < 1:
            raise ValueError(f"num_samples and num_points must be >= 1, got {num_samples}, {num_points}")
        if surface_sampling < 0 or uniform_sampling < 0 or surface_sampling + uniform_sampling <= 0:
            raise ValueError("surface_sampling and uniform_sampling must be >= 0 and not both 0")
        self.num_samples = num_samples
        self.num_points = num_points
        self.surface_fraction = surface_sampling / (surface_sampling + uniform_sampling)
        self.noise_std = noise_std
        self.seed = seed
        self.epoch = 0
        self.shapes = [
            random_shape(shapes[i % len(shapes)], np.random.default_rng([seed, i])) for i in range(num_samples)
        ]

    def identity(self) -> dict:
        """What this dataset is, for checkpoints: resume refuses a different one."""
        from occnet_backend.checkpoints import data_fingerprint

        shapes = [(shape.kind, sorted(shape.params.items())) for shape in self.shapes]
        return {"type": "synthetic", "root": None, "split": None, "size": len(self), "shape_ids": None,
                "fingerprint": data_fingerprint("synthetic", [self.seed, shapes])}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict:
        shape = self.shapes[index]
        rng = np.random.default_rng([self.seed, index, self.epoch, 1])
        points, occupancy = sample_points(shape, self.num_points, self.surface_fraction, rng, self.noise_std)
        return {
            "points": torch.from_numpy(points),
            "occupancy": torch.from_numpy(occupancy.astype(np.float32)).unsqueeze(1),
            "shape_id": f"{shape.kind}_{index:04d}",
            "shape_index": index,
        }
