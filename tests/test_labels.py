"""Winding-number labels on broken meshes: holes, overlapping parts, flipped faces, a real mesh."""

from __future__ import annotations

import igl
import numpy as np
import pytest
import trimesh

from occnet_backend.data.labels import inside, winding_numbers
from occnet_backend.data.meshes import normalization, to_unit_cube


def punch_holes(vertices, faces, count, radius, seed=0):
    """Remove every face whose centroid is within `radius` of `count` random face centroids."""
    rng = np.random.default_rng(seed)
    centroids = vertices[faces].mean(axis=1)
    centers = centroids[rng.choice(len(faces), count, replace=False)]
    dist = np.linalg.norm(centroids[:, None, :] - centers[None, :, :], axis=2).min(axis=1)
    return faces[dist > radius]


def sphere(radius=0.4, subdivisions=4):
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return np.asarray(m.vertices), np.asarray(m.faces, dtype=np.int64)


def far_from(points, radius, margin):
    """Points at least `margin` away from the sphere surface of `radius`."""
    return np.abs(np.linalg.norm(points, axis=1) - radius) > margin


@pytest.fixture(scope="module")
def query():
    return np.random.default_rng(1).uniform(-0.55, 0.55, (100_000, 3))


def test_closed_sphere_matches_analytic(query):
    v, f = sphere()
    labels = inside(v, f, query)
    truth = np.linalg.norm(query, axis=1) < 0.4
    keep = far_from(query, 0.4, 0.005)  # the tessellation is inside the true sphere by < 0.002
    assert labels.dtype == bool and labels.shape == (len(query),)
    assert (labels[keep] == truth[keep]).all()


def test_holes_do_not_break_labels(query):
    v, f = sphere()
    open_f = punch_holes(v, f, count=12, radius=0.04)
    assert len(open_f) < len(f) * 0.97  # really open
    assert not trimesh.Trimesh(v, open_f).is_watertight
    truth = np.linalg.norm(query, axis=1) < 0.4
    keep = far_from(query, 0.4, 0.05)
    labels = inside(v, open_f, query)
    assert (labels[keep] == truth[keep]).mean() > 0.9999


def test_overlapping_closed_parts_are_their_union(query):
    a = trimesh.creation.box(extents=[0.6, 0.4, 0.4])
    b = trimesh.creation.box(extents=[0.4, 0.6, 0.4])
    b.apply_translation([0.15, 0.1, 0.05])
    soup = trimesh.util.concatenate([a, b])  # no boolean: two closed boxes overlapping
    in_a = (np.abs(query) < [0.3, 0.2, 0.2]).all(axis=1)
    in_b = (np.abs(query - [0.15, 0.1, 0.05]) < [0.2, 0.3, 0.2]).all(axis=1)
    truth = in_a | in_b
    boundary = np.minimum(
        np.abs(np.abs(query) - [0.3, 0.2, 0.2]).min(axis=1),
        np.abs(np.abs(query - [0.15, 0.1, 0.05]) - [0.2, 0.3, 0.2]).min(axis=1),
    )
    keep = boundary > 1e-3
    labels = inside(soup.vertices, soup.faces, query)
    assert (labels[keep] == truth[keep]).all()
    # the overlap has winding number 2, still inside (far from the decision: libigl's coarse answer)
    w = winding_numbers(soup.vertices, soup.faces, np.array([[0.1, 0.05, 0.0]]))
    assert w[0] == pytest.approx(2.0, abs=0.05)


def test_all_faces_flipped_gives_the_same_labels(query):
    v, f = sphere()
    assert (inside(v, f[:, ::-1], query) == inside(v, f, query)).all()


def test_some_faces_flipped_keeps_labels_away_from_them(query):
    v, f = sphere()
    rng = np.random.default_rng(0)
    flip = rng.random(len(f)) < 0.05
    mixed = f.copy()
    mixed[flip] = mixed[flip][:, ::-1]
    truth = np.linalg.norm(query, axis=1) < 0.4
    keep = far_from(query, 0.4, 0.05)
    assert (inside(v, mixed, query)[keep] == truth[keep]).mean() > 0.999


