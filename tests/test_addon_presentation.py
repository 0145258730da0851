"""What an artist sees around a run, in real bpy (5.0.1, background): results selected and active
with their sources hidden, origins at the sources' origins, results refused as sources, weights
that show the blend they make with the Morph slider following, the done message, wrapped text,
job folder clean-up, and refusal to enable where the add-on could only fail later.

The same behaviours in Blender's real event loop: tests/gui (make gui-test).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

import blender_addon  # noqa: E402
from blender_addon.blender import export, jobs, results, sliders, ui  # noqa: E402
from blender_addon.runner import interpreter, process, jobstate  # noqa: E402
from blender_addon.occnet_contract import ply  # noqa: E402
from blender_addon.occnet_contract.settings import FitSettings  # noqa: E402
from blender_addon.runner.errors import OccNetError  # noqa: E402


def fake_result(tmp_path: Path, source: str, shape_id: str, shape_ids: list[str], job_dir: str = "/x") -> "bpy.types.Object":
    path = tmp_path / f"{shape_id}.ply"
    src = bpy.data.objects[source]
    offset = np.array(src.matrix_world.translation)
    ply.write_ply(path, (np.eye(3) + offset).astype(np.float32), np.array([[0, 1, 2]]))
    spec = results.ResultSpec(shape_id=shape_id, sources=[source], path=str(path), checkpoint="/x/checkpoint.pt",
                              job_dir=job_dir, shape_ids=shape_ids, metrics={"iou": 0.9})
    (ob,) = results.import_results(bpy.context.scene, [spec])
    return ob


def test_results_become_the_selection_and_sources_hide(blender, tmp_path):
    bpy.ops.mesh.primitive_monkey_add(location=(3, -1, 2))
    suzanne = bpy.context.active_object
    ob = fake_result(tmp_path, "Suzanne", "Suzanne", ["Suzanne"])
    assert tuple(ob.location) == pytest.approx((3, -1, 2)), "the result's origin is not its source's"
    v = np.empty(9, dtype=np.float32)
    ob.data.vertices.foreach_get("co", v)
    assert np.allclose(v.reshape(3, 3), np.eye(3), atol=1e-6), "the mesh did not move by the origin's offset"
    results.present(bpy.context, [ob])
    assert bpy.context.view_layer.objects.active == ob and ob.select_get()
    assert suzanne.hide_get() and not suzanne.select_get()
    # the option off: sources stay visible
    suzanne.hide_set(False)
    bpy.context.scene.occnet.hide_sources = False
    results.present(bpy.context, [ob])
    assert not suzanne.hide_get()


def test_a_live_update_keeps_the_place_of_a_moved_result(blender, tmp_path):
    bpy.ops.mesh.primitive_cube_add(location=(1, 2, 3))
    ob = fake_result(tmp_path, "Cube", "Cube", ["Cube"])
    ob.location = (10, 0, 0)  # the user moved the result
    world = (np.eye(3) + [1, 2, 3]).astype(np.float32)  # what serve answers: world space of the run
    results.replace_mesh(ob, world, np.array([[0, 1, 2]]))
    v = np.empty(9, dtype=np.float32)
    ob.data.vertices.foreach_get("co", v)
    assert np.allclose(v.reshape(3, 3), np.eye(3), atol=1e-6)


def test_a_result_is_not_a_source_and_reconstruct_needs_a_selection(blender, tmp_path):
    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.active_object
    ob = fake_result(tmp_path, "Cube", "Cube", ["Cube"])
    assert export.usable_sources([cube, ob]) == [cube]
    with pytest.raises(OccNetError, match=r"'Cube OccNet' is an OccNet result \(reconstruct its source instead\)"):
        export.select_sources([ob])
    for o in bpy.context.view_layer.objects:
        o.select_set(False)
    assert not bpy.ops.occnet.reconstruct.poll()
    ob.select_set(True)
    assert not bpy.ops.occnet.reconstruct.poll()
    with pytest.raises(RuntimeError, match="is an OccNet result"):
        bpy.ops.occnet.reconstruct("EXEC_DEFAULT")
    cube.select_set(True)
    assert bpy.ops.occnet.reconstruct.poll()


def test_weights_always_sum_to_one_and_the_morph_follows(blender, tmp_path):
    bpy.ops.mesh.primitive_cube_add()
    ob = fake_result(tmp_path, "Cube", "A", ["A", "B", "C"])
    props = ob.occnet_live
    assert (props.morph_a, props.morph_b) == ("A", "B")
    props.weights["A"].value = 0.3  # the user drags A's weight: B and C share the rest evenly (both were 0)
    assert [round(w.value, 4) for w in props.weights] == [0.3, 0.35, 0.35]
    props.weights["C"].value = 0.0  # C off: A and B keep their proportion, and the morph A->B shows it
    assert [round(w.value, 4) for w in props.weights] == [round(0.3 / 0.65, 4), round(0.35 / 0.65, 4), 0.0]
    assert props.morph == pytest.approx(0.35 / 0.65, abs=1e-4)
    assert "46% 'A', 54% 'B'" in sliders.blend_description(ob)
    props.morph = 0.0
    assert [w.value for w in props.weights] == [1.0, 0.0, 0.0] and sliders.blend_description(ob) == ""
    sliders.shutdown()


def test_done_message_reports_the_evaluation_not_the_batch():
    state = jobstate.JobState(total=10)
    state.apply({"event": "progress", "step": 10, "total": 10, "loss": 0.2, "iou": 0.853})
    state.apply({"event": "metrics", "shape_id": "Suzanne", "iou": 0.9661, "chamfer_l1": 0.00312, "watertight": True})
    assert state.evaluation_line(["Suzanne"]) == "IoU 0.966, Chamfer-L1 0.0031, watertight"
    state.apply({"event": "metrics", "shape_id": "Torus", "iou": 0.9, "chamfer_l1": 0.005, "watertight": False})
    assert state.evaluation_line(["Suzanne", "Torus"]) == "mean IoU 0.933, Chamfer-L1 0.0041, 1/2 watertight"


def test_progress_text_says_what_the_backend_is_doing():
    state = jobstate.JobState(total=150)
    assert state.phase_text == "Starting the backend..."
    state.apply({"event": "stage", "name": "prepare"})
    assert state.phase_text.startswith("Preparing data")
    state.apply({"event": "start", "device": "cpu", "total_steps": 150})
    assert state.phase_text == "Starting training..."  # never "Step 0 / 150" for half a minute
    state.apply({"event": "progress", "step": 3, "total": 150, "eta_s": float("nan")})
    assert state.phase_text == "Step 3 / 150" and state.eta_s is None
    assert jobstate.format_seconds(float("inf")) == "-"


def test_wrapped_messages_keep_quoted_names_whole():
    text = "Reconstructed 'Suzanne OccNet', 'Torus OccNet': mean IoU 0.933 and it doesn't stop here"
    for width in range(12, 60):
        lines = ui.wrap(text, width)
        joined = " ".join(lines)
        assert joined == text
        assert all(line.count("'") % 2 == 0 for line in lines if "doesn't" not in line), lines


def _job_folder(root: Path, name: str, outcome: str, age_s: float = 0.0) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "output").mkdir()
    (folder / "output" / "checkpoint.pt").write_bytes(b"x" * 1000)
    (folder / jobs.JOB_RECORD).write_text(json.dumps({"outcome": outcome}))
    stamp = time.time() - age_s
    for path in (folder / jobs.JOB_RECORD, folder):
        os.utime(path, (stamp, stamp))
    return folder


def test_job_folders_are_cleaned_but_never_one_a_result_needs(blender, tmp_path):
    root = tmp_path / "jobs"
    cancelled = _job_folder(root, "c", "cancelled", 50)
    failed = [_job_folder(root, f"f{i}", "error", 40 - i) for i in range(jobs.KEEP_FAILED + 2)]
    done = _job_folder(root, "ok", "ok", 30)
    running = _job_folder(root, "run", "running", 20)
    stale = _job_folder(root, "stale", "running", jobs.STALE_RUNNING_S + 60)
    needed = _job_folder(root, "needed", "ok", 10)
    bpy.ops.mesh.primitive_cube_add()
    fake_result(tmp_path, "Cube", "Cube", ["Cube"], job_dir=str(needed))
    removed = jobs.prune_job_folders(root)
    assert not cancelled.exists() and not stale.exists()
    assert [f.exists() for f in failed] == [False, False] + [True] * jobs.KEEP_FAILED  # the newest kept
    assert done.exists() and running.exists() and needed.exists()
    assert len(removed) == 4
    count, freed = jobs.clean_job_folders(root)
    assert (count, freed > 0) == (jobs.KEEP_FAILED + 1, True)
    assert sorted(p.name for p in jobs.job_folders(root)) == ["needed", "run"]


def test_enabling_is_refused_where_the_add_on_could_only_fail_later():
    with pytest.raises(RuntimeError, match=r"needs Blender 4\.2\.0 or newer; this is Blender 3\.4\.1"):
        blender_addon._check_host(version=(3, 4, 1), version_string="3.4.1")
    with pytest.raises(RuntimeError, match="needs numpy in Blender's own Python.*python3-numpy"):
        blender_addon._check_host(numpy_found=False)
    blender_addon._check_host()  # this bpy: fine


def test_the_api_names_a_setting_of_the_wrong_type(blender, tmp_path):
    from blender_addon.blender import api

    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.active_object
    for kwargs, message in (({"steps": "abc"}, "--steps must be a whole number, got 'abc'"),
                            ({"steps": 2.5}, "--steps must be a whole number, got 2.5"),
                            ({"threshold": "x"}, "--threshold must be a number, got 'x'"),
                            ({"points": True}, "--points must be a whole number, got True"),
                            ({"stepz": 3}, "reconstruct() has no setting 'stepz'; the settings are steps, points")):
        with pytest.raises(OccNetError, match=re.escape(message)):
            api.reconstruct([cube], verbose=False, **kwargs)
    ob = fake_result(tmp_path, "Cube", "Cube", ["Cube"])
    for kwargs, message in (({"threshold": "abc"}, "threshold must be a number between 0.01 and 0.99 (got 'abc')"),
                            ({"resolution": "big"}, "resolution must be one of 32, 64, 128, 256, 512 (got 'big')"),
                            ({"weights": ["a"]}, "weights must be a list of numbers")):
        with pytest.raises(OccNetError, match=re.escape(message)):
            api.update_result(ob, **kwargs)


def test_a_second_job_cannot_start_while_one_runs(blender, tmp_path):
    """Starting a reconstruction from the first one's on_event callback once left two jobs running."""
    from blender_addon.blender import api

    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.active_object
    nested: list[str] = []

    def on_event(event):
        if event.get("event") == "start" and not nested:
            try:
                api.reconstruct([cube], steps=2, verbose=False)
                nested.append("started")
            except OccNetError as err:
                nested.append(str(err))
            assert jobs.active_job() is not None, "the outer job is no longer the active one"

    api.reconstruct([cube], steps=5, points=512, width=16, depth=1, resolution=32, device="cpu", verbose=False,
                    on_event=on_event)
    assert nested == ["A reconstruction is already running; wait for it or cancel it first."]
    assert process.live_processes() == [] and jobs.active_job() is None


