"""Real-window scenarios, run *inside* a windowed Blender by ``tests/gui/run.py``.

Blender's event loop runs throughout: every scenario is a generator driven by a
``bpy.app.timers`` callback, and each ``yield`` gives the loop back (``yield 0.5`` waits half a
second, ``yield until(condition, seconds, what)`` waits for a condition). Reconstruct is pressed
with a real xdotool click and ESC with a real key press, so the modal operator, its TIMER events
and the sidebar drawing are the ones a user gets. Failures are injected by wrapping the add-on's
functions from here.

``OCCNET_GUI_SESSION`` picks the scenario list: ``main`` (a fresh scene, ends by saving it) or
``reopen`` (opens what ``main`` saved). Results go to ``$OCCNET_GUI_OUT/report-<session>.json``,
screenshots to ``$OCCNET_GUI_OUT/<nn>_<name>.png``.
"""

from __future__ import annotations

import importlib
import json
import os
import time
import traceback
from pathlib import Path

import bpy
import real_blender as rb

OUT = Path(os.environ["OCCNET_GUI_OUT"])
SESSION = os.environ.get("OCCNET_GUI_SESSION", "main")
BLEND = OUT / "scene.blend"
ADDON = "bl_ext.user_default.occnet"

# Positions on the default 1600x1000 screen with the default layout (factory settings): the
# sidebar's OccNet tab, and buttons measured from this harness's screenshots. The scenarios
# check that each click did what it should, so a layout change fails loudly, never silently.
SIDEBAR_TAB = (1308, 251)
RECONSTRUCT_BUTTON = (1174, 178)  # main panel with one source listed
CANCEL_BUTTON = (1174, 222)  # main panel while a job runs
VIEWPORT = (600, 500)

# Tiny settings: these tests check the plumbing in the real window, not the fit's quality.
TRAIN = dict(steps=150, points=4096, width=64, depth=3, resolution="64")
QUICK = dict(steps=15, points=1024, width=16, depth=1, resolution="32")


def mod(name: str):
    return importlib.import_module(f"{ADDON}.{name}")


class until:
    """``yield until(fn, seconds, what)``: wait for fn() to be true; fail after ``seconds``."""

    def __init__(self, fn, seconds: float, what: str):
        self.fn, self.deadline, self.what = fn, time.monotonic() + seconds, what
        self.seconds = seconds


T0 = time.monotonic()
REPORT: dict = {"session": SESSION, "blender": bpy.app.version_string, "scenarios": []}
SHOTS = [0]


def log(*args) -> None:
    print(f"[gui {time.monotonic() - T0:6.1f}s]", *args, flush=True)


def shot(name: str) -> str:
    SHOTS[0] += 1
    path = OUT / f"{SESSION}-{SHOTS[0]:02d}_{name}.png"
    rb.shot(str(path))
    return path.name


def click(x: int, y: int) -> None:
    """Hover, then press and release, while Blender's loop runs (xdotool in the background)."""
    rb.xdotool("mousemove", x - 3, y - 2, "sleep", "0.3", "mousemove", x, y, "sleep", "0.3",
               "mousedown", "1", "sleep", "0.15", "mouseup", "1", wait=False)


def key(name: str, at=VIEWPORT) -> None:
    rb.xdotool("mousemove", *at, "sleep", "0.3", "key", name, wait=False)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


# ---- scene helpers ------------------------------------------------------------------------------

def scene_state() -> dict:
    return {
        "objects": sorted(ob.name for ob in bpy.data.objects),
        "meshes": sorted(me.name for me in bpy.data.meshes),
        "collections": sorted(c.name for c in bpy.data.collections),
        "hidden": sorted(ob.name for ob in bpy.context.view_layer.objects if ob.hide_get()),
    }


def select_only(*objects) -> None:
    for ob in bpy.context.view_layer.objects:
        ob.select_set(False)
    for ob in objects:
        ob.hide_set(False)
        ob.select_set(True)
    bpy.context.view_layer.objects.active = objects[0] if objects else None


def apply_settings(values: dict) -> None:
    settings = bpy.context.scene.occnet
    for name, value in values.items():
        setattr(settings, name, value)


def fit_pids() -> list[int]:
    """The add-on's live training processes (slider servers, which stay up for the sliders, excluded)."""
    servers = {server.pid for server in mod("blender.sliders").POOL}
    return [p.pid for p in mod("runner.process").live_processes() if p.pid not in servers]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def status():
    return bpy.context.window_manager.occnet_status


