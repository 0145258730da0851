"""Running the PyTorch backend as a subprocess: which Python, which command, its events, its end.

No bpy in here (stdlib only), so the whole process life cycle is testable on plain CPython and
usable from both the modal operator (polled by a timer) and the blocking path (``blender -b``).

Why a subprocess at all: torch must never be imported into Blender's process (its bundled
Python rarely has it, a crash in training would take the user's scene with it, and a GPU job
would freeze the UI). The backend talks back only through files and JSON lines on stdout.

Process hygiene: every backend runs in its own process group/session so that

- Ctrl-C in a terminal running ``blender -b`` reaches Blender, which forwards a *graceful*
  cancel (SIGINT to the backend) instead of the backend dying mid-write;
- a kill reaches the backend's own children (data loader workers) too.

All live processes are tracked here and ended when the add-on is unregistered or Python exits
(``atexit``), so no backend outlives Blender.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import OccNetError

# Modules the backend imports, mapped to the pip package that provides each.
REQUIRED_MODULES: dict[str, str] = {
    "torch": "torch",
    "numpy": "numpy<2",
    "trimesh": "trimesh",
    "skimage": "scikit-image",
    "scipy": "scipy",
    "igl": "libigl",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
}

ENV_PYTHON = "OCCNET_PYTHON"
EXIT_CANCELLED = 130
RESOLUTIONS = (32, 64, 128, 256, 512)  # the backend's MISE extractor refines a 32³ grid by doubling
CANCEL_GRACE_S = 30.0  # after a graceful cancel, how long the backend may take to save and exit
TERMINATE_GRACE_S = 3.0  # at unregister / exit: SIGTERM first, SIGKILL after this


# --------------------------------------------------------------------------------------------
# Where the backend lives and which Python runs it
# --------------------------------------------------------------------------------------------

def addon_dir() -> Path:
    return Path(__file__).resolve().parent


def backend_root() -> Path:
    """The folder to put on PYTHONPATH so that ``import occnet_backend`` finds the right copy.

    The built add-on bundles ``occnet_backend`` inside itself (so it runs exactly the backend it
    was built with); in a source checkout it sits beside ``blender_addon``.
    """
    here = addon_dir()
    for root in (here, here.parent):
        if (root / "occnet_backend" / "__init__.py").is_file():
            return root
    raise OccNetError(
        f"The OccNet backend (occnet_backend) is missing: looked in {here} and {here.parent}. "
        "Reinstall the add-on from a zip built with build_addon.py."
    )


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def candidate_pythons(work_dir: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """Interpreters worth probing, best first, as (path, where it came from).

    sys.executable is last: inside Blender it is Blender's own Python, which usually lacks torch
    (but when Blender runs as the ``bpy`` module inside a torch venv it is exactly right).
    """
    found: list[tuple[str, str]] = []
    try:
        root = backend_root()
        found.append((str(_venv_python(root / ".venv")), f"virtual environment beside the backend ({root / '.venv'})"))
    except OccNetError:
        pass
    if work_dir:
        found.append((str(_venv_python(Path(work_dir) / "venv")), "the work folder's environment"))
    for name in ("python3.12", "python3.11", "python3.10", "python3", "python"):
        path = shutil.which(name)
        if path:
            found.append((path, f"'{name}' on PATH"))
    if sys.executable:
        found.append((sys.executable, "the Python running Blender"))
    unique: list[tuple[str, str]] = []
    seen: set[str] = set()
    for path, origin in found:
        key = os.path.realpath(path)
        if key not in seen and os.path.isfile(path):
            seen.add(key)
            unique.append((path, origin))
    return unique


_PROBE = (
    "import importlib.util, json, sys;"
    "print(json.dumps({'version': list(sys.version_info[:3]), "
    "'missing': [m for m in %r if importlib.util.find_spec(m) is None]}))"
)


def run_interpreter(argv: list[str], *, timeout: float, **kwargs: Any) -> subprocess.CompletedProcess:
    """subprocess.run for probing an interpreter, in its own process group: on a timeout the whole
    group is killed, so a wrapper script's children (a hanging `python`) do not live on as orphans."""
    if os.name != "nt":
        kwargs["start_new_session"] = True
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                if os.name == "nt":
                    proc.kill()
                else:
                    os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError, OSError):
                pass
            proc.communicate()
            raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def probe_python(python: str, timeout: float = 20.0) -> dict[str, Any]:
    """Fast check (no imports, just find_spec): {'version': [3, 11, 7], 'missing': [...]}.

    Raises OccNetError when the interpreter does not run at all.
    """
    try:
        out = run_interpreter([python, "-c", _PROBE % (list(REQUIRED_MODULES),)], timeout=timeout, env=_clean_env())
    except FileNotFoundError:
        raise OccNetError(f"Backend Python '{python}' does not exist.") from None
    except PermissionError:
        raise OccNetError(f"Backend Python '{python}' is not executable.") from None
    except subprocess.TimeoutExpired:
        raise OccNetError(f"Backend Python '{python}' did not answer within {timeout:.0f} s.") from None
    except OSError as err:
        raise OccNetError(f"Backend Python '{python}' cannot be started: {err}") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise OccNetError(f"Backend Python '{python}' fails to run a trivial script: {last}")
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise OccNetError(f"Backend Python '{python}' gave an unexpected answer: {out.stdout[:200]!r}") from None


