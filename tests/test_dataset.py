"""Dataset folder, caches, prepare_dataset and OccupancyDataset on meshes made here and Suzanne."""

from __future__ import annotations

import dataclasses
import json
import os

import igl
import numpy as np
import pytest
import torch
import trimesh
from torch.utils.data import DataLoader

from occnet_backend.data.folder import (
    DatasetError,
    PrepareError,
    cache_path,
    ensure_caches,
    prepare_dataset,
    split_ids,
    validate_shape_id,
)
from occnet_backend.data.dataset import MultiscaleBatchSampler, OccupancyDataset, augmentation_transform
from occnet_backend.data.folder import load_samples
from occnet_backend.data.labels import inside
from occnet_backend.data.meshes import normalization, to_unit_cube
from occnet_backend.data.sampling import SamplingConfig
from test_grid_fit import fins as grid_fit_fins

SMALL = SamplingConfig(num_uniform=3000, num_near=3000, num_surface=1000)


@pytest.fixture
def mesh_folder(tmp_path, suzanne):
    """A folder of meshes with awkward names: spaces, non-ASCII, several formats, a real mesh."""
    src = tmp_path / "src"
    src.mkdir()
    box = trimesh.creation.box(extents=[2.0, 1.0, 1.0])
    box.apply_translation([5.0, 0.0, 0.0])
    box.export(src / "long box.obj")
    trimesh.creation.icosphere(subdivisions=3).export(src / "sphère.ply")
    trimesh.creation.torus(1.0, 0.3).export(src / "torus.stl")
    v, f = suzanne
    trimesh.Trimesh(v, f, process=False).export(src / "Suzanne 猴.glb")
    return src


def test_prepare_writes_the_folder_format(tmp_path, mesh_folder):
    root = tmp_path / "data"
    report = prepare_dataset(root, [mesh_folder], SMALL, split=(0.5, 0.25, 0.25))
    ids = ["Suzanne 猴", "long box", "sphère", "torus"]
    assert report.shapes == ids and sorted(report.built) == ids and report.errors == []
    assert sorted(p.name for p in (root / "meshes").iterdir()) == [
        "Suzanne 猴.glb", "long box.obj", "sphère.ply", "torus.stl"
    ]
    splits = {s: json.loads((root / f"{s}.json").read_text(encoding="utf-8")) for s in ("train", "val", "test")}
    assert sorted(sum(splits.values(), [])) == ids and [len(splits[s]) for s in splits] == [2, 1, 1]
    assert not list(root.rglob("*.tmp")), "no temporary files left behind"

    s = load_samples(root, "long box")
    for key in ("uniform_points", "uniform_occupancy", "near_points", "near_occupancy", "surface_points",
                "surface_normals", "center", "scale"):
        assert key in s
    assert s["uniform_points"].shape == (3000, 3) and s["uniform_points"].dtype == np.float32
    assert s["uniform_occupancy"].dtype == bool and s["near_occupancy"].shape == (3000,)
    assert s["surface_points"].shape == (1000, 3) and s["surface_normals"].shape == (1000, 3)
    np.testing.assert_allclose(s["center"], [5.0, 0.0, 0.0], atol=1e-9)
    assert s["scale"] == pytest.approx(2.0)
    assert np.abs(s["uniform_points"]).max() <= 0.55 + 1e-3
    # the box fills x in [-0.5, 0.5], y, z in [-0.25, 0.25] in the unit cube: labels are exact
    p, occ = s["uniform_points"], s["uniform_occupancy"]
    margin = np.abs(np.abs(p) - [0.5, 0.25, 0.25]).min(axis=1) > 1e-3
    truth = (np.abs(p) < [0.5, 0.25, 0.25]).all(axis=1)
    assert (occ[margin] == truth[margin]).all()
    # surface points lie on the box, normals are unit and point outward
    assert np.abs(np.abs(s["surface_points"]) - [0.5, 0.25, 0.25]).min(axis=1).max() < 1e-5
    np.testing.assert_allclose(np.linalg.norm(s["surface_normals"], axis=1), 1.0, atol=2e-3)
    assert ((s["surface_normals"] * s["surface_points"]).sum(axis=1) > 0).all()
    # about half the near points are inside
    assert 0.3 < s["near_occupancy"].mean() < 0.7


def test_suzanne_labels_in_the_cache_match_exact_winding_number(tmp_path, suzanne):
    v, f = suzanne
    src = tmp_path / "suzanne.ply"
    trimesh.Trimesh(v, f, process=False).export(src)
    root = tmp_path / "data"
    prepare_dataset(root, [src], SMALL)
    s = load_samples(root, "suzanne")
    center, scale = normalization(v)
    np.testing.assert_allclose(s["center"], center)
    unit = to_unit_cube(v, center, scale)
    pts = np.concatenate([s["uniform_points"], s["near_points"]]).astype(np.float64)
    exact = np.abs(igl.winding_number(unit, f, pts)) > 0.5
    occ = np.concatenate([s["uniform_occupancy"], s["near_occupancy"]])
    assert (occ != exact).mean() < 0.001


