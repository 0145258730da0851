"""Operators: Reconstruct (modal in the UI, blocking headless), Cancel, Check Backend, Open Job Folder,
Update Surface (live sliders).

Reconstruct has two paths on purpose:

- ``invoke`` (a button press in the UI) starts the backend and returns RUNNING_MODAL; a 0.2 s
  window timer polls the job, so Blender stays responsive. ESC or the Cancel button stop it.
- ``execute`` runs the job to its end and prints progress. It is what scripts
  (``bpy.ops.occnet.reconstruct()``) and ``blender --background`` get: there, timers never fire
  and INVOKE_DEFAULT calls execute().
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import bpy

from ..runner import interpreter
from ..runner.errors import OccNetCancelled, OccNetError
from . import export, jobs, preferences, properties, results, sliders, ui

TIMER_INTERVAL_S = 0.2


def _set_status(context: bpy.types.Context, message: str, *, is_error: bool, job: "jobs.Job | None" = None,
                log_path: str = "") -> None:
    properties.set_status(context, message, is_error=is_error, job_dir=str(job.job_dir) if job is not None else "",
                          log_path=log_path or (str(job.log_path) if job is not None else ""))


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else text


def create_job(context: bpy.types.Context, objects: list[bpy.types.Object] | None = None) -> "jobs.Job":
    """A Job from the context's selection and the scene / preference settings."""
    prefs = preferences.get_prefs(context)
    scene = context.scene
    settings = properties.fit_settings(scene, prefs.device)
    union = getattr(getattr(scene, "occnet", None), "mode", "SEPARATE") == "UNION"
    return jobs.Job(
        list(context.selected_objects) if objects is None else objects,
        settings,
        scene=scene,
        depsgraph=context.evaluated_depsgraph_get(),
        union=union,
        python=prefs.python_path,
        work_dir=prefs.work_dir or None,
    )


