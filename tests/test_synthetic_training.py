"""Synthetic shapes: exact volumes, reproducibility, and training that actually learns a shape."""

import numpy as np
import pytest
import torch
import trimesh
from torch.utils.data import DataLoader

from occnet_backend import OccupancyNetwork, OccupancyTrainer, SyntheticOccupancyDataset
from occnet_backend.data.synthetic import SHAPES


@pytest.mark.parametrize("kind", SHAPES)
def test_analytic_occupancy_matches_analytic_volume(kind):
    ds = SyntheticOccupancyDataset(num_samples=1, shapes=[kind], seed=3)
    shape = ds.shapes[0]
    pts = np.random.default_rng(0).uniform(-0.55, 0.55, (400_000, 3))
    mc_volume = shape.contains(pts).mean() * 1.1**3
    assert mc_volume == pytest.approx(shape.volume, rel=0.04)
    lo, hi = shape.mesh().bounds
    assert lo.min() >= -0.5 - 1e-6 and hi.max() <= 0.5 + 1e-6


def test_samples_have_the_seed_format_and_are_reproducible():
    a = SyntheticOccupancyDataset(num_samples=3, num_points=500, seed=7)
    b = SyntheticOccupancyDataset(num_samples=3, num_points=500, seed=7)
    s = a[1]
    assert s["points"].shape == (500, 3) and s["points"].dtype == torch.float32
    assert s["occupancy"].shape == (500, 1) and set(s["occupancy"].unique().tolist()) <= {0.0, 1.0}
    assert isinstance(s["shape_id"], str) and s["shape_index"] == 1
    assert torch.equal(s["points"], b[1]["points"])
    a.set_epoch(1)
    assert not torch.equal(a[1]["points"], b[1]["points"]), "a new epoch draws new points"


def test_surface_ratio_controls_where_points_go():
    near = SyntheticOccupancyDataset(num_samples=1, shapes=["sphere"], num_points=4000, surface_sampling=1.0, uniform_sampling=0.0)
    occ = near[0]["occupancy"].mean().item()
    assert 0.3 < occ < 0.7, "near-surface points are about half inside"


def test_bad_dataset_arguments():
    with pytest.raises(ValueError, match="unknown synthetic shapes"):
        SyntheticOccupancyDataset(shapes=["teapot"])
    with pytest.raises(ValueError, match="not both 0"):
        SyntheticOccupancyDataset(surface_sampling=0, uniform_sampling=0)


@pytest.mark.slow
def test_training_learns_a_shape_and_extracts_a_closed_mesh_of_the_right_volume():
    torch.manual_seed(0)
    ds = SyntheticOccupancyDataset(num_samples=1, shapes=["capsule"], num_points=4096, seed=2)
    model = OccupancyNetwork(dim_hidden=64, num_layers=3, fourier_frequencies=32, fourier_scale=1.5)
    trainer = OccupancyTrainer(model, DataLoader(ds, batch_size=1), device="cpu", lr=2e-3)
    history = trainer.train(max_steps=400)
    assert len(history) == 400 and history[-1]["loss"] < history[0]["loss"] / 3
    shape = ds.shapes[0]
    pts = np.random.default_rng(1).uniform(-0.55, 0.55, (100_000, 3)).astype(np.float32)
    pred = model.predict_probability(pts).numpy() >= 0.5
    true = shape.contains(pts)
    iou = (pred & true).sum() / (pred | true).sum()
    assert iou >= 0.9
    out = model.extract_mesh(resolution=64)
    mesh = trimesh.Trimesh(out["vertices"], out["faces"])
    assert mesh.is_watertight
    assert mesh.volume == pytest.approx(shape.volume, rel=0.06)


def test_trainer_rejects_cuda_without_gpu_and_empty_loaders():
    model = OccupancyNetwork(dim_hidden=8, num_layers=1)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            OccupancyTrainer(model, [], device="cuda")
    with pytest.raises(ValueError, match="no batches"):
        OccupancyTrainer(model, [], device="cpu").train(max_steps=3)
    with pytest.raises(ValueError, match="num_epochs or max_steps"):
        OccupancyTrainer(model, [], device="cpu").train()
