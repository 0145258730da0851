"""Reader for the reference implementation's preprocessed ShapeNet (``dataset_small_v1.1`` layout).

So users can train and evaluate on the standard benchmark data and compare with published
tables, without re-running the reference's fragile watertighting pipeline:

```
ROOT/metadata.yaml                      optional: {category_id: {id, name}}
ROOT/<category>/<split>.lst             one model id per line (train, val, test)
ROOT/<category>/<model>/points.npz      points float16 [100k, 3] uniform in the padded unit cube,
                                        occupancies bit-packed uint8 (or unpacked 0/1), loc, scale
ROOT/<category>/<model>/pointcloud.npz  points, normals [100k, 3] on the surface, loc, scale
```

Samples have the same format as :class:`occnet_backend.dataset.OccupancyDataset`'s
(``points``, ``occupancy``, ``shape_id``, ``shape_index``) plus ``category``. The shape id is
``<category>_<model>`` (no path separator, so it is safe as a file name for outputs).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from occnet_backend.data.folder import DatasetError

SHAPENET_SPLITS = ("train", "val", "test")


def read_points_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(points float32 [N, 3], occupancy bool [N]) from a reference ``points.npz``.

    Occupancies may be bit-packed (the released data) or one value per point (older exports).
    """
    path = Path(path)
    try:
        with np.load(path) as z:
            points = np.asarray(z["points"], dtype=np.float32)
            occ = np.asarray(z["occupancies"])
    except (OSError, ValueError, EOFError) as err:
        raise DatasetError(f"{path}: unreadable points file ({err}); re-download or re-extract the dataset") from None
    except KeyError as err:
        raise DatasetError(f"{path}: missing array {err}; expected 'points' and 'occupancies'") from None
    if points.ndim != 2 or points.shape[1] != 3:
        raise DatasetError(f"{path}: 'points' must have shape [N, 3], got {points.shape}")
    n = len(points)
    if occ.dtype == np.uint8 and occ.size != n and occ.size * 8 >= n:
        occupancy = np.unpackbits(occ.reshape(-1))[:n].astype(bool)
    elif occ.size == n:
        occupancy = occ.reshape(-1).astype(bool)
    else:
        raise DatasetError(f"{path}: {occ.size} occupancy values for {n} points (neither packed nor one per point)")
    return points, occupancy


def read_pointcloud_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(surface points float32 [N, 3], normals float32 [N, 3]) from a reference ``pointcloud.npz``."""
    path = Path(path)
    try:
        with np.load(path) as z:
            return np.asarray(z["points"], dtype=np.float32), np.asarray(z["normals"], dtype=np.float32)
    except (OSError, ValueError, EOFError) as err:
        raise DatasetError(f"{path}: unreadable point cloud file ({err})") from None
    except KeyError as err:
        raise DatasetError(f"{path}: missing array {err}; expected 'points' and 'normals'") from None


def list_models(root: str | os.PathLike, split: str, categories: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(category, model) pairs of `split`, from each category's ``<split>.lst``, in file order.

    Raises DatasetError naming the file when a category or list is missing, or a listed model
    folder does not exist.
    """
    root = Path(root)
    if split not in SHAPENET_SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SHAPENET_SPLITS)}")
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder (the ShapeNet root with one folder per category)")
    if categories is None:
        categories = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / f"{split}.lst").is_file())
        if not categories:
            raise DatasetError(f"{root}: no category folder has a {split}.lst; is this the preprocessed ShapeNet root?")
    models: list[tuple[str, str]] = []
    for cat in categories:
        lst = root / cat / f"{split}.lst"
        if not lst.is_file():
            raise DatasetError(f"{lst}: split list missing (category {cat!r})")
        for line in lst.read_text(encoding="utf-8").splitlines():
            model = line.strip()
            if not model:
                continue
            if "/" in model or "\\" in model or model in (".", ".."):
                raise DatasetError(f"{lst}: invalid model id {model!r}")
            if not (root / cat / model).is_dir():
                raise DatasetError(f"{lst}: lists model {model!r} but {root / cat / model} does not exist")
            models.append((cat, model))
    return models


class ShapeNetOccupancyDataset(Dataset):
    """Occupancy samples from the reference's preprocessed ShapeNet, in OccupancyDataset's format.

    Args:
        root: the folder holding one folder per category.
        split: 'train', 'val' or 'test' (read from ``<category>/<split>.lst``).
        categories: category ids to use (default: all that have the split list).
        num_points: points per sample, drawn from ``points.npz`` (the reference used 2048).
        surface_points: if > 0, also return ``surface_points`` / ``surface_normals`` of this many
            points from ``pointcloud.npz`` (the input of a point-cloud encoder).
        noise: Gaussian noise added to the float16-stored points (the reference adds 1e-4 to
            break the float16 grid); 0 to disable.
        seed: base seed; randomness depends only on (seed, index, epoch).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        categories: Sequence[str] | None = None,
        num_points: int = 2048,
        surface_points: int = 0,
        noise: float = 1e-4,
        seed: int = 0,
    ):
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        self.root = Path(root)
        self.split = split
        self.models = list_models(self.root, split, categories)
        if not self.models:
            raise DatasetError(f"{self.root}: the {split!r} split lists no models")
        self.num_points = num_points
        self.surface_points = surface_points
        self.noise = noise
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def identity(self) -> dict:
        """What this dataset is, for checkpoints: resume refuses a different one."""
        from occnet_backend.training.checkpoints import data_fingerprint

        ids = [self.shape_id(i) for i in range(len(self))]
        return {"type": "shapenet", "root": os.path.abspath(self.root), "split": self.split, "size": len(self),
                "shape_ids": ids, "fingerprint": data_fingerprint("shapenet", ids)}

    def __len__(self) -> int:
        return len(self.models)

    def shape_id(self, index: int) -> str:
        cat, model = self.models[index]
        return f"{cat}_{model}"

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} shapes")
        cat, model = self.models[index]
        folder = self.root / cat / model
        points, occupancy = read_points_npz(folder / "points.npz")
        rng = np.random.default_rng([self.seed, index, self.epoch])
        replace = self.num_points > len(points)
        idx = rng.choice(len(points), self.num_points, replace=replace) if replace else rng.permutation(len(points))[: self.num_points]
        p = points[idx]
        if self.noise > 0:
            p = p + (self.noise * rng.standard_normal(p.shape)).astype(np.float32)
        sample = {
            "points": torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32)),
            "occupancy": torch.from_numpy(occupancy[idx].astype(np.float32)).unsqueeze(1),
            "shape_id": f"{cat}_{model}",
            "shape_index": index,
            "category": cat,
        }
        if self.surface_points > 0:
            surf, normals = read_pointcloud_npz(folder / "pointcloud.npz")
            j = rng.permutation(len(surf))[: self.surface_points]
            if len(j) < self.surface_points:
                j = rng.integers(0, len(surf), self.surface_points)
            sample["surface_points"] = torch.from_numpy(surf[j])
            sample["surface_normals"] = torch.from_numpy(normals[j])
        return sample