def reconstruct_usable() -> bool:
    with bpy.context.temp_override(**rb.override()):
        return bool(bpy.ops.occnet.reconstruct.poll())


def invoke_reconstruct() -> set:
    with bpy.context.temp_override(**rb.override()):
        return bpy.ops.occnet.reconstruct("INVOKE_DEFAULT")


DRAWN: list[dict] = []  # what the running panel drew (recorded by a wrapper around its draw)


def record_panel_draws() -> None:
    panel = mod("blender.panel")
    original = panel.OCCNET_PT_main._draw_running
    if getattr(original, "_recorded", False):
        return

    def recorded(self, layout, job):
        st = job.state
        DRAWN.append({"phase": st.phase, "text": st.phase_text, "step": st.step, "loss": st.loss, "eta": st.eta_s})
        return original(self, layout, job)

    recorded._recorded = True
    panel.OCCNET_PT_main._draw_running = recorded


class patched:
    """Replaces module.attr for the duration of a with-block."""

    def __init__(self, owner, name, value):
        self.owner, self.name, self.value = owner, name, value

    def __enter__(self):
        self.old = getattr(self.owner, self.name)
        setattr(self.owner, self.name, self.value)
        return self

    def __exit__(self, *exc):
        setattr(self.owner, self.name, self.old)


# ---- scenarios: session "main" -----------------------------------------------------------------

def s_check_backend():
    with bpy.context.temp_override(**rb.override()):
        bpy.ops.occnet.check_backend()
    prefs = mod("blender.preferences").prefs_struct()
    check(prefs.check_result.startswith("Backend ready."), f"Check Backend: {prefs.check_result!r}")
    log("check backend:", prefs.check_result.replace("\n", " | "))
    yield 0.1


def s_reconstruct_by_click():
    record_panel_draws()
    scene = bpy.context.scene
    with bpy.context.temp_override(**rb.override()):
        for ob in list(scene.objects):
            if ob.type == "MESH":
                bpy.data.objects.remove(ob, do_unlink=True)
        bpy.ops.mesh.primitive_monkey_add(location=(2.0, 1.0, 0.5), rotation=(0.3, 0.0, 0.6))
        rb.override()["area"].spaces.active.show_region_ui = True
    suzanne = bpy.context.active_object
    apply_settings(TRAIN)
    yield 0.5
    click(*SIDEBAR_TAB)
    yield 2.0
    shot("before_reconstruct")
    check(reconstruct_usable(), "Reconstruct is disabled with Suzanne selected")
    click(*RECONSTRUCT_BUTTON)
    jobs = mod("blender.jobs")
    yield until(lambda: jobs.active_job() is not None, 8, "a job after clicking Reconstruct")
    check(not reconstruct_usable(), "Reconstruct stays enabled while a job runs")
    drew_training = lambda: any(d["phase"] == "training" and d["step"] > 0 for d in DRAWN)  # noqa: E731
    yield until(lambda: drew_training() or jobs.active_job() is None, 120, "the running panel drawing training progress")
    check(drew_training(), f"the job ended before the panel drew training progress: {status().message!r}")
    preview = bpy.data.objects.get("Suzanne OccNet (preview)")
    check(preview is not None and preview.display_type == "WIRE" and len(preview.data.polygons) > 100,
          "no wireframe preview 'Suzanne OccNet (preview)' while the network trains")
    check((preview.location - suzanne.matrix_world.translation).length < 1e-5, "the preview is not over its source")
    REPORT["preview_faces"] = len(preview.data.polygons)
    yield 1.0
    shot("training")
    yield until(lambda: jobs.active_job() is None, 300, "the reconstruction to end")
    yield 0.5
    shot("result")
    st = status()
    check(not st.is_error, f"the run failed: {st.message}")
    check("IoU" in st.message and "watertight" in st.message, f"the done message lacks the evaluation: {st.message!r}")
    coll = bpy.data.collections.get("OccNet Results")
    check(coll is not None and "Suzanne OccNet" in coll.objects, "no 'Suzanne OccNet' in 'OccNet Results'")
    result = coll.objects["Suzanne OccNet"]
    check(bpy.context.view_layer.objects.active == result and result.select_get(), "the result is not selected and active")
    check(suzanne.hide_get() and not suzanne.select_get(), "the source is still shown or selected")
    check(not [ob.name for ob in bpy.data.objects if ob.name.endswith("(preview)")], "the preview is left after the result")
    check((result.location - suzanne.matrix_world.translation).length < 1e-5,
          f"the result's origin {tuple(result.location)} is not the source's {tuple(suzanne.matrix_world.translation)}")
    phases = [d["text"] for d in DRAWN]
    check(any(t.startswith("Preparing") for t in phases) or any(t.startswith("Starting") for t in phases),
          f"the panel never said it was preparing: {sorted(set(phases))[:8]}")
    check(all(not t.startswith("Step 0 ") for t in phases if t), "the panel showed 'Step 0' before training ran")
    check(not [p for p in fit_pids() if alive(p)], "a backend process is left after the run")
    REPORT["done_message"] = st.message
    REPORT["panel_texts"] = sorted(set(phases))
    log("result:", st.message)


