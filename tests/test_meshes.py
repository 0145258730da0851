"""Mesh loading, validation errors and unit-cube normalisation (occnet_backend.data.meshes)."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from occnet_backend.data.meshes import (
    MeshError,
    from_unit_cube,
    load_mesh,
    normalization,
    to_unit_cube,
    validate_mesh,
)


@pytest.mark.parametrize("ext", ["obj", "ply", "off", "stl", "glb"])
def test_load_every_format(tmp_path, ext):
    box = trimesh.creation.box(extents=[2.0, 1.0, 0.5])
    box.apply_translation([1.0, 2.0, 3.0])
    path = tmp_path / f"box.{ext}"
    box.export(path)
    mesh = load_mesh(path)
    assert mesh.faces.shape == (12, 3) and mesh.faces.dtype == np.int64
    assert mesh.vertices.dtype == np.float64
    np.testing.assert_allclose([mesh.vertices.min(0), mesh.vertices.max(0)], box.bounds, atol=1e-6)


def test_scene_parts_are_merged_with_their_transforms(tmp_path):
    a = trimesh.creation.box()
    b = trimesh.creation.icosphere(subdivisions=1)
    scene = trimesh.Scene()
    scene.add_geometry(a)
    scene.add_geometry(b, transform=trimesh.transformations.translation_matrix([3.0, 0, 0]))
    path = tmp_path / "two parts.glb"
    scene.export(path)
    mesh = load_mesh(path)
    assert mesh.num_parts == 2
    assert len(mesh.faces) == len(a.faces) + len(b.faces)
    np.testing.assert_allclose(mesh.vertices.max(0), [4.0, 1.0, 1.0], atol=1e-6)


def test_spaces_and_non_ascii_file_names(tmp_path):
    path = tmp_path / "Suzanne côté 猴子.obj"
    trimesh.creation.box().export(path)
    assert len(load_mesh(path).faces) == 12


def _error(path) -> str:
    with pytest.raises(MeshError) as info:
        load_mesh(path)
    message = str(info.value)
    assert str(path) in message, "the error must name the file"
    return message


def test_errors_name_the_file_and_say_what_is_wrong(tmp_path):
    assert issubclass(MeshError, ValueError)

    (tmp_path / "scan.xyz").write_text("0 0 0\n")
    assert "unknown mesh format" in _error(tmp_path / "scan.xyz")

    assert "no such file" in _error(tmp_path / "missing.obj")

    (tmp_path / "empty.obj").write_bytes(b"")
    assert "empty" in _error(tmp_path / "empty.obj")

    (tmp_path / "garbage.ply").write_bytes(b"\x00\x01 not a ply at all")
    assert "cannot read" in _error(tmp_path / "garbage.ply")

    (tmp_path / "notes.obj").write_text("this is not an obj file\n")
    assert "no geometry" in _error(tmp_path / "notes.obj")

    trimesh.PointCloud(np.random.default_rng(0).random((20, 3))).export(tmp_path / "cloud.ply")
    assert "no faces" in _error(tmp_path / "cloud.ply")

    (tmp_path / "lines.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nl 1 2\nl 2 3\n")
    assert "no faces" in _error(tmp_path / "lines.obj")

    (tmp_path / "nan.obj").write_text("v 0 0 nan\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 2 3 4\n")
    assert "NaN or infinite" in _error(tmp_path / "nan.obj")

    (tmp_path / "inf.obj").write_text("v 0 0 inf\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    assert "NaN or infinite" in _error(tmp_path / "inf.obj")

    # repeated corners and collinear corners: zero area everywhere
    (tmp_path / "flat.obj").write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\nf 1 1 2\n")
    assert "degenerate" in _error(tmp_path / "flat.obj")


def test_some_degenerate_faces_are_dropped_not_fatal():
    box = trimesh.creation.box()
    faces = np.concatenate([box.faces, [[0, 0, 1], [2, 2, 2]]])
    v, f, dropped = validate_mesh(box.vertices, faces, source="test")
    assert dropped == 2 and len(f) == 12


def test_validate_rejects_bad_arrays():
    box = trimesh.creation.box()
    with pytest.raises(MeshError, match="out of range"):
        validate_mesh(box.vertices, box.faces + 100, source="obj 'Cube'")
    with pytest.raises(MeshError, match="obj 'Cube'.*empty"):
        validate_mesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=int), source="obj 'Cube'")
    with pytest.raises(MeshError, match=r"\[F, 3\]"):
        validate_mesh(box.vertices, np.zeros((2, 4), dtype=int))


def test_normalization_maps_to_unit_cube_and_back():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(500, 3)) * [3.0, 1.0, 0.2] + [10.0, -5.0, 2.0]
    center, scale = normalization(v)
    unit = to_unit_cube(v, center, scale)
    assert center.shape == (3,) and isinstance(scale, float)
    np.testing.assert_allclose((unit.min(0) + unit.max(0)) / 2, 0.0, atol=1e-12)
    assert np.ptp(unit, axis=0).max() == pytest.approx(1.0)
    assert np.abs(unit).max() <= 0.5 + 1e-12
    np.testing.assert_allclose(from_unit_cube(unit, center, scale), v, atol=1e-10)


def test_normalization_rejects_a_point():
    with pytest.raises(MeshError, match="zero size"):
        normalization(np.ones((4, 3)))


def test_suzanne_loads_and_normalises(tmp_path, suzanne):
    v, f = suzanne
    path = tmp_path / "suzanne.ply"
    trimesh.Trimesh(v, f, process=False).export(path)
    mesh = load_mesh(path)
    assert len(mesh.faces) == len(f)
    center, scale = normalization(mesh.vertices)
    unit = to_unit_cube(mesh.vertices, center, scale)
    assert np.ptp(unit, axis=0).max() == pytest.approx(1.0)


def test_the_same_triangles_in_another_order_give_the_same_samples(tmp_path):
    """An exporter may write the same triangles in another order, or each from another corner (Blender
    triangulated one UV sphere in two orders on two runs); the file's order must not change a fit, whose
    surface samples are drawn face by face."""
    from occnet_backend.data.sampling import SamplingConfig, sample_shape

    sphere = trimesh.creation.uv_sphere(radius=0.4, count=(12, 16))
    rng = np.random.default_rng(0)
    shuffled = np.roll(sphere.faces[rng.permutation(len(sphere.faces))], 1, axis=1)  # same orientation
    paths = []
    for name, faces in (("a", sphere.faces), ("b", shuffled)):
        paths.append(tmp_path / f"{name}.ply")
        trimesh.Trimesh(sphere.vertices, faces, process=False).export(paths[-1])
    a, b = (load_mesh(p) for p in paths)
    np.testing.assert_array_equal(a.faces, b.faces)
    config = SamplingConfig(num_uniform=500, num_near=500, num_surface=500)
    for key, value in sample_shape(a.vertices, a.faces, config, seed=1).items():
        np.testing.assert_array_equal(value, sample_shape(b.vertices, b.faces, config, seed=1)[key], err_msg=key)
