"""Extraction: closed outward meshes, MISE == dense with far fewer evaluations, clear errors."""

import math

import numpy as np
import pytest
import torch
import trimesh

from occnet_backend import OccupancyNetwork
from occnet_backend.extraction import BOX_SIZE, EDGE_STEPS, extract_mesh, threshold_to_logit


def sphere_logits(radius=0.35, center=(0.05, -0.02, 0.0), sharpness=40.0):
    c = np.asarray(center, dtype=np.float32)
    return lambda p: (radius - np.linalg.norm(p - c, axis=1)) * sharpness


def two_blobs_logits(p):
    """A torus plus a separate small box: two components, one with a hole."""
    rho = np.hypot(p[:, 0] + 0.15, p[:, 1])
    torus = 0.07 - np.hypot(rho - 0.22, p[:, 2])
    box = 0.08 - np.max(np.abs(p - np.array([0.35, 0.3, 0.3])), axis=1)
    return np.maximum(torus, box) * 60


def volume_iou(a: dict, b: dict, n=200_000) -> float:
    from occnet_backend.data.labels import inside

    pts = np.random.default_rng(0).uniform(-0.55, 0.55, (n, 3))
    ia = inside(a["vertices"], a["faces"], pts)
    ib = inside(b["vertices"], b["faces"], pts)
    return (ia & ib).sum() / (ia | ib).sum()


def test_sphere_is_closed_outward_and_has_the_right_volume():
    out = extract_mesh(sphere_logits(), resolution=64, threshold=0.5)
    mesh = trimesh.Trimesh(out["vertices"], out["faces"], process=False)
    assert out["vertices"].dtype == np.float32 and out["vertices"].shape[1] == 3
    assert out["faces"].shape[1] == 3
    assert mesh.is_watertight
    assert mesh.volume > 0, "faces must point outward (positive signed volume)"
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * 0.35**3, rel=0.01)
    # outward normals: each face normal points away from the sphere centre
    centers = mesh.triangles_center - np.array([0.05, -0.02, 0.0])
    assert (np.einsum("ij,ij->i", centers, mesh.face_normals) > 0).mean() > 0.99


def test_shape_touching_the_box_is_still_closed():
    """A field that is 'inside' up to the grid border must still give a closed mesh (padding)."""
    out = extract_mesh(lambda p: np.full(len(p), 5.0, np.float32), resolution=32, threshold=0.5)
    mesh = trimesh.Trimesh(out["vertices"], out["faces"])
    assert mesh.is_watertight and mesh.volume == pytest.approx(1.1**3, rel=0.02)


def test_empty_field_gives_empty_mesh():
    out = extract_mesh(lambda p: np.full(len(p), -5.0, np.float32), resolution=32)
    assert out["vertices"].shape == (0, 3) and out["faces"].shape == (0, 3)


@pytest.mark.parametrize("fn", [sphere_logits(), two_blobs_logits], ids=["sphere", "torus+box"])
def test_mise_matches_dense_with_far_fewer_evaluations(fn):
    dense = extract_mesh(fn, resolution=128, method="dense", edge_steps=0)
    mise = extract_mesh(fn, resolution=128, method="mise", edge_steps=0)
    assert dense["stats"]["evaluations"] == 129**3
    assert dense["stats"]["evaluations"] >= 10 * mise["stats"]["evaluations"]
    assert np.array_equal(dense["faces"], mise["faces"])
    assert np.allclose(dense["vertices"], mise["vertices"], atol=1e-5)
    assert volume_iou(dense, mise) >= 0.999