def s_live_threshold_and_resolution():
    sliders = mod("blender.sliders")
    result = bpy.data.objects.get("Suzanne OccNet")
    check(result is not None, "no result to move the sliders of")
    faces0 = len(result.data.polygons)
    with bpy.context.temp_override(**rb.override()):
        result.occnet_live.threshold = 0.3  # an RNA set, as the slider does
    yield until(lambda: sliders.status(result).state == "ok" and abs(sliders.status(result).stats.get("threshold", 0) - 0.3) < 1e-3,
                120, "the threshold update")
    faces1 = len(result.data.polygons)
    check(faces1 != faces0, f"the mesh did not change at threshold 0.3 ({faces0} faces)")
    result.occnet_live.resolution = "32"
    yield until(lambda: sliders.status(result).state == "ok" and sliders.status(result).stats.get("resolution") == 32,
                120, "the resolution update")
    faces2 = len(result.data.polygons)
    check(faces2 < faces1, f"32³ has no fewer faces than 64³ ({faces2} vs {faces1})")
    yield 1.0
    shot("sliders")
    log(f"sliders: faces {faces0} -> {faces1} (threshold 0.3) -> {faces2} (32³)")


def _closed(ob) -> bool:
    """Every edge of the object's mesh has exactly two faces (a closed surface)."""
    import bmesh

    bm = bmesh.new()
    try:
        bm.from_mesh(ob.data)
        return len(bm.faces) > 0 and all(len(e.link_faces) == 2 for e in bm.edges)
    finally:
        bm.free()


def _volume(ob) -> float:
    """The volume the object's mesh encloses (in its own coordinates)."""
    import bmesh

    bm = bmesh.new()
    try:
        bm.from_mesh(ob.data)
        return bm.calc_volume(signed=False)
    finally:
        bm.free()


def s_two_shapes_and_morph():
    """Two selected objects train one model; the result's morph slider, moved as a user moves it,
    gives a closed half-way surface of about the shapes' mean volume, and the slider server answers from the shapes'
    cached grid nodes (it starts from the grids the fit evaluated, `warm_grids`): the next step evaluates no more than
    the first blend did."""
    jobs, sliders = mod("blender.jobs"), mod("blender.sliders")
    with bpy.context.temp_override(**rb.override()):
        bpy.ops.mesh.primitive_torus_add(location=(-3.0, 0.0, 0.0))
        torus = bpy.context.active_object
        bpy.ops.mesh.primitive_cone_add(location=(-3.0, 3.0, 0.0))
        cone = bpy.context.active_object
    select_only(torus, cone)
    apply_settings(TRAIN)
    yield 0.5
    check(invoke_reconstruct() == {"RUNNING_MODAL"}, "Reconstruct of two objects did not start modally")
    yield until(lambda: jobs.active_job() is None, 300, "the two-shape reconstruction to end")
    check(not status().is_error, f"the two-shape run failed: {status().message}")
    result = bpy.data.objects.get("Torus OccNet")
    check(result is not None and bpy.data.objects.get("Cone OccNet") is not None, "no 'Torus OccNet' and 'Cone OccNet'")
    select_only(result)
    live = sliders.ensure_live(result)
    check(len(live.weights) == 2 and live.morph_a == "Torus" and live.morph_b == "Cone",
          f"the morph is not Torus -> Cone: {[w.name for w in live.weights]}, {live.morph_a} -> {live.morph_b}")
    ends = [_volume(result), _volume(bpy.data.objects["Cone OccNet"])]
    evaluations, serve_seconds = [], []  # the latter: in `serve`, without starting it or Blender's own work
    for t in (0.5, 0.6):
        live.morph = t  # an RNA set, as the slider does
        yield until(lambda: sliders.status(result).state == "ok" and abs(live.weights["Cone"].value - t) < 1e-6
                    and sliders.status(result).stats.get("evaluations") is not None, 120, f"the morph update to {t}")
        yield 0.3
        check(_closed(result), f"the surface at morph {t} is not closed")
        evaluations.append(sliders.status(result).stats["evaluations"])
        serve_seconds.append(round(sliders.status(result).stats.get("total_seconds", -1.0), 3))
        if t == 0.5:
            shot("morph_half_way")
            check(sliders.blend_description(result), "the panel does not say the object shows a blend")
            # the torus and the cone overlap little: a plain blend of their fields all but vanishes half-way
            half = _volume(result)
            check(half > 0.5 * min(ends), f"the half-way morph encloses {half:.3f}, the shapes {ends[0]:.3f} and {ends[1]:.3f}")
            REPORT["morph_volumes"] = [ends[0], half, ends[1]]
    check(evaluations[1] <= evaluations[0], f"the morph step did not reuse the cached nodes: {evaluations}")
    REPORT["morph_evaluations"], REPORT["morph_serve_seconds"] = evaluations, serve_seconds
    log(f"morph: evaluations {evaluations}, seconds in serve {serve_seconds}, {sliders.status(result).message}")


