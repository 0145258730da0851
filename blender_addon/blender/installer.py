"""Install Backend in Blender: where the environment goes, the operators, what the panel draws.

``Install Backend`` builds a private Python environment with the backend's pinned requirements in
the add-on's user folder, in a subprocess (Blender stays responsive): progress in the preferences
and the sidebar panel, Cancel, a log file, and at the end an automatic Check Backend.
Pressing it again repairs or upgrades; ``Remove Backend`` deletes the environment. The sidebar panel
offers it at its top while no backend is found. In
``blender --background`` (no timers) the operator blocks, and ``api.install_backend()`` serves scripts.
"""

from __future__ import annotations

import threading
from pathlib import Path

import bpy

from ..runner import installer, interpreter
from ..runner.errors import OccNetCancelled, OccNetError
from . import preferences, properties, ui

TIMER_INTERVAL_S = 0.2


def log_path(env: Path) -> Path:
    return env.parent / "install-backend.log"


def _new_install(context: bpy.types.Context, env: Path | None = None) -> "installer.Install":
    if installer.active() is not None:
        raise OccNetError("Install Backend is already running; wait for it or press Cancel.")
    struct = preferences.prefs_struct(context)
    env = env or preferences.env_dir()
    return installer.Install(env, log_path(env),
                             extra_index_url=getattr(struct, "install_extra_index_url", "") or "",
                             cpu_only=bool(getattr(struct, "install_cpu_only", False)))


def _report(context: bpy.types.Context, message: str, *, is_error: bool) -> None:
    """Where the preferences and the sidebar panel show it."""
    struct = preferences.prefs_struct(context)
    if struct is not None:
        struct.install_message = message
        struct.install_is_error = is_error
    properties.set_status(context, message, is_error=is_error,
                          log_path=str(log_path(preferences.env_dir())) if is_error else "")
    redraw(context)


def redraw(context: bpy.types.Context) -> None:
    ui.redraw_sidebars(context)
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()


def _checked(context: bpy.types.Context, python: str) -> tuple[bool, str]:
    """Check Backend on the new environment; its verdict goes where Check Backend's goes."""
    try:
        ok, message = interpreter.summarize_check(interpreter.check_backend(python), "installed by Install Backend")
    except OccNetError as err:
        ok, message = False, str(err)
    struct = preferences.prefs_struct(context)
    if struct is not None:
        struct.check_result = message
    return ok, message


class _NotWhileInstalling:
    """Install and Remove Backend are greyed out, saying why, while an install runs."""

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if installer.active() is not None:
            cls.poll_message_set("Install Backend is running")
            return False
        return True