class OCCNET_OT_reconstruct(bpy.types.Operator):
    """Reconstruct the selected meshes with an occupancy network (trained in a separate process)"""

    bl_idname = "occnet.reconstruct"
    bl_label = "Reconstruct"
    bl_options = {"REGISTER", "UNDO"}

    _job: "jobs.Job | None" = None
    _timer = None

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if jobs.active_job() is not None:
            cls.poll_message_set("A reconstruction is already running")
            return False
        try:
            export.select_sources(list(getattr(context, "selected_objects", [])))
        except OccNetError as err:  # the button is greyed out and its tooltip says why
            cls.poll_message_set(str(err))
            return False
        return True

    # -- blocking path ---------------------------------------------------------------------------
    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            job = create_job(context)
            for note in job.skipped:
                self.report({"WARNING"}, f"Skipped {note}")
            objects = job.run(verbose=True)
            results.present(context, objects)
        except OccNetCancelled as err:
            self.report({"WARNING"}, str(err))
            _set_status(context, str(err), is_error=False, log_path=err.log_path or "")
            return {"CANCELLED"}
        except OccNetError as err:
            self.report({"ERROR"}, str(err))
            _set_status(context, _first_line(str(err)), is_error=True, log_path=err.log_path or "")
            return {"CANCELLED"}
        except Exception as err:  # noqa: BLE001 - a bug must still end as a report, not a crash
            return self._internal_error(context, err)
        return self._done(context, job, objects)

    # -- UI path ---------------------------------------------------------------------------------
    # Every way out of invoke() and modal(), an exception included, goes through _end(): the timer
    # is removed, the backend is ended and reaped, the panel shows why, and Reconstruct is usable
    # again. (An exception escaping modal() makes Blender drop the handler without telling us.)
    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        try:
            job = create_job(context)
            for note in job.skipped:
                self.report({"WARNING"}, f"Skipped {note}")
            self._job = job
            job.start()
            _set_status(context, "", is_error=False, job=job)
            wm = context.window_manager
            self._timer = wm.event_timer_add(TIMER_INTERVAL_S, window=context.window)
            wm.modal_handler_add(self)
        except Exception as err:  # noqa: BLE001 - OccNetError and bugs alike end cleanly
            return self._end(context, err)
        ui.redraw_sidebars(context)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        try:
            return self._modal(context, event)
        except Exception as err:  # noqa: BLE001
            return self._end(context, err)

    def _modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        job = self._job
        if job is None:
            return self._end(context, None)
        if event.type == "ESC" and event.value == "PRESS":
            job.cancel()
            ui.redraw_sidebars(context)
            return {"RUNNING_MODAL"}
        # bpy.types.Event has no `timer` attribute: any TIMER event is a chance to poll (cheap).
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        before = job.state.revision
        finished = job.poll()
        if job.state.revision != before or finished:
            ui.redraw_sidebars(context)
        if not finished:
            return {"PASS_THROUGH"}
        self._stop(context)
        objects = job.finish()
        results.present(context, objects)
        # the GUI only (scripts and --background may never touch a slider): the first slider
        # move then finds the server loaded instead of waiting ~1.1 s for torch
        sliders.prewarm(objects)
        self._job = None
        return self._done(context, job, objects)

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender ends the modal (file loaded, window closed): kill the backend, import nothing."""
        self._stop(context)
        if self._job is not None:
            self._job.abort("Blender ended the operator (a file was loaded or the window closed)")
            self._job = None

    # -- helpers ---------------------------------------------------------------------------------
    def _stop(self, context: bpy.types.Context) -> None:
        if self._timer is not None:
            try:
                context.window_manager.event_timer_remove(self._timer)
            finally:
                self._timer = None

    def _end(self, context: bpy.types.Context, err: BaseException | None) -> set[str]:
        """Ends the UI path after a failure or cancel: no timer, no backend, a message with the log."""
        job, self._job = self._job, None
        try:
            self._stop(context)
        finally:
            if job is not None:
                job.abort()  # kills and reaps the backend (a no-op when it has ended)
        log_path = getattr(err, "log_path", None) or (str(job.log_path) if job is not None else "")
        if isinstance(err, OccNetCancelled):  # its job folder is gone: no Open Job Folder
            self.report({"WARNING"}, str(err))
            _set_status(context, str(err), is_error=False)
        elif isinstance(err, OccNetError):
            self.report({"ERROR"}, str(err))
            _set_status(context, _first_line(str(err)), is_error=True, job=job, log_path=log_path)
        elif err is not None:
            self._internal_error(context, err, job=job)
        ui.redraw_sidebars(context)
        return {"CANCELLED"}

    def _done(self, context: bpy.types.Context, job: "jobs.Job", objects: list[bpy.types.Object]) -> set[str]:
        state = job.state
        evaluation = state.evaluation_line([s.shape_id for s in job.shapes])
        names = ", ".join(f"'{ob.name}'" for ob in objects)
        message = f"Reconstructed {names}: {evaluation or 'no evaluation'} ({state.step} steps on {state.device or '?'})"
        self.report({"INFO"}, message)
        _set_status(context, message, is_error=False, job=job)
        ui.redraw_sidebars(context)
        return {"FINISHED"}

    def _internal_error(self, context: bpy.types.Context, err: BaseException, job: "jobs.Job | None" = None) -> set[str]:
        traceback.print_exception(err)  # to the console, for a bug report; the user gets one line
        log = f" Backend log: {job.log_path}." if job is not None else ""
        message = f"OccNet internal error ({type(err).__name__}: {err}). Details are in the system console.{log}"
        self.report({"ERROR"}, message)
        _set_status(context, message, is_error=True, job=job)
        return {"CANCELLED"}


class OCCNET_OT_cancel(bpy.types.Operator):
    """Stop the running reconstruction (the backend saves and exits; press again to kill it)"""

    bl_idname = "occnet.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return jobs.active_job() is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        job = jobs.active_job()
        if job is not None:
            forced = job.cancelling
            job.cancel()
            self.report({"INFO"}, "Killing the backend" if forced else "Cancelling: the backend finishes its step")
        ui.redraw_sidebars(context)
        return {"FINISHED"}


class OCCNET_OT_check_backend(bpy.types.Operator):
    """Import torch and the backend's packages in the backend interpreter and report versions and device"""

    bl_idname = "occnet.check_backend"
    bl_label = "Check Backend"

    def execute(self, context: bpy.types.Context) -> set[str]:
        prefs = preferences.get_prefs(context)
        interpreter.forget_detected()
        try:
            python, origin = interpreter.resolve_python(prefs.python_path, prefs.work_dir or None, check=False)
            ok, message = interpreter.summarize_check(interpreter.check_backend(python), origin)
        except OccNetError as err:
            ok, message = False, str(err)
        struct = preferences.prefs_struct(context)
        if struct is not None:
            struct.check_result = message
        self.report({"INFO"} if ok else {"ERROR"}, message)
        return {"FINISHED"} if ok else {"CANCELLED"}


