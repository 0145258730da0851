"""Metrics on shapes with known answers: concentric spheres (analytic IoU and Chamfer), a mesh
against itself, an empty prediction, and mesh-quality statistics of simple broken meshes."""

import math
import time

import numpy as np
import pytest
import trimesh

from occnet_backend import metrics

R_INNER, R_OUTER = 0.3, 0.4


def sphere_samples(radius: float, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact samples of a sphere's surface (uniform directions) and their outward normals."""
    d = np.random.default_rng(seed).normal(size=(count, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return radius * d, d


@pytest.fixture(scope="module")
def uniform():
    """The protocol's uniform points in [-0.55, 0.55]³."""
    return np.random.default_rng(7).uniform(-0.55, 0.55, size=(100_000, 3))


@pytest.fixture(scope="module")
def inner_sphere():
    s = trimesh.creation.icosphere(subdivisions=5, radius=R_INNER)
    return np.asarray(s.vertices), np.asarray(s.faces)


# --- IoU of arrays -------------------------------------------------------------------------------


def test_iou_of_arrays():
    a = np.array([1, 1, 0, 0], dtype=bool)
    b = np.array([1, 0, 1, 0], dtype=bool)
    assert metrics.iou(a, b) == pytest.approx(1 / 3)
    assert metrics.iou(a, a) == 1.0
    assert metrics.iou(a, ~a) == 0.0
    # Probabilities count as occupied at >= 0.5, like the reference compute_iou.
    assert metrics.iou(np.array([0.9, 0.5, 0.49, 0.0]), b.astype(np.float32)) == pytest.approx(1 / 3)
    # Nothing occupied in either: they agree everywhere.
    assert metrics.iou(np.zeros(5, bool), np.zeros(5, bool)) == 1.0
    # Any shape, pooled.
    assert metrics.iou(np.ones((2, 3)), np.ones((2, 3))) == 1.0


def test_iou_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.iou(np.zeros(4), np.zeros(5))
    with pytest.raises(ValueError, match="boolean or numeric"):
        metrics.iou(np.array(["a"]), np.array(["b"]))


# --- concentric spheres --------------------------------------------------------------------------


def test_concentric_spheres_match_analytic_values(inner_sphere, uniform):
    """Predicted: sphere r1 = 0.3; truth: sphere r2 = 0.4. IoU = (r1/r2)³, every nearest surface
    point is r2 - r1 = 0.1 away in both directions, and the normals agree (radial)."""
    v, f = inner_sphere
    gt_points, gt_normals = sphere_samples(R_OUTER, 20_000, seed=1)
    occupancy = np.linalg.norm(uniform, axis=1) < R_OUTER
    r = metrics.evaluate_mesh(v, f, gt_points, gt_normals, uniform, occupancy, num_samples=20_000)

    assert r["iou"] == pytest.approx((R_INNER / R_OUTER) ** 3, abs=0.015)
    # The same points labelled analytically: the mesh labels agree up to the polygonal approximation.
    exact = metrics.iou(np.linalg.norm(uniform, axis=1) < R_INNER, occupancy)
    assert r["iou"] == pytest.approx(exact, abs=0.003)

    gap = R_OUTER - R_INNER
    for key in ("accuracy", "completeness", "chamfer_l1"):
        assert r[key] == pytest.approx(gap, rel=0.02), key
    assert r["chamfer_l2"] == pytest.approx(gap**2, rel=0.04)
    assert r["normal_consistency"] > 0.99
    assert r["fscore"] == r["fscore_0.01"] == 0.0
    assert r["fscore_0.005"] == r["fscore_0.02"] == 0.0
    assert r["num_samples"] == 20_000
    assert r["watertight"] and r["components"] == 1 and r["euler_characteristic"] == 2
    assert r["volume"] == pytest.approx(4 / 3 * math.pi * R_INNER**3, rel=0.01)


def test_fscore_thresholds_on_either_side_of_the_gap(inner_sphere):
    pred, _ = metrics.sample_surface(*inner_sphere, count=5_000, seed=0)
    gt, _ = sphere_samples(R_OUTER, 5_000, seed=1)
    m = metrics.point_cloud_metrics(pred, gt, fscore_thresholds=(0.09, 0.11))
    assert m["fscore_0.09"] == 0.0
    assert m["fscore_0.11"] == 1.0
    assert "fscore" not in m  # the headline 1% is only reported when 1% is computed
    assert math.isnan(m["normal_consistency"])  # no normals given
    assert metrics.fscore(pred, gt, threshold=0.11) == 1.0


def test_chamfer_is_symmetric_and_orientation_blind(inner_sphere):
    a, na = metrics.sample_surface(*inner_sphere, count=5_000, seed=0)
    b, nb = sphere_samples(R_OUTER, 5_000, seed=1)
    assert metrics.chamfer_l1(a, b) == pytest.approx(metrics.chamfer_l1(b, a))
    assert metrics.chamfer_l2(a, b) == pytest.approx(metrics.chamfer_l2(b, a))
    assert metrics.chamfer_l1(a, a) == 0.0
    # |dot|: normals pointing the other way (an inside-out prediction) are still consistent.
    assert metrics.normal_consistency(a, -na, b, nb) == pytest.approx(metrics.normal_consistency(a, na, b, nb))
    assert metrics.normal_consistency(a, -na, b, nb) > 0.99
    # Perpendicular normals are fully inconsistent; the two directions are averaged.
    plane = np.random.default_rng(0).uniform(size=(1_000, 3)) * [1, 1, 0]
    up, side = np.tile([0.0, 0, 1], (1_000, 1)), np.tile([1.0, 0, 0], (1_000, 1))
    assert metrics.normal_consistency(plane, up, plane, side) == 0.0
    assert metrics.normal_consistency(plane, up, plane, (up + side) / np.sqrt(2)) == pytest.approx(np.sqrt(0.5))


# --- a mesh against itself -----------------------------------------------------------------------


def test_mesh_against_itself_is_perfect(inner_sphere, uniform):
    v, f = inner_sphere
    gt_points, gt_normals = metrics.sample_surface(v, f, count=100_000, seed=123)
    occupancy = metrics.mesh_occupancy(v, f, uniform)
    r = metrics.evaluate_mesh(v, f, gt_points, gt_normals, uniform, occupancy)
    assert r["iou"] == 1.0
    assert r["chamfer_l1"] < 0.002  # two independent 100k samples of one surface
    assert r["chamfer_l2"] < 1e-5
    assert r["normal_consistency"] > 0.999
    assert r["fscore"] == pytest.approx(1.0, abs=1e-4)
    assert r["fscore_0.02"] == 1.0
    assert r["num_samples"] == 100_000


def test_evaluate_mesh_is_deterministic_and_seeded(inner_sphere, uniform):
    v, f = inner_sphere
    gt_points, gt_normals = sphere_samples(R_INNER, 10_000, seed=3)
    occupancy = np.linalg.norm(uniform, axis=1) < R_INNER
    a = metrics.evaluate_mesh(v, f, gt_points, gt_normals, uniform, occupancy, num_samples=10_000, seed=5)
    b = metrics.evaluate_mesh(v, f, gt_points, gt_normals, uniform, occupancy, num_samples=10_000, seed=5)
    c = metrics.evaluate_mesh(v, f, gt_points, gt_normals, uniform, occupancy, num_samples=10_000, seed=6)
    assert a == b
    assert a["chamfer_l1"] != c["chamfer_l1"]


def test_labels_in_the_dataset_layout_and_float16(inner_sphere, uniform):
    """The dataset cache stores float16 points and [N, 1] labels; both are accepted as they are."""
    v, f = inner_sphere
    points16 = uniform.astype(np.float16)
    occupancy = (np.linalg.norm(points16.astype(np.float64), axis=1) < R_INNER)[:, None]
    gt_points, gt_normals = sphere_samples(R_INNER, 10_000, seed=3)
    r = metrics.evaluate_mesh(v, f, gt_points.astype(np.float32), gt_normals.astype(np.float16), points16,
                              occupancy, num_samples=10_000)
    assert r["iou"] > 0.98
    assert r["chamfer_l1"] < 0.01  # two independent 10k samples of one surface


def test_without_labels_or_normals(inner_sphere):
    v, f = inner_sphere
    gt_points, _ = sphere_samples(R_INNER, 5_000, seed=3)
    r = metrics.evaluate_mesh(v, f, gt_points, num_samples=5_000)
    assert math.isnan(r["iou"]) and math.isnan(r["normal_consistency"])
    assert r["chamfer_l1"] < 0.01


# --- empty prediction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vertices, faces",
    [
        (np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)),
        (np.zeros(0), np.zeros(0)),  # what an empty marching-cubes result may look like once flattened
        (np.array([[0.0, 0, 0], [0.1, 0, 0], [0.2, 0, 0]]), np.array([[0, 1, 2]])),  # no area
    ],
)
def test_empty_prediction_scores_worst_without_crashing(vertices, faces, uniform):
    gt_points, gt_normals = sphere_samples(R_OUTER, 2_000, seed=1)
    occupancy = np.linalg.norm(uniform, axis=1) < R_OUTER
    r = metrics.evaluate_mesh(vertices, faces, gt_points, gt_normals, uniform, occupancy)
    assert r["iou"] == 0.0
    for key in ("chamfer_l1", "chamfer_l2", "accuracy", "completeness"):
        assert r[key] == math.inf, key
    assert r["fscore"] == r["fscore_0.005"] == r["fscore_0.02"] == 0.0
    assert r["normal_consistency"] == 0.0
    assert r["num_samples"] == 0
    assert not r["watertight"]


# --- mesh quality ---------------------------------------------------------------------------------


def test_quality_of_a_closed_sphere_matches_trimesh(inner_sphere):
    v, f = inner_sphere
    q = metrics.mesh_quality(v, f)
    mesh = trimesh.Trimesh(v, f, process=False)
    assert q["vertices"] == len(v) and q["faces"] == len(f)
    assert q["watertight"] is True and mesh.is_watertight
    assert q["euler_characteristic"] == mesh.euler_number == 2
    assert q["boundary_edges"] == q["non_manifold_edges"] == q["degenerate_faces"] == 0
    assert q["components"] == 1
    assert q["volume"] == pytest.approx(mesh.volume)
    # Inside out: same topology, negative volume.
    assert metrics.mesh_quality(v, f[:, ::-1])["volume"] == pytest.approx(-mesh.volume)


def test_box_with_a_hole_is_not_watertight():
    box = trimesh.creation.box(extents=(0.5, 0.4, 0.3))
    q = metrics.mesh_quality(box.vertices, box.faces[1:])
    assert q["watertight"] is False
    assert q["boundary_edges"] == 3
    assert q["components"] == 1
    assert q["euler_characteristic"] == 1  # a disc: one hole in a sphere
    assert metrics.mesh_quality(box.vertices, box.faces)["watertight"] is True


def test_two_disjoint_boxes_are_two_components():
    a = trimesh.creation.box(extents=(0.2, 0.2, 0.2))
    b = a.copy()
    b.apply_translation([0.4, 0.0, 0.0])
    both = trimesh.util.concatenate([a, b])
    q = metrics.mesh_quality(both.vertices, both.faces)
    assert q["components"] == 2
    assert q["watertight"] is True
    assert q["euler_characteristic"] == 4
    assert q["volume"] == pytest.approx(2 * 0.2**3)


def test_torus_has_euler_characteristic_zero():
    torus = trimesh.creation.torus(major_radius=0.3, minor_radius=0.1)
    q = metrics.mesh_quality(torus.vertices, torus.faces)
    assert q["watertight"] and q["euler_characteristic"] == 0 and q["components"] == 1


def test_triangle_soup_is_welded_before_judging_topology():
    box = trimesh.creation.box(extents=(0.5, 0.4, 0.3))
    soup_v = box.vertices[box.faces].reshape(-1, 3)
    soup_f = np.arange(len(soup_v)).reshape(-1, 3)
    welded = metrics.mesh_quality(soup_v, soup_f)
    assert welded["watertight"] and welded["components"] == 1 and welded["euler_characteristic"] == 2
    assert welded["vertices"] == 36  # counts are reported as given
    raw = metrics.mesh_quality(soup_v, soup_f, merge_vertices=False)
    assert not raw["watertight"] and raw["components"] == 12


def test_non_manifold_and_degenerate_faces_are_counted():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [2, 0, 0]], dtype=np.float64)
    fan = np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4]])  # three faces on edge 0-1
    q = metrics.mesh_quality(v, fan)
    assert q["non_manifold_edges"] == 1 and not q["watertight"] and q["degenerate_faces"] == 0
    degenerate = np.vstack([fan, [[0, 0, 2], [0, 1, 5]]])  # a repeated vertex; three collinear points
    assert metrics.mesh_quality(v, degenerate)["degenerate_faces"] == 2


