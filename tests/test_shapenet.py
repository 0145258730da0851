"""The reference implementation's preprocessed ShapeNet layout, written here in that exact format."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from occnet_backend.data.folder import DatasetError
from occnet_backend.data.shapenet import ShapeNetOccupancyDataset, list_models, read_points_npz

RADII = {"model_a": 0.3, "model_b": 0.4, "model_c": 0.2}


def write_model(folder, radius, n=5000, packed=True, seed=0):
    """points.npz / pointcloud.npz as the reference writes them: float16, bit-packed occupancies."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    points = rng.uniform(-0.55, 0.55, (n, 3)).astype(np.float16)
    occ = np.linalg.norm(points.astype(np.float32), axis=1) < radius
    np.savez(
        folder / "points.npz",
        points=points,
        occupancies=np.packbits(occ) if packed else occ.astype(np.uint8),
        loc=np.zeros(3, dtype=np.float32),
        scale=np.float32(1.0),
    )
    surf = rng.normal(size=(2000, 3))
    surf /= np.linalg.norm(surf, axis=1, keepdims=True)
    np.savez(
        folder / "pointcloud.npz",
        points=(surf * radius).astype(np.float16),
        normals=surf.astype(np.float16),
        loc=np.zeros(3, dtype=np.float32),
        scale=np.float32(1.0),
    )
    return points, occ


@pytest.fixture
def shapenet(tmp_path):
    root = tmp_path / "ShapeNet"
    (root / "metadata.yaml").parent.mkdir()
    (root / "metadata.yaml").write_text("02691156:\n  id: '02691156'\n  name: airplane\n")
    cat = root / "02691156"
    for i, (model, r) in enumerate(RADII.items()):
        write_model(cat / model, r, packed=(model != "model_c"), seed=i)
    (cat / "train.lst").write_text("model_a\nmodel_b\n\n")
    (cat / "val.lst").write_text("model_c\n")
    other = root / "03001627"
    write_model(other / "chair_1", 0.35, seed=9)
    (other / "train.lst").write_text("chair_1")
    return root


def test_read_points_unpacks_bits(shapenet):
    points, occ = read_points_npz(shapenet / "02691156" / "model_a" / "points.npz")
    assert points.dtype == np.float32 and points.shape == (5000, 3) and occ.dtype == bool
    assert (occ == (np.linalg.norm(points, axis=1) < RADII["model_a"])).all()


def test_dataset_returns_the_common_sample_format(shapenet):
    ds = ShapeNetOccupancyDataset(shapenet, split="train", num_points=1024, surface_points=300)
    assert ds.models == [("02691156", "model_a"), ("02691156", "model_b"), ("03001627", "chair_1")]
    item = ds[1]
    assert item["points"].shape == (1024, 3) and item["points"].dtype == torch.float32
    assert item["occupancy"].shape == (1024, 1) and set(item["occupancy"].unique().tolist()) <= {0.0, 1.0}
    assert item["shape_id"] == "02691156_model_b" and item["shape_index"] == 1 and item["category"] == "02691156"
    assert item["surface_points"].shape == (300, 3) and item["surface_normals"].shape == (300, 3)
    radius = item["points"].norm(dim=1)
    far = (radius - RADII["model_b"]).abs() > 1e-3  # labels survive the 1e-4 noise away from the surface
    assert torch.equal(item["occupancy"][far, 0] > 0, radius[far] < RADII["model_b"])
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["points"].shape == (3, 1024, 3) and batch["shape_index"].tolist() == [0, 1, 2]


def test_categories_split_and_unpacked_occupancies(shapenet):
    val = ShapeNetOccupancyDataset(shapenet, split="val", num_points=64, noise=0)
    assert len(val) == 1 and val[0]["shape_id"] == "02691156_model_c"
    p, o = val[0]["points"], val[0]["occupancy"][:, 0] > 0
    assert torch.equal(o, p.norm(dim=1) < RADII["model_c"])
    only = ShapeNetOccupancyDataset(shapenet, split="train", categories=["03001627"], num_points=8)
    assert [s for s, _ in only.models] == ["03001627"]


def test_epochs_and_seeds(shapenet):
    ds = ShapeNetOccupancyDataset(shapenet, split="train", num_points=128, seed=1)
    a = ds[0]["points"]
    assert torch.equal(a, ds[0]["points"])
    ds.set_epoch(1)
    assert not torch.equal(a, ds[0]["points"])


def test_layout_errors_name_the_file(shapenet):
    (shapenet / "02691156" / "test.lst").write_text("model_a\nmissing_model\n")
    with pytest.raises(DatasetError, match=r"test\.lst.*missing_model"):
        list_models(shapenet, "test", ["02691156"])
    with pytest.raises(DatasetError, match=r"03001627.*val\.lst"):
        list_models(shapenet, "val", ["03001627"])
    with pytest.raises(DatasetError, match="no such folder"):
        ShapeNetOccupancyDataset(shapenet / "nope")
    (shapenet / "02691156" / "model_b" / "points.npz").write_bytes(b"truncated")
    ds = ShapeNetOccupancyDataset(shapenet, split="train", categories=["02691156"], num_points=8)
    with pytest.raises(DatasetError, match=r"model_b.*points\.npz"):
        ds[1]


def test_train_command_learns_from_the_reference_layout(shapenet, tmp_path):
    """`train --config` with dataset.type 'shapenet': the training spheres are learned, and validation
    runs on val.lst's model (a smaller sphere, which one unconditional network cannot also fit)."""
    import json
    import subprocess
    import sys

    import yaml

    config = {
        "model": {"dim_hidden": 32, "num_layers": 2, "fourier_frequencies": 8},
        "dataset": {"type": "shapenet", "num_points": 1024, "batch_size": 2},
        "optimizer": {"lr": 5e-3},
        "trainer": {"device": "cpu", "max_steps": 400, "val_every": 400, "progress_bar": False},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "occnet_backend", "train", "--config", str(path), "--data", str(shapenet),
         "--out", str(out), "--events", "jsonl"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    metrics = [e for e in events if e["event"] == "metrics"]
    assert len(metrics) == 1 and 0 < metrics[0]["val_loss"] < 1 and 0 <= metrics[0]["val_iou"] < 0.5
    assert events[-1]["event"] == "done" and events[-1]["iou"] > 0.6
    assert (out / "checkpoints" / "last.pt").is_file()
    # validation meshes by default (the seed's "automatic mesh extraction for evaluation")
    assert len(list((out / "checkpoints" / "val_meshes").glob("step0000400_*.ply"))) == 1

    # `eval` reads the same layout and scores the unconditional train checkpoint on every shape
    result = subprocess.run(
        [sys.executable, "-m", "occnet_backend", "eval", "--checkpoint", str(out / "checkpoints" / "last.pt"),
         "--data", str(shapenet), "--split", "train", "--out", str(tmp_path / "eval"), "--resolution", "32"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    scores = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert sorted(scores["shapes"]) == ["02691156_model_a", "02691156_model_b", "03001627_chair_1"]
    assert all(0 <= row["iou"] <= 1 for row in scores["shapes"].values()) and scores["mean"]["iou"] > 0.3


def test_shapenet_config_without_a_folder_is_refused():
    from occnet_backend.training.config import ConfigError, create_trainer_from_config

    with pytest.raises(ConfigError, match="data_root is required for dataset.type 'shapenet'"):
        create_trainer_from_config({"dataset": {"type": "shapenet"}})
