"""Install Backend, the bpy-free half: which Python to build the environment from, the installer
process (`install_backend.py`, run like any backend process: own process group, log file, cancel),
what its events said, and removing the environment.

The environment is private to the add-on (its user folder); `interpreter.candidate_pythons` picks
it first once its ready file is in it (see `occnet_contract.dependencies.READY_FILE`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..occnet_contract.dependencies import READY_FILE, env_python
from . import interpreter, process
from .errors import OccNetCancelled, OccNetError
from .jobstate import format_seconds

SCRIPT = Path(__file__).with_name("install_backend.py")
ENV_BASE_PYTHON = "OCCNET_BASE_PYTHON"
PYTHON_VERSIONS = ((3, 11), (3, 12))
"""Pythons the pinned requirements have wheels for (numpy < 2 has none for 3.13)."""

_BASE_PROBE = ("import sys, json, importlib.util; print(json.dumps({'version': list(sys.version_info[:3]), "
               "'venv': all(importlib.util.find_spec(m) is not None for m in ('venv', 'ensurepip'))}))")


def ready_python(env: str | os.PathLike) -> Path | None:
    """The environment's interpreter when Install Backend finished it, else None."""
    python = env_python(env)
    return python if (Path(env) / READY_FILE).is_file() and python.is_file() else None


def choose_base_python() -> tuple[str, str]:
    """(interpreter, why) to build the environment from: $OCCNET_BASE_PYTHON, else the Python
    running Blender, else python3.12 / python3.11 on PATH: the first that is 3.11 or 3.12 and has
    venv and ensurepip. OccNetError naming every candidate and why it does not fit otherwise."""
    candidates = []
    if os.environ.get(ENV_BASE_PYTHON, "").strip():
        candidates.append((os.environ[ENV_BASE_PYTHON].strip(), f"${ENV_BASE_PYTHON}"))
    if sys.executable:
        candidates.append((sys.executable, "the Python running Blender"))
    for name in ("python3.12", "python3.11"):
        found = shutil.which(name)
        if found:
            candidates.append((found, f"'{name}' on PATH"))
    wanted = " or ".join(".".join(map(str, v)) for v in PYTHON_VERSIONS)
    tried = []
    for python, origin in candidates:
        try:
            out = interpreter.run_python(python, _BASE_PROBE, timeout=30, env=interpreter._clean_env())
            info = json.loads(out.stdout.strip().splitlines()[-1])
        except (OccNetError, ValueError, IndexError):
            tried.append(f"{python} ({origin}): does not run")
            continue
        version = tuple(info["version"][:2])
        if version not in PYTHON_VERSIONS:
            tried.append(f"{python} ({origin}): Python {'.'.join(map(str, info['version']))}, not {wanted}")
        elif not info["venv"]:
            tried.append(f"{python} ({origin}): has no venv/ensurepip module (on Debian/Ubuntu: apt install "
                         f"python{version[0]}.{version[1]}-venv)")
        else:
            return python, f"{origin}, Python {'.'.join(map(str, info['version']))}"
    raise OccNetError(
        f"No Python {wanted} with venv was found to build the backend's environment from. Tried: "
        + ("; ".join(tried) or "nothing (no python3.11/3.12 on PATH)")
        + f". Install Python {PYTHON_VERSIONS[-1][0]}.{PYTHON_VERSIONS[-1][1]} (python.org), or set {ENV_BASE_PYTHON} "
        "to one, or set Backend Python in the preferences to an interpreter that already has PyTorch.")


def install_command(base_python: str, env: str | os.PathLike, *, index_url: str = "", extra_index_url: str = "",
                    cpu_only: bool = False) -> list[str]:
    argv = [base_python, str(SCRIPT), "--env", str(env)]
    if index_url.strip():
        argv += ["--index-url", index_url.strip()]
    if extra_index_url.strip():
        argv += ["--extra-index-url", extra_index_url.strip()]
    return argv + (["--cpu-only"] if cpu_only else [])