def test_bad_objects_and_files_get_specific_messages(blender, tmp_path, monkeypatch):
    from blender_addon.blender import api

    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.active_object
    cube.scale = (0, 0, 0)
    with pytest.raises(OccNetError, match=r"'Cube' has no size in world space \(0 x 0 x 0 .*a scale of 0\?\)"):
        api.reconstruct([cube], verbose=False)
    # a result file with NaN vertices is refused before the scene changes
    cube.scale = (1, 1, 1)
    path = tmp_path / "nan.ply"
    ply.write_ply(path, np.array([[0, 0, 0], [1, np.nan, 0], [0, 1, 0]], np.float32), np.array([[0, 1, 2]]))
    spec = results.ResultSpec(shape_id="Cube", sources=["Cube"], path=str(path))
    before = sorted(ob.name for ob in bpy.data.objects)
    with pytest.raises(OccNetError, match="non-finite vertex positions"):
        results.import_results(bpy.context.scene, [spec])
    assert sorted(ob.name for ob in bpy.data.objects) == before
    # a folder given as the interpreter
    monkeypatch.setenv(interpreter.ENV_PYTHON, str(tmp_path))
    with pytest.raises(OccNetError, match=r"is a folder; give the interpreter file inside it"):
        interpreter.resolve_python("")


def test_a_job_the_add_on_ends_itself_says_why(blender, tmp_path):
    bpy.ops.mesh.primitive_cube_add()
    job = jobs.Job([bpy.context.active_object], FitSettings(steps=100000, points=512, width=16, depth=1,
                                                                     resolution=32, device="cpu"),
                   scene=bpy.context.scene, depsgraph=bpy.context.evaluated_depsgraph_get())
    job.start()
    job.abort("another file was loaded, so there is no scene to import into")
    while not job.poll():
        time.sleep(0.05)
    with pytest.raises(OccNetError, match="Reconstruction stopped: another file was loaded") as info:
        job.finish()
    assert "SIGKILL" not in str(info.value) and "out of memory" not in str(info.value)