def test_vertices_sit_on_the_function_between_nodes_and_stay_on_their_edges():
    """A field that is not straight between nodes (here quadratic): marching cubes' straight line
    misses its crossing, the bisections on the function find it."""
    c, r = np.array([0.05, -0.02, 0.0]), 0.3
    fn = lambda p: (r**2 - ((p - c) ** 2).sum(axis=1)) * 400.0
    plain, placed = (extract_mesh(fn, resolution=32, edge_steps=steps, denoise=False) for steps in (0, EDGE_STEPS))
    assert np.array_equal(plain["faces"], placed["faces"])
    error = {name: np.abs(np.linalg.norm(m["vertices"] - c, axis=1) - r) for name, m in (("plain", plain), ("placed", placed))}
    assert np.median(error["placed"]) < np.median(error["plain"]) / 10  # 1/16 in theory
    assert error["placed"].max() <= error["plain"].max()  # the worst: kept 1% of an edge off a node
    index = (placed["vertices"] + BOX_SIZE / 2) / (BOX_SIZE / 32)
    assert ((np.abs(index - np.round(index)) > 1e-3).sum(axis=1) == 1).all()  # each vertex on one grid edge
    mesh = trimesh.Trimesh(placed["vertices"], placed["faces"])
    assert mesh.is_watertight and mesh.volume > 0


def test_a_wall_thinner_than_a_cell_keeps_its_thickness():
    """A slab 0.4 cells thick around a node: the straight line between nodes makes it 0.32 cells."""
    h = BOX_SIZE / 64
    x0, thickness = 10 * h - BOX_SIZE / 2 + 0.05 * h, 0.4 * h
    fn = lambda p: (thickness / 2 - np.abs(p[:, 0] - x0)) * 100.0

    def measured(steps: int) -> float:
        out = extract_mesh(fn, resolution=64, method="dense", edge_steps=steps, denoise=False)
        v = out["vertices"][np.all(np.abs(out["vertices"][:, 1:]) < 0.4, axis=1)]  # away from the closing caps
        return float(np.ptp(v[:, 0]))

    assert abs(measured(0) - thickness) > 0.06 * h
    assert measured(EDGE_STEPS) == pytest.approx(thickness, abs=0.01 * h)


def test_threshold_moves_the_surface():
    low = extract_mesh(sphere_logits(sharpness=10.0), resolution=64, threshold=0.2)
    high = extract_mesh(sphere_logits(sharpness=10.0), resolution=64, threshold=0.8)
    assert trimesh.Trimesh(low["vertices"], low["faces"]).volume > trimesh.Trimesh(high["vertices"], high["faces"]).volume


def test_threshold_is_converted_to_a_logit():
    assert threshold_to_logit(0.5) == pytest.approx(0.0)
    assert threshold_to_logit(0.8) == pytest.approx(math.log(4.0))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(resolution=16), "below the coarse MISE grid 32"),
        (dict(resolution=96), "not reachable by doubling"),
        (dict(resolution=64, resolution0=24), "not reachable by doubling"),
        (dict(threshold=0.0), "strictly between 0 and 1"),
        (dict(threshold=1.0), "strictly between 0 and 1"),
        (dict(threshold=float("nan")), "strictly between 0 and 1"),
        (dict(method="marching"), "method must be one of"),
        (dict(resolution=1, method="dense"), "integer >= 2"),
        (dict(edge_steps=-1), "edge_steps must be a whole number from 0"),
        (dict(edge_steps=1.5), "edge_steps must be a whole number from 0"),
        (dict(smoothing=-0.01), "smoothing must be a distance >= 0"),
        (dict(smoothing=float("inf")), "smoothing must be a distance >= 0"),
        (dict(denoise="no"), "denoise must be True or False"),
    ],
)
def test_bad_arguments_say_what_to_change(kwargs, message):
    with pytest.raises(ValueError, match=message):
        extract_mesh(sphere_logits(), **kwargs)


def test_nan_network_output_is_a_clear_error():
    model = OccupancyNetwork(dim_hidden=16, num_layers=1)
    with torch.no_grad():
        model.decoder.fc_out.bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        model.extract_mesh(resolution=32)


def test_dense_accepts_any_resolution():
    out = extract_mesh(sphere_logits(), resolution=40, method="dense")
    assert trimesh.Trimesh(out["vertices"], out["faces"]).is_watertight