@dataclass
class InstallState:
    """What the installer said so far (tolerant of malformed events, like JobState)."""

    stage: str = "starting"
    message: str = "Choosing a Python..."
    packages: int = 0
    bytes: float = 0.0
    seconds: float = 0.0
    error: str = ""
    done: str = ""
    python: str = ""  # the environment's interpreter, once done
    revision: int = 0

    def apply(self, event: dict[str, Any]) -> None:
        self.revision += 1
        kind = event.get("event")
        try:
            if kind == "stage":
                self.stage = str(event.get("name", self.stage))
            elif kind == "progress":
                self.message = str(event.get("message", self.message))
                self.packages = int(event.get("step") or self.packages)
                self.bytes = float(event.get("bytes") or self.bytes)
                self.seconds = float(event.get("seconds") or self.seconds)
            elif kind == "error":
                self.error = str(event.get("message", "unknown error"))
            elif kind == "done":
                self.done = str(event.get("status", ""))
                self.python = str(event.get("out") or "")
        except (TypeError, ValueError):
            pass

    def line(self, elapsed: float) -> str:
        """One line for the panel: what is happening, how much so far, for how long."""
        parts = [self.message]
        if self.packages:
            parts.append(f"{self.packages} collected")
        if self.bytes >= 1e6:
            parts.append(f"{self.bytes / 1e6:,.0f} MB downloaded")
        if math.isfinite(elapsed):
            parts.append(format_seconds(elapsed))
        return " - ".join(parts)


ACTIVE: list["Install"] = []
"""The install running in this Blender (at most one; the operators keep it)."""


def active() -> "Install | None":
    return ACTIVE[0] if ACTIVE else None


class Install:
    """One run of the installer: start, poll (the modal timer) or wait (the blocking path), cancel."""

    def __init__(self, env: str | os.PathLike, log_path: str | os.PathLike, *, base_python: str | None = None,
                 index_url: str = "", extra_index_url: str = "", cpu_only: bool = False):
        self.env = Path(env)
        self.log_path = Path(log_path)
        self.base_python, self.base_origin = (base_python, "given") if base_python else choose_base_python()
        self.argv = install_command(self.base_python, self.env, index_url=index_url, extra_index_url=extra_index_url,
                                    cpu_only=cpu_only)
        self.state = InstallState(message=f"Building from {self.base_python} ({self.base_origin})")
        self.proc: process.BackendProcess | None = None
        self.started_at = 0.0

    def start(self) -> "Install":
        interpreter.forget_detected()  # a repair removes the ready file first: nothing may keep using it
        self.env.parent.mkdir(parents=True, exist_ok=True)
        self.proc = process.BackendProcess(self.argv, cwd=self.env.parent, log_path=self.log_path).start()
        self.started_at = time.monotonic()
        return self

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started_at if self.started_at else 0.0

    def poll(self) -> bool:
        """Applies new events; True once the installer has ended."""
        for event in self.proc.poll():
            self.state.apply(event)
        return self.proc.finished

    def cancel(self) -> None:
        self.proc.cancel()

    def result(self) -> str:
        """The environment's interpreter after a successful run; OccNetCancelled / OccNetError otherwise."""
        code = self.proc.returncode
        if self.state.done == "ok" and code == 0 and ready_python(self.env):
            interpreter.forget_detected()
            return str(env_python(self.env))
        if self.state.done == "cancelled" or self.proc.cancel_requested_at is not None:
            raise OccNetCancelled(f"Install Backend was cancelled; nothing usable was left in {self.env}.")
        why = self.state.error or f"the installer stopped ({process.describe_exit(code)})"
        raise OccNetError(f"Install Backend failed: {why} Log: {self.log_path}")


def run_blocking(install: Install, on_event: Callable[[dict], None] | None = None,
                 should_cancel: Callable[[], bool] | None = None) -> str:
    """Start `install` and drive it to its end on this thread (the headless path); Ctrl-C cancels."""
    install.start()
    process.run_blocking(install.proc, install.state, on_event=on_event, should_cancel=should_cancel)
    return install.result()


def remove_environment(env: str | os.PathLike) -> bool:
    """Deletes the environment (its ready file first, so nothing picks up a half-deleted one);
    False when there was none."""
    env = Path(env)
    if not env.exists():
        return False
    (env / READY_FILE).unlink(missing_ok=True)
    shutil.rmtree(env)
    interpreter.forget_detected()
    return True