def test_chunks_give_identical_results(query):
    v, f = sphere(subdivisions=3)
    whole = winding_numbers(v, f, query[:5000])
    chunked = winding_numbers(v, f, query[:5000], chunk_size=777)
    np.testing.assert_array_equal(whole, chunked)
    assert winding_numbers(v, f, np.zeros((0, 3))).shape == (0,)
    assert (winding_numbers(v, f[:0], query[:3]) == 0).all()  # no faces: nothing winds (libigl would crash)


def test_split_mesh_keeps_the_surface_and_names_each_face_source():
    """Slivers (a long thin bar) are split for libigl's trees; the pieces cover exactly the faces
    they came from, so the distances are the same, and the exposed distance can map them back."""
    from occnet_backend.data.labels import MAX_EDGE, split_mesh

    bar = trimesh.creation.box((1.0, 0.01, 0.01))
    v, f, source = split_mesh(bar.vertices, bar.faces)
    assert len(f) > 10 * len(bar.faces) and source.shape == (len(f),) and set(source) == set(range(len(bar.faces)))
    edges = np.linalg.norm(v[f] - v[np.roll(f, 1, axis=1)], axis=2)
    assert edges.max() <= MAX_EDGE * 1.0 + 1e-12
    area = trimesh.triangles.area(v[f])
    np.testing.assert_allclose(np.bincount(source, area), bar.area_faces, rtol=1e-9)
    normals = trimesh.triangles.normals(v[f])[0]
    np.testing.assert_allclose(normals, bar.face_normals[source], atol=1e-9)  # each piece lies on its face
    points = np.random.default_rng(0).uniform(-0.6, 0.6, (500, 3))
    np.testing.assert_allclose(igl.point_mesh_squared_distance(points, v, f)[0],
                               igl.point_mesh_squared_distance(points, bar.vertices, bar.faces)[0], atol=1e-15)


def test_a_face_exposed_only_at_its_centre_bounds_the_volume():
    """A plate's top triangle with posts through the three spots near its corners: only its centre
    is exposed, and a point just under it is that close to the surface."""
    from occnet_backend.data.labels import PROBE_WEIGHTS, boundary_faces, signed_distance

    assert np.allclose(PROBE_WEIGHTS.sum(axis=1), 1.0)  # spots on the face itself
    plate = trimesh.creation.box((0.6, 0.6, 0.1))
    top = np.flatnonzero(np.isclose(plate.triangles_center[:, 2], 0.05))[0]
    corners = plate.vertices[plate.faces[top]]
    parts = [plate]
    for spot in PROBE_WEIGHTS[1:] @ corners:
        post = trimesh.creation.box((0.06, 0.06, 0.1))
        post.apply_translation((spot[0], spot[1], 0.05))
        parts.append(post)
    kit = trimesh.util.concatenate(parts)
    assert boundary_faces(kit.vertices, kit.faces)[top]
    below_centre = corners.mean(axis=0) - (0.0, 0.0, 0.01)
    assert signed_distance(kit.vertices, kit.faces, below_centre[None])[0] == pytest.approx(-0.01, abs=1e-9)


def test_a_points_distance_does_not_depend_on_what_was_asked_before(plate_with_posts):
    """Posts standing on a plate cover parts of its top faces. Measured to the faces as they are (what
    open parts get), a far query refines those faces coarsely and drops pieces whose centre is covered;
    a near query asked afterwards must still find the exposed parts of those pieces: the same points
    get the same distances, asked first or after other points."""
    from occnet_backend.data.labels import boundary_faces, signed_distance

    v, f = plate_with_posts.vertices, plate_with_posts.faces
    faces_as_they_are = boundary_faces(v, f)
    rng = np.random.default_rng(0)
    near, far = (rng.uniform(-0.35, 0.35, (4000, 3)) * (1, 1, 0.3) for _ in range(2))
    first = signed_distance(v, f, near, faces_as_they_are)
    signed_distance(v, f, far, faces_as_they_are)
    np.testing.assert_array_equal(signed_distance(v, f, near, faces_as_they_are), first)
    np.testing.assert_array_equal(np.sign(signed_distance(v, f, near)), np.sign(first))  # the union's


