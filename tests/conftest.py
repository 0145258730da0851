# --- Blender add-on fixtures (tests/test_addon*.py) ------------------------------------------
# bpy is imported lazily, inside the fixtures, so backend-only test runs never pay for it.
import os as _os
import sys as _sys
from pathlib import Path as _Path

import pytest as _pytest

_REPO_ROOT = _Path(__file__).resolve().parent.parent
if str(_REPO_ROOT) not in _sys.path:
    _sys.path.insert(0, str(_REPO_ROOT))


@_pytest.fixture
def blender(tmp_path, monkeypatch):
    """A fresh empty Blender session (bpy as a module) with the OccNet add-on registered.

    Job folders go to tmp_path (via XDG_CACHE_HOME, which the add-on's default work folder
    follows), and the backend interpreter is this test's own Python (it has torch).
    """
    bpy = _pytest.importorskip("bpy")
    import blender_addon

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("OCCNET_PYTHON", _sys.executable)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    blender_addon.register()
    try:
        yield bpy
    finally:
        blender_addon.unregister()
        bpy.ops.wm.read_factory_settings(use_empty=True)


# --- Real meshes nobody on the team wrote (tests/test_labels.py, test_dataset.py, ...) ---------


def _suzanne_arrays(subdivisions: int = 0):
    """Blender's Suzanne as (vertices float64 [V,3], faces int64 [F,3]), read with foreach_get.

    Suzanne is a real artist's mesh and not closed: open eye sockets and separate eyes that
    overlap the head, which is exactly what winding-number labels must survive. The object and
    its mesh are removed afterwards, so the bpy session is left as it was.
    """
    import numpy as np

    bpy = _pytest.importorskip("bpy")
    bpy.ops.mesh.primitive_monkey_add()
    obj = bpy.context.active_object
    try:
        if subdivisions:
            mod = obj.modifiers.new("subdiv", "SUBSURF")
            mod.levels = subdivisions
        depsgraph = bpy.context.evaluated_depsgraph_get()
        evaluated = obj.evaluated_get(depsgraph)
        mesh = evaluated.to_mesh()
        mesh.calc_loop_triangles()
        vertices = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", vertices)
        faces = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int32)
        mesh.loop_triangles.foreach_get("vertices", faces)
        evaluated.to_mesh_clear()
    finally:
        data = obj.data
        bpy.data.objects.remove(obj, do_unlink=True)
        bpy.data.meshes.remove(data)
    return vertices.reshape(-1, 3).astype(np.float64), faces.reshape(-1, 3).astype(np.int64)


@_pytest.fixture(scope="session")
def suzanne():
    """Blender's Suzanne, base mesh (507 vertices, 968 triangles): (vertices, faces) numpy arrays."""
    return _suzanne_arrays(0)


@_pytest.fixture(scope="session")
def suzanne_subdivided():
    """Suzanne with a level-2 subdivision surface, as artists use it (~16k triangles)."""
    return _suzanne_arrays(2)


@_pytest.fixture(scope="session")
def plate_with_posts():
    """A plate with three posts standing on it, a kit of overlapping boxes (trimesh.Trimesh): the posts
    cover parts of the plate's top faces, which labelling splits to find what is exposed."""
    import trimesh

    parts = [trimesh.creation.box((0.6, 0.6, 0.1))]
    for x, y in ((-0.2, -0.2), (0.1, 0.15), (0.2, -0.1)):
        parts.append(trimesh.creation.box((0.06, 0.06, 0.1)))
        parts[-1].apply_translation((x, y, 0.05))
    return trimesh.util.concatenate(parts)
