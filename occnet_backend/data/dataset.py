"""`OccupancyDataset`: training samples from a dataset folder of real meshes.

The folder format, the per-shape caches and ``prepare_dataset`` live in
:mod:`occnet_backend.data.folder` (torch-free, so ``prepare`` workers stay light).

A sample is ``{'points': FloatTensor[N, 3], 'occupancy': FloatTensor[N, 1] of 0/1,
'shape_id': str, 'shape_index': int}`` where ``shape_index`` is the shape's position in the
split (the row of its latent code in an auto-decoder). Points are in unit-cube coordinates.

Randomness depends only on (seed, shape index, epoch), never on worker processes or the order
items are fetched in, so runs are reproducible with any number of DataLoader workers. Call
``set_epoch(e)`` (the trainer does) to get new points each epoch.

Multi-scale training (``num_points=[50000, 100000, 200000], multiscale_training=True``):
by default every item of an epoch has the same size, drawn per epoch from the list (seeded),
so the default collate works. For a new size every batch, use :class:`MultiscaleBatchSampler`
as the DataLoader's ``batch_sampler``: it yields ``(index, num_points)`` pairs, which
``__getitem__`` accepts, so it also works with persistent workers.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from occnet_backend.data.folder import DatasetError, ensure_caches, load_samples, read_split

log = logging.getLogger(__name__)

UP_AXES = {"x": 0, "y": 1, "z": 2}


SEGMENT_FRACTION = 0.5
"""The share of the points with a way to the surface (`along_the_distance`) that each draw moves
along it; the rest keep their cached places, like the held-out points early stopping measures."""


def along_the_distance(points: np.ndarray, sdf: np.ndarray, to_surface: np.ndarray,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Moves a random SEGMENT_FRACTION of the points that have a way to the surface (`to_surface`,
    see `sampling.along_the_distance_is_exact`) to a random spot on it; returns the points and their
    signed distances.

    Why: every spot of that segment has the same closest point, so its signed distance is exactly
    the fraction of the point's (the ball around it that touches the surface nowhere else lies in
    the point's own ball): fresh, exactly labelled points every step for free, where a fixed set of
    cached points lets a feature grid learn the points rather than the surface (a heatsink's points
    within 0.002 of its surface: 5% on the wrong side among the cached ones, 33% among fresh ones)."""
    move = to_surface.any(axis=1) & (rng.random(len(sdf)) < SEGMENT_FRACTION)
    keep = rng.random(int(move.sum())).astype(np.float32)  # how much of the distance is left
    points, sdf = points.copy(), sdf.copy()
    points[move] += (1 - keep)[:, None] * to_surface[move]
    sdf[move] = np.where(sdf[move] < 0, np.minimum(sdf[move] * keep, -6e-8), sdf[move] * keep)
    return points, sdf


def random_subset(count: int, available: int, rng: np.random.Generator) -> np.ndarray:
    """`count` indices into `available` items: without replacement when possible, else with.
    (`choice` draws a few thousand of 100k in 0.1 ms; a permutation of all of them took 2 ms a step.)"""
    if count <= available:
        return rng.choice(available, count, replace=False)
    return rng.integers(0, available, size=count)


def augmentation_transform(
    rng: np.random.Generator,
    bbox: np.ndarray,
    up_axis: str = "z",
    scale_range: tuple[float, float] = (0.85, 1.15),
    jitter: float = 0.02,
) -> tuple[np.ndarray, np.ndarray]:
    """A random similarity-plus-stretch (A, t) with x' = x @ A + t that keeps the shape in the unit cube.

    Rotation about the up axis, anisotropic scale, then a uniform shrink (only if needed) so the
    transformed bounding box fits in [-0.5, 0.5]³, recentred, plus a small random translation
    within the remaining slack. Points and shape move together, so labels stay correct.
    """
    axis = UP_AXES[up_axis]
    theta = rng.uniform(0.0, 2.0 * math.pi)
    c, s = math.cos(theta), math.sin(theta)
    i, j = [k for k in range(3) if k != axis]
    rot = np.eye(3)
    rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
    stretch = np.diag(rng.uniform(*scale_range, size=3))
    a = stretch @ rot.T  # row vectors: x @ diag(s) @ R^T
    lo, hi = np.asarray(bbox, dtype=np.float64)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]) @ a
    c_lo, c_hi = corners.min(0), corners.max(0)
    extent = c_hi - c_lo
    shrink = min(1.0, 1.0 / max(float(extent.max()), 1e-12))
    a = a * shrink
    slack = np.clip((1.0 - extent * shrink) / 2.0, 0.0, jitter)
    t = -(c_lo + c_hi) / 2.0 * shrink + rng.uniform(-slack, slack)
    return a, t