def test_cache_makes_slider_changes_cheap_and_results_identical():
    from occnet_backend.extraction import GridCache

    fn = sphere_logits(sharpness=8.0)
    cache = GridCache()
    first = extract_mesh(fn, resolution=128, threshold=0.5, cache=cache)
    again = extract_mesh(fn, resolution=128, threshold=0.5, cache=cache)
    assert again["stats"]["evaluations"] == 0
    assert np.array_equal(first["faces"], again["faces"])

    moved = extract_mesh(fn, resolution=128, threshold=0.55, cache=cache)
    fresh = extract_mesh(fn, resolution=128, threshold=0.55)
    assert np.array_equal(moved["faces"], fresh["faces"]) and np.allclose(moved["vertices"], fresh["vertices"])
    # the grid's reuse, without the vertices' own samples on their edges (new edges, new samples)
    grid = dict(cache=cache, edge_steps=0)
    assert extract_mesh(fn, resolution=128, threshold=0.6, **grid)["stats"]["evaluations"] < \
        extract_mesh(fn, resolution=128, threshold=0.6, edge_steps=0)["stats"]["evaluations"] / 2

    finer = extract_mesh(fn, resolution=256, threshold=0.55, cache=cache)
    fresh_finer = extract_mesh(fn, resolution=256, threshold=0.55)
    assert np.array_equal(finer["faces"], fresh_finer["faces"])
    assert finer["stats"]["evaluations"] < fresh_finer["stats"]["evaluations"]

    dense = extract_mesh(fn, resolution=64, method="dense", cache=cache)
    lower = extract_mesh(fn, resolution=64, method="dense", threshold=0.3, cache=cache)
    assert 0 < lower["stats"]["evaluations"] <= EDGE_STEPS * len(lower["vertices"])  # no grid node again
    assert 65**3 < dense["stats"]["evaluations"] <= 65**3 + EDGE_STEPS * len(dense["vertices"])


def test_a_grid_cache_travels_through_a_file_and_a_damaged_one_is_refused(tmp_path):
    """What `fit` hands `serve` (`warm_grids`): the cache's state, saved and read with weights_only, serves
    the same extraction without one evaluation; a state that names nodes outside its grid, out of order,
    or holds values that are not finite is refused before it is used."""
    from occnet_backend.extraction import GridCache

    fn = sphere_logits(sharpness=8.0)
    cache = GridCache()
    first = extract_mesh(fn, resolution=64, cache=cache)
    torch.save(cache.state(), tmp_path / "grid.pt")
    state = torch.load(tmp_path / "grid.pt", weights_only=True)
    again = extract_mesh(fn, resolution=64, cache=GridCache.from_state(state))
    assert again["stats"]["evaluations"] == 0
    np.testing.assert_array_equal(again["faces"], first["faces"])
    np.testing.assert_array_equal(again["vertices"], first["vertices"])

    bits, values = state["dense"][64]
    (keys, samples), = state["sparse"].values()
    fine = next(iter(state["sparse"]))
    damaged = [
        ({"dense": {64: (bits[:-1], values)}, "sparse": {}}, "its 274625 nodes in 34329 bytes"),
        ({"dense": {64: (bits, values[:-1])}, "sparse": {}}, "another number of nodes"),
        ({"dense": {64: (bits, values * float("nan"))}, "sparse": {}}, "finite float32"),
        ({"dense": {64: (bits, values.double())}, "sparse": {}}, "finite float32"),
        ({"dense": {}, "sparse": {fine: (keys + (fine + 1) ** 3, samples)}}, "outside its grid"),
        ({"dense": {}, "sparse": {fine: (keys.flip(0), samples)}}, "out of order"),
        ({"dense": {100_000: (bits, values)}, "sparse": {}}, "not a resolution"),
        ({"dense": {}}, "'dense' and 'sparse'"),
    ]
    for bad, message in damaged:
        with pytest.raises(ValueError, match=message):
            GridCache.from_state(bad)


def test_surface_cut_by_the_box_stays_watertight_after_vertex_merging():
    """Blobs touching the grid border must close without vertices collapsing onto each other."""
    rng = np.random.default_rng(0)
    centers = rng.uniform(-0.6, 0.6, (40, 3))
    fn = lambda p: (0.05 - np.min(np.linalg.norm(p[:, None] - centers[None], axis=2), axis=1)) * 300  # noqa: E731
    out = extract_mesh(fn, resolution=64, threshold=0.5)
    merged = trimesh.Trimesh(out["vertices"], out["faces"])  # process=True merges coincident vertices
    assert merged.is_watertight and merged.volume > 0