def _start_then(stop, name: str):
    """Starts a run on Suzanne, waits for training, calls stop(), checks a clean cancel."""
    jobs = mod("blender.jobs")
    suzanne = bpy.data.objects["Suzanne"]
    select_only(suzanne)
    apply_settings({**TRAIN, "steps": 2000})
    before = scene_state()
    yield 0.5
    check(invoke_reconstruct() == {"RUNNING_MODAL"}, "Reconstruct did not start modally")
    job = jobs.active_job()
    check(job is not None, "no active job")
    yield until(lambda: (job.state.phase == "training" and job.state.step > 0) or jobs.active_job() is None, 120,
                "training to start")
    check(jobs.active_job() is job, f"the job ended before training: {status().message!r}")
    pid = job.process.pid
    job_dir = job.job_dir
    yield 0.5
    shot(f"{name}_running")
    stop()
    yield until(lambda: jobs.active_job() is None, 60, f"the job to end after {name}")
    yield 0.5
    shot(f"{name}_cancelled")
    check(scene_state() == before, f"the scene changed: {before} -> {scene_state()}")
    check(not alive(pid), f"the backend {pid} is still running after {name}")
    check(not fit_pids(), "a backend is still tracked")
    check("cancelled" in status().message.lower(), f"status after {name}: {status().message!r}")
    check(not job_dir.exists(), f"the cancelled job's folder {job_dir} is left behind")
    check(reconstruct_usable(), f"Reconstruct is not usable after {name}")


def s_escape_cancels():
    yield from _start_then(lambda: key("Escape"), "escape")


def s_cancel_button():
    yield from _start_then(lambda: click(*CANCEL_BUTTON), "cancel_button")


def _inject(point: str, make_patch):
    """A run whose modal path raises at ``point``: afterwards no timer, no process, a message
    with the log's path, the scene unchanged, Reconstruct usable."""
    jobs = mod("blender.jobs")
    suzanne = bpy.data.objects["Suzanne"]
    select_only(suzanne)
    apply_settings(QUICK)
    before = scene_state()
    started: list = []
    with make_patch(started):
        try:
            result = invoke_reconstruct()
        except RuntimeError as err:  # an ERROR report from invoke itself reaches the caller so
            check("injected" in str(err), f"invoke raised {err}")
            result = {"CANCELLED"}
        yield until(lambda: jobs.active_job() is None, 180, f"the job to end after a failure in {point}")
    yield 0.3
    st = status()
    check(result in ({"RUNNING_MODAL"}, {"CANCELLED"}), f"invoke returned {result}")
    check(st.is_error and "injected" in st.message, f"{point}: the status does not show the error: {st.message!r}")
    check(bool(st.log_path) and Path(st.log_path).name == "backend.log", f"{point}: no log path in the status ({st.log_path!r})")
    for pid in started:
        check(not alive(pid), f"{point}: the backend {pid} is still running")
    check(not fit_pids(), f"{point}: a backend is still tracked")
    check(scene_state() == before, f"{point}: the scene changed")
    check(reconstruct_usable(), f"{point}: Reconstruct is not usable afterwards")
    shot(f"failure_in_{point}")
    log(f"failure in {point}: {st.message[:100]}")


def _raiser(point):
    raise RuntimeError(f"injected failure in {point}")