def install_hint(python: str, missing: Iterable[str]) -> str:
    packages = " ".join(f'"{REQUIRED_MODULES[m]}"' if "<" in REQUIRED_MODULES[m] else REQUIRED_MODULES[m] for m in missing)
    return f'"{python}" -m pip install {packages}'


def missing_message(python: str, origin: str, info: dict[str, Any]) -> str:
    version = ".".join(str(v) for v in info.get("version", []))
    missing = info.get("missing", [])
    return (
        f"Backend Python {python} ({origin}, Python {version}) lacks {', '.join(missing)}. "
        f"Install with: {install_hint(python, missing)} - or pick another interpreter in the "
        f"add-on preferences (or set {ENV_PYTHON}) and press Check Backend."
    )


_DETECTED: dict[str, tuple[str, str]] = {}


def resolve_python(preference: str = "", work_dir: str | None = None, *, check: bool = True) -> tuple[str, str]:
    """The backend interpreter: (path, where it came from). Raises OccNetError saying what to do.

    Order: the add-on preference, then $OCCNET_PYTHON, then the first auto-detected interpreter
    that has every required module. An explicit choice (preference or variable) is never
    silently replaced by another: if it is broken the user must hear about it.
    """
    explicit = [(preference.strip(), "add-on preferences"), (os.environ.get(ENV_PYTHON, "").strip(), f"${ENV_PYTHON}")]
    for python, origin in explicit:
        if not python:
            continue
        python = os.path.expanduser(python)
        if os.path.isdir(python):
            raise OccNetError(
                f"Backend Python '{python}' (from {origin}) is a folder; give the interpreter file inside it "
                f"(e.g. {os.path.join(python, 'bin', 'python')})."
            )
        if not os.path.isfile(python):
            raise OccNetError(
                f"Backend Python '{python}' (from {origin}) does not exist. Fix the path, or clear it to auto-detect."
            )
        if check:
            info = probe_python(python)
            if info["missing"]:
                raise OccNetError(missing_message(python, origin, info))
        return python, origin
    key = str(work_dir or "")
    if key in _DETECTED and os.path.isfile(_DETECTED[key][0]):
        return _DETECTED[key]
    tried: list[str] = []
    for python, origin in candidate_pythons(work_dir):
        try:
            info = probe_python(python)
        except OccNetError:
            tried.append(f"{python} ({origin}): does not run")
            continue
        if not info["missing"]:
            _DETECTED[key] = (python, f"auto-detected: {origin}")
            return _DETECTED[key]
        tried.append(f"{python} ({origin}): lacks {', '.join(info['missing'])}")
    raise OccNetError(
        "No Python with the backend's packages (PyTorch and others) was found.\n"
        + ("Tried: " + "; ".join(tried) if tried else "No Python interpreter was found on PATH.") + "\n"
        + f"Fix: set Backend Python in the add-on preferences (or ${ENV_PYTHON}) to an interpreter that has them, "
        f"or install them into one: {install_hint('python3', REQUIRED_MODULES)}"
    )