# --- arguments and speed --------------------------------------------------------------------------


def test_bad_arguments_raise_clear_errors(inner_sphere, uniform):
    v, f = inner_sphere
    gt_points, gt_normals = sphere_samples(R_INNER, 1_000, seed=3)
    with pytest.raises(ValueError, match=r"vertices must be an array of shape \[N, 3\]"):
        metrics.mesh_quality(v[:, :2], f)
    with pytest.raises(ValueError, match="out of range"):
        metrics.mesh_quality(v, f + len(v))
    with pytest.raises(ValueError, match="faces must be"):
        metrics.mesh_quality(v, np.zeros((3, 4), int))
    with pytest.raises(ValueError, match="gt_surface_points is empty"):
        metrics.evaluate_mesh(v, f, np.zeros((0, 3)))
    with pytest.raises(ValueError, match="both uniform_points and uniform_occupancy"):
        metrics.evaluate_mesh(v, f, gt_points, uniform_points=uniform)
    with pytest.raises(ValueError, match="one label per point"):
        metrics.mesh_iou(v, f, uniform, np.zeros(10, bool))
    with pytest.raises(ValueError, match="gt_normals shape"):
        metrics.point_cloud_metrics(gt_points, gt_points, gt_normals, gt_normals[:10])
    with pytest.raises(ValueError, match="both pred_normals and gt_normals"):
        metrics.point_cloud_metrics(gt_points, gt_points, gt_normals)
    with pytest.raises(ValueError, match="NaN"):
        metrics.chamfer_l1(np.full((3, 3), np.nan), gt_points)
    with pytest.raises(ValueError, match="positive distances"):
        metrics.point_cloud_metrics(gt_points, gt_points, fscore_thresholds=(0.0,))
    with pytest.raises(ValueError, match="count"):
        metrics.sample_surface(v, f, count=-1)


def test_sample_surface_is_uniform_over_area():
    """A 1 x 1 and a 1 x 3 rectangle side by side: a quarter of the samples land on the first."""
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 0.0], [4, 0, 0], [4, 1, 0], [1, 1, 0]])
    f = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    p, n = metrics.sample_surface(v, f, count=40_000, seed=0)
    assert np.mean(p[:, 0] < 1.0) == pytest.approx(0.25, abs=0.01)
    assert np.allclose(np.abs(n[:, 2]), 1.0)
    assert (p[:, 1] >= 0).all() and (p[:, 1] <= 1).all() and np.allclose(p[:, 2], 0)


def test_chamfer_of_100k_points_is_fast(inner_sphere):
    """100k vs 100k with cKDTree takes ~0.15 s on 2 cores; the bound only catches a wrong algorithm
    (a chunked torch.cdist takes 30-60 s) on a busy machine."""
    a, _ = metrics.sample_surface(*inner_sphere, count=100_000, seed=0)
    b, _ = metrics.sample_surface(*inner_sphere, count=100_000, seed=1)
    start = time.perf_counter()
    metrics.chamfer_l1(a, b * 1.01)
    assert time.perf_counter() - start < 5.0
