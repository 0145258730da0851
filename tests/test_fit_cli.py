"""`python -m occnet_backend fit` end to end, as the add-on runs it: real subprocess, real files."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from occnet_backend.data.labels import inside

REPO = Path(__file__).resolve().parents[1]
TINY = ["--steps", "150", "--points", "2048", "--width", "64", "--depth", "2", "--resolution", "64",
        "--fourier-frequencies", "32", "--cached-points", "20000", "--device", "cpu", "--workers", "1"]


def run_fit(args, **kwargs):
    return subprocess.run([sys.executable, "-m", "occnet_backend", "fit", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600, **kwargs)


def events_of(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_fit_reconstructs_suzanne_in_its_own_coordinates(tmp_path, suzanne):
    vertices, faces = suzanne
    vertices = vertices * 3.0 + [10.0, -2.0, 5.0]  # far from the unit cube: normalisation must be undone
    source = tmp_path / "my monkey.ply"  # spaces in names must work
    trimesh.Trimesh(vertices, faces, process=False).export(source)
    out = tmp_path / "run"
    result = run_fit([str(source), "--out", str(out), *TINY, "--events", "jsonl"])
    assert result.returncode == 0, result.stderr[-2000:]
    events = events_of(result.stdout)
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "done" and events[-1]["status"] == "ok"
    assert {"start", "progress", "checkpoint", "mesh"} <= set(kinds)
    mesh_event = next(e for e in events if e["event"] == "mesh")
    assert mesh_event["shape_id"] == "my monkey"
    recon = trimesh.load(mesh_event["path"])
    assert recon.is_watertight and recon.volume > 0
    # placed over the source: IoU on points around the source's bounding box
    lo, hi = vertices.min(0), vertices.max(0)
    probe = np.random.default_rng(0).uniform(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo), (50_000, 3))
    a, b = inside(vertices, faces, probe), inside(recon.vertices, recon.faces, probe)
    assert (a & b).sum() / (a | b).sum() > 0.6
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["shape_ids"] == ["my monkey"] and checkpoint["model_class"] == "OccupancyNetwork"
    assert not list(out.rglob("*.tmp")), "no temporary files left behind"
    summary = json.loads((out / "metrics.json").read_text())
    from occnet_backend.training.precision import cpu_has_native_bf16

    assert summary["training_precision"] == ("bfloat16" if cpu_has_native_bf16() else "float32")
    reason = summary["training_precision_reason"]
    assert reason.startswith(summary["training_precision"]) and "amp 'auto'" in reason
    assert ("in hardware" if cpu_has_native_bf16() else "without native bf16") in reason
    assert f"precision {reason}" in result.stderr, "the log does not say which precision training uses"
    metrics = summary["shapes"]["my monkey"]
    assert metrics["watertight"] and metrics["iou"] > 0.6 and metrics["chamfer_l1"] < 0.05
    for png in ("training_curve.png", "slices_my monkey.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_bad_input_is_one_clear_line_and_exit_1(tmp_path):
    cloud = tmp_path / "cloud.ply"
    trimesh.PointCloud(np.random.rand(100, 3)).export(cloud)
    result = run_fit([str(cloud), "--out", str(tmp_path / "run"), *TINY, "--events", "jsonl"])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "cloud.ply" in result.stderr and "error:" in result.stderr
    events = events_of(result.stdout)
    assert events[-1] == {**events[-1], "event": "done", "status": "error"}
    assert any(e["event"] == "error" and "cloud.ply" in e["message"] for e in events)
    assert not (tmp_path / "run" / "meshes").exists()


def test_fit_bad_settings_are_rejected(tmp_path):
    box = tmp_path / "box.obj"
    trimesh.creation.box().export(box)
    result = run_fit([str(box), "--out", str(tmp_path / "run"), "--resolution", "100"])
    assert result.returncode == 2 and "--resolution: invalid choice: 100 (choose from 32, 64, 128, 256, 512)" in result.stderr
    result = run_fit([str(box), "--out", str(tmp_path / "run"), "--amp", "int8"])
    assert result.returncode == 2 and "--amp: invalid choice: 'int8'" in result.stderr
    from occnet_contract.settings import FitSettings

    with pytest.raises(ValueError, match="--amp must be one of off, auto, bf16, fp16, got 'int8'"):
        FitSettings(amp="int8").validate()


@pytest.mark.slow
def test_sigterm_cancels_saves_and_exits_130(tmp_path):
    box = tmp_path / "box.obj"
    trimesh.creation.box().export(box)
    args = [sys.executable, "-m", "occnet_backend", "fit", str(box), "--out", str(tmp_path / "run"),
            *TINY[:0], "--steps", "100000", "--width", "32", "--depth", "1", "--cached-points", "20000",
            "--device", "cpu", "--workers", "1", "--events", "jsonl"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if '"progress"' in line:
            break
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert events_of(stdout)[-1]["status"] == "cancelled"
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["shape_ids"] == ["box"]


def test_a_disk_without_room_for_the_grids_file_still_gets_the_whole_fit(tmp_path, suzanne, monkeypatch, caplog):
    """`grids.pt` only saves the sliders time (`warm_grids`): when the disk runs out while it is written,
    the fit still ends 'ok' with its meshes, checkpoint and metrics, says why the file is missing, and
    leaves no part of it behind."""
    import errno

    from occnet_backend.fitting import fit_meshes
    from occnet_backend.warm_grids import GRIDS_FILE, GRIDS_FORMAT
    from occnet_contract.settings import FitSettings

    real_save = torch.save

    def save(payload, f, *args, **kwargs):
        if isinstance(payload, dict) and payload.get("format") == GRIDS_FORMAT:
            f.write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(payload, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    source = tmp_path / "monkey.ply"
    trimesh.Trimesh(*suzanne, process=False).export(source)
    out = tmp_path / "run"
    result = fit_meshes([source], out, FitSettings(steps=30, points=2048, resolution=32, cached_points=20000,
                                                   workers=1, device="cpu"))
    assert result.status == "ok" and result.mesh_paths["monkey"].is_file()
    assert (out / "checkpoint.pt").is_file() and (out / "metrics.json").is_file()
    assert not (out / GRIDS_FILE).exists() and not list(out.rglob("*.tmp"))
    assert f"could not write {GRIDS_FILE}" in caplog.text and "No space left" in caplog.text