def forget_detected() -> None:
    """Drops the cached auto-detection (after the user installed packages or changed paths)."""
    _DETECTED.clear()


_CHECK = r"""
import json, sys, importlib
report = {"python": sys.executable, "version": sys.version.split()[0], "modules": {}, "errors": {}}
for name in NAMES:
    try:
        mod = importlib.import_module(name)
        report["modules"][name] = getattr(mod, "__version__", "?")
    except Exception as err:
        report["errors"][name] = f"{type(err).__name__}: {err}"
if "torch" in report["modules"]:
    import torch
    report["cuda"] = bool(torch.cuda.is_available())
    report["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if report["cuda"] else []
    mps = getattr(torch.backends, "mps", None)
    report["mps"] = bool(mps and mps.is_available())
try:
    import occnet_backend
    report["backend"] = getattr(occnet_backend, "__version__", "?")
    report["backend_path"] = occnet_backend.__file__
except Exception as err:
    report["errors"]["occnet_backend"] = f"{type(err).__name__}: {err}"
print(json.dumps(report))
"""


def check_backend(python: str, timeout: float = 180.0) -> dict[str, Any]:
    """Imports everything the backend needs, in the backend interpreter; returns its report.

    Slower than ``probe_python`` (imports torch: seconds), but it is what the "Check Backend"
    button needs: versions, the device that ``auto`` would pick, and the exact import errors.
    """
    code = _CHECK.replace("NAMES", repr(list(REQUIRED_MODULES)))
    try:
        out = run_interpreter([python, "-c", code], timeout=timeout, env=backend_env(), cwd=str(backend_root()))
    except FileNotFoundError:
        raise OccNetError(f"Backend Python '{python}' does not exist.") from None
    except subprocess.TimeoutExpired:
        raise OccNetError(f"Checking the backend in '{python}' took more than {timeout:.0f} s.") from None
    except OSError as err:
        raise OccNetError(f"Backend Python '{python}' cannot be started: {err}") from None
    lines = out.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (ValueError, IndexError):
        tail = " | ".join(out.stderr.strip().splitlines()[-3:])
        raise OccNetError(f"Backend check in '{python}' failed (exit code {out.returncode}): {tail}") from None


def summarize_check(report: dict[str, Any], origin: str = "") -> tuple[bool, str]:
    """(ok, a short multi-line message) from ``check_backend``'s dict: the verdict first, then the
    interpreter and where it came from, then versions and device, or exactly what to fix."""
    python = report.get("python", "?")
    where = f"Interpreter: {python}" + (f" ({origin})" if origin else "") + f", Python {report.get('version')}"
    if report.get("errors"):
        missing = [m for m in report["errors"] if m in REQUIRED_MODULES and "No module named" in report["errors"][m]]
        broken = {m: e for m, e in report["errors"].items() if m not in missing}
        lines = ["Backend not ready.", where]
        if missing:
            lines.append(f"Missing: {', '.join(missing)}. Fix: {install_hint(python, missing)}")
        for name, error in broken.items():
            lines.append(f"{name} fails to import: {error.splitlines()[0][:200]}")
        return False, "\n".join(lines)
    device = "CUDA (" + ", ".join(report.get("devices") or ["GPU"]) + ")" if report.get("cuda") else "CPU"
    if report.get("mps") and not report.get("cuda"):
        device = "CPU (Apple MPS available)"
    return True, "\n".join([
        "Backend ready.", where,
        f"torch {report['modules'].get('torch')}, device for Auto: {device}, occnet_backend {report.get('backend')}",
    ])


