"""End to end in real Blender (bpy 5.0.1): operator, API, cancel, kill, and the built zip,
each running the real backend (`python -m occnet_backend fit`) in a subprocess on the CPU.

Settings are tiny (a few seconds of training); what is checked is the plumbing and the placement,
not the reconstruction quality (the backend's own tests cover that).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
trimesh = pytest.importorskip("trimesh")

from blender_addon.blender import api, jobs, results  # noqa: E402
from blender_addon.runner import process  # noqa: E402
from blender_addon.occnet_contract import protocol  # noqa: E402
from blender_addon.runner.errors import OccNetCancelled, OccNetError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

# The smallest settings measured to give Suzanne a closed surface (about 5 s of fit on 2 CPU cores).
TINY = dict(steps=100, points=4096, width=64, depth=3, resolution=32, fourier_frequencies=64, device="cpu")


def select(*objects) -> None:
    for ob in bpy.context.view_layer.objects:
        ob.select_set(False)
    for ob in objects:
        ob.select_set(True)
    if objects:
        bpy.context.view_layer.objects.active = objects[0]


def add_suzanne(location=(2.0, -1.0, 1.0), rotation=(0.4, 0.0, 0.9), scale=(1.5, 1.5, 1.5)):
    bpy.ops.mesh.primitive_monkey_add(location=location, rotation=rotation, scale=scale)
    ob = bpy.context.active_object
    ob.modifiers.new("Subdivision", "SUBSURF").levels = 1
    return ob


def world_bounds(ob) -> np.ndarray:
    """[min, max] of the evaluated object's vertices in world space (mathutils, vertex by vertex)."""
    ob_eval = ob.evaluated_get(bpy.context.evaluated_depsgraph_get())
    mesh = ob_eval.to_mesh()
    points = np.array([tuple(ob_eval.matrix_world @ v.co) for v in mesh.vertices])
    ob_eval.to_mesh_clear()
    return np.stack([points.min(0), points.max(0)])


def as_trimesh(ob):
    mesh = ob.data
    v = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", v)
    f = np.empty(len(mesh.polygons) * 3, dtype=np.int32)
    mesh.polygons.foreach_get("vertices", f)
    world = v.reshape(-1, 3) @ np.array(ob.matrix_world)[:3, :3].T + np.array(ob.matrix_world)[:3, 3]
    return trimesh.Trimesh(world, f.reshape(-1, 3), process=True)


def assert_placed_over(result, source) -> None:
    """Watertight, outward, and its box sits on the source's box (world space)."""
    tm = as_trimesh(result)
    assert tm.is_watertight, "the reconstruction is not closed"
    assert tm.volume > 0, "the reconstruction is inside out"
    src, res = world_bounds(source), np.stack([tm.bounds[0], tm.bounds[1]])
    size = src[1] - src[0]
    np.testing.assert_allclose(res.mean(0), src.mean(0), atol=0.2 * size.max())
    np.testing.assert_allclose(res[1] - res[0], size, atol=0.3 * size.max())


def scene_state() -> dict:
    return {
        "objects": sorted(ob.name for ob in bpy.data.objects),
        "meshes": sorted(me.name for me in bpy.data.meshes),
        "collections": sorted(c.name for c in bpy.data.collections),
    }


def assert_no_backend_left(pids: list[int]) -> None:
    assert process.live_processes() == [] and jobs.active_job() is None
    for pid in pids:
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
            assert state == "Z", f"backend {pid} still running"
        except (ProcessLookupError, FileNotFoundError):
            pass


def pids_on_first_progress(action):
    """An on_event callback that calls ``action(process)`` once, at the first progress event."""
    seen: list[int] = []

    def on_event(event: dict) -> None:
        if event.get("event") == "progress" and not seen:
            (proc,) = process.live_processes()
            seen.append(proc.pid)
            action(proc)

    return on_event, seen


