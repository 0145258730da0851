#!/usr/bin/env python3
"""The real-window test suite: the add-on in a windowed Blender >= 4.2 under Xvfb (``make gui-test``).

Background ``bpy`` never runs the modal operator (no timers fire there), so the artist's own path,
pressing Reconstruct in the sidebar, is tested here, the way the artist meets it:

1. builds the extension zip (``build_addon.py``) and installs it with
   ``blender --command extension install-file``, as a user's Install from Disk does;
2. runs ``tests/gui/scenarios.py`` in a windowed Blender (session ``main``): Check Backend, a
   clicked Reconstruct with progress drawn, the result in "OccNet Results", live threshold and
   resolution, ESC and the Cancel button, a failure injected at each point of the modal path,
   save and quit;
3. checks that no backend or slider-server process outlived Blender;
4. reopens the saved .blend in a new Blender (session ``reopen``) and moves a slider; checks again.

Blender comes from Debian 13 (4.3.2, Python 3.13, numpy 2) in a chroot (``real_blender.sh``:
about 2 minutes and 300 MB the first time, seconds after that); the backend runs in this
interpreter (the project's venv, with torch) on the host. Needs root (debootstrap, mount, chroot).
Screenshots and the reports land in ``out/gui/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RECIPE = HERE / "real_blender.sh"
OUT = ROOT / "out" / "gui"


def leftover_processes(marker: str) -> list[str]:
    """Command lines of live processes that mention ``marker`` (our backends name files under it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in cmdline and "occnet_backend" in cmdline and state != "Z":
            found.append(f"{proc.name}: {cmdline.strip()[:200]}")
    return found


def recipe(env: dict, *args: str, check: bool = True) -> int:
    print("$ real_blender.sh", *args, flush=True)
    rc = subprocess.run(["bash", str(RECIPE), *args], env=env).returncode
    if check and rc != 0:
        raise SystemExit(f"gui-test: real_blender.sh {args[0]} failed with exit status {rc}")
    return rc


def session(env: dict, work: Path, name: str, *blender_args: str) -> tuple[bool, dict]:
    env = {**env, "OCCNET_GUI_SESSION": name}
    started = time.monotonic()
    rc = recipe(env, "run", str(work / "scenarios.py"), *blender_args, check=False)
    report_path = work / "out" / f"report-{name}.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {"scenarios": []}
    report["exit_status"] = rc
    report["wall_s"] = round(time.monotonic() - started, 1)
    time.sleep(1.0)  # a process Blender killed at exit needs a moment to be reaped
    report["leftover_processes"] = leftover_processes(str(work))
    ok = rc == 0 and bool(report["scenarios"]) and all(s["ok"] for s in report["scenarios"]) \
        and not report["leftover_processes"]
    return ok, report


def main() -> int:
    if os.geteuid() != 0:
        print("gui-test: needs root (debootstrap, mount and chroot for Blender 4.3 from Debian 13)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="occnet-gui-", dir="/tmp"))
    (work / "out").mkdir()
    shutil.copy(HERE / "scenarios.py", work / "scenarios.py")
    env = {
        **os.environ,
        "REAL_BLENDER_DIR": str(work / "rb"),  # a fresh HOME: the extension installed anew, default prefs
        "REAL_BLENDER_HOST_PYTHON": sys.executable,  # the backend runs in this venv, on the host
        # Install Backend builds its environment from that Python, on the host; its python links
        # into this installation, which Blender inside then runs directly
        "REAL_BLENDER_BIND": sys.base_prefix,
        "REAL_BLENDER_PASS": "OCCNET_GUI_OUT OCCNET_GUI_SESSION",
        "REAL_BLENDER_TIMEOUT": os.environ.get("REAL_BLENDER_TIMEOUT", "600"),
        "REAL_BLENDER_LOG": str(work / "out" / "blender.log"),
        "OCCNET_GUI_OUT": str(work / "out"),
    }
    env.pop("OCCNET_PYTHON", None)
    # Install Backend's pip runs on the host with Blender's HOME: give it this user's pip settings
    # (local wheels, mirrors), so the real-window install takes what the unit suite's does
    user_pip = Path.home() / ".config" / "pip" / "pip.conf"
    if "PIP_CONFIG_FILE" not in env and user_pip.is_file():
        env["PIP_CONFIG_FILE"] = str(user_pip)
    env["REAL_BLENDER_PASS"] += "".join(f" {name}" for name in sorted(env) if name.startswith("PIP_"))
    subprocess.run([sys.executable, str(ROOT / "build_addon.py"), "--out", str(work / "dist")], check=True)
    (zip_path,) = [p for p in (work / "dist").glob("*.zip") if not p.name.endswith("-legacy.zip")]
    recipe(env, "setup")
    recipe(env, "install-extension", str(zip_path))
    results = [session(env, work, "main")]
    if results[0][0]:
        results.append(session(env, work, "reopen", str(work / "out" / "scene.blend")))
    if OUT.exists():
        shutil.rmtree(OUT)
    shutil.copytree(work / "out", OUT, ignore=shutil.ignore_patterns("*.blend", "*.blend1"))
    print()
    for ok, report in results:
        print(f"session {report.get('session', '?')}: {'ok' if ok else 'FAILED'} "
              f"(exit {report['exit_status']}, {report['wall_s']} s, Blender {report.get('blender', '?')})")
        for s in report["scenarios"]:
            print(f"  {'PASS' if s['ok'] else 'FAIL'} {s['name']:34s} {s.get('seconds', 0):6.1f} s  {s['message']}")
        for line in report["leftover_processes"]:
            print(f"  LEFT RUNNING: {line}")
    print(f"screenshots and reports: {OUT}")
    passed = all(ok for ok, _ in results) and len(results) == 2
    if passed:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work folder kept for inspection: {work}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