def test_overlapping_closed_parts_are_measured_to_their_union():
    """A box standing on a wider one covers all but a strip of its top face, so every probe spot of
    that face is covered and the side test drops it: a point 0.01 above the strip is 0.01 from the
    surface, which the union of the parts says and the faces that pass the side test do not (0.025)."""
    from occnet_backend.data.labels import boundary_faces, bounding_surface, exact_surface, signed_distance

    base = trimesh.creation.box((1.0, 1.0, 0.2))  # top at z = 0.1
    block = trimesh.creation.box((1.05, 1.2, 0.3))
    block.apply_translation((-0.075, 0.0, 0.15))  # covers the base's top up to x = 0.45
    kit = trimesh.util.concatenate([base, block])
    top = np.flatnonzero(np.isclose(kit.triangles_center[:, 2], 0.1))[:2]
    assert not boundary_faces(kit.vertices, kit.faces)[top].any()
    above_strip = np.array([[0.475, 0.0, 0.11], [0.475, 0.3, 0.105]])
    assert signed_distance(kit.vertices, kit.faces, above_strip) == pytest.approx([0.01, 0.005], abs=1e-9)
    surface_v, surface_f, bounds = bounding_surface(kit.vertices, kit.faces)
    assert bounds.all() and trimesh.Trimesh(surface_v, surface_f).is_watertight
    assert exact_surface(kit.vertices, kit.faces)
    volume = 0.2 + 1.05 * 1.2 * 0.3 - 0.95 * 1.0 * 0.1  # the two less their overlap
    assert trimesh.Trimesh(surface_v, surface_f).volume == pytest.approx(volume, rel=1e-9)


BROKEN_PATCH = (np.array([[0.2838, 0.1081, 0.079], [0.2833, 0.1081, 0.0789], [0.2835, 0.1081, 0.0789],
                          [0.2842, 0.108, 0.0791], [0.283, 0.108, 0.079], [0.2846, 0.108, 0.0794],
                          [0.2825, 0.108, 0.0793], [0.2822, 0.1079, 0.0796], [0.2828, 0.108, 0.0791]]),
                np.array([[5, 7, 6], [3, 8, 6], [3, 4, 8], [0, 1, 4], [0, 1, 2], [5, 6, 3], [3, 4, 0]]))
"""Seven faces of a package camera model (an edge used twice in one direction): manifold3d 3.5
crashes the process on them."""


def test_a_cavity_and_a_broken_patch_keep_their_own_faces():
    """A box with a cavity (a part inside out) and a second box through it, beside a patch manifold3d
    cannot take: the two boxes' union is measured to, the cavity's faces as they are, the patch is left
    alone (and does not crash the process). A point in the cavity is outside, 0.1 from its walls."""
    from occnet_backend.data.labels import bounding_surface, exact_surface, signed_distance

    shell = trimesh.creation.box((0.8, 0.8, 0.8))
    cavity = trimesh.creation.box((0.2, 0.2, 0.2))
    cavity.invert()
    post = trimesh.creation.box((0.1, 0.1, 1.0))
    post.apply_translation((0.3, 0.3, 0.0))
    patch = trimesh.Trimesh(*BROKEN_PATCH, process=False)
    patch.apply_translation((0.3, 0.0, 0.0))  # outside the shell
    kit = trimesh.util.concatenate([shell, post, cavity, patch])
    surface_v, surface_f, bounds = bounding_surface(kit.vertices, kit.faces)
    kept = len(cavity.faces) + len(patch.faces)  # after the union, in their order
    np.testing.assert_array_equal(surface_v[surface_f[-kept:]], kit.vertices[kit.faces[-kept:]])
    union = trimesh.Trimesh(surface_v, surface_f[:-kept])
    assert union.is_watertight and union.volume == pytest.approx(0.8**3 + 0.1 * 0.1 * 0.2, rel=1e-9)
    assert bounds[-kept:-len(patch.faces)].all()  # the cavity's walls
    assert not exact_surface(kit.vertices, kit.faces)  # the patch bounds nothing: its faces are split as needed
    points = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.15], [0.3, 0.3, 0.45]])
    assert signed_distance(kit.vertices, kit.faces, points) == pytest.approx([0.1, -0.05, -0.05], abs=1e-9)