class OccupancyDataset(Dataset):
    """Occupancy samples for the shapes of one split of a dataset folder.

    Args:
        data_root: the dataset folder (``meshes/``, ``train.json``...). Missing or stale caches
            are built here, with the settings in ``prepare.json``.
        split: 'train', 'val' or 'test'.
        num_points: points per sample; a list of sizes with ``multiscale_training=True``.
        surface_sampling, uniform_sampling: relative weights of near-surface and uniform points.
        augment: random rotation about the up axis, anisotropic scale and a small shift,
            applied to points and shape alike.
        multiscale_training: draw the size from the ``num_points`` list (per epoch, or per
            batch with :class:`MultiscaleBatchSampler`).
        seed: base seed of all randomness.
        up_axis: axis augmentation rotates about ('z' for Blender exports, 'y' for glTF/ShapeNet).
        preload: keep every shape's samples in memory (fast; ~1-4 MB a shape). Otherwise each
            item reads its cache file.
        soft_targets: 0 for none; else items carry ``'target'`` [N, 1] = sigmoid(-sdf / width)
            with this width (unit-cube units), the trainer's target instead of the 0/1 labels:
            the distance tells the network where inside a voxel the surface lies, which 0/1 labels
            only tell on average (BENCHMARKS.md). Not with `augment` (a stretch changes distances).
        holdout_points: the last this many near and uniform points of each shape's cache are
            never drawn: `holdout(index)` returns them, to measure the fit on unseen points.
    """

    def __init__(
        self,
        data_root: str | os.PathLike | None = None,
        split: str = "train",
        num_points: int | Sequence[int] = 100_000,
        surface_sampling: float = 0.5,
        uniform_sampling: float = 0.5,
        augment: bool = False,
        multiscale_training: bool = False,
        seed: int = 0,
        up_axis: str = "z",
        preload: bool = False,
        soft_targets: float = 0.0,
        holdout_points: int = 0,
    ):
        if data_root is None:
            raise DatasetError(
                "OccupancyDataset needs data_root='path/to/data': a dataset folder with meshes/<id>.obj and "
                "train.json / val.json / test.json (`python -m occnet_backend prepare MESHES... --out path/to/data` "
                "writes one), e.g. OccupancyDataset(data_root='data', num_points=[50000, 100000, 200000], "
                "multiscale_training=True)"
            )
        if isinstance(num_points, (int, np.integer)):
            scales = [int(num_points)]
        else:
            scales = [int(n) for n in num_points]
            if len(scales) > 1 and not multiscale_training:
                raise ValueError(
                    f"num_points={list(num_points)} is a list: pass multiscale_training=True, or a single number"
                )
        if not scales or min(scales) < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        if surface_sampling < 0 or uniform_sampling < 0 or surface_sampling + uniform_sampling <= 0:
            raise ValueError(
                f"surface_sampling and uniform_sampling must be >= 0 and not both 0, got {surface_sampling}, {uniform_sampling}"
            )
        if not soft_targets >= 0 or holdout_points < 0:
            raise ValueError(f"soft_targets and holdout_points must be >= 0, got {soft_targets}, {holdout_points}")
        if soft_targets and augment:
            raise ValueError("soft_targets needs augment=False: augmentation stretches the shape, and its distances with it")
        if up_axis not in UP_AXES:
            raise ValueError(f"up_axis must be one of {sorted(UP_AXES)}, got {up_axis!r}")
        self.data_root = os.fspath(data_root)
        self.split = split
        self.scales = scales
        self.multiscale_training = bool(multiscale_training)
        self.surface_fraction = surface_sampling / (surface_sampling + uniform_sampling)
        self.augment = augment
        self.seed = seed
        self.up_axis = up_axis
        self.soft_targets = float(soft_targets)
        self.holdout_points = int(holdout_points)
        self.epoch = 0
        self.shape_ids = read_split(self.data_root, split)
        if not self.shape_ids:
            raise DatasetError(
                f"{os.path.join(self.data_root, split + '.json')}: the {split!r} split is empty; "
                "put shape ids in it (or prepare with different --split fractions)"
            )
        rebuilt = ensure_caches(self.data_root, self.shape_ids)
        if rebuilt:
            log.info("built samples for %d shapes of %s", len(rebuilt), split)
        self._preloaded = [load_samples(self.data_root, s) for s in self.shape_ids] if preload else None
        self._warned_small = False

    def identity(self) -> dict:
        """What this dataset is, for checkpoints: resume refuses a different one."""
        from occnet_backend.training.checkpoints import data_fingerprint
        from occnet_backend.data.folder import _read_meta, cache_path

        hashes = [(sid, (_read_meta(cache_path(self.data_root, sid)) or {}).get("sha256")) for sid in self.shape_ids]
        return {"type": "mesh", "root": os.path.abspath(self.data_root), "split": self.split, "size": len(self),
                "shape_ids": list(self.shape_ids), "fingerprint": data_fingerprint("mesh", hashes)}

    # -- epochs and scales -------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """New points (and, with multi-scale training, possibly a new size) for each epoch."""
        self.epoch = int(epoch)

    @property
    def num_points(self) -> int:
        """The sample size of the current epoch."""
        if len(self.scales) == 1:
            return self.scales[0]
        rng = np.random.default_rng([self.seed, self.epoch, 7])
        return self.scales[int(rng.integers(len(self.scales)))]

    def __len__(self) -> int:
        return len(self.shape_ids)

    def samples(self, index: int) -> dict:
        """The cached samples of shape `index` (see :func:`load_samples`)."""
        if self._preloaded is not None:
            return self._preloaded[index]
        return load_samples(self.data_root, self.shape_ids[index])

    # -- items ----------------------------------------------------------------------------------
    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        if isinstance(item, tuple):
            index, n = int(item[0]), int(item[1])
        else:
            index, n = int(item), self.num_points
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} shapes")
        s = self.samples(index)
        num_near, num_uniform = (max(len(s[k]) - self.holdout_points, 0) for k in ("near_points", "uniform_points"))
        if num_near == num_uniform == 0:
            raise DatasetError(f"{self.shape_ids[index]}: its cache holds no points besides the {self.holdout_points} "
                               "held out of training; prepare with more points")
        rng = np.random.default_rng([self.seed, index, self.epoch, n])
        n_near = int(round(n * self.surface_fraction))
        n_uniform = n - n_near
        if num_near == 0:
            n_near, n_uniform = 0, n
        if num_uniform == 0:
            n_near, n_uniform = n, 0
        if not self._warned_small and (n_near > num_near or n_uniform > num_uniform):
            log.warning(
                "%s: a sample of %d points needs more than the cache holds (%d near, %d uniform); drawing with "
                "replacement. Prepare with more --points for more variety.",
                self.shape_ids[index], n, num_near, num_uniform,
            )
            self._warned_small = True
        near_idx = random_subset(n_near, num_near, rng)
        uni_idx = random_subset(n_uniform, num_uniform, rng)
        points = np.concatenate([s["near_points"][near_idx], s["uniform_points"][uni_idx]])
        occupancy = np.concatenate([s["near_occupancy"][near_idx], s["uniform_occupancy"][uni_idx]])
        if self.soft_targets:
            sdf = np.concatenate([s["near_sdf"][near_idx], s["uniform_sdf"][uni_idx]])
            to_surface = np.concatenate([s["near_to_surface"][near_idx], s["uniform_to_surface"][uni_idx]])
            points, sdf = along_the_distance(points, sdf, to_surface, rng)
        if self.augment:
            a, t = augmentation_transform(rng, s["bbox"], self.up_axis)
            points = points @ a + t
        item = {
            "points": torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)),
            "occupancy": torch.from_numpy(occupancy.astype(np.float32)).unsqueeze(1),
            "shape_id": self.shape_ids[index],
            "shape_index": index,
        }
        if self.soft_targets:
            item["target"] = torch.sigmoid(torch.from_numpy(-sdf / self.soft_targets)).unsqueeze(1)
            item["sdf"] = torch.from_numpy(sdf.astype(np.float32)).unsqueeze(1)
        return item

    def holdout(self, index: int) -> dict:
        """The held-out points of shape `index` (see `holdout_points`): {'points' float32 [M, 3],
        'occupancy' bool [M]}, near-surface points first."""
        s = self.samples(index)
        k = self.holdout_points
        near, uniform = (slice(max(len(s[key]) - k, 0), None) for key in ("near_points", "uniform_points"))
        return {"points": np.concatenate([s["near_points"][near], s["uniform_points"][uniform]]).astype(np.float32),
                "occupancy": np.concatenate([s["near_occupancy"][near], s["uniform_occupancy"][uniform]])}


class MultiscaleBatchSampler(Sampler):
    """Batches of ``(index, num_points)`` with one size per batch, drawn from the dataset's scales.

    Seeded by (seed, epoch); call ``set_epoch`` each epoch (the trainer calls it on datasets; do it
    for this sampler too, or pass a new one).
    """

    def __init__(self, dataset: OccupancyDataset, batch_size: int, shuffle: bool = True, drop_last: bool = False, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset, self.batch_size, self.shuffle, self.drop_last, self.seed = dataset, batch_size, shuffle, drop_last, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch, 11])
        n = len(self.dataset)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        scales = self.dataset.scales
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                break
            size = scales[int(rng.integers(len(scales)))]
            yield [(int(i), size) for i in idx]

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