class OCCNET_OT_install_backend(_NotWhileInstalling, bpy.types.Operator):
    """Build a private Python environment with PyTorch and the backend's other packages (downloads
    about 1-3 GB; takes minutes). Press again to repair or upgrade it"""

    bl_idname = "occnet.install_backend"
    bl_label = "Install Backend"

    _install: "installer.Install | None" = None
    _timer = None
    _check: threading.Thread | None = None
    _check_result: tuple[bool, str] | None = None
    _drawn = (0, 0)  # (event revision, whole seconds) last drawn: redraw on news, and each second for the clock


    def execute(self, context: bpy.types.Context) -> set[str]:
        """The blocking path (background mode, scripts): prints progress, then checks."""
        try:
            install = _new_install(context)
            installer.ACTIVE.append(install)
            python = installer.run_blocking(install, on_event=lambda event: print(
                "OccNet install:", install.state.line(install.elapsed), flush=True))
        except OccNetCancelled as err:
            _report(context, str(err), is_error=False)
            self.report({"WARNING"}, str(err))
            return {"CANCELLED"}
        except OccNetError as err:
            _report(context, str(err), is_error=True)
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        finally:
            installer.ACTIVE.clear()
        ok, message = _checked(context, python)
        _report(context, f"Installed the backend in {install.elapsed:.0f} s. {message}", is_error=not ok)
        self.report({"INFO"} if ok else {"ERROR"}, message)
        return {"FINISHED"} if ok else {"CANCELLED"}

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        try:
            self._install = _new_install(context)
            self._install.start()
        except OccNetError as err:
            _report(context, str(err), is_error=True)
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        installer.ACTIVE.append(self._install)
        _report(context, "", is_error=False)
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_INTERVAL_S, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            if self._check is not None:  # the automatic Check Backend, in a thread (it imports torch)
                if self._check.is_alive():
                    return {"PASS_THROUGH"}
                return self._end(context, None)
            finished = self._install.poll()
            now = (self._install.state.revision, int(self._install.elapsed))
            if now != self._drawn:
                self._drawn = now
                redraw(context)
            if not finished:
                return {"PASS_THROUGH"}
            python = self._install.result()
        except Exception as err:  # noqa: BLE001 - OccNetError, a cancel, or a bug: the same clean end
            return self._end(context, err)
        self._install.state.message = "Checking the backend (importing PyTorch)..."
        redraw(context)

        def check() -> None:
            try:
                report = interpreter.check_backend(python)
                self._check_result = interpreter.summarize_check(report, "installed by Install Backend")
            except OccNetError as err:
                self._check_result = (False, str(err))

        self._check = threading.Thread(target=check, name="occnet-check-backend", daemon=True)
        self._check.start()
        return {"PASS_THROUGH"}

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender ends the modal itself (another file loaded, the window closed): stop the installer
        too (it deletes what it half built), or nothing would poll it and the buttons stay disabled."""
        if self._install is not None and self._install.proc is not None and self._install.proc.returncode is None:
            self._install.proc.terminate()
        self._end(context, OccNetCancelled("Install Backend stopped: Blender ended it (a file was loaded?)."))

    def _end(self, context: bpy.types.Context, err: BaseException | None) -> set[str]:
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        install = self._install
        installer.ACTIVE.clear()
        if err is not None:
            if install is not None and install.proc is not None and install.proc.returncode is None:
                install.proc.kill()
                install.proc.cleanup()
            cancelled = isinstance(err, OccNetCancelled)
            message = str(err) if isinstance(err, OccNetError) else f"Install Backend failed: {type(err).__name__}: {err}"
            _report(context, message, is_error=not cancelled)
            self.report({"WARNING"} if cancelled else {"ERROR"}, message)
            return {"CANCELLED"}
        ok, message = self._check_result or (False, "the check did not finish")
        struct = preferences.prefs_struct(context)
        if struct is not None:
            struct.check_result = message
        _report(context, f"Installed the backend in {install.elapsed:.0f} s. {message}", is_error=not ok)
        self.report({"INFO"} if ok else {"ERROR"}, message.splitlines()[0])
        return {"FINISHED"} if ok else {"CANCELLED"}


class OCCNET_OT_cancel_install(bpy.types.Operator):
    """Stop Install Backend (nothing half installed is kept; press again to kill it at once)"""

    bl_idname = "occnet.cancel_install"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return installer.active() is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        install = installer.active()
        if install is not None:
            install.cancel()
            install.state.message = "Cancelling..."
            redraw(context)
        return {"FINISHED"}


class OCCNET_OT_remove_backend(_NotWhileInstalling, bpy.types.Operator):
    """Delete the environment Install Backend built (a few GB); Install Backend builds it again"""

    bl_idname = "occnet.remove_backend"
    bl_label = "Remove Backend"


    def execute(self, context: bpy.types.Context) -> set[str]:
        env = preferences.env_dir()
        try:
            removed = installer.remove_environment(env)
        except OSError as err:
            _report(context, f"Could not delete {env}: {err.strerror or err}", is_error=True)
            return {"CANCELLED"}
        message = f"Removed the backend environment {env}." if removed else f"There is no backend environment in {env}."
        _report(context, message, is_error=False)
        self.report({"INFO"}, message)
        return {"FINISHED"}


classes = (OCCNET_OT_install_backend, OCCNET_OT_cancel_install, OCCNET_OT_remove_backend)


_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register_classes()
    interpreter.INSTALLED_ENV[:] = [preferences.env_dir()]


def unregister() -> None:
    install = installer.active()
    if install is not None and install.proc is not None:
        install.proc.terminate()
    installer.ACTIVE.clear()
    interpreter.INSTALLED_ENV.clear()
    _unregister_classes()