def test_a_sliver_the_side_test_cannot_decide_starts_no_refinement(monkeypatch):
    """A closed box whose one edge carries a T-junction, closed by a zero-area sliver (as CAD exports
    leave them): the sliver fails the side test, but it is no sign of overlapping parts, so the
    distances are taken without asking any covered-face question, and they are the box's own."""
    from occnet_backend.data import labels

    box = trimesh.creation.box((0.8, 0.6, 0.4))
    v, f = box.vertices.copy(), box.faces.copy()
    a, b, c = f[0]
    m = len(v)
    v = np.vstack([v, (v[a] + v[b]) / 2])
    f = np.vstack([np.delete(f, 0, axis=0), [[a, m, c], [m, b, c], [a, b, m]]])
    assert trimesh.Trimesh(v, f, process=False).is_watertight
    bounding = labels.boundary_faces(v, f)
    assert not bounding[-1] and bounding[:-1].all() and labels._thinner_than_probes(v[f])[-1]

    points = np.random.default_rng(0).uniform(-1, 1, (2000, 3)) * (0.39, 0.29, 0.19)  # inside, near the faces too
    asked = []
    monkeypatch.setattr(labels, "inside", lambda *args: asked.append(len(args[2])) or inside(*args))
    distance, _ = labels.exposed_distance(v, f, points, np.ones(len(points), dtype=bool), bounding)
    assert asked == []
    np.testing.assert_allclose(distance, (np.array([0.4, 0.3, 0.2]) - np.abs(points)).min(axis=1), atol=1e-9)


@pytest.mark.parametrize("holes", [0, 15])
def test_suzanne_fast_matches_exact_winding_number(suzanne_subdivided, holes):
    """A real mesh (open eye sockets, overlapping eyes), also with holes punched: fast vs exact."""
    v, f = suzanne_subdivided
    center, scale = normalization(v)
    v = to_unit_cube(v, center, scale)
    if holes:
        f = punch_holes(v, f, count=holes, radius=0.03)
    rng = np.random.default_rng(0)
    surface, _ = trimesh.sample.sample_surface(trimesh.Trimesh(v, f, process=False), 2000, seed=0)
    pts = np.concatenate([rng.uniform(-0.55, 0.55, (2000, 3)), surface + rng.normal(scale=0.01, size=surface.shape)])
    fast = inside(v, f, pts)
    exact = np.abs(igl.winding_number(v, f, pts)) > 0.5
    assert (fast != exact).mean() <= 0.0005  # at most 2 of 4000 points
    assert 0.05 < fast[:2000].mean() < 0.5  # a head, not empty and not the whole box


def test_coarse_winding_numbers_give_the_accurate_labels(suzanne_subdivided):
    """The coarse first answer (labels.FAST_ACCURACY) is asked again accurately near the decision
    level, so every label is what libigl's accurate answer gives, on an open real mesh with
    overlapping parts, near its surface and 1e-4 off it too."""
    from occnet_backend.data.labels import winding_hierarchy

    v, f = suzanne_subdivided
    v = to_unit_cube(v, *normalization(v))
    f = punch_holes(v, f, count=15, radius=0.03)
    mesh = trimesh.Trimesh(v, f, process=False)
    rng = np.random.default_rng(0)
    surface, face = trimesh.sample.sample_surface(mesh, 30_000, seed=0)
    side = np.where(np.arange(10_000) % 2, 1e-4, -1e-4)[:, None]
    points = np.concatenate([rng.uniform(-0.6, 0.6, (20_000, 3)),
                             surface[:20_000] + rng.normal(scale=0.01, size=(20_000, 3)),
                             surface[20_000:] + side * mesh.face_normals[face[20_000:]]])
    accurate = np.abs(winding_hierarchy(v, f).winding_number(points)) > 0.5
    np.testing.assert_array_equal(inside(v, f, points), accurate)
