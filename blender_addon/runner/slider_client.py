"""Live sliders, the bpy-free half: `serve` processes, their JSON-lines protocol, debouncing.

One ``occnet_backend serve --checkpoint CKPT`` process per checkpoint (the results of one
multi-shape run share it) keeps the trained model loaded and answers "extract at (resolution,
threshold, weights)" with a PLY path; a threshold-only change at 128³ costs ~0.1 s because the
server keeps the evaluated grid. The protocol is ``occnet_contract.protocol``.

The process is a ``process.BackendProcess`` (same interpreter choice, PYTHONPATH, own process
group, reader thread + queue, tracked for unregister / ``atexit``), read here as responses rather
than as training events. Everything except the reader thread runs on the caller's thread
(Blender's main thread); nothing here imports bpy, so it is testable on plain CPython. The bpy
half (properties, timer, mesh swap, handlers) is ``blender/sliders.py``.
"""

from __future__ import annotations

import os
import queue
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable

from ..occnet_contract import protocol
from . import process
from .errors import OccNetError

DEBOUNCE_S = 0.15  # a slider change is sent this long after the last one (dragging sends one request)
READY_TIMEOUT_S = 300.0  # loading torch and the model: a few seconds, minutes on a cold disk
MAX_SERVERS = 4  # each holds torch and a model (~0.5 GB); the least recently used goes first
STOP_GRACE_S = 2.0


def serve_command(python: str, checkpoint: str, out_dir: str, device: str = "auto") -> list[str]:
    return process.backend_command(python, "serve", "--checkpoint", checkpoint, "--out", out_dir, "--device", device)


def checkpoint_key(checkpoint: str) -> str:
    """Identifies one server: the checkpoint's absolute, normalised path."""
    return os.path.normcase(os.path.abspath(os.path.expanduser(str(checkpoint))))