def test_operator_reconstructs_suzanne(blender, tmp_path):
    source = add_suzanne()
    original = [tuple(v.co) for v in source.data.vertices]
    select(source)
    settings = bpy.context.scene.occnet
    settings.steps, settings.points, settings.width, settings.depth = TINY["steps"], TINY["points"], TINY["width"], TINY["depth"]
    settings.resolution, settings.use_fourier = str(TINY["resolution"]), True
    settings.fourier_frequencies = TINY["fourier_frequencies"]
    assert bpy.ops.occnet.reconstruct("EXEC_DEFAULT") == {"FINISHED"}
    result = bpy.data.objects["Suzanne OccNet"]
    assert [c.name for c in result.users_collection] == [results.COLLECTION_NAME]
    assert_placed_over(result, source)
    assert [tuple(v.co) for v in source.data.vertices] == original and len(source.modifiers) == 1
    job_dir = Path(result["occnet_job"])
    assert (job_dir / "input" / "Suzanne.ply").is_file() and (job_dir / "backend.log").is_file()
    assert result["occnet_shape_id"] == "Suzanne" and list(result["occnet_shape_ids"]) == ["Suzanne"]
    assert result["occnet_checkpoint"] and Path(result["occnet_checkpoint"]).exists()
    record = json.loads((job_dir / "job.json").read_text())
    assert record["argv"][1:4] == ["-m", "occnet_backend", "fit"] and record["settings"]["steps"] == TINY["steps"]
    status = bpy.context.window_manager.occnet_status
    assert not status.is_error and status.message.startswith("Reconstructed 'Suzanne OccNet': IoU 0.")
    assert "watertight" in status.message and "Chamfer-L1" in status.message  # the evaluation, not the batch
    assert process.live_processes() == []
    # the result is the selection, its source hidden (no z-fighting), its origin the source's
    assert bpy.context.view_layer.objects.active == result and result.select_get() and source.hide_get()
    assert tuple(result.location) == pytest.approx(tuple(source.matrix_world.translation))

    # Re-running replaces the result: same name, no orphan mesh.
    source.hide_set(False)
    select(source)
    meshes = len(bpy.data.meshes)
    assert bpy.ops.occnet.reconstruct("EXEC_DEFAULT") == {"FINISHED"}
    assert len(bpy.data.meshes) == meshes
    assert [ob.name for ob in bpy.data.collections[results.COLLECTION_NAME].objects] == ["Suzanne OccNet"]


def test_api_reconstructs_two_shapes_with_one_model(blender, tmp_path):
    suzanne = add_suzanne(location=(-2.0, 0.0, 0.0))
    bpy.ops.mesh.primitive_torus_add(location=(3.0, 1.0, 0.5), rotation=(1.0, 0.2, 0.0))
    torus = bpy.context.active_object
    events: list[str] = []
    made = api.reconstruct([suzanne, torus], work_dir=tmp_path / "work", on_event=lambda e: events.append(e["event"]),
                           verbose=False, **TINY)
    assert [ob.name for ob in made] == ["Suzanne OccNet", "Torus OccNet"]
    for result, source in zip(made, (suzanne, torus)):
        assert_placed_over(result, source)
        assert list(result["occnet_shape_ids"]) == ["Suzanne", "Torus"]
    assert events[0] == "stage" and events.index("start") < events.index("progress")
    assert events.count("mesh") == 2 and events[-1] == "done"
    assert Path(made[0]["occnet_job"]).parent == tmp_path / "work"


def test_cancel_mid_training_leaves_the_scene_unchanged(blender, tmp_path):
    select(add_suzanne())
    before = scene_state()
    on_event, pids = pids_on_first_progress(lambda proc: None)
    slow = dict(TINY, steps=100000)
    with pytest.raises(OccNetCancelled, match="cancelled; the scene is unchanged"):
        api.reconstruct(on_event=on_event, cancel=lambda: bool(pids), verbose=False, **slow)
    assert scene_state() == before
    assert pids, "no progress event arrived before the end"
    assert_no_backend_left(pids)


