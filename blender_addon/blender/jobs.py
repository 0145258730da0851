"""One reconstruction job: export -> backend fit -> import, shared by the operator and the API.

The job holds no bpy object references while the backend runs (only names): a modal job lives
across undo steps and user edits, during which Python references to IDs can go stale. Sources
are looked up again by name when results come back.

Job folder layout (``<work>/<job>/``)::

    input/<shape_id>.ply   exported shapes (world space)
    output/                backend results: meshes, checkpoint, metrics
    backend.log            the backend's stderr (and the command line)
    job.json               sources, settings, command, outcome: enough to understand a run afterwards

Clean-up policy (job folders are ~4 MB each, a checkpoint inside): a cancelled job's folder is
deleted at once; of the failed ones the newest ``KEEP_FAILED`` are kept (their logs explain the
failure); a successful job's folder is kept, since results in any saved .blend load their live
sliders from it, until the user presses Clean Up Job Folders (``clean_job_folders``), which
deletes every folder no result in the open file needs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import bpy

from ..occnet_contract.files import atomic_write_json
from ..occnet_contract.settings import FitSettings, SettingsError
from ..runner import interpreter, process
from ..runner.errors import OccNetCancelled, OccNetError
from ..runner.jobstate import JobState
from . import export, previews, results

_ACTIVE: "Job | None" = None
KEEP_FAILED = 5
JOB_RECORD = "job.json"


def active_job() -> "Job | None":
    """The job the panel shows (the UI runs one at a time); None when idle."""
    return _ACTIVE


def _refuse_a_second_job() -> None:
    """One job at a time (the panel, Cancel and ESC act on the active one), also when a script
    starts one from another's on_event callback."""
    if _ACTIVE is not None:
        raise OccNetError("A reconstruction is already running; wait for it or cancel it first.")


def default_work_dir() -> Path:
    """Where job folders go when the preference is empty: the user's cache, not the temp dir.

    Blender deletes its temp dir on exit, but checkpoints must outlive the session (the live
    sliders load them later).
    """
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "occnet-blender" / "jobs"


