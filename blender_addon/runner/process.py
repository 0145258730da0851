"""One backend subprocess: start, stream its JSON events, cancel, kill, clean up.

No bpy in here (stdlib only), so the whole process life cycle is testable on plain CPython and
usable from both the modal operator (polled by a timer) and the blocking path (``blender -b``).

Process hygiene: every backend runs in its own process group/session so that

- Ctrl-C in a terminal running ``blender -b`` reaches Blender, which forwards a *graceful*
  cancel (SIGINT to the backend) instead of the backend dying mid-write;
- a kill reaches the backend's own children (data loader workers) too.

All live processes are tracked here and ended when the add-on is unregistered or Python exits
(``atexit``), so no backend outlives Blender.
"""

from __future__ import annotations

import atexit
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..occnet_contract.protocol import decode_line
from ..occnet_contract.settings import FitSettings
from .errors import OccNetError
from .interpreter import backend_env
from .jobstate import JobState

CANCEL_GRACE_S = 30.0  # after a graceful cancel, how long the backend may take to save and exit
TERMINATE_GRACE_S = 3.0  # at unregister / exit: SIGTERM first, SIGKILL after this


def backend_command(python: str, command: str, *args: str) -> list[str]:
    """The argv of one backend command (a list, never a shell string: paths may hold spaces and quotes)."""
    return [python, "-m", "occnet_backend", command, *map(str, args)]


def fit_command(python: str, ply_paths: list[str], out_dir: str, settings: FitSettings) -> list[str]:
    return backend_command(python, "fit", *ply_paths, "--out", out_dir, *settings.to_argv(), "--events", "jsonl")


_LIVE: set["BackendProcess"] = set()
_LIVE_LOCK = threading.Lock()


def live_processes() -> list["BackendProcess"]:
    """Backend processes started by this add-on that have not been cleaned up yet."""
    with _LIVE_LOCK:
        return [p for p in _LIVE]


def shutdown_all() -> None:
    """Ends every backend process (unregister, Blender exit). Never raises."""
    for proc in live_processes():
        try:
            proc.terminate()
        except Exception:  # noqa: BLE001 - cleanup must go on for the others
            pass


atexit.register(shutdown_all)