def test_cancel_through_the_polling_path(blender, tmp_path):
    """What the modal operator does on each timer tick, without a window: poll, cancel, finish."""
    source = add_suzanne()
    select(source)
    before = scene_state()
    bpy.context.scene.occnet.steps = 100000
    from blender_addon.blender import operators

    job = operators.create_job(bpy.context).start()
    assert jobs.active_job() is job and not bpy.ops.occnet.reconstruct.poll()
    deadline = time.monotonic() + 120
    while job.state.step == 0 and not job.poll():
        assert time.monotonic() < deadline, "no progress within 2 minutes"
        time.sleep(0.1)
    assert bpy.ops.occnet.cancel() == {"FINISHED"}
    pid = job.process.pid
    while not job.poll():
        assert time.monotonic() < deadline + 60
        time.sleep(0.1)
    with pytest.raises(OccNetCancelled):
        job.finish()
    job.abort()  # what the modal operator's clean end does next: it must not bring the folder back
    assert job.process.returncode == protocol.EXIT_CANCELLED
    assert not job.job_dir.exists(), "a cancelled job's folder is deleted"
    assert scene_state() == before
    assert_no_backend_left([pid])


def test_backend_killed_mid_run_is_a_clear_error(blender, tmp_path):
    select(add_suzanne())
    before = scene_state()
    on_event, pids = pids_on_first_progress(lambda proc: os.kill(proc.pid, signal.SIGKILL))
    with pytest.raises(OccNetError) as info:
        api.reconstruct(on_event=on_event, verbose=False, **dict(TINY, steps=100000))
    message = str(info.value)
    assert "killed by SIGKILL" in message and "scene is unchanged" in message and "backend.log" in message
    assert not isinstance(info.value, OccNetCancelled)
    assert scene_state() == before
    assert_no_backend_left(pids)


@pytest.fixture
def bare_blender(tmp_path, monkeypatch):
    """An empty session without the source add-on registered (the built zip registers its own copy)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("OCCNET_PYTHON", sys.executable)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield bpy
    bpy.ops.wm.read_factory_settings(use_empty=True)


def test_built_zip_installs_as_extension_and_reconstructs(bare_blender, tmp_path):
    import addon_utils

    sys.path.insert(0, str(ROOT))
    import build_addon

    zip_path = build_addon.build(tmp_path / "dist")
    assert zip_path.name == "occnet-0.1.0.zip" and (tmp_path / "dist" / "occnet-0.1.0-legacy.zip").is_file()

    repos = bpy.context.preferences.extensions.repos
    repo = repos.new(name="occnet_test", module="occnet_test", custom_directory=str(tmp_path / "ext"), source="USER")
    module = "bl_ext.occnet_test.occnet"
    try:
        assert bpy.ops.extensions.package_install_files(
            filepath=str(zip_path), repo="occnet_test", enable_on_install=True
        ) == {"FINISHED"}
        assert module in {a.module for a in bpy.context.preferences.addons}
        installed = sys.modules[module]
        installed_dir = Path(installed.__file__).parent
        assert installed_dir == tmp_path / "ext" / "occnet"
        interpreter = sys.modules[f"{module}.runner.interpreter"]
        assert interpreter.backend_root() == installed_dir, "not running the bundled backend"
        assert interpreter.backend_env()["PYTHONPATH"].split(os.pathsep)[0] == str(installed_dir)
        assert (installed_dir / "occnet_contract" / "protocol.py").is_file(), "the contract travels inside the zip"
        assert "GNU GENERAL PUBLIC LICENSE" in (installed_dir / "LICENSE").read_text(), "the license travels too"
        prefs = bpy.context.preferences.addons[module].preferences
        assert prefs.device == "auto" and prefs.python_path == ""

        source = add_suzanne()
        made = sys.modules[f"{module}.blender.api"].reconstruct([source], verbose=False, **TINY)
        assert [ob.name for ob in made] == ["Suzanne OccNet"]
        assert_placed_over(made[0], source)
        log = (Path(made[0]["occnet_job"]) / "backend.log").read_text()
        assert "Traceback" not in log
    finally:
        addon_utils.disable(module)
        repos.remove(repo)
    assert not hasattr(bpy.types, "OCCNET_PT_main")
