"""`python -m occnet_backend prepare` as the add-on runs it: a real subprocess, JSON-lines events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh

REPO = Path(__file__).resolve().parent.parent
SMALL = ["--points", "4000", "--surface-points", "500"]


def run_prepare(*args, cwd=None) -> tuple[int, list[dict], str, int]:
    """Run the command; returns (exit code, events, stderr, peak RSS in MB of the whole process tree)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "occnet_backend", "prepare", *map(str, args), "--events", "jsonl"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd or REPO, env=env, text=True, encoding="utf-8",
    )
    out, err = proc.communicate(timeout=300)
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # largest child so far
    return proc.returncode, events, err, peak_mb


def test_prepare_folder_with_workers(tmp_path, suzanne):
    src = tmp_path / "my meshes"
    src.mkdir()
    trimesh.creation.box().export(src / "cube.obj")
    trimesh.creation.icosphere(subdivisions=2).export(src / "Kugel ü.off")
    v, f = suzanne
    trimesh.Trimesh(v, f, process=False).export(src / "suzanne.ply")
    out = tmp_path / "data set"
    rc, events, err, _ = run_prepare(src, "--out", out, "--workers", "2", "--split", "0.34,0.33,0.33", *SMALL)
    assert rc == 0, err
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and events[0]["total"] == 3
    assert kinds.count("progress") == 3 and kinds[-1] == "done"
    assert events[-1]["status"] == "ok" and events[-1]["shapes"] == 3 and events[-1]["built"] == 3
    assert [e["step"] for e in events if e["event"] == "progress"] == [1, 2, 3]
    assert sorted(p.name for p in (out / "cache").iterdir()) == ["Kugel ü.npz", "cube.npz", "suzanne.npz"]
    splits = [json.loads((out / f"{s}.json").read_text(encoding="utf-8")) for s in ("train", "val", "test")]
    assert sorted(sum(splits, [])) == ["Kugel ü", "cube", "suzanne"]
    assert "prepared 3 shapes" in err

    # second run: nothing to do, split files kept
    rc, events, err, _ = run_prepare("--out", out, *SMALL)
    assert rc == 0 and events[-1]["cached"] == 3 and events[-1]["built"] == 0
    assert [json.loads((out / f"{s}.json").read_text(encoding="utf-8")) for s in ("train", "val", "test")] == splits


def test_bad_input_is_one_line_error_and_exit_1(tmp_path):
    trimesh.creation.box().export(tmp_path / "good.obj")
    (tmp_path / "broken.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 3\nend_header\n0 0")
    rc, events, err, _ = run_prepare(tmp_path / "good.obj", tmp_path / "broken.ply", "--out", tmp_path / "d",
                                     "--workers", "1", *SMALL)
    assert rc == 1
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "broken.ply" in lines[0]
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == 1 and "broken.ply" in errors[0]["message"]
    assert events[-1] == {**events[-1], "event": "done", "status": "error"}

    rc, events, err, _ = run_prepare(tmp_path / "missing.obj", "--out", tmp_path / "d", *SMALL)
    assert rc == 1 and "Traceback" not in err and "missing.obj" in err and events[-1]["status"] == "error"

    (tmp_path / "x").mkdir()
    trimesh.creation.box().export(tmp_path / "x" / "good.stl")
    rc, events, err, _ = run_prepare(tmp_path / "good.obj", tmp_path / "x", "--out", tmp_path / "d2", *SMALL)
    assert rc == 1 and "duplicate shape id 'good'" in err and "Traceback" not in err

    rc, events, err, _ = run_prepare(tmp_path / "good.obj", "--out", tmp_path / "d3", "--points", "0")
    assert rc == 1 and "--points" in err and events[-1]["status"] == "error"


@pytest.mark.slow
def test_million_face_mesh_in_bounded_memory(tmp_path):
    """1.3 M faces (a 1.3 M-face PLY, 63 MB): prepared in well under 2 GB."""
    big = trimesh.creation.icosphere(subdivisions=8)
    assert len(big.faces) > 1_000_000
    big.export(tmp_path / "big.ply")
    del big
    rc, events, err, peak_mb = run_prepare(tmp_path / "big.ply", "--out", tmp_path / "d", "--workers", "1",
                                           "--points", "20000", "--surface-points", "5000")
    assert rc == 0, err
    assert events[-1]["status"] == "ok"
    from occnet_backend.data.folder import load_samples

    s = load_samples(tmp_path / "d", "big")
    assert s["meta"]["faces"] > 1_000_000
    r = np.linalg.norm(s["uniform_points"], axis=1)
    keep = np.abs(r - 0.5) > 0.005
    assert (s["uniform_occupancy"][keep] == (r[keep] < 0.5)).all()
    assert peak_mb < 2000, f"peak RSS {peak_mb:.0f} MB"