class SliderClient:
    """One ``serve`` process: start, send requests, collect responses, stop.

    ``send`` returns the request id; responses arrive through ``poll`` (non-blocking, the UI
    timer) or ``wait`` (blocking, ``update_result``). A response ``wait`` is not waiting for is
    kept and handed out by the next ``poll``.
    """

    def __init__(self, checkpoint: str, *, python: str, out_dir: str | os.PathLike, log_path: str | os.PathLike,
                 device: str = "auto"):
        self.checkpoint = str(checkpoint)
        self.key = checkpoint_key(checkpoint)
        self.python = python
        self.device = device
        self.out_dir = Path(out_dir)
        self.log_path = Path(log_path)
        self.process: process.BackendProcess | None = None
        self.ready = False
        self.shapes: list[str] = []
        self.served_device = ""
        self.error = ""  # why the server stopped working ("" while it works)
        self.started_at = 0.0
        self.last_used = 0.0
        self._next_id = 0
        self._unclaimed: list[dict[str, Any]] = []
        self._eof = False

    # -- life cycle --------------------------------------------------------------------------
    @property
    def argv(self) -> list[str]:
        return serve_command(self.python, self.checkpoint, str(self.out_dir), self.device)

    def start(self) -> "SliderClient":
        if not Path(self.checkpoint).is_file():
            raise OccNetError(
                f"The checkpoint {self.checkpoint} no longer exists (job folder deleted or moved?). "
                "Reconstruct again to get the sliders back."
            )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.process = process.BackendProcess(self.argv, cwd=self.out_dir, log_path=self.log_path).start()
        self.started_at = self.last_used = time.monotonic()
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def alive(self) -> bool:
        """Started, not known to have failed, and the process still runs."""
        return self.process is not None and not self.error and not self._eof and self.process.returncode is None

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """EOF on stdin (the server's normal end), SIGTERM, SIGKILL to the group after ``grace``. Never raises."""
        proc = self.process
        if proc is None:
            return
        self.error = self.error or "stopped"
        try:
            if proc.popen is not None and proc.popen.stdin is not None and not proc.popen.stdin.closed:
                proc.popen.stdin.close()
        except OSError:
            pass
        try:
            proc.terminate(grace)
        except Exception:  # noqa: BLE001 - cleanup must not fail the caller (unregister, file load)
            proc.kill()
            proc.cleanup()

    # -- protocol ----------------------------------------------------------------------------
    def send(self, command: str, **fields: Any) -> int:
        """Writes one request line (`protocol.SERVE_COMMANDS`); returns its id. Raises OccNetError
        when the server is gone."""
        if self.process is None or self.process.popen is None or self.process.popen.stdin is None:
            raise OccNetError("The slider server was not started.")
        self._next_id += 1
        rid = self._next_id
        line = protocol.request(command, rid, **fields)
        try:
            self.process.popen.stdin.write(line.encode("utf-8"))
            self.process.popen.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            self._drain()
            self.error = self.error or "it stopped accepting requests"
            raise OccNetError(self.failure_message()) from None
        self.last_used = time.monotonic()
        return rid

    def _handle_line(self, raw: bytes) -> dict[str, Any] | None:
        message = protocol.decode_line(raw)
        if message is None:
            if raw.strip():
                self.process._write_log(f"[stdout] {raw.decode('utf-8', 'replace').strip()}\n")  # a stray print
            return None
        kind = message.get("event")
        if kind == "ready":
            self.ready = True
            self.shapes = [str(s) for s in message.get("shapes", [])]
            self.served_device = str(message.get("device", ""))
            return None
        if kind == "error":
            self.error = str(message.get("message", "unknown error"))
            return None
        if kind is not None or "id" not in message:
            return None  # other events; an answer to a line that was not JSON (never ours)
        return message

    def _drain(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Responses from lines already queued; with ``timeout``, waits that long for the first line."""
        out: list[dict[str, Any]] = []
        if self.process is None:
            return out
        first = True
        while not self._eof:
            try:
                if first and timeout is not None:
                    raw = self.process.lines.get(timeout=timeout)
                else:
                    raw = self.process.lines.get_nowait()
            except queue.Empty:
                break
            first = False
            if raw is None:
                self._eof = True
                break
            message = self._handle_line(raw)
            if message is not None:
                out.append(message)
        if self._eof and self.process.returncode is None:
            try:
                self.process.popen.wait(timeout=1.0)  # type: ignore[union-attr]
            except Exception:  # noqa: BLE001
                pass
        if self._eof and self.process.returncode is not None:
            self.process.cleanup()
        return out

    def poll(self) -> list[dict[str, Any]]:
        """Responses received since the last call, without waiting."""
        out, self._unclaimed = self._unclaimed, []
        return out + self._drain()

    def wait(self, rid: int, timeout: float) -> dict[str, Any]:
        """Blocks until the response to ``rid``; raises OccNetError on timeout or when the server dies."""
        deadline = time.monotonic() + timeout
        for i, message in enumerate(self._unclaimed):
            if message.get("id") == rid:
                return self._unclaimed.pop(i)
        while True:
            if self._eof:  # the reader saw EOF: every line the server wrote is already handled
                self.error = self.error or "it ended"
                raise OccNetError(self.failure_message())
            left = deadline - time.monotonic()
            if left <= 0:
                raise OccNetError(f"The slider server did not answer within {timeout:.0f} s. Its log: {self.log_path}")
            for message in self._drain(timeout=min(left, 0.25)):
                if message.get("id") == rid:
                    return message
                self._unclaimed.append(message)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Blocks until the model is loaded; raises OccNetError (with the log's tail) if it fails."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            if self._eof or self.process is None:
                self.error = self.error or "it ended before it was ready"
                raise OccNetError(self.failure_message())
            left = deadline - time.monotonic()
            if left <= 0:
                raise OccNetError(f"The slider server did not load the model within {timeout:.0f} s. Its log: {self.log_path}")
            self._unclaimed.extend(self._drain(timeout=min(left, 0.25)))

    def failure_message(self) -> str:
        code = self.process.returncode if self.process else None
        how = process.describe_exit(code) if code is not None else "still running"
        reason = self.error if self.error not in ("", "it ended", "it ended before it was ready") else f"it ended ({how})"
        if self.error == "it ended before it was ready":
            reason = f"it ended before loading the model ({how})"
        tail = self.process.log_tail() if self.process else ""
        detail = f"\nLast log lines:\n{tail}" if tail else ""
        return f"The slider server for {self.checkpoint} failed: {reason}. Full log: {self.log_path}{detail}"


class ClientPool:
    """The live servers, one per checkpoint; started on demand, the least recently used ended
    beyond ``max_servers``."""

    def __init__(self, max_servers: int = MAX_SERVERS):
        self.max_servers = max_servers
        self.servers: "OrderedDict[str, SliderClient]" = OrderedDict()

    def __len__(self) -> int:
        return len(self.servers)

    def __iter__(self):
        return iter(list(self.servers.values()))

    def find(self, checkpoint: str) -> SliderClient | None:
        return self.servers.get(checkpoint_key(checkpoint))

    def get(self, checkpoint: str, factory: Callable[[], SliderClient]) -> SliderClient:
        """The running server for ``checkpoint``, else a new one from ``factory()`` (started here)."""
        key = checkpoint_key(checkpoint)
        server = self.servers.get(key)
        if server is not None and server.alive:
            self.servers.move_to_end(key)
            return server
        if server is not None:
            self.stop(key)
        server = factory()
        server.start()
        self.servers[key] = server
        while len(self.servers) > self.max_servers:
            oldest = next(iter(self.servers))
            self.stop(oldest)
        return server

    def stop(self, key: str) -> None:
        """Ends the server of ``key`` (a key or a checkpoint path), if any."""
        server = self.servers.pop(key if key in self.servers else checkpoint_key(key), None)
        if server is not None:
            server.stop()

    def keep_only(self, checkpoints: Iterable[str]) -> list[str]:
        """Ends the servers of every checkpoint not in ``checkpoints``; returns the keys ended."""
        wanted = {checkpoint_key(c) for c in checkpoints}
        ended = [key for key in self.servers if key not in wanted]
        for key in ended:
            self.stop(key)
        return ended

    def stop_all(self) -> None:
        for key in list(self.servers):
            self.stop(key)


class Debouncer:
    """Collapses bursts of changes: a key is due ``delay`` seconds after its last ``touch``."""

    def __init__(self, delay: float = DEBOUNCE_S, clock: Callable[[], float] = time.monotonic):
        self.delay = delay
        self.clock = clock
        self.pending: dict[Any, float] = {}

    def touch(self, key: Any) -> None:
        self.pending[key] = self.clock()

    def discard(self, key: Any) -> None:
        self.pending.pop(key, None)

    def due(self, busy: Callable[[Any], bool] = lambda key: False) -> list[Any]:
        """Keys whose last change is at least ``delay`` old and that are not ``busy``; they leave the queue."""
        now = self.clock()
        ready = [k for k, t in self.pending.items() if now - t >= self.delay and not busy(k)]
        for key in ready:
            del self.pending[key]
        return ready

    def __bool__(self) -> bool:
        return bool(self.pending)


def normalise_weights(weights: Iterable[float]) -> list[float]:
    """A plain list of floats; raises OccNetError for anything that is not a list of finite numbers."""
    try:
        values = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise OccNetError(f"weights must be a list of numbers, one per learned shape; got {weights!r}") from None
    if any(v != v or v in (float("inf"), float("-inf")) for v in values):
        raise OccNetError(f"weights must be finite numbers; got {values}")
    return values
