"""Analytic shapes with exact occupancy, for quick checks without any mesh files.

Each sample is one primitive (sphere, box, cylinder, cone, torus, capsule) in a random pose and
size inside the unit cube. Occupancy is exact (closed-form inside test in the shape's local
frame); surface samples come from a fine tessellation, which is only used to place points near
the surface, never to label them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import trimesh
from scipy.spatial.transform import Rotation
from torch.utils.data import Dataset

from occnet_contract.settings import TRAIN_BOX

ALIASES = {"cube": "box"}  # the seed says "sphere, cube, cylinder"


@dataclass(frozen=True)
class Primitive:
    """One kind of analytic shape, in its local frame: how its size is drawn, the exact inside test
    (on local points p with rho = |p.xy|), its volume, and a fine tessellation."""

    draw: Callable[[Callable[[float, float], float]], dict[str, float]]
    inside: Callable[[np.ndarray, np.ndarray, dict], np.ndarray]
    volume: Callable[[dict], float]
    mesh: Callable[[dict], trimesh.Trimesh]


def _draw_torus(u: Callable[[float, float], float]) -> dict[str, float]:
    minor = u(0.06, 0.12)
    return {"major_radius": u(0.2, 0.3), "minor_radius": minor}


def _cone_mesh(k: dict) -> trimesh.Trimesh:  # base of `radius` at z = -h, apex at z = +h
    m = trimesh.creation.cone(radius=k["radius"], height=2 * k["half_height"], sections=96)
    m.apply_translation([0, 0, -k["half_height"]])
    return m


PRIMITIVES: dict[str, Primitive] = {
    "sphere": Primitive(
        draw=lambda u: {"radius": u(0.2, 0.4)},
        inside=lambda p, rho, k: np.linalg.norm(p, axis=1) <= k["radius"],
        volume=lambda k: 4 / 3 * np.pi * k["radius"] ** 3,
        mesh=lambda k: trimesh.creation.icosphere(subdivisions=4, radius=k["radius"])),
    "box": Primitive(
        draw=lambda u: {"hx": u(0.12, 0.3), "hy": u(0.12, 0.3), "hz": u(0.12, 0.3)},
        inside=lambda p, rho, k: np.all(np.abs(p) <= np.array([k["hx"], k["hy"], k["hz"]]), axis=1),
        volume=lambda k: 8 * k["hx"] * k["hy"] * k["hz"],
        mesh=lambda k: trimesh.creation.box(extents=[2 * k["hx"], 2 * k["hy"], 2 * k["hz"]])),
    "cylinder": Primitive(
        draw=lambda u: {"radius": u(0.12, 0.25), "half_height": u(0.15, 0.3)},
        inside=lambda p, rho, k: (rho <= k["radius"]) & (np.abs(p[:, 2]) <= k["half_height"]),
        volume=lambda k: np.pi * k["radius"] ** 2 * 2 * k["half_height"],
        mesh=lambda k: trimesh.creation.cylinder(radius=k["radius"], height=2 * k["half_height"], sections=96)),
    "cone": Primitive(
        draw=lambda u: {"radius": u(0.15, 0.3), "half_height": u(0.15, 0.3)},
        inside=lambda p, rho, k: (np.abs(p[:, 2]) <= k["half_height"])
        & (rho <= k["radius"] * (k["half_height"] - p[:, 2]) / (2 * k["half_height"])),
        volume=lambda k: np.pi * k["radius"] ** 2 * 2 * k["half_height"] / 3,
        mesh=_cone_mesh),
    "torus": Primitive(
        draw=_draw_torus,
        inside=lambda p, rho, k: (rho - k["major_radius"]) ** 2 + p[:, 2] ** 2 <= k["minor_radius"] ** 2,
        volume=lambda k: 2 * np.pi**2 * k["major_radius"] * k["minor_radius"] ** 2,
        mesh=lambda k: trimesh.creation.torus(k["major_radius"], k["minor_radius"], major_sections=96,
                                              minor_sections=48)),
    "capsule": Primitive(
        draw=lambda u: {"radius": u(0.1, 0.18), "half_height": u(0.1, 0.2)},
        inside=lambda p, rho, k: np.hypot(rho, p[:, 2] - np.clip(p[:, 2], -k["half_height"], k["half_height"]))
        <= k["radius"],
        volume=lambda k: np.pi * k["radius"] ** 2 * 2 * k["half_height"] + 4 / 3 * np.pi * k["radius"] ** 3,
        mesh=lambda k: trimesh.creation.capsule(height=2 * k["half_height"], radius=k["radius"], count=[48, 48])),
}
SHAPES = tuple(PRIMITIVES)


def _primitive(kind: str) -> Primitive:
    if kind not in PRIMITIVES:
        raise ValueError(f"unknown synthetic shape {kind!r}; choose from {SHAPES}")
    return PRIMITIVES[kind]


@dataclass
class SyntheticShape:
    """One primitive: `kind`, local parameters, and the local->unit-cube pose (x = R·p·s + t)."""

    kind: str
    params: dict[str, float]
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Exact occupancy, bool [N]."""
        p = (np.asarray(points, dtype=np.float64) - self.translation) @ self.rotation
        return _primitive(self.kind).inside(p, np.hypot(p[:, 0], p[:, 1]), self.params)

    @property
    def volume(self) -> float:
        return float(_primitive(self.kind).volume(self.params))

    def mesh(self) -> trimesh.Trimesh:
        """A fine tessellation in unit-cube coordinates (for surface sampling and pictures)."""
        m = _primitive(self.kind).mesh(self.params)
        transform = np.eye(4)
        transform[:3, :3] = self.rotation
        transform[:3, 3] = self.translation
        m.apply_transform(transform)
        return m


def random_shape(kind: str, rng: np.random.Generator) -> SyntheticShape:
    """A primitive of `kind` with random size and pose that stays inside [-0.5, 0.5]³."""
    params = _primitive(kind).draw(lambda lo, hi: float(rng.uniform(lo, hi)))
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
    uniform = rng.uniform(-TRAIN_BOX, TRAIN_BOX, size=(num_points - n_surface, 3))
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
        from occnet_backend.training.checkpoints import data_fingerprint

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
