"""The add-on inside real Blender (bpy 5.0.1 as a module): export, import, errors. No training here.

End-to-end runs through the backend are in test_addon_e2e.py.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from blender_addon.blender import api, export, jobs, properties, results  # noqa: E402
from blender_addon.runner import process  # noqa: E402
from blender_addon.occnet_contract import ply  # noqa: E402
from blender_addon.occnet_contract.settings import FitSettings  # noqa: E402
from blender_addon.runner.errors import OccNetError  # noqa: E402


def snapshot() -> dict:
    """Everything a failed reconstruction must leave as it was."""
    return {
        "objects": sorted(ob.name for ob in bpy.data.objects),
        "meshes": sorted(me.name for me in bpy.data.meshes),
        "collections": sorted(c.name for c in bpy.data.collections),
        "matrices": {ob.name: [list(r) for r in ob.matrix_world] for ob in bpy.data.objects},
        "vertices": {
            me.name: float(np.sum([v.co.length for v in me.vertices])) for me in bpy.data.meshes
        },
        "selected": sorted(ob.name for ob in bpy.context.selected_objects),
    }


def select(*objects) -> None:
    for ob in bpy.context.view_layer.objects:
        ob.select_set(False)
    for ob in objects:
        ob.select_set(True)
    if objects:
        bpy.context.view_layer.objects.active = objects[0]


def add_monkey(**kwargs):
    bpy.ops.mesh.primitive_monkey_add(**kwargs)
    return bpy.context.active_object


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = (vertices[faces[:, i]].astype(np.float64) for i in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def test_export_is_world_space_with_modifiers_applied(blender, tmp_path):
    ob = add_monkey(location=(1.0, -2.0, 0.5), rotation=(0.3, 1.1, -0.7), scale=(1.5, 0.5, 2.0))
    ob.modifiers.new("Subdivision", "SUBSURF").levels = 1
    depsgraph = bpy.context.evaluated_depsgraph_get()
    before = snapshot()
    shapes = export.export_shapes([ob], tmp_path / "input", depsgraph)
    assert snapshot() == before, "exporting changed the scene"
    assert [s.shape_id for s in shapes] == ["Suzanne"] and shapes[0].sources == ["Suzanne"]
    vertices, faces = ply.read_ply(shapes[0].path)

    # Independent reference: mathutils, vertex by vertex, on the evaluated mesh.
    ob_eval = ob.evaluated_get(depsgraph)
    mesh = ob_eval.to_mesh()
    expected = np.array([tuple(ob_eval.matrix_world @ v.co) for v in mesh.vertices], dtype=np.float32)
    mesh.calc_loop_triangles()
    n_tris = len(mesh.loop_triangles)
    ob_eval.to_mesh_clear()
    assert len(expected) == 2012 and len(vertices) == len(expected), "subdivision not applied"
    np.testing.assert_allclose(vertices, expected, atol=1e-5)
    assert len(faces) == n_tris
    assert len(ob.data.vertices) == 507, "the original mesh was changed"


def test_mirrored_object_keeps_outward_faces(blender, tmp_path):
    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.active_object
    cube.scale = (-1.0, 1.0, 2.0)
    shapes = export.export_shapes([cube], tmp_path, bpy.context.evaluated_depsgraph_get())
    vertices, faces = ply.read_ply(shapes[0].path)
    assert signed_volume(vertices, faces) == pytest.approx(16.0, rel=1e-5)


def test_union_concatenates_and_ids_are_safe_and_unique(blender, tmp_path):
    a = add_monkey(location=(-3, 0, 0))
    a.name = "héad/1 (scan)"
    b = add_monkey(location=(3, 0, 0))
    b.name = "HÉAD_1_(scan)"
    depsgraph = bpy.context.evaluated_depsgraph_get()
    separate = export.export_shapes([a, b], tmp_path / "sep", depsgraph)
    ids = [s.shape_id for s in separate]
    assert ids[0] == "h_ad_1_scan" and ids[1].lower() != ids[0].lower()
    assert all(Path(s.path).name == f"{s.shape_id}.ply" for s in separate)
    union = export.export_shapes([a, b], tmp_path / "union", depsgraph, union=True)
    assert len(union) == 1 and union[0].sources == [a.name, b.name]
    v, f = ply.read_ply(union[0].path)
    assert len(v) == 2 * 507 and len(f) == 2 * 968 and f.max() == len(v) - 1
    assert v[:, 0].min() < -3.5 and v[:, 0].max() > 3.5


def test_import_creates_objects_and_rerun_replaces_without_orphans(blender, tmp_path):
    source = add_monkey(location=(0, 0, 2))
    shapes = export.export_shapes([source], tmp_path / "in", bpy.context.evaluated_depsgraph_get())
    spec = results.ResultSpec("Suzanne", ["Suzanne"], shapes[0].path, checkpoint="/x/model.pt", job_dir="/x",
                              shape_ids=["Suzanne"], settings={"threshold": 0.5})
    (ob,) = results.import_results(bpy.context.scene, [spec])
    assert ob.name == "Suzanne OccNet" and ob.type == "MESH"
    assert [c.name for c in ob.users_collection] == [results.COLLECTION_NAME]
    assert bpy.context.scene.collection.children.get(results.COLLECTION_NAME) is not None
    # the result's origin is its source's origin (same pivot), with no rotation or scale
    assert np.allclose(np.array(ob.matrix_world)[:3, :3], np.eye(3))
    assert tuple(ob.location) == pytest.approx((0, 0, 2)) and list(ob["occnet_origin"]) == pytest.approx([0, 0, 2])
    assert len(ob.data.vertices) == 507 and len(ob.data.polygons) == 968
    assert all(p.use_smooth for p in ob.data.polygons)
    assert ob["occnet_sources"] == ["Suzanne"] and ob["occnet_checkpoint"] == "/x/model.pt"
    assert list(ob["occnet_shape_ids"]) == ["Suzanne"] and ob["occnet_job"] == "/x"
    # The imported surface lies exactly where the source is (in world space), about the source's origin.
    co = np.empty(len(ob.data.vertices) * 3, dtype=np.float32)
    ob.data.vertices.foreach_get("co", co)
    assert (co.reshape(-1, 3)[:, 2] + ob.location.z).mean() == pytest.approx(2.0, abs=0.2)
    assert co.reshape(-1, 3)[:, 2].mean() == pytest.approx(0.0, abs=0.2)

    meshes_before = len(bpy.data.meshes)
    for _ in range(3):
        (ob,) = results.import_results(bpy.context.scene, [spec])
    assert ob.name == "Suzanne OccNet", "the rerun did not take over the name"
    assert len(bpy.data.meshes) == meshes_before, "re-running left orphan meshes"
    assert [o.name for o in bpy.data.collections[results.COLLECTION_NAME].objects] == ["Suzanne OccNet"]
    assert all(me.users > 0 for me in bpy.data.meshes)
    assert source.name == "Suzanne" and len(source.data.vertices) == 507


def test_bad_result_file_leaves_the_scene_unchanged(blender, tmp_path):
    add_monkey()
    (tmp_path / "bad.ply").write_bytes(b"ply\nformat ascii 1.0\nend_header\n")
    before = snapshot()
    with pytest.raises(OccNetError, match="result for 'Suzanne' cannot be read.*bad.ply"):
        results.import_results(bpy.context.scene, [results.ResultSpec("Suzanne", ["Suzanne"], str(tmp_path / "bad.ply"))])
    assert snapshot() == before


# ---- errors: each a clear message, scene unchanged, no backend left ----------------------------

def _no_jobs_left(tmp_path: Path) -> None:
    assert process.live_processes() == []
    assert jobs.active_job() is None
    jobs_dir = tmp_path / "cache" / "occnet-blender" / "jobs"
    assert not jobs_dir.exists() or not any(jobs_dir.iterdir()), "a failed start left a job folder"


def _assert_fails_cleanly(tmp_path: Path, pattern: str, **api_kwargs) -> None:
    before = snapshot()
    with pytest.raises(OccNetError, match=pattern):
        api.reconstruct(steps=2, **api_kwargs)
    assert snapshot() == before
    # a selection that cannot work greys the button out (poll), its message the tooltip; a later
    # failure is an ERROR report, which bpy.ops turns into RuntimeError, and the panel's status
    refused_by_poll = not bpy.ops.occnet.reconstruct.poll()
    with pytest.raises(RuntimeError, match=pattern):
        bpy.ops.occnet.reconstruct("EXEC_DEFAULT")
    assert snapshot() == before
    status = bpy.context.window_manager.occnet_status
    if not refused_by_poll:
        assert status.is_error and re.search(pattern, status.message)
    _no_jobs_left(tmp_path)


import re  # noqa: E402


def test_nothing_selected(blender, tmp_path):
    add_monkey()
    select()
    _assert_fails_cleanly(tmp_path, "Nothing selected: select one or more mesh objects")


def test_only_non_mesh_objects_selected(blender, tmp_path):
    bpy.ops.object.empty_add()
    empty = bpy.context.active_object
    bpy.ops.object.camera_add()
    camera = bpy.context.active_object
    select(empty, camera)
    _assert_fails_cleanly(tmp_path, r"No mesh selected: 'Empty' is an empty, not a mesh; 'Camera' is a camera")


def test_mesh_without_faces(blender, tmp_path):
    mesh = bpy.data.meshes.new("Edges")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (1, 1, 0)], [(0, 1), (1, 2)], [])
    ob = bpy.data.objects.new("Edges", mesh)
    bpy.context.scene.collection.objects.link(ob)
    select(ob)
    _assert_fails_cleanly(tmp_path, r"'Edges' has 3 vertices but no faces \(after modifiers\).*Fill it")


def test_backend_interpreter_without_torch(blender, tmp_path, monkeypatch):
    base = shutil.which("python3.11") or shutil.which("python3")
    venv = tmp_path / "notorch"
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    if subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.skip("system Python has torch")
    monkeypatch.setenv("OCCNET_PYTHON", python)
    select(add_monkey())
    _assert_fails_cleanly(tmp_path, rf"Backend Python {re.escape(python)} .*lacks torch.*-m pip install \"torch==2")


def test_invalid_settings_are_reported_before_anything_runs(blender, tmp_path):
    select(add_monkey())
    before = snapshot()
    with pytest.raises(OccNetError, match="threshold must lie strictly between 0 and 1"):
        api.reconstruct(threshold=1.0)
    assert snapshot() == before
    _no_jobs_left(tmp_path)


def test_mixed_selection_skips_non_meshes(blender, tmp_path):
    bpy.ops.object.light_add(type="POINT")
    light = bpy.context.active_object
    monkey = add_monkey()
    usable, skipped = export.select_sources([light, monkey])
    assert usable == [monkey] and skipped == ["'Point' is a light, not a mesh"]
    assert export.select_sources([monkey, monkey])[0] == [monkey]


def test_panel_and_operators_are_registered(blender):
    assert hasattr(bpy.types, "OCCNET_PT_main") and hasattr(bpy.types, "OCCNET_PT_backend")
    assert not bpy.ops.occnet.reconstruct.poll() and not bpy.ops.occnet.cancel.poll()  # nothing selected
    bpy.ops.mesh.primitive_cube_add()
    assert bpy.ops.occnet.reconstruct.poll()
    scene = bpy.context.scene
    assert scene.occnet.steps == FitSettings().steps
    assert math.isclose(scene.occnet.threshold, 0.5)
    assert scene.occnet.cached_points == FitSettings().cached_points
    scene.occnet.cached_points = 800_000  # the panel's Labelled Points reach the backend's settings
    assert properties.fit_settings(scene).cached_points == 800_000
    import occnet  # the script alias registered by the add-on

    assert occnet.reconstruct is api.reconstruct
    assert sys.modules["occnet"] is api


def test_preview_sits_over_its_source_and_leaves_with_its_job_or_a_reload(blender, tmp_path):
    from blender_addon.blender import previews

    source = add_monkey(location=(1.0, 2.0, 3.0))
    before = snapshot()
    box = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=np.float32) + (1.0, 2.0, 3.0)
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    path = ply.write_ply(tmp_path / "preview.ply", box, faces)
    ob = previews.show(blender.context.scene, str(tmp_path / "job"), [source.name], str(path))
    assert ob.name == f"{source.name} OccNet (preview)" and ob.display_type == "WIRE"
    assert tuple(ob.location) == pytest.approx((1.0, 2.0, 3.0)) and not results.is_result_object(ob)
    assert previews.show(blender.context.scene, "other", [source.name], str(tmp_path / "missing.ply")) is None
    previews.clear(str(tmp_path / "job"))
    assert snapshot() == before

    previews.show(blender.context.scene, str(tmp_path / "job"), [source.name], str(path))
    blender.ops.wm.save_as_mainfile(filepath=str(tmp_path / "saved.blend"))
    blender.ops.wm.open_mainfile(filepath=str(tmp_path / "saved.blend"))
    assert not [o.name for o in blender.data.objects if o.get(previews.PROP_PREVIEW)], "a saved preview came back"
