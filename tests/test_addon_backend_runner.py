"""The add-on's backend runner on plain CPython: interpreter choice, command line, events, cancel, kill.

The life-cycle tests drive a small program that speaks the backend's event protocol (JSON lines,
graceful exit 130 on SIGINT), so signals and process groups are checked in seconds and
independently of training speed; the real backend is driven in test_addon_e2e.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from blender_addon.runner import interpreter, process, jobstate
from blender_addon.occnet_contract import dependencies, protocol
from blender_addon.occnet_contract.settings import FitSettings, SettingsError
from blender_addon.runner.errors import OccNetError

PROTOCOL_PROGRAM = textwrap.dedent(
    """
    import json, os, signal, subprocess, sys, time
    stop = False
    def on_signal(*_):
        global stop
        stop = True
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    mode = sys.argv[1]
    if mode == "child":  # a worker in the same process group, like a DataLoader worker
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(json.dumps({"event": "child", "pid": child.pid}), flush=True)
    def emit(**kw):
        print(json.dumps(kw), flush=True)
    emit(event="start", device="cpu", parameters={}, total_steps=50)
    print("a stray line from some library", flush=True)
    print("human log line", file=sys.stderr, flush=True)
    for step in range(1, 51):
        if stop:
            emit(event="done", status="cancelled")
            sys.exit(130)
        emit(event="progress", step=step, total=50, loss=1.0 / step, iou=step / 50, points_per_s=1e5, eta_s=50 - step)
        time.sleep(0.05 if mode != "fast" else 0)
    if mode == "crash":
        print("Traceback: something broke", file=sys.stderr, flush=True)
        sys.exit(1)
    emit(event="mesh", shape_id="a", path="out/a.ply")
    emit(event="done", status="ok")
    """
)


@pytest.fixture
def program(tmp_path: Path) -> Path:
    path = tmp_path / "protocol_program.py"
    path.write_text(PROTOCOL_PROGRAM)
    return path


def _start(tmp_path: Path, program: Path, mode: str) -> process.BackendProcess:
    return process.BackendProcess(
        [sys.executable, str(program), mode], cwd=tmp_path, log_path=tmp_path / "job" / "backend.log", env=dict(os.environ)
    ).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has exited for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_fit_command_is_an_argv_list_with_every_setting():
    settings = FitSettings(steps=7, resolution=32, threshold=0.4, device="cpu", points=512, width=32,
                           depth=2, fourier_frequencies=0, lr=3e-4, seed=5)
    argv = process.fit_command("/py thon", ["/a b/x.ply", "/c/y.ply"], "/o u t", settings)
    assert argv[:6] == ["/py thon", "-m", "occnet_backend", "fit", "/a b/x.ply", "/c/y.ply"]
    pairs = dict(zip(argv[6::2], argv[7::2]))
    assert pairs["--out"] == "/o u t" and pairs["--events"] == "jsonl"
    assert {k: pairs[k] for k in ("--steps", "--resolution", "--threshold", "--device", "--fourier-frequencies",
                                  "--lr")} == {"--steps": "7", "--resolution": "32", "--threshold": "0.4",
                                               "--device": "cpu", "--fourier-frequencies": "0", "--lr": "0.0003"}
    # every setting crosses: the backend's own `fit` parser reads back exactly these settings
    import argparse

    from occnet_backend.commands import fit

    parser = argparse.ArgumentParser()
    fit.add_arguments(parser)
    assert FitSettings.from_namespace(parser.parse_args(argv[4:])) == settings


def test_invalid_settings_are_named_by_their_flag():
    with pytest.raises(SettingsError, match=r"--threshold must lie strictly between 0 and 1, got 1.5.*--device"):
        FitSettings(threshold=1.5, device="tpu").validate()
    with pytest.raises(SettingsError, match=r"--resolution must be one of 32, 64, 128, 256, 512 .*got 100"):
        FitSettings(resolution=100).validate()
    with pytest.raises(SettingsError, match=r"--width must be a whole number, got 2.5"):
        FitSettings(width=2.5).validate()
    assert FitSettings(steps=300.0).validate().steps == 300 and isinstance(FitSettings(steps=300.0).validate().steps, int)


def test_job_state_follows_the_event_stream():
    state = jobstate.JobState()
    for event in [
        {"event": "stage", "name": "prepare"},
        {"event": "start", "device": "cpu", "parameters": 12345, "total_steps": 10},
        {"event": "progress", "step": 5, "total": 10, "loss": 0.25, "iou": None, "points_per_s": 1e5, "eta_s": 65},
        {"event": "checkpoint", "path": "model.pt"},
        {"event": "mesh", "shape_id": "Suzanne", "path": "Suzanne.ply"},
        {"event": "progress", "step": "garbage"},  # tolerated, ignored
        {"event": "metrics", "shape_id": "Suzanne", "iou": 0.9},
        {"event": "done", "status": "ok"},
    ]:
        state.apply(event)
    assert (state.device, state.step, state.total, state.fraction) == ("cpu", 5, 10, 0.5)
    assert state.iou is None and state.checkpoint == "model.pt" and state.meshes == {"Suzanne": "Suzanne.ply"}
    assert state.metrics == {"Suzanne": {"iou": 0.9}} and state.done == "ok" and state.parameters == 12345
    assert state.progress_line() == "step 5/10, loss 0.2500, ETA 1 min 05 s, cpu"


def test_events_stream_and_logs_are_separated(tmp_path, program):
    proc = _start(tmp_path, program, "fast")
    state = jobstate.JobState()
    process.run_blocking(proc, state)
    assert proc.returncode == 0 and state.done == "ok" and state.step == 50
    assert state.meshes == {"a": "out/a.ply"}
    log = proc.log_path.read_text()
    assert "human log line" in log and "[stdout] a stray line from some library" in log
    assert proc.argv[1] in log.splitlines()[0]  # the command line heads the log
    assert proc not in process.live_processes()


def test_cancel_is_graceful_then_the_process_is_gone(tmp_path, program):
    proc = _start(tmp_path, program, "slow")
    state = jobstate.JobState()
    process.run_blocking(proc, state, should_cancel=lambda: state.step >= 3)
    assert proc.returncode == protocol.EXIT_CANCELLED and state.done == "cancelled"
    assert 3 <= state.step < 50
    assert not _alive(proc.pid) and proc not in process.live_processes()


def test_second_cancel_kills_the_whole_process_group(tmp_path, program):
    proc = _start(tmp_path, program, "child")
    child_pid = None
    deadline = time.monotonic() + 20
    while child_pid is None and time.monotonic() < deadline:
        for event in proc.wait_events(0.2):
            if event["event"] == "child":
                child_pid = event["pid"]
    assert child_pid and _alive(child_pid)
    os.kill(proc.pid, signal.SIGSTOP)  # a backend stuck in a long step: it cannot react to SIGINT
    proc.cancel()
    proc.cancel()  # the user insists
    assert proc.killed and proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child_pid), "the backend's worker outlived the kill"
    proc.cleanup()
    assert proc not in process.live_processes()


def test_shutdown_all_ends_running_backends(tmp_path, program):
    procs = [_start(tmp_path, program, "slow") for _ in range(2)]
    time.sleep(0.3)
    process.shutdown_all()
    assert all(p.returncode is not None and not _alive(p.pid) for p in procs)
    assert not any(p in process.live_processes() for p in procs)


def test_describe_exit():
    assert process.describe_exit(-9) == "killed by SIGKILL"
    assert process.describe_exit(1) == "exit code 1"


# ---- which Python ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def python_without_torch(tmp_path_factory) -> str:
    """A real interpreter that lacks torch: a fresh venv of the system Python."""
    base = shutil.which("python3.11") or shutil.which("python3")
    if base is None:
        pytest.skip("no system python3 to make a torch-less venv from")
    venv = tmp_path_factory.mktemp("notorch") / "venv"
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    out = subprocess.run([python, "-c", "import torch"], capture_output=True)
    if out.returncode == 0:
        pytest.skip(f"{base} has torch; cannot build a torch-less interpreter from it")
    return python


def test_preference_pointing_nowhere_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv(interpreter.ENV_PYTHON, raising=False)
    with pytest.raises(OccNetError, match=r"\(from add-on preferences\) does not exist"):
        interpreter.resolve_python(str(tmp_path / "nope" / "python"))


def test_interpreter_without_torch_says_what_is_missing_and_how_to_fix(python_without_torch, monkeypatch):
    monkeypatch.delenv(interpreter.ENV_PYTHON, raising=False)
    with pytest.raises(OccNetError) as info:
        interpreter.resolve_python(python_without_torch)
    message = str(info.value)
    assert python_without_torch in message and "lacks torch" in message
    assert f'"{python_without_torch}" -m pip install "torch==' in message
    # the hint installs everything the backend imports (tqdm and matplotlib were once left out)
    assert all(f'"{requirement}"' in message for requirement in dependencies.REQUIREMENTS.values()
               if requirement.split(">")[0] != "numpy")


def test_env_variable_is_used_and_checked(python_without_torch, monkeypatch):
    monkeypatch.setenv(interpreter.ENV_PYTHON, sys.executable)
    assert interpreter.resolve_python("") == (sys.executable, f"${interpreter.ENV_PYTHON}")
    monkeypatch.setenv(interpreter.ENV_PYTHON, python_without_torch)
    with pytest.raises(OccNetError, match=r"\$OCCNET_PYTHON.*lacks torch"):
        interpreter.resolve_python("")


def test_auto_detection_finds_an_interpreter_with_torch(monkeypatch):
    monkeypatch.delenv(interpreter.ENV_PYTHON, raising=False)
    interpreter.forget_detected()
    python, origin = interpreter.resolve_python("")
    assert origin.startswith("auto-detected")
    assert interpreter.probe_python(python)["missing"] == []


def test_check_backend_reports_torch_and_device():
    report = interpreter.check_backend(sys.executable)
    ok, message = interpreter.summarize_check(report)
    assert ok, message
    import torch

    lines = message.splitlines()
    assert lines[0] == "Backend ready."
    assert f"torch {torch.__version__}" in message and "device for Auto: CPU" in message
    assert Path(report["backend_path"]).resolve().parent.parent == interpreter.backend_root()


def test_check_backend_names_every_missing_module(python_without_torch):
    ok, message = interpreter.summarize_check(interpreter.check_backend(python_without_torch))
    assert not ok
    lines = message.splitlines()
    assert lines[0] == "Backend not ready." and python_without_torch in lines[1]
    missing = next(line for line in lines if line.startswith("Missing: "))
    for module in ("torch", "trimesh", "skimage", "igl", "tqdm", "matplotlib"):
        assert module in missing.split(". Fix:")[0]
    assert "-m pip install \"torch==" in message and "scikit-image" in message and "libigl" in message
    assert "ModuleNotFoundError" not in message  # the verdict and the fix, not the traceback words


def test_probe_reports_a_broken_interpreter(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'boom' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(OccNetError, match="fails to run a trivial script: boom"):
        interpreter.probe_python(str(fake))


def test_a_hanging_interpreter_times_out_and_leaves_nothing_running(tmp_path):
    """OCCNET_PYTHON pointing at a wrapper that hangs: the check says so, and no process outlives it."""
    marker = f"{300 + os.getpid() % 1000}.25"  # a sleep nobody else runs
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\nsleep {marker} &\nwait\n")  # a wrapper whose child hangs
    fake.chmod(0o755)
    for check in (lambda: interpreter.probe_python(str(fake), timeout=1.0),
                  lambda: interpreter.check_backend(str(fake), timeout=1.0)):
        with pytest.raises(OccNetError, match="did not answer within 1 s|took more than 1 s"):
            check()
    time.sleep(0.3)
    left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and marker.encode() in _cmdline(p)]
    assert not left, "the hanging interpreter's children are still running"


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes() + (proc / "comm").read_bytes()
    except OSError:
        return b""
