"""Resume means resume: bit-exact on the CPU on every route (Python, config, the `train` command),
validation on, and a checkpoint refuses data other than what it was trained on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from occnet_backend import create_trainer_from_config
from occnet_backend.data.folder import prepare_dataset
from occnet_backend.data.sampling import SamplingConfig

ROOT = Path(__file__).resolve().parent.parent


def config(tmp_path: Path, steps: int, **dataset) -> dict:
    return {
        "model": {"dim_hidden": 16, "num_layers": 2, "fourier_frequencies": 8},
        "dataset": {"type": "synthetic", "num_samples": 6, "num_points": 128, "batch_size": 2, **dataset},
        "optimizer": {"type": "adam", "lr": 1e-3},
        "trainer": {"device": "cpu", "max_steps": steps, "val_every": 3, "checkpoint_every": 100,
                    "progress_bar": False, "checkpoint_dir": str(tmp_path / "ckpt"), "log_dir": str(tmp_path / "logs")},
    }


def losses(history: list[dict]) -> list[float]:
    return [r["loss"] for r in history]


def test_config_route_resume_is_bit_exact_with_validation(tmp_path):
    full = create_trainer_from_config(config(tmp_path / "a", 10)).train()
    first = create_trainer_from_config(config(tmp_path / "b", 4))
    first.train()
    torch.manual_seed(999)  # a new process starts from other RNG states
    np.random.seed(999)
    second = create_trainer_from_config(config(tmp_path / "b", 10))
    second.resume(tmp_path / "b" / "ckpt" / "last.pt")
    resumed = second.train()
    assert losses(resumed) == losses(full)  # bit-exact, not approximately
    # the same validations (every 3 steps, and at the end; the first part also validated at its end, step 4)
    every_third = lambda history: [(r["step"], r["val_iou"]) for r in history if "val_iou" in r and r["step"] % 3 == 0]  # noqa: E731
    assert every_third(resumed) == every_third(full) and len(every_third(full)) == 3
    assert resumed[-1]["val_iou"] == full[-1]["val_iou"], "the run did not validate at its end"


def test_a_short_run_validates_at_the_end_and_writes_best(tmp_path):
    trainer = create_trainer_from_config({**config(tmp_path, 4), "trainer": {
        **config(tmp_path, 4)["trainer"], "val_every": 500}})
    history = trainer.train()
    assert "val_iou" in history[-1] and (tmp_path / "ckpt" / "best.pt").is_file()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "occnet_backend", "train", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_cli_resume_is_bit_exact(tmp_path):
    for name, steps in (("full", 8), ("part", 4)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config(tmp_path / name, steps)))
        assert _cli("--config", str(tmp_path / f"{name}.yaml")).returncode == 0
    (tmp_path / "rest.yaml").write_text(yaml.safe_dump(config(tmp_path / "part", 8)))
    proc = _cli("--config", str(tmp_path / "rest.yaml"), "--resume")
    assert proc.returncode == 0, proc.stderr
    full = torch.load(tmp_path / "full" / "ckpt" / "last.pt", weights_only=True)["history"]
    resumed = torch.load(tmp_path / "part" / "ckpt" / "last.pt", weights_only=True)["history"]
    assert losses(resumed) == losses(full)


@pytest.fixture
def mesh_data(tmp_path, suzanne):
    import trimesh

    meshes = tmp_path / "meshes_in"
    meshes.mkdir()
    trimesh.Trimesh(*suzanne).export(meshes / "suzanne.ply")
    trimesh.creation.icosphere(subdivisions=2).export(meshes / "ball.ply")
    root = tmp_path / "data"
    prepare_dataset(root, [meshes / "suzanne.ply", meshes / "ball.ply"], split=(1.0, 0.0, 0.0), workers=1,
                    config=SamplingConfig(num_uniform=2000, num_near=2000))
    return root


def test_resume_refuses_other_data_unless_told(tmp_path, mesh_data):
    """The README's `train --config run.yaml --out runs/train --resume` without --data once fell
    back to synthetic shapes and overwrote the mesh run's checkpoint."""
    run = tmp_path / "run"
    mesh_config = config(tmp_path, 3)
    mesh_config["dataset"] = {"num_points": 128, "batch_size": 2, "validation": False}
    mesh_config["trainer"].pop("checkpoint_dir"), mesh_config["trainer"].pop("log_dir")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(mesh_config))
    proc = _cli("--config", str(tmp_path / "run.yaml"), "--data", str(mesh_data), "--out", str(run))
    assert proc.returncode == 0, proc.stderr
    last = run / "checkpoints" / "last.pt"
    before = last.read_bytes()
    saved = torch.load(last, weights_only=True)["data"]
    assert saved["type"] == "mesh" and saved["root"] == str(mesh_data) and sorted(saved["shape_ids"]) == ["ball", "suzanne"]

    proc = _cli("--config", str(tmp_path / "run.yaml"), "--out", str(run), "--resume", "--max-steps", "5")
    assert proc.returncode == 1
    assert f"was trained on the mesh dataset at {mesh_data} (split train, 2 shapes)" in proc.stderr
    assert f"pass --data {mesh_data}" in proc.stderr and "--allow-different-data" in proc.stderr
    assert last.read_bytes() == before, "a refused resume changed the checkpoint"

    proc = _cli("--config", str(tmp_path / "run.yaml"), "--data", str(mesh_data), "--out", str(run), "--resume",
                "--max-steps", "5")
    assert proc.returncode == 0, proc.stderr
    assert torch.load(last, weights_only=True)["step"] == 5

    proc = _cli("--config", str(tmp_path / "run.yaml"), "--out", str(run), "--resume", "--max-steps", "6",
                "--allow-different-data")
    assert proc.returncode == 0, proc.stderr  # told explicitly: fine-tunes on the config's (synthetic) data


def test_a_run_that_saves_nothing_writes_nothing(tmp_path, monkeypatch):
    """No checkpoint_dir and no log_dir: no validation meshes in the working folder either."""
    monkeypatch.chdir(tmp_path)
    run = config(tmp_path, 3)
    run["trainer"].pop("checkpoint_dir"), run["trainer"].pop("log_dir")
    trainer = create_trainer_from_config(run)
    trainer.train()
    assert "val_iou" in trainer.history[-1] and list(tmp_path.iterdir()) == []