def _clean_env() -> dict[str, str]:
    """The environment for backend processes, without Blender's Python settings.

    PYTHONHOME/PYTHONSTARTUP from Blender's environment would point the backend interpreter at
    the wrong standard library or run stray code.
    """
    env = dict(os.environ)
    for name in ("PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "__PYVENV_LAUNCHER__"):
        env.pop(name, None)
    return env


def backend_env() -> dict[str, str]:
    env = _clean_env()
    root = str(backend_root())
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


# --------------------------------------------------------------------------------------------
# The fit command
# --------------------------------------------------------------------------------------------

@dataclass
class FitSettings:
    """Everything `occnet_backend fit` takes besides paths. Defaults match the backend's."""

    steps: int = 300
    resolution: int = 128
    threshold: float = 0.5
    device: str = "auto"  # auto | cpu | cuda
    points: int = 8192
    width: int = 128
    depth: int = 5
    fourier_frequencies: int = 64  # 0 = off

    def validate(self) -> None:
        problems = []
        if self.steps < 1:
            problems.append(f"steps must be at least 1 (got {self.steps})")
        if self.resolution not in RESOLUTIONS:
            problems.append(
                f"resolution must be one of {', '.join(map(str, RESOLUTIONS))} "
                f"(the extractor doubles a 32³ grid; got {self.resolution})"
            )
        if not 0.0 < self.threshold < 1.0:
            problems.append(f"threshold must lie strictly between 0 and 1 (got {self.threshold})")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"device must be auto, cpu or cuda (got {self.device!r})")
        if self.points < 64:
            problems.append(f"points must be at least 64 (got {self.points})")
        if self.width < 8 or self.depth < 1:
            problems.append(f"width must be >= 8 and depth >= 1 (got {self.width}, {self.depth})")
        if self.fourier_frequencies < 0:
            problems.append(f"Fourier frequencies must be >= 0 (got {self.fourier_frequencies})")
        if problems:
            raise OccNetError("Invalid OccNet settings: " + "; ".join(problems) + ".")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_command(python: str, ply_paths: list[str], out_dir: str, settings: FitSettings) -> list[str]:
    """The argv of one fit run (a list, never a shell string: paths may hold spaces and quotes)."""
    s = settings
    return [
        python, "-m", "occnet_backend", "fit", *[str(p) for p in ply_paths],
        "--out", str(out_dir),
        "--steps", str(s.steps),
        "--resolution", str(s.resolution),
        "--threshold", repr(float(s.threshold)),
        "--device", s.device,
        "--points", str(s.points),
        "--width", str(s.width),
        "--depth", str(s.depth),
        "--fourier-frequencies", str(s.fourier_frequencies),
        "--events", "jsonl",
    ]


# --------------------------------------------------------------------------------------------
# Progress state from the event stream
# --------------------------------------------------------------------------------------------

