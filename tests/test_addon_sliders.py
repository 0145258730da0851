"""Live sliders in real Blender (bpy 5.0.1) against the real `python -m occnet_backend serve`, on the CPU.

One tiny Suzanne model is fitted per module (the settings test_addon_e2e.py uses); each test
puts a result object for it into a fresh scene and drives it through ``api.update_result`` (the
blocking path) or the properties + ``sliders.process_once`` (what the UI timer runs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

import blender_addon  # noqa: E402
from blender_addon.blender import api, panel, results, sliders  # noqa: E402
from blender_addon.runner import process, slider_client  # noqa: E402
from blender_addon.occnet_contract import ply  # noqa: E402
from blender_addon.runner.errors import OccNetError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# As in test_addon_e2e.py: the smallest settings that give Suzanne a closed surface (~5 s of fit).
TINY = dict(steps=100, points=4096, width=64, depth=3, resolution=32, fourier_frequencies=64, device="cpu")


def _fit(meshes: list[Path], out: Path, **settings) -> Path:
    argv = [sys.executable, "-m", "occnet_backend", "fit", *map(str, meshes), "--out", str(out)]
    for name, value in settings.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "checkpoint.pt"


@pytest.fixture(scope="module")
def suzanne_run(tmp_path_factory, suzanne):
    """(checkpoint, the fit's mesh PLY) of a tiny model of Suzanne (one shape, id 'Suzanne')."""
    folder = tmp_path_factory.mktemp("suzanne_run")
    vertices, faces = suzanne
    ply.write_ply(folder / "Suzanne.ply", vertices * 1.5 + [2.0, -1.0, 1.0], faces)
    checkpoint = _fit([folder / "Suzanne.ply"], folder / "out", **TINY)
    return checkpoint, folder / "out" / "meshes" / "Suzanne.ply"


def make_result(run, job_dir: Path, name: str = "Suzanne", shape_ids=None) -> bpy.types.Object:
    checkpoint, mesh = run
    job_dir.mkdir(parents=True, exist_ok=True)
    spec = results.ResultSpec(shape_id=name, sources=[name], path=str(mesh), checkpoint=str(checkpoint),
                              job_dir=str(job_dir), shape_ids=shape_ids or [name],
                              settings={"resolution": TINY["resolution"], "threshold": 0.5})
    (ob,) = results.import_results(bpy.context.scene, [spec])
    return ob


def arrays(ob) -> tuple[np.ndarray, np.ndarray]:
    mesh = ob.data
    v = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", v)
    f = np.empty(len(mesh.polygons) * 3, dtype=np.int32)
    mesh.polygons.foreach_get("vertices", f)
    return v.reshape(-1, 3), f.reshape(-1, 3)


def volume(ob) -> float:
    v, f = arrays(ob)
    a, b, c = v[f[:, 0]].astype(np.float64), v[f[:, 1]].astype(np.float64), v[f[:, 2]].astype(np.float64)
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def orphan_meshes() -> list[str]:
    return [m.name for m in bpy.data.meshes if m.users == 0]


def server_of(ob) -> slider_client.SliderClient:
    server = sliders.POOL.find(ob[results.PROP_CHECKPOINT])
    assert server is not None, "no slider server for this result"
    return server


def assert_gone(pid: int, timeout: float = 10.0) -> None:
    """The process has ended (a zombie counts as ended: it is only waiting to be reaped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except (FileNotFoundError, ProcessLookupError):
            return
        if state == "Z":
            return
        time.sleep(0.05)
    raise AssertionError(f"slider server {pid} still running")


def drain_ui(timeout: float = 120.0) -> None:
    """Runs what the UI timer runs until nothing is pending or in flight."""
    deadline = time.monotonic() + timeout
    while sliders.process_once():
        assert time.monotonic() < deadline, "the UI path did not settle"
        time.sleep(0.02)


# --------------------------------------------------------------------------------------------
# Fast: no server
# --------------------------------------------------------------------------------------------

def test_serve_command_is_an_argv_list():
    argv = slider_client.serve_command("/opt/my python/bin/python", "/a b/checkpoint.pt", "/out dir", "cpu")
    assert argv == ["/opt/my python/bin/python", "-m", "occnet_backend", "serve", "--checkpoint",
                    "/a b/checkpoint.pt", "--out", "/out dir", "--device", "cpu"]


def test_debouncer_sends_once_after_the_last_change():
    now = [0.0]
    deb = slider_client.Debouncer(0.15, clock=lambda: now[0])
    for i in range(20):  # a drag: a change every 10 ms
        now[0] = i * 0.01
        deb.touch("ob")
        assert deb.due() == []
    now[0] += 0.1
    assert deb.due() == []
    now[0] += 0.06
    assert deb.due(busy=lambda key: True) == [] and deb  # one in flight: wait for it
    assert deb.due() == ["ob"] and not deb


def test_result_gets_sliders_from_its_run_and_morph_writes_weights(blender, tmp_path):
    spec = results.ResultSpec(shape_id="B", sources=["Cube"], path=str(tmp_path / "b.ply"), checkpoint="/x/checkpoint.pt",
                              shape_ids=["A", "B", "C"], settings={"resolution": 64, "threshold": 0.4})
    ply.write_ply(spec.path, np.eye(3, dtype=np.float32), np.array([[0, 1, 2]]))
    (ob,) = results.import_results(bpy.context.scene, [spec])
    props = ob.occnet_live
    assert props.ready and props.resolution == "64" and props.threshold == pytest.approx(0.4)
    assert [(w.name, w.value) for w in props.weights] == [("A", 0.0), ("B", 1.0), ("C", 0.0)]
    assert (props.morph_a, props.morph_b) == ("B", "A")
    assert sliders.current_values(ob) == {"resolution": 64, "threshold": 0.4, "weights": [0.0, 1.0, 0.0]}
    assert not sliders._DEBOUNCE, "setting the sliders up must not schedule an update"
    props.morph_b = "C"
    props.morph = 0.25
    assert [round(w.value, 4) for w in props.weights] == [0.0, 0.75, 0.25]
    assert ob.session_uid in sliders._DEBOUNCE.pending and bpy.app.timers.is_registered(sliders.tick)
    sliders.shutdown()


def test_not_a_result_and_bad_settings_are_clear_errors(blender, tmp_path):
    bpy.ops.mesh.primitive_cube_add()
    with pytest.raises(OccNetError, match="'Cube' is not an OccNet result"):
        api.update_result(bpy.context.active_object, threshold=0.3)
    spec = results.ResultSpec(shape_id="S", sources=["S"], path=str(tmp_path / "s.ply"),
                              checkpoint=str(tmp_path / "gone" / "checkpoint.pt"))
    ply.write_ply(spec.path, np.eye(3, dtype=np.float32), np.array([[0, 1, 2]]))
    (ob,) = results.import_results(bpy.context.scene, [spec])
    with pytest.raises(OccNetError, match="resolution must be one of 32, 64"):
        api.update_result(ob, resolution=100)
    with pytest.raises(OccNetError, match="threshold must lie between"):
        api.update_result(ob, threshold=1.5)
    with pytest.raises(OccNetError, match="weights must be a list of numbers"):
        api.update_result(ob, weights=["a"])
    with pytest.raises(OccNetError, match=r"checkpoint of 'S OccNet' .* no longer exists"):
        api.update_result(ob, threshold=0.3)
    assert len(sliders.POOL) == 0 and process.live_processes() == []


# --------------------------------------------------------------------------------------------
# Slow: the real server
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_threshold_and_resolution_changes_update_the_mesh_in_place(blender, tmp_path, suzanne_run):
    ob = make_result(suzanne_run, tmp_path / "job")
    material = bpy.data.materials.new("Clay")
    ob.data.materials.append(material)
    mesh_name = ob.data.name
    assert api.update_result(ob, resolution=64) is ob
    v64 = len(ob.data.vertices)
    base = volume(ob)
    api.update_result(ob, threshold=0.2)
    fat = volume(ob)
    api.update_result(ob, threshold=0.8)
    thin = volume(ob)
    assert fat > base > thin > 0, (fat, base, thin)
    assert ob.occnet_live.threshold == pytest.approx(0.8) and ob.occnet_live.resolution == "64"

    api.update_result(ob, resolution=32, threshold=0.5)
    v32 = len(ob.data.vertices)
    api.update_result(ob, resolution=128)
    v128 = len(ob.data.vertices)
    assert v32 < v64 < v128 and v128 > 2.5 * v64 > 6 * v32, (v32, v64, v128)

    # Placement: the backend answers in the source's world coordinates.
    lo, hi = arrays(ob)[0].min(0), arrays(ob)[0].max(0)
    np.testing.assert_allclose((lo + hi) / 2, [2.0, -1.0, 1.1], atol=0.3)
    # Swapped in place: same object, same mesh name, material kept, no orphans, no PLYs left behind.
    assert ob.data.name == mesh_name and list(ob.data.materials) == [material]
    assert orphan_meshes() == [] and len(bpy.data.meshes) == 1
    assert list((tmp_path / "job" / "live").glob("*.ply")) == []
    assert (tmp_path / "job" / "live" / "serve.log").is_file()


@pytest.mark.slow
def test_ten_changes_leave_no_orphans_and_a_drag_sends_one_request(blender, tmp_path, suzanne_run):
    ob = make_result(suzanne_run, tmp_path / "job")
    meshes = len(bpy.data.meshes)
    for i in range(10):
        api.update_result(ob, threshold=0.3 + 0.04 * i, resolution=(32, 64)[i % 2])
        assert len(bpy.data.meshes) == meshes and orphan_meshes() == []
    server = server_of(ob)
    sent = server._next_id

    # The UI path: a drag over the threshold slider (updates come from the property callbacks).
    vertices_before = arrays(ob)[0].copy()
    for i in range(12):
        ob.occnet_live.threshold = 0.3 + 0.03 * i
    assert bpy.app.timers.is_registered(sliders.tick) and sliders.status(ob).state == "pending"
    drain_ui()
    assert server._next_id - sent == 1, "a drag must send one request, not one per change"
    st = sliders.status(ob)
    assert st.state == "ok" and "vertices in" in st.message, st
    after = arrays(ob)[0]
    assert after.shape != vertices_before.shape or not np.allclose(after, vertices_before)
    assert ob.occnet_live.threshold == pytest.approx(0.63)
    assert len(bpy.data.meshes) == meshes and orphan_meshes() == []

    # A change while a request is in flight is sent when that one is answered (latest values win).
    ob.occnet_live.resolution = "32"
    sliders._DEBOUNCE.pending[ob.session_uid] -= 1.0  # as if the debounce delay had passed
    sliders.process_once()
    assert sliders._busy(ob.session_uid)
    ob.occnet_live.threshold = 0.45
    drain_ui()
    assert server._next_id - sent == 3
    assert sliders.current_values(ob) == {"resolution": 32, "threshold": 0.45}
    assert sliders.status(ob).state == "ok" and len(bpy.data.meshes) == meshes and orphan_meshes() == []
    shown = arrays(ob)[0].copy()
    assert api.update_result(ob) is ob  # the same values through the blocking path: the same surface
    np.testing.assert_array_equal(arrays(ob)[0], shown)


@pytest.mark.slow
def test_prewarm_starts_the_server_that_the_first_slider_move_then_uses(blender, tmp_path, suzanne_run):
    ob = make_result(suzanne_run, tmp_path / "job")
    other = bpy.data.objects.new("Plain", bpy.data.meshes.new("Plain"))  # not a result: ignored
    sliders.prewarm([ob, other])
    pid = server_of(ob).pid
    assert [p.pid for p in process.live_processes()] == [pid]
    server_of(ob).wait_ready()
    before = len(ob.data.vertices)
    api.update_result(ob, resolution=64)
    assert server_of(ob).pid == pid and len(ob.data.vertices) > before
    results.remove_object_and_mesh(ob)
    bpy.context.view_layer.update()
    assert len(sliders.POOL) == 0
    assert_gone(pid)


@pytest.mark.slow
def test_deleting_the_result_ends_its_server(blender, tmp_path, suzanne_run):
    ob = make_result(suzanne_run, tmp_path / "job")
    api.update_result(ob, threshold=0.4)
    pid = server_of(ob).pid
    assert [p.pid for p in process.live_processes()] == [pid]
    results.remove_object_and_mesh(ob)
    bpy.context.view_layer.update()  # depsgraph_update_post: the add-on looks for results still needing it
    assert len(sliders.POOL) == 0 and process.live_processes() == []
    assert_gone(pid)


@pytest.mark.slow
def test_unregistering_ends_the_servers(blender, tmp_path, suzanne_run):
    ob = make_result(suzanne_run, tmp_path / "job")
    api.update_result(ob, threshold=0.4)
    pid = server_of(ob).pid
    blender_addon.unregister()
    try:
        assert process.live_processes() == []
        assert_gone(pid)
    finally:
        blender_addon.register()  # the fixture unregisters at the end


@pytest.mark.slow
def test_saving_and_reopening_the_blend_restarts_the_server(blender, tmp_path, suzanne_run):
    ob = make_result(suzanne_run, tmp_path / "job")
    api.update_result(ob, resolution=64, threshold=0.35)
    vertices = len(ob.data.vertices)
    pid = server_of(ob).pid
    path = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.open_mainfile(filepath=str(path))  # load_pre ends the server
    assert len(sliders.POOL) == 0
    assert_gone(pid)
    ob = bpy.data.objects["Suzanne OccNet"]
    assert ob.occnet_live.resolution == "64" and ob.occnet_live.threshold == pytest.approx(0.35)
    assert len(ob.data.vertices) == vertices
    api.update_result(ob, threshold=0.6)
    assert server_of(ob).pid != pid and len(ob.data.vertices) != vertices
    assert ob.occnet_live.threshold == pytest.approx(0.6) and orphan_meshes() == []


@pytest.mark.slow
def test_bad_weights_are_a_clear_error_and_the_object_is_unchanged(blender, tmp_path, suzanne_run):
    ob = make_result(suzanne_run, tmp_path / "job")
    before = arrays(ob)[0].copy()
    with pytest.raises(OccNetError, match=r"could not update 'Suzanne OccNet': 'weights' must be a list of 1 finite"):
        api.update_result(ob, weights=[0.5, 0.5])
    np.testing.assert_array_equal(arrays(ob)[0], before)
    assert ob.occnet_live.threshold == pytest.approx(0.5)
    api.update_result(ob, weights=[1.0], threshold=0.45)  # the server survived the bad request
    assert sliders.status(ob).state == "ok"


@pytest.mark.slow
def test_a_server_that_cannot_start_is_a_clear_error(blender, tmp_path, suzanne_run):
    broken = tmp_path / "broken" / "checkpoint.pt"
    broken.parent.mkdir()
    broken.write_bytes(b"not a checkpoint")
    ob = make_result((broken, suzanne_run[1]), tmp_path / "job")
    with pytest.raises(OccNetError, match=r"slider server for .*checkpoint.pt failed: .*Full log: .*serve.log") as info:
        api.update_result(ob, threshold=0.4)
    assert str(broken) in str(info.value)
    assert process.live_processes() == [] or all(p.returncode is not None for p in process.live_processes())
    # The UI path shows the same in the panel's status instead of raising.
    ob.occnet_live.threshold = 0.3
    sliders._DEBOUNCE.pending[ob.session_uid] -= 1.0
    drain_ui()
    st = sliders.status(ob)
    assert st.state == "error" and "slider server" in st.message, st


EXIT_SCRIPT = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
os.environ["OCCNET_PYTHON"] = sys.executable
import bpy, blender_addon
from blender_addon.blender import api, results, sliders
bpy.ops.wm.read_factory_settings(use_empty=True)
blender_addon.register()
spec = results.ResultSpec(shape_id="Suzanne", sources=["Suzanne"], path=sys.argv[3], checkpoint=sys.argv[2],
                          job_dir=sys.argv[4], shape_ids=["Suzanne"])
(ob,) = results.import_results(bpy.context.scene, [spec])
api.update_result(ob, threshold=0.4)
print("server", sliders.POOL.find(sys.argv[2]).pid, flush=True)
if sys.argv[5] == "crash":
    os.kill(os.getpid(), signal.SIGKILL)  # no atexit: the server must notice EOF on its stdin
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["exit", "crash"])
def test_the_server_ends_with_blender(tmp_path, suzanne_run, how):
    """A normal exit ends it through atexit; a crash (SIGKILL, no atexit) through EOF on its stdin."""
    checkpoint, mesh = suzanne_run
    script = tmp_path / "exit.py"
    script.write_text(EXIT_SCRIPT)
    (tmp_path / "job").mkdir()
    out = subprocess.run([sys.executable, str(script), str(ROOT), str(checkpoint), str(mesh), str(tmp_path / "job"), how],
                         capture_output=True, text=True, timeout=300)
    pids = [int(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("server ")]
    assert pids, out.stdout + out.stderr
    assert out.returncode == (-9 if how == "crash" else 0), out.stderr[-2000:]
    assert_gone(pids[0], timeout=20)


# --------------------------------------------------------------------------------------------
# Several shapes: one model, weights over the learned codes
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_shape_run(tmp_path_factory, suzanne):
    """(checkpoint, {shape id: the fit's mesh PLY}) of one tiny model of Suzanne and a torus."""
    trimesh = pytest.importorskip("trimesh")
    folder = tmp_path_factory.mktemp("two_shape_run")
    vertices, faces = suzanne
    ply.write_ply(folder / "Suzanne.ply", vertices + [-2.0, 0.0, 0.0], faces)
    torus = trimesh.creation.torus(1.0, 0.3)
    ply.write_ply(folder / "Torus.ply", torus.vertices + [2.0, 0.0, 0.0], torus.faces)
    argv = [sys.executable, "-m", "occnet_backend", "fit", str(folder / "Suzanne.ply"), str(folder / "Torus.ply"),
            "--out", str(folder / "out")]
    for name, value in dict(TINY, steps=300).items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:  # the conditional model is still being built by the backend's side
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"a two-shape fit does not work in the backend yet: {last}")
    out = folder / "out"
    return out / "checkpoint.pt", {s: out / "meshes" / f"{s}.ply" for s in ("Suzanne", "Torus")}


@pytest.mark.slow
def test_shape_weights_reproduce_a_shape_and_blend_to_a_closed_mesh(blender, tmp_path, two_shape_run):
    from occnet_backend.metrics import iou, mesh_occupancy

    trimesh = pytest.importorskip("trimesh")
    checkpoint, meshes = two_shape_run
    ids = ["Suzanne", "Torus"]
    specs = [results.ResultSpec(shape_id=s, sources=[s], path=str(meshes[s]), checkpoint=str(checkpoint),
                                job_dir=str(tmp_path), shape_ids=ids, settings={"resolution": 32, "threshold": 0.5})
             for s in ids]
    a, b = results.import_results(bpy.context.scene, specs)
    assert len(a.occnet_live.weights) == 2 and (a.occnet_live.morph_a, a.occnet_live.morph_b) == ("Suzanne", "Torus")
    assert sliders.current_values(b)["weights"] == [0.0, 1.0]

    own = arrays(api.update_result(a, resolution=64))  # the default: A's own one-hot weights
    server = server_of(a)
    rid = server.send("extract", resolution=64, threshold=0.5, shape="Suzanne")
    response = server.wait(rid, 300)
    assert response["ok"], response
    ref_v, ref_f = ply.read_ply(response["path"])  # A's own extraction, asked by shape id
    points = np.random.default_rng(0).uniform(ref_v.min(0) - 0.1, ref_v.max(0) + 0.1, (50_000, 3))
    api.update_result(a, weights=[1.0, 0.0])
    assert iou(mesh_occupancy(*arrays(a), points), mesh_occupancy(ref_v, ref_f, points)) >= 0.95
    assert iou(mesh_occupancy(*own, points), mesh_occupancy(ref_v, ref_f, points)) >= 0.95
    api.update_result(b, resolution=64)
    assert len(sliders.POOL) == 1, "the results of one run share one server"

    api.update_result(a, weights=[0.5, 0.5])
    half = trimesh.Trimesh(*arrays(a), process=True)
    assert half.is_watertight and half.volume > 0

    # The A <-> B morph slider, through the UI path.
    a.occnet_live.morph = 1.0
    assert [w.value for w in a.occnet_live.weights] == [0.0, 1.0]
    drain_ui()
    assert sliders.status(a).state == "ok" and orphan_meshes() == []
    lo, hi = arrays(a)[0].min(0), arrays(a)[0].max(0)
    np.testing.assert_allclose((lo + hi) / 2, [2.0, 0.0, 0.0], atol=0.5)  # where the torus is


# --------------------------------------------------------------------------------------------
# The panel section (drawn into a real UILayout, as tests/test_addon_ui.py does)
# --------------------------------------------------------------------------------------------

PANEL_SCRIPT = """
import os, sys, traceback
sys.path.insert(0, sys.argv[1])
os.environ["XDG_CACHE_HOME"] = sys.argv[2]
import bpy, addon_utils
import numpy as np
bpy.ops.wm.read_factory_settings(use_empty=True)
assert addon_utils.enable("blender_addon", default_set=True) is not None
from blender_addon.blender import panel, results, sliders
from blender_addon.occnet_contract import ply

def draw(layout, context, state):
    cls = panel.OCCNET_PT_live
    assert cls.poll(context), state
    holder = type("Holder", (), {k: v for k, v in vars(cls).items() if callable(v)})()
    holder.layout = layout
    cls.draw(holder, context)
    print("drawn:", state, flush=True)

def states(layout, context):
    bpy.ops.mesh.primitive_cube_add()
    assert not panel.OCCNET_PT_live.poll(context)
    path = os.path.join(sys.argv[2], "t.ply")
    ply.write_ply(path, np.eye(3, dtype=np.float32), np.array([[0, 1, 2]]))
    specs = [results.ResultSpec(shape_id=s, sources=[s], path=path, checkpoint="/nowhere/checkpoint.pt",
                                shape_ids=["A", "B"]) for s in ("A", "B")]
    a, b = results.import_results(context.scene, specs)
    context.view_layer.objects.active = a
    draw(layout, context, "two shapes")
    sliders.status(a).state, sliders.status(a).message = "error", "The slider server failed: " + "word " * 30
    draw(layout, context, "error")
    sliders.status(a).state, sliders.status(a).message = "ok", "1,234 vertices in 0.12 s"
    draw(layout, context, "ok")
    sliders.status(a).state = "updating"
    draw(layout, context, "updating")
    a.occnet_live.ready = False
    draw(layout, context, "not set up")

def callback(self, context):
    try:
        states(self.layout, context)
        print("ALL DRAWN", flush=True)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        os._exit(0)

bpy.context.window_manager.popup_menu(callback, title="OccNet")
"""


def test_live_panel_draws_for_a_result_in_every_state(tmp_path):
    script = tmp_path / "draw.py"
    script.write_text(PANEL_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(ROOT), str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert "Traceback" not in text, text
    for state in ("two shapes", "error", "ok", "updating", "not set up"):
        assert f"drawn: {state}" in out.stdout, text
    assert "ALL DRAWN" in out.stdout
