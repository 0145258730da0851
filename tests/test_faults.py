"""Faults a careless or hostile user causes, through real processes: a protocol fuzzer for `serve`,
crafted checkpoints, outputs that overlap inputs, filesystem errors (a read-only folder, a full
tmpfs when root), and signals at each stage of `fit`. Each checks the message, and that nothing was
lost, left running or half-written."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from test_serve_cli import sphere_checkpoint  # noqa: F401 - the fixture

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def backend(*args, cwd=REPO, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "occnet_backend", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=env, **kwargs)


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr[-2000:])


# ---- serve: a protocol fuzzer -------------------------------------------------------------------

def _fuzz_requests(n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    values = [None, True, -1, 0, 3, 2.5, 1e308, float("nan"), "abc", "", [], [1, 2], {"a": 1}, "\u00e9", 10**30]
    lines: list[bytes] = [
        b"\xff\xfe not utf-8\n", b"{\n", b"[1, 2, 3]\n", b'"just a string"\n', b"null\n", b"{}\n", b"nan\n",
        b'{"command": "explode"}\n', b'{"resolution": 2048}\n', b'{"resolution": 4096, "method": "dense"}\n',
        b'{"resolution": 512, "method": "dense"}\n', b'{"weights": [1e308, 1e308]}\n', b'{"weights": "abc"}\n',
        b'{"weights": [-1]}\n', b'{"shape": 5}\n', b'{"threshold": 1.5}\n', b'{"threshold": "x"}\n',
        b"[" * 5000 + b"\n", b'{"id": {"deep": [1]}, "resolution": 63}\n',
    ]
    keys = ["id", "command", "resolution", "threshold", "weights", "shape", "method", "extra"]
    while len(lines) < n:
        kind = rng.random()
        if kind < 0.2:
            lines.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60))).replace(b"\n", b"") + b"\n")
        else:
            request = {k: rng.choice(values) for k in rng.sample(keys, rng.randrange(0, len(keys)))}
            if request.get("command") == "quit":
                request["command"] = "info"
            if isinstance(request.get("resolution"), int) and not isinstance(request.get("resolution"), bool):
                request["resolution"] = rng.choice([32, 33, 64, 100000])
            lines.append(json.dumps(request).encode() + b"\n")
    return lines


def test_serve_answers_every_malformed_request_and_stays_up(sphere_checkpoint, tmp_path):  # noqa: F811
    checkpoint, _ = sphere_checkpoint
    requests = _fuzz_requests(300)
    proc = subprocess.Popen([sys.executable, "-m", "occnet_backend", "serve", "--checkpoint", str(checkpoint),
                             "--out", str(tmp_path), "--device", "cpu"], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready = json.loads(proc.stdout.readline())
    assert ready["event"] == "ready"
    answered = 0
    started = time.monotonic()
    for line in requests:
        proc.stdin.write(line)
        proc.stdin.flush()
        if not line.strip():
            continue
        reply = proc.stdout.readline()
        assert reply, f"the server died on {line[:80]!r}: {proc.stderr.read().decode()[-2000:]}"
        answer = json.loads(reply)
        assert isinstance(answer.get("ok"), bool), answer
        if not answer["ok"]:
            assert isinstance(answer["error"], str) and answer["error"]
        answered += 1
    elapsed = time.monotonic() - started
    proc.stdin.write(b'{"id": "last", "resolution": 32}\n')
    proc.stdin.flush()
    last = json.loads(proc.stdout.readline())
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    assert last["id"] == "last" and last["ok"] and answered >= 290
    assert elapsed < 240, f"{answered} requests took {elapsed:.0f} s: a request is allowed to take too long"


def test_serve_refuses_what_cannot_fit_before_allocating(sphere_checkpoint, tmp_path):  # noqa: F811
    checkpoint, _ = sphere_checkpoint
    lines = b'{"id": 1, "resolution": 2048}\n\xff\n{"id": 3, "resolution": 4096, "method": "dense"}\n' \
            b'{"id": 4, "weights": [1e308]}\n{"id": 5, "command": "quit"}\n'
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "occnet_backend", "serve", "--checkpoint", str(checkpoint), "--out",
                             str(tmp_path), "--device", "cpu"], cwd=REPO, input=lines, capture_output=True, timeout=120)
    answers = [json.loads(line) for line in result.stdout.splitlines()][1:]
    assert result.returncode == 0 and time.monotonic() - started < 60
    assert "resolution must be one of 32, 64, 128, 256, 512 (MISE doubles a 32³ grid), got 2048" in answers[0]["error"]
    assert "UTF-8" in answers[1]["error"]
    assert "a dense grid's resolution must be between 2 and 256, got 4096" in answers[2]["error"]
    assert answers[3]["ok"] and answers[4] == {"id": 5, "ok": True}  # one shape: weights [1e308] normalise to [1]


# ---- crafted checkpoints ------------------------------------------------------------------------

def _fit_payload(checkpoint: Path) -> dict:
    return torch.load(checkpoint, weights_only=True)


def test_crafted_checkpoints_are_refused_before_anything_is_built(sphere_checkpoint, tmp_path):  # noqa: F811
    checkpoint, _ = sphere_checkpoint
    good = _fit_payload(checkpoint)
    cases = {
        "huge": ({**good, "model_config": {**good["model_config"], "dim_hidden": 200000, "num_layers": 50}},
                 "M parameters (the limit is 200 M)"),
        "no_ids": ({k: v for k, v in good.items() if k != "shape_ids"}, "lists no shape ids"),
        "centres": ({**good, "shape_ids": ["a", "b"]}, "normalisation does not fit its 2 shape(s)"),
        "shapes": ({**good, "model": {**good["model"], "fc_in.weight": torch.zeros(3, 3)}}, "weights do not match"),
        "config": ({**good, "model_config": ["not", "a", "mapping"]}, "model_config is not a mapping"),
    }
    for name, (payload, message) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(payload, path)
        started = time.monotonic()
        result = backend("serve", "--checkpoint", path, "--device", "cpu", input="")
        one_line_error(result, f"{path}: ", message)
        assert time.monotonic() - started < 60
    torch.save({"format": "occnet-train-1"}, tmp_path / "empty.pt")
    (tmp_path / "run.yaml").write_text(json.dumps({
        "model": {"dim_hidden": 8, "num_layers": 1},
        "dataset": {"type": "synthetic", "num_samples": 1, "num_points": 64, "batch_size": 1},
        "trainer": {"device": "cpu", "max_steps": 2, "progress_bar": False}}))
    (tmp_path / "run.json").write_text((tmp_path / "run.yaml").read_text())
    result = backend("train", "--config", tmp_path / "run.json", "--resume", tmp_path / "empty.pt")
    one_line_error(result, "empty.pt: the training checkpoint lacks model_class, model, optimizer, step, epoch")


# ---- outputs that overlap inputs, folders reused ------------------------------------------------

FAST_FIT = ("--steps", "20", "--resolution", "32", "--width", "16", "--depth", "1", "--cached-points", "4000",
            "--device", "cpu", "--workers", "1")


def test_fit_never_writes_over_its_input(tmp_path):
    (tmp_path / "u" / "meshes").mkdir(parents=True)
    trimesh.creation.icosphere().export(tmp_path / "u" / "meshes" / "sphere.ply")
    before = (tmp_path / "u" / "meshes" / "sphere.ply").read_bytes()
    result = backend("fit", tmp_path / "u" / "meshes" / "sphere.ply", "--out", tmp_path / "u", *FAST_FIT)
    one_line_error(result, "sphere.ply lies where fit writes its results", "choose an --out folder outside")
    assert (tmp_path / "u" / "meshes" / "sphere.ply").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "u").iterdir()) == ["meshes"], "a refused fit wrote something"


def test_fit_refuses_a_foreign_folder_and_starts_an_earlier_fit_clean(tmp_path):
    trimesh.creation.icosphere().export(tmp_path / "sphere.obj")
    trimesh.creation.box().export(tmp_path / "box.obj")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    one_line_error(backend("fit", tmp_path / "box.obj", "--out", tmp_path / "notes", *FAST_FIT),
                   "holds files fit did not write ('todo.txt')")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"
    run = tmp_path / "run"
    assert backend("fit", tmp_path / "sphere.obj", "--out", run, *FAST_FIT).returncode == 0
    result = backend("fit", tmp_path / "box.obj", "--out", run, *FAST_FIT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "held an earlier fit of sphere: starting clean" in result.stderr
    assert torch.load(run / "checkpoint.pt", weights_only=True)["shape_ids"] == ["box"]
    assert sorted(p.name for p in (run / "meshes").iterdir()) == ["box.ply"] and not (run / "slices_sphere.png").exists()


def test_out_that_is_a_file_is_one_clear_line(tmp_path):
    (tmp_path / "taken").write_text("x")
    trimesh.creation.box().export(tmp_path / "box.obj")
    for command in (("fit", tmp_path / "box.obj", *FAST_FIT), ("prepare", tmp_path / "box.obj")):
        result = backend(*command, "--out", tmp_path / "taken", "--events", "jsonl")
        one_line_error(result, f"--out {tmp_path / 'taken'} is a file, not a folder")
        assert [json.loads(l)["event"] for l in result.stdout.splitlines()] == ["error", "done"]
    assert (tmp_path / "taken").read_text() == "x"


def test_a_python_without_a_requirement_gets_the_command_that_installs_it(tmp_path):
    """An environment made before the backend needed manifold3d: a fit of overlapping closed parts (which
    takes their union) ends with one line naming the package and the pip command, not a traceback."""
    blocked = tmp_path / "blocked" / "manifold3d"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'manifold3d'\", name='manifold3d')\n")
    base = trimesh.creation.box((1.0, 1.0, 0.2))
    block = trimesh.creation.box((0.5, 0.5, 0.4))
    block.apply_translation((0.1, 0.0, 0.2))
    trimesh.util.concatenate([base, block]).export(tmp_path / "kit.ply")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "blocked"), str(REPO)])}
    result = subprocess.run([sys.executable, "-m", "occnet_backend", "fit", tmp_path / "kit.ply", "--out",
                             tmp_path / "out", *FAST_FIT], cwd=REPO, capture_output=True, text=True, timeout=600,
                            env=env)
    one_line_error(result, "this Python lacks manifold3d>=", f'"{sys.executable}" -m pip install "manifold3d>=')


# ---- filesystem errors --------------------------------------------------------------------------

def test_read_only_output_folder_is_one_clear_line(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the tmpfs test below covers root")
    trimesh.creation.box().export(tmp_path / "box.obj")
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    result = backend("prepare", tmp_path / "box.obj", "--out", tmp_path / "ro" / "data", "--events", "jsonl")
    one_line_error(result, "permission denied")


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 3 MB tmpfs (root only): a disk that fills up, then the same read-only."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a tmpfs")
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


def test_full_and_read_only_disks_are_one_clear_line(tmp_path, small_tmpfs):
    import trimesh as tm

    tm.creation.icosphere(subdivisions=6).export(tmp_path / "big.ply")  # ~2 MB: the copy fills most of 3 MB
    (small_tmpfs / "filler").write_bytes(b"\0" * (2 * 1024 * 1024))
    for command in (("prepare", tmp_path / "big.ply", "--workers", "1"), ("fit", tmp_path / "big.ply", *FAST_FIT)):
        result = backend(*command, "--out", small_tmpfs / f"out_{command[0]}", "--events", "jsonl")
        one_line_error(result, "no space left on the disk", "MB free there")
        assert [json.loads(l)["event"] for l in result.stdout.splitlines()][-2:] == ["error", "done"]
    leftovers = [p for p in small_tmpfs.rglob("*") if p.is_file() and p.name != "filler" and p.suffix == ".tmp"]
    assert not leftovers, f"half-written files left: {leftovers}"
    (small_tmpfs / "filler").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    result = backend("prepare", tmp_path / "big.ply", "--out", small_tmpfs / "ro", "--workers", "1")
    one_line_error(result, "the file system is read-only")


# ---- signals at each stage of fit, and during a parallel prepare ---------------------------------

def _stage_events(proc: subprocess.Popen, until) -> list[dict]:
    seen = []
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        if line.startswith("{"):
            seen.append(json.loads(line))
            if until(seen[-1]):
                return seen
        assert time.monotonic() < deadline, "the stage never came"
    return seen


def _children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(proc.name))
        except (OSError, IndexError, ValueError):
            pass
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.parametrize("stage, sig", [("prepare", signal.SIGINT), ("prepare", signal.SIGTERM),
                                        ("train", signal.SIGINT), ("extract", signal.SIGINT),
                                        ("evaluate", signal.SIGINT), ("evaluate", signal.SIGTERM)])
def test_cancel_is_safe_at_every_stage_of_fit(tmp_path, suzanne, stage, sig):
    trimesh.Trimesh(*suzanne).export(tmp_path / "a.ply")
    trimesh.creation.icosphere(subdivisions=4).export(tmp_path / "b.ply")
    args = ["fit", tmp_path / "a.ply", tmp_path / "b.ply", "--out", tmp_path / "out", "--events", "jsonl",
            "--steps", "3000" if stage == "train" else "30", "--resolution", "128" if stage != "train" else "32",
            "--width", "32", "--depth", "2", "--device", "cpu"]
    args += ["--workers", "2", "--cached-points", "400000"] if stage == "prepare" else ["--workers", "1", "--cached-points", "20000"]
    proc = subprocess.Popen([sys.executable, "-m", "occnet_backend", *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    trigger = {"prepare": lambda e: e["event"] == "stage" and e["name"] == "prepare",
               "train": lambda e: e["event"] == "progress" and e["step"] >= 5,
               "extract": lambda e: e["event"] == "stage" and e["name"] == "extract",
               "evaluate": lambda e: e["event"] == "mesh"}[stage]
    _stage_events(proc, trigger)
    time.sleep(1.5 if stage == "prepare" else 0.2)
    workers = _children(proc.pid)
    if stage == "prepare":
        assert workers, "no worker processes were running yet: the test would not test them"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    events = [json.loads(l) for l in stdout.splitlines() if l.startswith("{")]
    assert proc.returncode == 130, (proc.returncode, stderr[-2000:])
    assert "Traceback" not in stderr, stderr[-2000:]
    assert events and events[-1]["event"] == "done" and events[-1]["status"] == "cancelled"
    time.sleep(0.5)
    assert not [w for w in workers if _alive(w)], "worker processes outlived the cancel"
    assert not list((tmp_path / "out").rglob("*.tmp")), "half-written files left"
    if stage != "prepare":
        torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)  # the checkpoint is whole


# ---- weak messages made specific ----------------------------------------------------------------

def test_garbage_and_truncated_meshes_say_what_they_are(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "noise.obj").write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (tmp_path / "noise.stl").write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    trimesh.creation.box().export(tmp_path / "box.ply", encoding="ascii")
    text = (tmp_path / "box.ply").read_text()
    (tmp_path / "cut.ply").write_text(text[: text.index("\n3 ")])
    for name, message in (("noise.obj", "is not a text OBJ file"), ("noise.stl", "is not a valid binary STL"),
                          ("cut.ply", "is truncated or damaged: its header declares 12 faces")):
        result = backend("prepare", tmp_path / name, "--out", tmp_path / f"data_{name}", "--workers", "1")
        one_line_error(result, message)
        assert "check that the export selected the objects" not in result.stderr


def test_a_file_named_like_an_option_gets_a_hint(tmp_path):
    trimesh.creation.box().export(tmp_path / "-dash.obj")
    result = backend("fit", "-dash.obj", "--out", "out", cwd=tmp_path)
    assert result.returncode == 2 and "write ./-dash.obj" in result.stderr and "required" not in result.stderr


def test_dataset_copies_are_readable_by_others(tmp_path):
    trimesh.creation.box().export(tmp_path / "box.obj")
    assert backend("prepare", tmp_path / "box.obj", "--out", tmp_path / "data", "--workers", "1").returncode == 0
    assert (tmp_path / "data" / "meshes" / "box.obj").stat().st_mode & 0o777 == 0o644


def test_eval_and_train_siblings(tmp_path, suzanne, small_tmpfs):
    """The same faults on the other commands: SIGINT during eval's scoring (scipy inside) is a clean
    cancel with nothing written; train on a full disk is one line."""
    trimesh.Trimesh(*suzanne).export(tmp_path / "a.ply")
    run = tmp_path / "run"
    assert backend("fit", tmp_path / "a.ply", "--out", run, *FAST_FIT).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "occnet_backend", "eval", "--checkpoint", str(run / "checkpoint.pt"),
                             "--data", str(run / "data"), "--split", "train", "--out", str(tmp_path / "eval"),
                             "--resolution", "256"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6)  # torch imported, scoring under way
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, (proc.returncode, stderr[-2000:])
    assert not (tmp_path / "eval").exists() or not list((tmp_path / "eval").iterdir())

    (small_tmpfs / "filler").write_bytes(b"\0" * (3 * 1024 * 1024 - 64 * 1024))
    (tmp_path / "run.json").write_text(json.dumps({
        "model": {"dim_hidden": 64, "num_layers": 3},
        "dataset": {"type": "synthetic", "num_samples": 1, "num_points": 64, "batch_size": 1},
        "trainer": {"device": "cpu", "max_steps": 2, "progress_bar": False}}))
    result = backend("train", "--config", tmp_path / "run.json", "--out", small_tmpfs / "train", "--events", "jsonl")
    one_line_error(result, "no space left on the disk")


def test_cancel_works_when_the_parent_ignores_sigint(tmp_path, suzanne):
    """A process started in the background by a non-interactive shell (`blender &` in a script,
    `nohup ... &`) inherits SIGINT ignored; the add-on's Cancel is a SIGINT, so the backend must
    listen to it anyway, also while preparing (training has its own handler)."""
    trimesh.Trimesh(*suzanne).export(tmp_path / "a.ply")
    args = ["fit", tmp_path / "a.ply", "--out", tmp_path / "out", "--events", "jsonl", "--steps", "30",
            "--resolution", "32", "--width", "32", "--depth", "2", "--device", "cpu", "--workers", "1",
            "--cached-points", "400000"]
    proc = subprocess.Popen([sys.executable, "-m", "occnet_backend", *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    _stage_events(proc, lambda e: e["event"] == "stage" and e["name"] == "prepare")
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, stderr[-2000:])
    events = [json.loads(l) for l in stdout.splitlines() if l.startswith("{")]
    assert events[-1]["event"] == "done" and events[-1]["status"] == "cancelled"