def test_nodes_a_hair_from_the_level_do_not_weld_vertices_together():
    """A trained network at 256³ put a node 1e-5 logits from the level: two vertices on its edges
    rounded to the same float32 point and welding them (trimesh.load, Blender's Merge by Distance)
    left non-manifold edges. Every mesh here must stay watertight after welding."""
    from occnet_backend.extraction import marching_cubes
    from occnet_backend.metrics import mesh_quality

    axis = np.linspace(-1, 1, 33)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    field = (0.6 - np.sqrt(x**2 + y**2 + z**2) + 0.1 * np.sin(7 * x) * np.sin(5 * y) * np.sin(6 * z)) * 50
    rng = np.random.default_rng(0)
    for _ in range(5):
        values = field.copy()
        pick = (np.abs(values) < 2.0) & (rng.random(values.shape) < 0.3)
        values[pick] = rng.choice([1e-6, -1e-6, 3e-6, 1e-5], pick.sum())
        vertices, faces = marching_cubes(values.astype(np.float32), 0.0, box_size=1.1)
        quality = mesh_quality(vertices, faces)  # welds vertices with equal coordinates
        assert quality["watertight"] and quality["degenerate_faces"] == 0, quality


@pytest.mark.parametrize("method", ["mise", "dense"])
def test_pockets_below_what_the_grid_resolves_are_filled_and_larger_cavities_kept(method):
    """A ball with two empty pockets inside: one of about four cells' volume (as a thin wall's field dipping
    across the level leaves them) is filled, one of about thirty cells stays a cavity, facing inward."""
    from occnet_backend.extraction import CAVITY_CELLS

    cell = BOX_SIZE / 32
    node = -BOX_SIZE / 2 + 16 * cell
    ball = sphere_logits(radius=0.4, center=(0.0, 0.0, 0.0))
    pocket = sphere_logits(radius=1.1 * cell, center=(node, node, node))
    cavity = sphere_logits(radius=2.0 * cell, center=(node + 0.15, node, node))
    field = lambda p: np.minimum(ball(p), -np.maximum(pocket(p), cavity(p)))  # noqa: E731
    out = extract_mesh(field, resolution=32, method=method, distance_scale=1 / 40)
    parts = trimesh.Trimesh(out["vertices"], out["faces"]).split(only_watertight=False)
    volumes = sorted(p.volume for p in parts)
    assert out["stats"]["parts_dropped"] == 1 and len(parts) == 2 and all(p.is_watertight for p in parts)
    assert CAVITY_CELLS * cell**3 < -volumes[0] < 60 * cell**3 and volumes[1] > 0  # the larger cavity, inward
    assert np.linalg.norm(out["vertices"] - node, axis=1).min() > cell  # the pocket is filled


@pytest.mark.parametrize("method", ["dense", "mise"])
def test_specks_smaller_than_a_cell_are_dropped_and_small_real_parts_kept(method):
    """A bump of the field that reaches across the level at one grid node only (a thin part's field
    between nodes) is a speck below what the grid resolves; a ball two cells wide is a real part."""
    cell = BOX_SIZE / 32
    node = -BOX_SIZE / 2 + 24 * cell  # a grid node's coordinate on every axis
    ball = sphere_logits(radius=0.25, center=(-0.15, -0.15, -0.15))
    small = sphere_logits(radius=cell, center=(node, -node, node))
    speck = sphere_logits(radius=0.3 * cell, center=(node, node, node))
    field = lambda p: np.maximum(np.maximum(ball(p), small(p)), speck(p))  # noqa: E731
    out = extract_mesh(field, resolution=32, method=method, distance_scale=1 / 40)
    mesh = trimesh.Trimesh(out["vertices"], out["faces"])
    parts = mesh.split(only_watertight=False)
    assert out["stats"]["parts_dropped"] == 1 and len(parts) == 2 and mesh.is_watertight
    assert min(p.volume for p in parts) > cell**3  # the two-cell ball, not the speck
    assert np.linalg.norm(mesh.vertices - [node, node, node], axis=1).min() > cell  # nothing left where the speck was
    alone = extract_mesh(speck, resolution=32, method="dense")  # the largest part always stays
    assert len(alone["faces"]) and alone["stats"]["parts_dropped"] == 0