class Job:
    """Export the given objects, run ``occnet_backend fit`` on them, import the meshes.

    Usage: ``job = Job(...); job.start(); while not job.poll(): ...; objects = job.finish()``,
    or ``job.run()`` which does it all, blocking.
    """

    def __init__(
        self,
        objects: list[bpy.types.Object],
        settings: FitSettings,
        *,
        scene: bpy.types.Scene,
        depsgraph: bpy.types.Depsgraph,
        union: bool = False,
        python: str = "",
        work_dir: str | os.PathLike | None = None,
    ):
        _refuse_a_second_job()  # before anything is exported
        try:
            settings.validate()
        except SettingsError as err:
            raise OccNetError(f"Invalid OccNet settings: {err}.") from None
        usable, self.skipped = export.select_sources(list(objects))
        self.settings = settings
        self.union = union
        self.scene_name = scene.name
        root = Path(bpy.path.abspath(str(work_dir))) if work_dir else default_work_dir()
        stem = export.sanitize_id(usable[0].name, set())[:24]
        self.job_dir = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{stem}-{secrets.token_hex(2)}"
        self.input_dir = self.job_dir / "input"
        self.output_dir = self.job_dir / "output"
        self.log_path = self.job_dir / "backend.log"
        # Export first (cheap, and its errors are about the user's objects) ...
        try:
            self.shapes = export.export_shapes(usable, self.input_dir, depsgraph, union=union)
        except OSError as err:
            raise OccNetError(f"Cannot write the job folder {self.job_dir}: {err.strerror or err}. "
                              "Choose another work folder in the add-on preferences.") from None
        # ... then find the interpreter (its errors are about the machine).
        try:
            self.python, self.python_origin = interpreter.resolve_python(python, str(root))
        except OccNetError:
            shutil.rmtree(self.job_dir, ignore_errors=True)  # nothing will ever use this export
            raise
        self.state = JobState(total=settings.steps)
        self.process: process.BackendProcess | None = None
        self.started_at = 0.0
        self.result_objects: list[str] = []
        self.previews_shown: set[str] = set()
        self.aborted_because = ""

    # -- running -------------------------------------------------------------------------------
    @property
    def argv(self) -> list[str]:
        return process.fit_command(self.python, [s.path for s in self.shapes], str(self.output_dir), self.settings)

    def start(self) -> "Job":
        global _ACTIVE
        self.output_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "sources": {s.shape_id: s.sources for s in self.shapes},
            "settings": self.settings.as_dict(),
            "union": self.union,
            "python": self.python,
            "python_origin": self.python_origin,
            "argv": self.argv,
            "blender": bpy.app.version_string,
        }
        if _ACTIVE is not self:
            _refuse_a_second_job()
        self._record = record
        self._write_record(outcome="running")
        prune_job_folders(self.job_dir.parent, keep=self.job_dir)
        self.process = process.BackendProcess(self.argv, cwd=self.job_dir, log_path=self.log_path).start()
        self.started_at = time.monotonic()
        _ACTIVE = self
        return self

    def _write_record(self, outcome: str) -> None:
        if not self.job_dir.is_dir():
            return  # a cancelled job's folder is deleted: writing would bring it back
        try:
            atomic_write_json(self.job_dir / JOB_RECORD, {**self._record, "outcome": outcome})
        except OSError:
            pass  # the record explains a run afterwards; a job does not fail for it

    def poll(self) -> bool:
        """Applies events that arrived since the last call, shows new previews; True when the
        backend has ended."""
        assert self.process is not None, "start() first"
        for event in self.process.poll():
            self.state.apply(event)
        self._show_previews()
        return self.process.finished

    def _show_previews(self) -> None:
        scene = bpy.data.scenes.get(self.scene_name)
        for shape in self.shapes:
            path = self.state.previews.get(shape.shape_id)
            if scene is not None and path and shape.shape_id not in self.previews_shown:
                self.previews_shown.add(shape.shape_id)
                previews.show(scene, str(self.job_dir), shape.sources, self._resolve(path))

    def cancel(self) -> None:
        """Graceful cancel; a second call kills the backend at once."""
        if self.process is not None:
            self.process.cancel()

    @property
    def cancelling(self) -> bool:
        return self.process is not None and self.process.cancel_requested_at is not None

    def abort(self, reason: str = "") -> None:
        """Kills the backend now and forgets the job (file loaded, add-on unregistered, an error);
        ``reason`` is what a later message says instead of "killed by SIGKILL (out of memory?)"."""
        global _ACTIVE
        if reason and not self.aborted_because:
            self.aborted_because = reason
        previews.clear(str(self.job_dir))
        if self.process is not None:
            self.process.kill()
            self.process.cleanup()
            self._write_record(outcome="aborted")
        if _ACTIVE is self:
            _ACTIVE = None

    # -- results ---------------------------------------------------------------------------------
    def _failure(self) -> OccNetError:
        proc = self.process
        assert proc is not None
        code = proc.returncode
        log = str(self.log_path)
        if self.state.done == "cancelled" or (proc.cancel_requested_at is not None):
            return OccNetCancelled("Reconstruction cancelled; the scene is unchanged.", log_path=log)
        if self.aborted_because:
            return OccNetCancelled(f"Reconstruction stopped: {self.aborted_because}.", log_path=log)
        tail = proc.log_tail()
        if self.state.error:
            reason = f"The backend reported an error: {self.state.error}"
        elif code is not None and code < 0:
            reason = f"The backend process was {process.describe_exit(code)} (out of memory, or ended from outside?)"
        else:
            reason = f"The backend stopped unexpectedly ({process.describe_exit(code)})"
        detail = f"\nLast log lines:\n{tail}" if tail and not self.state.error else ""
        return OccNetError(f"{reason}. The scene is unchanged. Full log: {log}{detail}", log_path=log)

    def finish(self) -> list[bpy.types.Object]:
        """Imports the results into the job's scene; raises OccNetError / OccNetCancelled.

        Call once ``poll()`` returned True.
        """
        global _ACTIVE
        if _ACTIVE is self:
            _ACTIVE = None
        proc = self.process
        assert proc is not None and proc.returncode is not None, "finish() before the backend ended"
        previews.clear(str(self.job_dir))
        ok = proc.returncode == 0 and self.state.done in ("ok", "") and not proc.killed and proc.cancel_requested_at is None
        if not ok:
            failure = self._failure()
            if isinstance(failure, OccNetCancelled):
                shutil.rmtree(self.job_dir, ignore_errors=True)  # nothing in it is worth keeping
                failure.log_path = None
            else:
                self._write_record(outcome="error")
            raise failure
        missing = [s.shape_id for s in self.shapes if s.shape_id not in self.state.meshes]
        if missing:
            self._write_record(outcome="error")
            raise OccNetError(
                f"The backend finished but sent no mesh for {', '.join(missing)}. The scene is unchanged. "
                f"Full log: {self.log_path}", log_path=str(self.log_path),
            )
        scene = bpy.data.scenes.get(self.scene_name) or bpy.context.scene
        shape_ids = [s.shape_id for s in self.shapes]
        specs = [
            results.ResultSpec(
                shape_id=s.shape_id,
                sources=s.sources,
                path=self._resolve(self.state.meshes[s.shape_id]),
                checkpoint=self._resolve(self.state.checkpoint) if self.state.checkpoint else "",
                job_dir=str(self.job_dir),
                shape_ids=shape_ids,
                settings=self.settings.as_dict(),
                metrics=dict(self.state.metrics.get(s.shape_id) or {}),
            )
            for s in self.shapes
        ]
        try:
            objects = results.import_results(scene, specs)
        except BaseException:
            self._write_record(outcome="error")
            raise
        self._write_record(outcome="ok")
        self.result_objects = [ob.name for ob in objects]
        return objects

    def _resolve(self, path: str) -> str:
        p = Path(path)
        return str(p if p.is_absolute() else self.job_dir / p)

    def run(
        self,
        *,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        verbose: bool = True,
    ) -> list[bpy.types.Object]:
        """The blocking path: start, wait for the end (printing progress), import."""
        if self.process is None:
            self.start()
        assert self.process is not None
        last_print = [0.0]

        def handle(event: dict[str, Any]) -> None:
            if verbose:
                kind = event.get("event")
                now = time.monotonic()
                if kind == "progress" and (now - last_print[0] >= 1.0 or self.state.step >= self.state.total):
                    last_print[0] = now
                    print(f"OccNet: {self.state.progress_line()}", flush=True)
                elif kind == "start":
                    print(f"OccNet: training {len(self.shapes)} shape(s) on {self.state.device}, "
                          f"{self.state.total} steps; job {self.job_dir}", flush=True)
                elif kind == "mesh":
                    print(f"OccNet: mesh for {event.get('shape_id')} written", flush=True)
            if on_event is not None:
                on_event(event)

        try:
            process.run_blocking(self.process, self.state, on_event=handle, should_cancel=should_cancel)
        finally:
            global _ACTIVE
            if _ACTIVE is self:
                _ACTIVE = None
        return self.finish()