class BackendProcess:
    """One backend subprocess: start, stream its JSON events, cancel, kill, clean up.

    A reader thread only moves stdout lines into a queue; everything else (parsing, state, and
    above all bpy) happens in whichever thread calls ``poll``/``wait`` - Blender's main thread.
    stderr goes straight into ``log_path`` (no pipe to fill up and stall the backend).
    """

    def __init__(self, argv: list[str], *, cwd: str | os.PathLike, log_path: str | os.PathLike, env: dict[str, str] | None = None):
        self.argv = list(argv)
        self.cwd = str(cwd)
        self.log_path = Path(log_path)
        self.env = env if env is not None else backend_env()
        self.popen: subprocess.Popen | None = None
        self.lines: "queue.Queue[bytes | None]" = queue.Queue()
        self.stdout_closed = False
        self.cancel_requested_at: float | None = None
        self.killed = False
        self._reader: threading.Thread | None = None
        self._log = None

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> "BackendProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self._log.write(("$ " + " ".join(self.argv) + "\n").encode("utf-8", "replace"))
        self._log.flush()
        kwargs: dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        else:
            kwargs["start_new_session"] = True
        try:
            self.popen = subprocess.Popen(
                # stdin stays open and unused: if Blender dies without running atexit (a crash), the
                # backend sees EOF on stdin and can stop instead of training on as an orphan.
                self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=self._log, **kwargs,
            )
        except OSError as err:
            self._log.close()
            raise OccNetError(f"Could not start the backend ({self.argv[0]}): {err.strerror or err}.") from None
        with _LIVE_LOCK:
            _LIVE.add(self)
        self._reader = threading.Thread(target=self._read_stdout, name="occnet-backend-reader", daemon=True)
        self._reader.start()
        return self

    def _read_stdout(self) -> None:
        assert self.popen is not None and self.popen.stdout is not None
        try:
            for line in iter(self.popen.stdout.readline, b""):
                self.lines.put(line)
        except (OSError, ValueError):
            pass
        finally:
            self.lines.put(None)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen else None

    @property
    def finished(self) -> bool:
        """True once stdout is drained and the process has exited."""
        return self.stdout_closed and self.returncode is not None

    # -- events ------------------------------------------------------------------------------
    def _decode(self, line: bytes) -> dict[str, Any] | None:
        event = decode_line(line)
        if event is None and line.strip():
            # A stray print in the backend or a library: keep it, but in the log, not the stream.
            self._write_log(f"[stdout] {line.decode('utf-8', 'replace').strip()}\n")
        return event

    def poll(self) -> list[dict[str, Any]]:
        """Events received since the last call, without waiting (the modal timer's path)."""
        events = []
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self.stdout_closed = True
                break
            event = self._decode(line)
            if event is not None:
                events.append(event)
        self._check_cancel_deadline()
        if self.finished:
            self.cleanup()
        return events

    def wait_events(self, timeout: float = 0.25) -> list[dict[str, Any]]:
        """Like ``poll`` but waits up to ``timeout`` for the first line (the blocking path)."""
        if not self.stdout_closed:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                return self.poll()
            if line is None:
                self.stdout_closed = True
            else:
                event = self._decode(line)
                return ([event] if event else []) + self.poll()
        if self.stdout_closed and self.returncode is None:
            try:
                self.popen.wait(timeout=timeout)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                pass
        return self.poll()

    # -- stopping ----------------------------------------------------------------------------
    def cancel(self) -> None:
        """Asks the backend to stop: it finishes its step, saves, exits with 130.

        A second call (the user insisting) kills it at once.
        """
        if self.popen is None or self.returncode is not None:
            return
        if self.cancel_requested_at is not None:
            self.kill()
            return
        self.cancel_requested_at = time.monotonic()
        self._write_log("[add-on] cancel requested: sending SIGINT\n")
        try:
            if os.name == "nt":
                self.popen.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
            else:
                self.popen.send_signal(signal.SIGINT)
        except (ProcessLookupError, OSError):
            pass

    def _check_cancel_deadline(self) -> None:
        if self.cancel_requested_at is not None and self.returncode is None:
            if time.monotonic() - self.cancel_requested_at > CANCEL_GRACE_S:
                self._write_log(f"[add-on] backend did not stop within {CANCEL_GRACE_S:.0f} s of cancel: killing it\n")
                self.kill()

    def kill(self) -> None:
        """SIGKILL to the whole process group (the backend and any workers it started)."""
        if self.popen is None:
            return
        self.killed = self.killed or self.returncode is None
        self._kill_group()
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def _kill_group(self) -> None:
        if self.popen is None:
            return
        try:
            if os.name == "nt":
                self.popen.kill()
            else:
                os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass

    def terminate(self, grace: float = TERMINATE_GRACE_S) -> None:
        """SIGTERM (the backend saves and exits), SIGKILL after ``grace`` seconds; then clean up."""
        if self.popen is not None and self.returncode is None:
            try:
                self.popen.terminate()
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
            except (ProcessLookupError, OSError):
                pass
        self.cleanup()

    def cleanup(self) -> None:
        """After exit: end stray children of the group, close the log, forget the process."""
        if self.popen is not None and self.popen.poll() is not None:
            self._kill_group()  # workers the backend left behind
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if self.popen is not None and self.popen.poll() is not None:
            if self._reader is not None:
                self._reader.join(timeout=1.0)  # EOF follows once the group is gone
            reader_done = self._reader is None or not self._reader.is_alive()
            for pipe in (self.popen.stdin, self.popen.stdout if reader_done else None):
                try:
                    if pipe is not None:
                        pipe.close()
                except OSError:
                    pass
        if self._log is not None and not self._log.closed and (self.popen is None or self.popen.poll() is not None):
            self._log.close()

    def _write_log(self, text: str) -> None:
        if self._log is not None and not self._log.closed:
            try:
                self._log.write(text.encode("utf-8", "replace"))
                self._log.flush()
            except (OSError, ValueError):
                pass

    def log_tail(self, lines: int = 6) -> str:
        """The last lines of the backend's stderr log, for error messages."""
        try:
            text = self.log_path.read_text("utf-8", errors="replace")
        except OSError:
            return ""
        kept = [line for line in text.strip().splitlines() if line.strip()]
        return "\n".join(kept[-lines:])


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exit code {code}"


def run_blocking(
    proc: BackendProcess,
    state: JobState,
    *,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    interval: float = 0.25,
) -> None:
    """Drives ``proc`` to its end on this thread, feeding ``state`` (the headless path).

    Ctrl-C (KeyboardInterrupt) becomes a graceful cancel; a second Ctrl-C kills the backend.
    """
    while True:
        try:
            events = proc.wait_events(interval)
            for event in events:
                state.apply(event)
                if on_event is not None:
                    on_event(event)
            if should_cancel is not None and proc.cancel_requested_at is None and proc.returncode is None and should_cancel():
                proc.cancel()
            if proc.finished:
                return
        except KeyboardInterrupt:
            proc.cancel()
        except BaseException:
            proc.kill()
            proc.cleanup()
            raise
