"""`python -m occnet_backend serve`: a real process answering requests from a fit checkpoint."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from torch.utils.data import DataLoader

from occnet_backend import OccupancyNetwork, OccupancyTrainer, SyntheticOccupancyDataset
from occnet_backend.fitting import load_fit_checkpoint, save_fit_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sphere_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    ds = SyntheticOccupancyDataset(num_samples=1, shapes=["sphere"], num_points=4096, seed=0)
    model = OccupancyNetwork(dim_hidden=64, num_layers=3, fourier_frequencies=32, fourier_scale=1.5)
    OccupancyTrainer(model, DataLoader(ds, batch_size=1), device="cpu", lr=2e-3).train(max_steps=250)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    save_fit_checkpoint(path, model, ["ball"], centers=np.array([[5.0, 0, 0]]), scales=np.array([2.0]))
    return path, ds.shapes[0]


def serve(checkpoint, requests, tmp_path):
    lines = "".join(json.dumps(r) + "\n" for r in requests)
    result = subprocess.run(
        [sys.executable, "-m", "occnet_backend", "serve", "--checkpoint", str(checkpoint), "--out", str(tmp_path),
         "--device", "cpu"], cwd=REPO, input=lines, capture_output=True, text=True, timeout=300)
    return result, [json.loads(line) for line in result.stdout.splitlines()]


def test_serve_warms_the_shape_while_idle_so_the_first_slider_move_evaluates_nothing(sphere_checkpoint, tmp_path):
    path, _ = sphere_checkpoint
    server = subprocess.Popen(
        [sys.executable, "-m", "occnet_backend", "serve", "--checkpoint", str(path), "--out", str(tmp_path), "--device", "cpu"],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert json.loads(server.stdout.readline())["event"] == "ready"
        deadline = time.monotonic() + 120
        while True:
            server.stdin.write(json.dumps({"id": 1, "command": "info"}) + "\n")
            server.stdin.flush()
            if json.loads(server.stdout.readline())["warmed"] == ["ball"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        server.stdin.write(json.dumps({"id": 2, "resolution": 128, "threshold": 0.5}) + "\n")  # the fit's (defaults)
        server.stdin.flush()
        move = json.loads(server.stdout.readline())
        assert move["ok"] and move["stats"]["evaluations"] == 0, move
        assert trimesh.load(move["path"]).is_watertight
    finally:
        server.stdin.close()
        assert server.wait(timeout=60) == 0, server.stderr.read()[-2000:]
        server.stdout.close()
        server.stderr.close()


def test_serve_warms_at_the_fits_resolution_and_ignores_settings_it_cannot_use(sphere_checkpoint, tmp_path):
    from occnet_backend.sliders import load_shape_model
    from occnet_backend.training.checkpoints import load_checkpoint, save_checkpoint
    from occnet_contract.settings import FitSettings

    model, _ = load_fit_checkpoint(sphere_checkpoint[0])
    path = save_fit_checkpoint(tmp_path / "at64.pt", model, ["ball"], centers=np.zeros((1, 3)), scales=np.ones(1),
                               settings=FitSettings(resolution=64, threshold=0.4))
    assert (load_shape_model(path, "cpu").settings.resolution, load_shape_model(path, "cpu").settings.threshold) == (64, 0.4)
    edited = load_checkpoint(path)
    edited["settings"] = {"resolution": 100, "threshold": 0.4}  # not a MISE resolution
    save_checkpoint(tmp_path / "edited.pt", edited)
    assert load_shape_model(tmp_path / "edited.pt", "cpu").settings.resolution == FitSettings().resolution


def test_checkpoint_round_trip_gives_the_same_function(sphere_checkpoint):
    path, _ = sphere_checkpoint
    model, payload = load_fit_checkpoint(path)
    assert payload["shape_ids"] == ["ball"]
    pts = torch.rand(100, 3) - 0.5
    again, _ = load_fit_checkpoint(path)
    assert torch.equal(model.predict_logits(pts), again.predict_logits(pts))


def test_serve_answers_extractions_in_source_coordinates_and_survives_bad_requests(sphere_checkpoint, tmp_path):
    path, shape = sphere_checkpoint
    result, answers = serve(path, [
        {"id": 1, "resolution": 64, "threshold": 0.5},
        {"id": 2, "resolution": 64, "threshold": 0.45},
        {"id": 3, "resolution": 63},
        {"id": 4, "command": "quit"},
        {"id": 5, "command": "info"},
    ], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert answers[0]["event"] == "ready" and answers[0]["shapes"] == ["ball"]
    first, second, bad, quit_ = answers[1:]
    assert first["ok"] and second["ok"] and quit_ == {"id": 4, "ok": True}
    assert len(answers) == 5, "nothing is answered after quit"
    assert second["stats"]["evaluations"] < first["stats"]["evaluations"] / 2
    mesh = trimesh.load(first["path"])
    assert mesh.is_watertight
    center = shape.translation * 2.0 + [5.0, 0, 0]  # unit cube -> source: x * scale + center
    assert np.allclose(mesh.bounds.mean(axis=0), center, atol=0.1)
    assert bad["ok"] is False and "resolution must be one of 32, 64, 128, 256, 512" in bad["error"]


@pytest.mark.parametrize("content, message", [(b"garbage", "not a readable checkpoint"), (None, "no such checkpoint")])
def test_serve_with_a_bad_checkpoint_is_one_clear_line(tmp_path, content, message):
    path = tmp_path / "checkpoint.pt"
    if content is not None:
        path.write_bytes(content)
    result, _ = serve(path, [], tmp_path)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_foreign_checkpoint_is_refused(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="not a checkpoint written by occnet_backend"):
        load_fit_checkpoint(path)