# --------------------------------------------------------------------------------------------
# Job folder clean-up
# --------------------------------------------------------------------------------------------

STALE_RUNNING_S = 24 * 3600  # a "running" job this old was left by a Blender that crashed


def _outcome(folder: Path) -> str:
    try:
        outcome = str(json.loads((folder / JOB_RECORD).read_text()).get("outcome", ""))
    except (OSError, ValueError, AttributeError):
        return ""
    if outcome == "running":
        log = folder / "backend.log"
        last = (log if log.exists() else folder / JOB_RECORD).stat().st_mtime
        if time.time() - last > STALE_RUNNING_S:
            return "aborted"
    return outcome


def job_folders(root: Path) -> list[Path]:
    """The job folders under ``root`` (they hold a job.json), oldest first."""
    try:
        found = [p for p in root.iterdir() if p.is_dir() and (p / JOB_RECORD).is_file()]
    except OSError:
        return []
    return sorted(found, key=lambda p: p.stat().st_mtime)


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def needed_job_folders() -> set[str]:
    """Job folders that results in the open file point at (their checkpoints back the sliders)."""
    return {os.path.realpath(str(ob[results.PROP_JOB])) for ob in bpy.data.objects
            if ob.get(results.PROP_JOB) and ob.library is None}


def _running() -> set[str]:
    return {os.path.realpath(str(_ACTIVE.job_dir))} if _ACTIVE is not None else set()


def prune_job_folders(root: Path, keep: Path | None = None) -> list[Path]:
    """The automatic part of the policy: cancelled and aborted runs go, failed ones beyond the
    newest KEEP_FAILED go. Successful and running jobs (maybe another Blender's) stay."""
    spared = needed_job_folders() | _running() | ({os.path.realpath(str(keep))} if keep else set())
    removed, failed = [], []
    for folder in job_folders(root):
        if os.path.realpath(str(folder)) in spared:
            continue
        outcome = _outcome(folder)
        if outcome in ("cancelled", "aborted"):
            removed.append(folder)
        elif outcome == "error":
            failed.append(folder)
    removed += failed[:-KEEP_FAILED] if len(failed) > KEEP_FAILED else []
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    return removed


def clean_job_folders(root: Path) -> tuple[int, int]:
    """Clean Up Job Folders: deletes every job folder that no result in the open file needs and
    that is not running; returns (folders deleted, bytes freed)."""
    spared = needed_job_folders() | _running()
    count = freed = 0
    for folder in job_folders(root):
        if os.path.realpath(str(folder)) in spared or _outcome(folder) == "running":
            continue
        size = folder_size(folder)
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            count, freed = count + 1, freed + size
    return count, freed