class OCCNET_OT_open_job_folder(bpy.types.Operator):
    """Open the last job's folder (exports, results, checkpoint, backend.log) in the file browser"""

    bl_idname = "occnet.open_job_folder"
    bl_label = "Open Job Folder"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        status = getattr(context.window_manager, "occnet_status", None)
        return bool(status and (status.job_dir or status.log_path))

    def execute(self, context: bpy.types.Context) -> set[str]:
        status = context.window_manager.occnet_status
        folder = status.job_dir or os.path.dirname(status.log_path)
        if not os.path.isdir(folder):
            self.report({"ERROR"}, f"The job folder {folder} no longer exists.")
            return {"CANCELLED"}
        bpy.ops.wm.path_open(filepath=folder)
        return {"FINISHED"}


class OCCNET_OT_clean_job_folders(bpy.types.Operator):
    """Delete the job folders (exports, checkpoints, logs) that no result in this file needs.
    Results in other .blend files whose folders go lose their live sliders (their meshes stay)"""

    bl_idname = "occnet.clean_job_folders"
    bl_label = "Clean Up Job Folders"

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        return context.window_manager.invoke_confirm(self, event)

    def execute(self, context: bpy.types.Context) -> set[str]:
        prefs = preferences.get_prefs(context)
        root = Path(bpy.path.abspath(prefs.work_dir)) if prefs.work_dir else jobs.default_work_dir()
        count, freed = jobs.clean_job_folders(root)
        self.report({"INFO"}, f"Deleted {count} job folder(s) in {root}, {freed / 1e6:.1f} MB freed; "
                              f"kept {len(jobs.job_folders(root))} (in use by this file or running).")
        return {"FINISHED"}


class OCCNET_OT_live_update(bpy.types.Operator):
    """Re-extract the active result's surface with its slider settings (sets the sliders up first if needed)"""

    bl_idname = "occnet.live_update"
    bl_label = "Update Surface"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return sliders.is_result(context.active_object)

    def execute(self, context: bpy.types.Context) -> set[str]:
        ob = context.active_object
        sliders.ensure_live(ob)
        if bpy.app.background or context.window is None:  # no timers: block
            try:
                sliders.update_blocking(ob)
            except OccNetError as err:
                self.report({"ERROR"}, str(err))
                return {"CANCELLED"}
            return {"FINISHED"}
        sliders.schedule(ob)
        return {"FINISHED"}


classes = (OCCNET_OT_reconstruct, OCCNET_OT_cancel, OCCNET_OT_check_backend, OCCNET_OT_open_job_folder,
           OCCNET_OT_clean_job_folders, OCCNET_OT_live_update)


register, unregister = bpy.utils.register_classes_factory(classes)
