"""Which Python runs the backend: discovery, a fast probe, the full Check Backend, its environment.

No bpy in here (stdlib only), so it is testable on plain CPython. Why a separate interpreter at
all: torch must never be imported into Blender's process (its bundled Python rarely has it, a
crash in training would take the user's scene with it, a GPU job would freeze the UI).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..occnet_contract.dependencies import MODULES, READY_FILE, env_python, install_command
from .errors import OccNetError

ENV_PYTHON = "OCCNET_PYTHON"


def addon_dir() -> Path:
    """The add-on's own folder (it holds ``occnet_contract``, which the backend imports too)."""
    return Path(__file__).resolve().parent.parent


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


INSTALLED_ENV: list[Path] = []
"""Where Install Backend puts the environment (the add-on's user folder), set when the add-on registers."""


def candidate_pythons(work_dir: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """Interpreters worth probing, best first, as (path, where it came from).

    First the environment Install Backend built (once finished: its ready file is in it).
    sys.executable is last: inside Blender it is Blender's own Python, which usually lacks torch
    (but when Blender runs as the ``bpy`` module inside a torch venv it is exactly right).
    """
    found: list[tuple[str, str]] = []
    if INSTALLED_ENV and (INSTALLED_ENV[0] / READY_FILE).is_file():
        found.append((str(env_python(INSTALLED_ENV[0])), f"installed by Install Backend ({INSTALLED_ENV[0]})"))
    try:
        root = backend_root()
        found.append((str(env_python(root / ".venv")), f"virtual environment beside the backend ({root / '.venv'})"))
    except OccNetError:
        pass
    if work_dir:
        found.append((str(env_python(Path(work_dir) / "venv")), "the work folder's environment"))
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


def run_python(python: str, code: str, *, timeout: float, **kwargs: Any) -> subprocess.CompletedProcess:
    """``python -c code`` (see `run_interpreter`); OccNetError saying why when it cannot run at all."""
    try:
        return run_interpreter([python, "-c", code], timeout=timeout, **kwargs)
    except FileNotFoundError:
        raise OccNetError(f"Backend Python '{python}' does not exist.") from None
    except PermissionError:
        raise OccNetError(f"Backend Python '{python}' is not executable.") from None
    except subprocess.TimeoutExpired:
        raise OccNetError(f"Backend Python '{python}' did not answer within {timeout:.0f} s.") from None
    except OSError as err:
        raise OccNetError(f"Backend Python '{python}' cannot be started: {err}") from None


def probe_python(python: str, timeout: float = 20.0) -> dict[str, Any]:
    """Fast check (no imports, just find_spec): {'version': [3, 11, 7], 'missing': [...]}.

    Raises OccNetError when the interpreter does not run at all.
    """
    out = run_python(python, _PROBE % (list(MODULES),), timeout=timeout, env=_clean_env())
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise OccNetError(f"Backend Python '{python}' fails to run a trivial script: {last}")
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise OccNetError(f"Backend Python '{python}' gave an unexpected answer: {out.stdout[:200]!r}") from None


def missing_message(python: str, origin: str, info: dict[str, Any]) -> str:
    version = ".".join(str(v) for v in info.get("version", []))
    missing = info.get("missing", [])
    return (
        f"Backend Python {python} ({origin}, Python {version}) lacks {', '.join(missing)}. "
        f"Install with: {install_command(python, missing)} - or clear it and press Install Backend (a private "
        f"environment with everything), or pick another interpreter in the add-on preferences (or set "
        f"{ENV_PYTHON}) and press Check Backend."
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
        + "Fix: press Install Backend (in the add-on preferences, or at the top of the sidebar panel): it builds a "
        f"private environment with them. Or set Backend Python in the preferences (or ${ENV_PYTHON}) to an "
        f"interpreter that has them, or install them into one: {install_command('python3')}"
    )


def detected_before() -> bool:
    """Whether auto-detection found an interpreter in this session (and it still exists)."""
    return any(os.path.isfile(python) for python, _ in _DETECTED.values())


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
    out = run_python(python, _CHECK.replace("NAMES", repr(list(MODULES))), timeout=timeout, env=backend_env(),
                     cwd=str(backend_root()))
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
        missing = [m for m in report["errors"] if m in MODULES and "No module named" in report["errors"][m]]
        broken = {m: e for m, e in report["errors"].items() if m not in missing}
        lines = ["Backend not ready.", where]
        if missing:
            lines.append(f"Missing: {', '.join(missing)}. Fix: {install_command(python, missing)}")
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
    roots = list(dict.fromkeys([str(backend_root()), str(addon_dir())]))  # one folder in the zip, two in a checkout
    env["PYTHONPATH"] = os.pathsep.join(roots + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env