@dataclass
class JobState:
    """What the event stream has told so far; the panel and the progress printer read this."""

    device: str = ""
    step: int = 0
    total: int = 0
    loss: float | None = None
    iou: float | None = None
    points_per_s: float | None = None
    eta_s: float | None = None
    checkpoint: str = ""
    meshes: dict[str, str] = field(default_factory=dict)  # shape_id -> PLY path
    metrics: dict[str, Any] = field(default_factory=dict)
    parameters: Any = None  # what the backend says about its model (e.g. the parameter count)
    error: str = ""
    done: str = ""  # "", "ok", "cancelled", "error"
    phase: str = "starting"
    revision: int = 0  # counts applied events: the panel redraws only when it changed

    def apply(self, event: dict[str, Any]) -> None:
        """Folds one event into the state. Tolerant: a malformed field is ignored, never raised,
        so a backend newer or older than the add-on cannot crash Blender's timer."""
        self.revision += 1
        try:
            self._apply(event)
        except (TypeError, ValueError, AttributeError):
            pass

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":
            self.device = str(event.get("device", ""))
            self.total = _int(event.get("total_steps"), self.total)
            self.parameters = event.get("parameters")
            self.phase = "training"
        elif kind == "stage":
            self.phase = {"prepare": "preparing", "train": "training", "extract": "extracting"}.get(
                str(event.get("name")), str(event.get("name", self.phase)))
        elif kind == "progress":
            self.step = _int(event.get("step"), self.step)
            self.total = _int(event.get("total"), self.total)
            for name in ("loss", "iou", "points_per_s", "eta_s"):
                if name in event:  # absent: keep the last value; null: unknown now
                    setattr(self, name, _num(event[name]))
            self.phase = "training"
        elif kind == "checkpoint":
            self.checkpoint = str(event.get("path", ""))
        elif kind == "mesh":
            self.meshes[str(event.get("shape_id"))] = str(event.get("path"))
            self.phase = "extracting"
        elif kind == "metrics":
            fields = {k: v for k, v in event.items() if k not in ("event", "time", "shape_id")}
            if "shape_id" in event:
                self.metrics[str(event["shape_id"])] = fields
            else:
                self.metrics.update(fields)
        elif kind == "error":
            self.error = str(event.get("message", "unknown error"))
        elif kind == "done":
            self.done = str(event.get("status", ""))
            if self.done == "error" and not self.error:
                self.error = str(event.get("message", ""))
            self.phase = "done"

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total else 0.0

    @property
    def phase_text(self) -> str:
        """What the backend is doing, for the progress bar."""
        if self.phase == "training":
            if not self.step:
                return "Starting training..."
            return f"Step {self.step} / {self.total}" if self.total else f"Step {self.step}"
        return PHASE_TEXT.get(self.phase, self.phase.capitalize())

    def evaluation_line(self, shape_ids: list[str]) -> str:
        """The backend's evaluation of the results (not the last training batch): IoU, Chamfer-L1,
        closedness; the mean over shapes when there are several."""
        found = [self.metrics[s] for s in shape_ids if isinstance(self.metrics.get(s), dict)]
        if not found:
            return ""

        def mean(key: str) -> float | None:
            values = [_num(m.get(key)) for m in found]
            values = [v for v in values if v is not None and math.isfinite(v)]
            return sum(values) / len(values) if values else None

        parts = []
        iou, chamfer = mean("iou"), mean("chamfer_l1")
        prefix = "mean " if len(found) > 1 else ""
        if iou is not None:
            parts.append(f"{prefix}IoU {iou:.3f}")
        if chamfer is not None:
            parts.append(f"Chamfer-L1 {chamfer:.4f}")
        closed = sum(bool(m.get("watertight")) for m in found)
        parts.append(("watertight" if closed else "not watertight") if len(found) == 1 else f"{closed}/{len(found)} watertight")
        return ", ".join(parts)

    def progress_line(self) -> str:
        parts = [f"step {self.step}/{self.total}" if self.total else self.phase]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.iou is not None:
            parts.append(f"IoU {self.iou:.3f}")
        if self.eta_s is not None:
            parts.append(f"ETA {format_seconds(self.eta_s)}")
        if self.device:
            parts.append(self.device)
        return ", ".join(parts)


PHASE_TEXT = {
    "starting": "Starting the backend...",
    "preparing": "Preparing data (sampling and labelling points)...",
    "extracting": "Extracting and evaluating the surface...",
    "done": "Finishing...",
}


def _int(value: Any, default: int) -> int:
    try:
        return default if value is None else int(value)
    except (TypeError, ValueError):
        return default


def _num(value: Any) -> float | None:
    """A finite float, or None (missing, malformed, NaN or infinite: the panel shows '-')."""
    try:
        number = None if value is None else float(value)
    except (TypeError, ValueError):
        return None
    return number if number is not None and math.isfinite(number) else None


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


# --------------------------------------------------------------------------------------------
# The process
# --------------------------------------------------------------------------------------------

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
        text = line.decode("utf-8", "replace").strip()
        if not text:
            return None
        try:
            event = json.loads(text)
        except ValueError:
            event = None
        if not isinstance(event, dict) or "event" not in event:
            # A stray print in the backend or a library: keep it, but in the log, not the stream.
            self._write_log(f"[stdout] {text}\n")
            return None
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