def test_cache_is_reused_and_rebuilt_when_the_mesh_changes(tmp_path):
    src = tmp_path / "ball.obj"
    trimesh.creation.icosphere(subdivisions=2).export(src)
    root = tmp_path / "data"
    assert prepare_dataset(root, [src], SMALL).built == ["ball"]
    assert prepare_dataset(root, [src], SMALL).cached == ["ball"]
    assert prepare_dataset(root, [], SMALL).cached == ["ball"], "no inputs: prepares the folder in place"

    mesh_file = root / "meshes" / "ball.obj"
    stat = mesh_file.stat()
    os.utime(mesh_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # touched, same content
    assert prepare_dataset(root, [], SMALL).cached == ["ball"]

    before = load_samples(root, "ball")["scale"]
    trimesh.creation.icosphere(subdivisions=2, radius=3.0).export(src)  # edited
    assert prepare_dataset(root, [src], SMALL).built == ["ball"]
    assert load_samples(root, "ball")["scale"] == pytest.approx(3 * before)

    # other sampling settings: rebuilt
    assert prepare_dataset(root, [], SamplingConfig(num_uniform=100, num_near=100, num_surface=10)).built == ["ball"]


def test_a_truncated_cache_is_never_trusted(tmp_path):
    src = tmp_path / "ball.obj"
    trimesh.creation.icosphere(subdivisions=2).export(src)
    root = tmp_path / "data"
    prepare_dataset(root, [src], SMALL)
    cache = cache_path(root, "ball")
    data = cache.read_bytes()
    cache.write_bytes(data[: len(data) // 2])  # as if a non-atomic writer had been killed
    assert ensure_caches(root, ["ball"]) == ["ball"]
    assert load_samples(root, "ball")["uniform_points"].shape == (3000, 3)


def test_bad_meshes_fail_clearly_and_nothing_half_done(tmp_path):
    good = tmp_path / "in" / "good.obj"
    good.parent.mkdir()
    trimesh.creation.box().export(good)
    trimesh.PointCloud(np.random.default_rng(0).random((30, 3))).export(tmp_path / "in" / "cloud.ply")
    root = tmp_path / "data"
    with pytest.raises(PrepareError) as info:
        prepare_dataset(root, [tmp_path / "in"], SMALL)
    assert "cloud.ply" in str(info.value) and "no faces" in str(info.value)
    assert [e["shape_id"] for e in info.value.report.errors] == ["cloud"]
    assert not (root / "meshes" / "cloud.ply").exists(), "a bad mesh never enters the folder"
    assert not (root / "train.json").exists(), "no split files for a partial dataset"
    assert cache_path(root, "good").is_file(), "the good shape is prepared and reused next time"


def test_bad_ids_and_duplicates(tmp_path):
    for bad in ["", "   ", "a/b", "a\\b", "..", "../x", ".hidden", "x\x00y", " lead"]:
        with pytest.raises(DatasetError, match="invalid shape id"):
            validate_shape_id(bad)
    assert validate_shape_id("Suzanne côté 2") == "Suzanne côté 2"

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    trimesh.creation.box().export(tmp_path / "a" / "chair.obj")
    trimesh.creation.box().export(tmp_path / "b" / "chair.ply")
    with pytest.raises(DatasetError, match="duplicate shape id 'chair'"):
        prepare_dataset(tmp_path / "data", [tmp_path / "a", tmp_path / "b"], SMALL)
    # ids that differ only in case: one file on macOS/Windows disks; refused before the folder exists
    (tmp_path / "c").mkdir()
    trimesh.creation.box().export(tmp_path / "c" / "Sphere.obj")
    trimesh.creation.box().export(tmp_path / "a" / "sphere.obj")
    with pytest.raises(DatasetError, match="duplicate shape id 'sphere'.*must differ in more than case"):
        prepare_dataset(tmp_path / "cased", [tmp_path / "c" / "Sphere.obj", tmp_path / "a" / "sphere.obj"], SMALL)
    assert not (tmp_path / "cased").exists(), "a refused prepare left a folder behind"
    with pytest.raises(DatasetError, match="no such file"):
        prepare_dataset(tmp_path / "data", [tmp_path / "nope.obj"], SMALL)
    with pytest.raises(DatasetError, match="fractions"):
        prepare_dataset(tmp_path / "data", [tmp_path / "a"], SMALL, split=(0.5, 0.5, 0.5))

    # duplicates inside the meshes folder
    root = tmp_path / "dup"
    (root / "meshes").mkdir(parents=True)
    trimesh.creation.box().export(root / "meshes" / "Chair.obj")
    trimesh.creation.box().export(root / "meshes" / "chair.stl")
    with pytest.raises(DatasetError, match="duplicate shape id"):
        prepare_dataset(root, [], SMALL)


def test_split_file_errors_name_the_file(tmp_path):
    src = tmp_path / "ball.obj"
    trimesh.creation.icosphere(subdivisions=1).export(src)
    root = tmp_path / "data"
    prepare_dataset(root, [src], SMALL)
    (root / "train.json").write_text(json.dumps(["ball", "ghost"]))
    with pytest.raises(DatasetError, match=r"train\.json.*'ghost'"):
        OccupancyDataset(root, "train")
    (root / "train.json").write_text(json.dumps(["ball", "ball"]))
    with pytest.raises(DatasetError, match=r"train\.json.*twice"):
        OccupancyDataset(root, "train")
    (root / "train.json").write_text(json.dumps(["../ball"]))
    with pytest.raises(DatasetError, match=r"train\.json.*invalid shape id"):
        OccupancyDataset(root, "train")
    (root / "train.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"train\.json.*not valid JSON"):
        OccupancyDataset(root, "train")
    (root / "val.json").write_text("[]")
    with pytest.raises(DatasetError, match="empty"):
        OccupancyDataset(root, "val")


def test_split_ids_is_seeded_and_keeps_a_single_shape_in_train():
    ids = [f"s{i}" for i in range(20)]
    a, b = split_ids(ids, (0.8, 0.1, 0.1), seed=3), split_ids(ids, (0.8, 0.1, 0.1), seed=3)
    assert a == b and [len(a[k]) for k in ("train", "val", "test")] == [16, 2, 2]
    assert split_ids(["only"], (0.8, 0.1, 0.1))["train"] == ["only"]


@pytest.fixture
def prepared(tmp_path, mesh_folder):
    root = tmp_path / "data"
    prepare_dataset(root, [mesh_folder], SMALL, split=(1.0, 0.0, 0.0))
    return root


def test_occupancy_dataset_samples(prepared):
    ds = OccupancyDataset(data_root=prepared, split="train", num_points=2000, surface_sampling=0.5, uniform_sampling=0.5)
    assert len(ds) == 4 and ds.shape_ids[0] == "Suzanne 猴"
    item = ds[1]
    assert set(item) >= {"points", "occupancy", "shape_id", "shape_index"}
    assert item["points"].shape == (2000, 3) and item["points"].dtype == torch.float32
    assert item["occupancy"].shape == (2000, 1) and item["occupancy"].dtype == torch.float32
    assert set(item["occupancy"].unique().tolist()) <= {0.0, 1.0}
    assert item["shape_id"] == "long box" and item["shape_index"] == 1
    # deterministic per (seed, epoch); new points next epoch
    assert torch.equal(ds[1]["points"], item["points"])
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["points"], item["points"])
    # ratios: all near-surface points lie within a few noise scales of the surface
    near_only = OccupancyDataset(prepared, "train", num_points=1000, surface_sampling=1.0, uniform_sampling=0.0)
    p = near_only[1]["points"].numpy()
    assert np.abs(np.abs(p) - [0.5, 0.25, 0.25]).min(axis=1).max() < 0.3
    # more points than cached: drawn with replacement, still the right size
    assert OccupancyDataset(prepared, "train", num_points=9000)[0]["points"].shape == (9000, 3)


def test_labels_follow_the_points_under_augmentation(suzanne):
    v, f = suzanne
    center, scale = normalization(v)
    unit = to_unit_cube(v, center, scale)
    rng = np.random.default_rng(0)
    pts = rng.uniform(-0.55, 0.55, (3000, 3))
    labels = inside(unit, f, pts)
    bbox = np.stack([unit.min(0), unit.max(0)])
    for seed in range(5):
        a, t = augmentation_transform(np.random.default_rng(seed), bbox, up_axis="z")
        moved_mesh = unit @ a + t
        assert np.abs(moved_mesh).max() <= 0.5 + 1e-9, "the augmented shape stays in the unit cube"
        assert (inside(moved_mesh, f, pts @ a + t) == labels).mean() > 0.999
        assert not np.allclose(a, np.eye(3))


def test_augmented_dataset_keeps_shapes_in_the_box(prepared):
    ds = OccupancyDataset(prepared, "train", num_points=2000, augment=True, surface_sampling=1.0, uniform_sampling=0.0)
    plain = OccupancyDataset(prepared, "train", num_points=2000, surface_sampling=1.0, uniform_sampling=0.0)
    a, b = ds[2], plain[2]
    assert torch.equal(a["occupancy"], b["occupancy"]), "same points drawn, only moved"
    assert not torch.allclose(a["points"], b["points"])
    inside_pts = a["points"][a["occupancy"][:, 0] > 0]
    assert inside_pts.abs().max() <= 0.5 + 0.01


def test_dataloader_workers_are_reproducible(prepared):
    ds = OccupancyDataset(prepared, "train", num_points=500, augment=True, seed=7)

    def collect(workers):
        loader = DataLoader(ds, batch_size=2, num_workers=workers, shuffle=False)
        return [b["points"] for b in loader]

    single, multi = collect(0), collect(2)
    assert all(torch.equal(x, y) for x, y in zip(single, multi))
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["points"].shape == (2, 500, 3) and batch["shape_index"].tolist() == [0, 1]


def test_multiscale(prepared):
    with pytest.raises(ValueError, match="multiscale_training=True"):
        OccupancyDataset(prepared, "train", num_points=[100, 200])
    ds = OccupancyDataset(prepared, "train", num_points=[100, 200, 400], multiscale_training=True, preload=True)
    sizes = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        n = ds.num_points
        assert all(ds[i]["points"].shape == (n, 3) for i in range(len(ds)))
        sizes.add(n)
    assert sizes == {100, 200, 400}, "every scale is used across epochs"
    sampler = MultiscaleBatchSampler(ds, batch_size=2, seed=1)
    batch_sizes = set()
    for epoch in range(4):
        sampler.set_epoch(epoch)
        for batch in DataLoader(ds, batch_sampler=sampler):
            assert batch["points"].shape[0] == batch["occupancy"].shape[0] <= 2
            batch_sizes.add(batch["points"].shape[1])
    assert len(batch_sizes) >= 2 and batch_sizes <= {100, 200, 400}


def test_dataset_rebuilds_a_stale_cache(prepared):
    thin = load_samples(prepared, "torus")["uniform_occupancy"].mean()
    trimesh.creation.torus(1.0, 0.6).export(prepared / "meshes" / "torus.stl")  # edited in place
    ds = OccupancyDataset(prepared, "train", num_points=100)
    thick = load_samples(prepared, "torus")["uniform_occupancy"].mean()
    assert ds[3]["shape_id"] == "torus" and thick > thin + 0.05


def test_a_shape_with_more_surface_gets_more_near_points_at_the_same_density():
    """`near_per_area`: a heatsink's fins have many times a ball's surface; with a fixed count their
    near-surface points would be that many times sparser (the learned fins broke into specks)."""
    from occnet_backend.data.sampling import sample_shape

    ball = trimesh.creation.icosphere(subdivisions=3)
    fins = grid_fit_fins()
    config = SamplingConfig(num_uniform=500, num_near=1000, num_surface=100, near_per_area=400.0)
    assert SamplingConfig.from_dict(config.to_dict()) == config
    counts = {}
    for name, mesh in (("ball", ball), ("fins", fins)):
        samples = sample_shape(mesh.vertices, mesh.faces, config)
        unit_area = mesh.area / np.ptp(mesh.vertices, axis=0).max() ** 2
        counts[name] = len(samples["near_points"])
        assert counts[name] == max(1000, int(np.ceil(400.0 * unit_area)))
        assert len(samples["near_sdf"]) == len(samples["near_occupancy"]) == counts[name]
        assert len(samples["uniform_points"]) == 500 and len(samples["surface_points"]) == 100
    assert 1000 < counts["ball"] < 1260 and counts["fins"] > 6 * counts["ball"]  # ~pi vs 11 fins' ~22 units
    assert len(sample_shape(ball.vertices, ball.faces, SamplingConfig(num_uniform=500, num_near=1000))["near_points"]) == 1000
    # `max_near` bounds what the density asks for (the fins' finest grid level is coarser), never below num_near
    capped = dataclasses.replace(config, max_near=3000)
    assert SamplingConfig.from_dict(capped.to_dict()) == capped
    assert len(sample_shape(fins.vertices, fins.faces, capped)["near_points"]) == 3000
    assert len(sample_shape(ball.vertices, ball.faces, dataclasses.replace(config, max_near=10))["near_points"]) == 1000
    with pytest.raises(ValueError, match=r"near_per_area must be >= 0, got -1.0"):
        SamplingConfig(near_per_area=-1.0)
    with pytest.raises(ValueError, match=r"max_near must be >= 0, got -1"):
        SamplingConfig(max_near=-1)