def s_failure_in_invoke():
    jobs = mod("blender.jobs")
    original = jobs.Job.start

    def start(self):
        original(self)
        start.started.append(self.process.pid)
        _raiser("invoke")

    def make(started):
        start.started = started
        return patched(jobs.Job, "start", start)

    yield from _inject("invoke", make)


def s_failure_in_poll():
    jobs = mod("blender.jobs")
    original = jobs.Job.poll

    def poll(self):
        if self.process is not None and self.process.pid not in poll.started:
            poll.started.append(self.process.pid)
        poll.calls += 1
        if poll.calls >= 5:
            _raiser("poll")
        return original(self)

    def make(started):
        poll.started, poll.calls = started, 0
        return patched(jobs.Job, "poll", poll)

    yield from _inject("poll", make)


def s_failure_in_finish():
    jobs = mod("blender.jobs")

    def finish(self):
        finish.started.append(self.process.pid)
        _raiser("finish")

    def make(started):
        finish.started = started
        return patched(jobs.Job, "finish", finish)

    yield from _inject("finish", make)


def s_failure_in_import():
    results = mod("blender.results")

    def import_results(scene, specs):
        _raiser("import")

    yield from _inject("import", lambda started: patched(results, "import_results", import_results))


def s_save_and_quit():
    result = bpy.data.objects.get("Suzanne OccNet")
    check(result is not None, "no result to save")
    REPORT["saved_faces"] = len(result.data.polygons)
    bpy.ops.wm.save_as_mainfile(filepath=str(BLEND))
    check(BLEND.is_file(), "the .blend was not saved")
    yield 0.2


# ---- scenarios: session "reopen" ---------------------------------------------------------------

def s_reopen_and_slide():
    # run.py opened the file on Blender's command line, as double-clicking a .blend does
    check(bpy.data.filepath and Path(bpy.data.filepath).resolve() == BLEND.resolve(), f"{BLEND} is not the open file")
    yield 1.0
    sliders = mod("blender.sliders")
    result = bpy.data.objects.get("Suzanne OccNet")
    check(result is not None and sliders.is_result(result), "the reopened file has no live result")
    select_only(result)
    with bpy.context.temp_override(**rb.override()):
        rb.override()["area"].spaces.active.show_region_ui = True
    faces0 = len(result.data.polygons)
    result.occnet_live.resolution = "64"
    result.occnet_live.threshold = 0.45
    yield until(lambda: sliders.status(result).state == "ok", 120, "the slider update after reopening")
    check(len(result.data.polygons) != faces0, "the mesh did not change after reopening")
    yield 1.0
    shot("reopened_slider")
    log(f"reopened: faces {faces0} -> {len(result.data.polygons)}")


def s_install_backend():
    """An artist with no backend: the sidebar offers Install Backend; pressed (invoked from the
    timer, so Blender's loop runs its modal code), it draws its progress while Blender stays live,
    and lands an environment that Check Backend, run by itself at the end, reports ready."""
    preferences, installer, interpreter = mod("blender.preferences"), mod("runner.installer"), mod("runner.interpreter")
    host_python = os.environ.pop("OCCNET_PYTHON")  # nothing configured: as on an artist's machine
    os.environ["OCCNET_BASE_PYTHON"] = host_python  # Blender 4.3 here runs Python 3.13; build from the host's 3.11
    interpreter.forget_detected()
    drawn: list[str] = []
    original = preferences.draw_installer

    def recorded(layout, context, prefs, hint=False):
        install = installer.active()
        if install is not None:
            drawn.append(install.state.line(install.elapsed))
        return original(layout, context, prefs, hint)

    try:
        with patched(preferences, "draw_installer", recorded):
            status().message = ""  # the previous scenario's injected failure is not this one's business
            select_only()
            with bpy.context.temp_override(**rb.override()):
                rb.override()["area"].spaces.active.show_region_ui = True
            check(preferences.backend_missing(), "a backend was found although none is configured")
            rb.xdotool("mousemove", *VIEWPORT, "sleep", "0.3", "mousemove", VIEWPORT[0] + 40, VIEWPORT[1] + 40,
                       wait=False)  # the previous scenario's error report closes when the pointer moves
            yield 2.0
            shot("install_offered")
            with bpy.context.temp_override(**rb.override()):
                started = bpy.ops.occnet.install_backend("INVOKE_DEFAULT")
            check(started == {"RUNNING_MODAL"}, f"Install Backend did not start: {started}")
            yield until(lambda: any("Collecting" in line for line in drawn), 240, "the installer's progress drawn")
            yield 1.5
            shot("install_progress")
            yield until(lambda: installer.active() is None, 540, "Install Backend to end")
            yield 1.5
            prefs = preferences.prefs_struct()
            check(prefs.check_result.startswith("Backend ready."), f"the automatic check: {prefs.check_result!r}")
            check("installed by Install Backend" in prefs.check_result, f"not the new environment: {prefs.check_result!r}")
            check(status().message.startswith("Installed the backend"), f"the panel says {status().message!r}")
            check(not preferences.backend_missing(), "the panel still offers Install Backend")
            shot("install_done")
            log(f"install: {len(drawn)} progress draws, e.g. {drawn[len(drawn) // 2]!r}; {prefs.check_result!r}")
    finally:
        os.environ["OCCNET_PYTHON"] = host_python
        os.environ.pop("OCCNET_BASE_PYTHON", None)
        interpreter.forget_detected()
        status().message = ""


