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


def backend(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "occnet_backend", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=600, **kwargs)


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
    assert "resolution 2048 is above this server's limit of 512" in answers[0]["error"] and "GB" in answers[0]["error"]
    assert "UTF-8" in answers[1]["error"]
    assert "limit of 256 for method 'dense'" in answers[2]["error"]
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
