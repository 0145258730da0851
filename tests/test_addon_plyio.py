"""The add-on's PLY format code, on plain CPython (no bpy), against trimesh as the reference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh

from blender_addon.occnet_contract import ply

ROOT = Path(__file__).resolve().parent.parent


def _mesh() -> trimesh.Trimesh:
    return trimesh.creation.icosphere(subdivisions=2, radius=1.5)


def test_format_and_runner_modules_do_not_import_bpy_or_torch():
    """The format / runner half must stay importable (and testable) without Blender or torch."""
    code = (
        "import sys; sys.modules['bpy'] = None; sys.modules['torch'] = None; "  # None: importing them fails
        "import blender_addon.occnet_contract.ply, blender_addon.runner.process, blender_addon.runner.slider_client; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    vertices = rng.normal(size=(500, 3)).astype(np.float32)
    faces = rng.integers(0, 500, size=(900, 3)).astype(np.int32)
    path = ply.write_ply(tmp_path / "a.ply", vertices, faces)
    v, f = ply.read_ply(path)
    assert v.dtype == np.float32 and f.dtype == np.int32
    np.testing.assert_array_equal(v, vertices)
    np.testing.assert_array_equal(f, faces)
    assert not list(tmp_path.glob(".*.tmp")), "atomic write left its temporary file"


def test_trimesh_reads_what_we_write(tmp_path):
    mesh = _mesh()
    path = ply.write_ply(tmp_path / "a.ply", mesh.vertices, mesh.faces)
    loaded = trimesh.load(path, process=False)
    np.testing.assert_allclose(loaded.vertices, mesh.vertices, atol=1e-6)
    np.testing.assert_array_equal(loaded.faces, mesh.faces)
    assert loaded.is_watertight


@pytest.mark.parametrize("encoding", ["binary", "ascii"])
@pytest.mark.parametrize("colors", [False, True])
def test_reads_trimesh_written_ply(tmp_path, encoding, colors):
    """The backend writes results with trimesh's exporter: comments, maybe colour properties."""
    mesh = _mesh()
    if colors:
        mesh.visual.vertex_colors = np.tile([255, 0, 0, 255], (len(mesh.vertices), 1))
    path = tmp_path / "t.ply"
    path.write_bytes(mesh.export(file_type="ply", encoding=encoding))
    v, f = ply.read_ply(path)
    np.testing.assert_allclose(v, mesh.vertices, atol=1e-6)
    np.testing.assert_array_equal(f, mesh.faces)


def test_the_one_writer_is_read_back_by_itself_and_by_trimesh(tmp_path):
    """Both halves write PLY with `occnet_contract.ply.write_ply` (uchar count, int32 indices):
    it reads back exactly, and another program (trimesh) reads it too."""
    mesh = _mesh()
    ply.write_ply(tmp_path / "b.ply", mesh.vertices, mesh.faces)
    v, f = ply.read_ply(tmp_path / "b.ply")
    np.testing.assert_allclose(v, mesh.vertices, atol=1e-6)
    np.testing.assert_array_equal(f, mesh.faces)
    other = trimesh.load(tmp_path / "b.ply", process=False)
    np.testing.assert_allclose(other.vertices, mesh.vertices, atol=1e-6)
    np.testing.assert_array_equal(other.faces, mesh.faces)


def _header(fmt: str, nv: int, nf: int, vertex_props: str, face_prop: str, extra_face: str = "") -> bytes:
    return (
        f"ply\nformat {fmt} 1.0\nelement vertex {nv}\n{vertex_props}"
        f"element face {nf}\n{face_prop}{extra_face}end_header\n"
    ).encode()


def test_extra_vertex_properties_uint_indices_and_big_endian(tmp_path):
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    for order, fmt in (("<", "binary_little_endian"), (">", "binary_big_endian")):
        vdtype = np.dtype([("nx", order + "f4"), ("x", order + "f8"), ("y", order + "f8"), ("z", order + "f8"), ("q", "u1")])
        vrec = np.zeros(4, dtype=vdtype)
        vrec["x"], vrec["y"], vrec["z"] = vertices.T
        fdtype = np.dtype([("n", order + "i4"), ("v", order + "u4", (3,)), ("flag", "u1")])
        frec = np.zeros(4, dtype=fdtype)
        frec["n"], frec["v"] = 3, faces
        header = _header(
            fmt, 4, 4,
            "property float nx\nproperty double x\nproperty double y\nproperty double z\nproperty uchar q\n",
            "property list int uint vertex_indices\n", "property uchar flag\n",
        )
        path = tmp_path / f"{fmt}.ply"
        path.write_bytes(header + vrec.tobytes() + frec.tobytes())
        v, f = ply.read_ply(path)
        np.testing.assert_allclose(v, vertices)
        np.testing.assert_array_equal(f, faces)


def test_quads_and_mixed_polygons_are_fan_triangulated(tmp_path):
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0]], dtype="<f4")
    body = vertices.tobytes()
    body += np.array([4], "u1").tobytes() + np.array([0, 1, 2, 3], "<i4").tobytes()
    body += np.array([3], "u1").tobytes() + np.array([1, 4, 2], "<i4").tobytes()
    header = _header("binary_little_endian", 5, 2, "property float x\nproperty float y\nproperty float z\n",
                     "property list uchar int vertex_index\n")
    path = tmp_path / "q.ply"
    path.write_bytes(header + body)
    _, f = ply.read_ply(path)
    np.testing.assert_array_equal(f, [[0, 1, 2], [0, 2, 3], [1, 4, 2]])

    # All quads: the fixed-count fast path.
    quads = np.zeros(2, dtype=[("n", "u1"), ("v", "<i4", (4,))])
    quads["n"], quads["v"] = 4, [[0, 1, 2, 3], [1, 4, 2, 3]]
    path.write_bytes(_header("binary_little_endian", 5, 2, "property float x\nproperty float y\nproperty float z\n",
                             "property list uchar int vertex_indices\n") + vertices.tobytes() + quads.tobytes())
    _, f = ply.read_ply(path)
    np.testing.assert_array_equal(f, [[0, 1, 2], [1, 4, 2], [0, 2, 3], [1, 2, 3]])


@pytest.mark.parametrize(
    "data, message",
    [
        (b"solid stl\n", "not a PLY"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\n", "end_header"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
         b"property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n\x00\x00", "truncated"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
         b"property float z\nend_header\n", "no 'face' element"),
    ],
)
def test_bad_files_raise_a_message_naming_the_file(tmp_path, data, message):
    path = tmp_path / "bad.ply"
    path.write_bytes(data)
    with pytest.raises(ply.PLYError) as info:
        ply.read_ply(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_out_of_range_indices_are_rejected(tmp_path):
    path = tmp_path / "bad.ply"
    with pytest.raises(ply.PLYError):
        ply.write_ply(path, np.zeros((3, 3)), [[0, 1, 3]])
    good = ply.ply_bytes(np.zeros((4, 3)), [[0, 1, 3]])
    header, body = good.split(b"end_header\n")
    path.write_bytes(header.replace(b"element vertex 4", b"element vertex 3") + b"end_header\n" + body[12:])
    with pytest.raises(ply.PLYError):
        ply.read_ply(path)


def test_empty_mesh_reads_as_empty_arrays(tmp_path):
    """An extraction that found no surface: zero faces is a valid file, not a parse error."""
    v, f = ply.read_ply(ply.write_ply(tmp_path / "e.ply", np.zeros((0, 3)), np.zeros((0, 3))))
    assert v.shape == (0, 3) and f.shape == (0, 3)