SESSIONS = {
    "main": [s_check_backend, s_reconstruct_by_click, s_live_threshold_and_resolution, s_two_shapes_and_morph,
             s_escape_cancels,
             s_cancel_button, s_failure_in_invoke, s_failure_in_poll, s_failure_in_finish, s_failure_in_import,
             s_install_backend, s_save_and_quit],
    "reopen": [s_reopen_and_slide],
}


# ---- the driver ---------------------------------------------------------------------------------

class Driver:
    def __init__(self, scenarios):
        self.todo = list(scenarios)
        self.gen = None
        self.wait: until | None = None
        self.current = None
        self.started = 0.0

    def tick(self):
        try:
            return self._tick()
        except Exception:  # the driver itself must never die silently
            traceback.print_exc()
            self.finish()
            return None

    def _tick(self):
        if self.gen is None:
            if not self.todo:
                self.finish()
                return None
            self.current = self.todo.pop(0)
            self.gen, self.wait, self.started = self.current(), None, time.monotonic()
            log("scenario", self.current.__name__)
        try:
            if self.wait is not None:
                if not self.wait.fn():
                    if time.monotonic() > self.wait.deadline:
                        raise TimeoutError(f"no {self.wait.what} within {self.wait.seconds:.0f} s")
                    return 0.2
                self.wait = None
            step = next(self.gen)
        except StopIteration:
            self.record(True, "")
            return 0.1
        except Exception as err:  # noqa: BLE001
            traceback.print_exc()
            self.record(False, f"{type(err).__name__}: {err}")
            try:
                shot(f"FAILED_{self.current.__name__}")
            except Exception:  # noqa: BLE001
                pass
            self.cleanup()
            return 0.5
        if isinstance(step, until):
            self.wait = step
            return 0.2
        return float(step or 0.05)

    def record(self, ok: bool, message: str) -> None:
        name = self.current.__name__
        REPORT["scenarios"].append({"name": name, "ok": ok, "message": message,
                                    "seconds": round(time.monotonic() - self.started, 1)})
        log(("PASS " if ok else "FAIL ") + name, message)
        self.gen = None

    def cleanup(self) -> None:
        """After a failed scenario: nothing running into the next one."""
        try:
            job = mod("blender.jobs").active_job()
            if job is not None:
                job.abort()
        except Exception:  # noqa: BLE001
            traceback.print_exc()

    def finish(self) -> None:
        REPORT["seconds"] = round(time.monotonic() - T0, 1)
        REPORT["shots"] = sorted(p.name for p in OUT.glob(f"{SESSION}-*.png"))
        (OUT / f"report-{SESSION}.json").write_text(json.dumps(REPORT, indent=2))
        ok = bool(REPORT["scenarios"]) and all(s["ok"] for s in REPORT["scenarios"])
        log("all passed" if ok else "FAILED", f"{REPORT['seconds']} s")
        rb.exit(0 if ok else 1)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    if ADDON not in bpy.context.preferences.addons:
        REPORT["scenarios"].append({"name": "setup", "ok": False, "message": f"{ADDON} is not enabled"})
        (OUT / f"report-{SESSION}.json").write_text(json.dumps(REPORT, indent=2))
        rb.exit(1)
        return
    bpy.context.preferences.view.use_save_prompt = False
    driver = Driver(SESSIONS[SESSION])
    # persistent: a scenario that loads a file must not end the driver (timers die with the file)
    bpy.app.timers.register(driver.tick, first_interval=1.0, persistent=True)


main()
