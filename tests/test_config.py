"""Config -> trainer, and the `train` command: bad keys, files, mesh data, resume, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from occnet_backend import ConditionalOccupancyNetwork, OccupancyNetwork, create_trainer_from_config, load_model
from occnet_backend.training.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def tiny_config(tmp_path: Path | None = None, **trainer) -> dict:
    config = {
        "model": {"dim_hidden": 16, "num_layers": 2, "fourier_frequencies": 8},
        "dataset": {"type": "synthetic", "num_samples": 2, "num_points": 128, "batch_size": 2},
        "optimizer": {"type": "adam", "lr": 1e-3},
        "trainer": {"device": "cpu", "max_steps": 4, "val_every": 2, "checkpoint_every": 2, "progress_bar": False, **trainer},
    }
    if tmp_path is not None:
        config["trainer"].update(log_dir=str(tmp_path / "logs"), checkpoint_dir=str(tmp_path / "ckpt"))
    return config


def test_the_seed_config_shape_builds_and_trains(tmp_path):
    trainer = create_trainer_from_config(tiny_config(tmp_path))
    assert isinstance(trainer.model, OccupancyNetwork) and trainer.model.config["dim_hidden"] == 16
    history = trainer.train()  # max_steps from the config
    assert len(history) == 4 and trainer.status == "ok"
    assert (tmp_path / "ckpt" / "last.pt").exists() and (tmp_path / "ckpt" / "best.pt").exists()
    saved = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    assert saved["config"]["model"]["dim_hidden"] == 16 and saved["config"]["optimizer"]["schedule"] == "constant"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"optimiser": {}}, r"unknown config section\(s\) \['optimiser'\]; allowed: \['model', 'dataset'"),
        ({"optimizer": {"type": "sgd"}}, r"optimizer.type must be 'adam' or 'adamw', got 'sgd'"),
        ({"optimizer": {"learning_rate": 1}}, r"unknown key\(s\) \['learning_rate'\] in config section 'optimizer'; allowed: .*'lr'"),
        ({"optimizer": {"lr": -1}}, r"optimizer.lr must be a finite number > 0, got -1"),
        ({"optimizer": {"lr": float("inf")}}, r"optimizer.lr must be a finite number > 0, got inf"),
        ({"optimizer": {"schedule": "step"}}, r"optimizer.step_size is required"),
        ({"trainer": {"amp": "yes"}}, r"trainer.amp must be true, false, 'auto', 'bf16' or 'fp16', got 'yes'"),
        ({"trainer": {"epochs": 3}}, r"unknown key\(s\) \['epochs'\] in config section 'trainer'; allowed: .*'num_epochs'"),
        ({"trainer": {"device": "tpu"}}, r"trainer.device must be 'auto', 'cpu' or 'cuda\[:N\]', got 'tpu'"),
        ({"model": {"type": "transformer"}}, r"model.type must be one of \('occupancy', 'conditional'\), got 'transformer'"),
        ({"model": {"width": 3}}, r"unknown key\(s\) \['width'\] in config section 'model'; allowed: .*'dim_hidden'"),
        ({"model": {"dim_hidden": "big"}}, r"model.dim_hidden must be an integer, got 'big'"),
        ({"model": {"dropout_prob": 2.0}}, r"config model: dropout_prob must be in \[0, 1\)"),
        ({"dataset": {"type": "pointcloud"}}, r"dataset.type must be one of \('synthetic', 'mesh', 'shapenet'\), got 'pointcloud'"),
        ({"dataset": {"shapes": ["teapot"]}}, r"config dataset: unknown synthetic shapes \['teapot'\]"),
        ({"dataset": {"batchsize": 2}}, r"unknown key\(s\) \['batchsize'\] in config section 'dataset'"),
        ({"dataset": {"type": "mesh"}}, r"dataset.data_root is required"),
        ({"trainer": None, "model": []}, r"config section 'model' must be a mapping, got list"),
    ],
)
def test_bad_keys_and_values_name_the_key_and_the_allowed_values(change, message):
    config = tiny_config()
    for section, values in change.items():
        if isinstance(values, dict) and section in config:
            config[section] = {**config[section], **values}
        else:
            config[section] = values
    with pytest.raises(ConfigError, match=message):
        create_trainer_from_config(config)


def test_yaml_and_json_files_and_conditional_models(tmp_path):
    config = tiny_config()
    config["model"] = {"type": "conditional", "dim_condition": 8, "dim_hidden": 16, "num_layers": 1, "fourier_frequencies": 4}
    config["dataset"]["num_samples"] = 3
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    trainer = create_trainer_from_config(tmp_path / "run.yaml")
    assert isinstance(trainer.model, ConditionalOccupancyNetwork) and trainer.model.num_shapes == 3, "one code per shape"
    trainer.train(max_steps=2)
    config["model"]["encoder"] = "pointnet"
    (tmp_path / "run.json").write_text(json.dumps(config))
    encoder = create_trainer_from_config(tmp_path / "run.json")
    assert encoder.model.num_shapes == 0 and encoder.model.encoder is not None
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        create_trainer_from_config(tmp_path / "bad.yaml")
    (tmp_path / "run.toml").write_text("")
    with pytest.raises(ConfigError, match=r"must end in \.yaml, \.yml or \.json"):
        create_trainer_from_config(tmp_path / "run.toml")


def test_mesh_dataset_type(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    from occnet_backend.data.folder import prepare_dataset
    from occnet_backend.data.sampling import SamplingConfig

    src = tmp_path / "src"
    src.mkdir()
    trimesh.creation.icosphere(subdivisions=2, radius=0.4).export(src / "ball.obj")
    trimesh.creation.box(extents=[0.5, 0.3, 0.2]).export(src / "brick.obj")
    data = tmp_path / "data"
    prepare_dataset(data, [src], SamplingConfig(num_uniform=1000, num_near=1000, num_surface=200), split=(1.0, 0.0, 0.0))
    config = tiny_config()
    config["dataset"] = {"num_points": 256, "batch_size": 2}
    config["model"] = {"type": "conditional", "dim_condition": 8, "dim_hidden": 16, "num_layers": 1}
    trainer = create_trainer_from_config(config, data_root=data)
    assert trainer.model.num_shapes == 2 and trainer.val_dataloader is not None
    batch = next(iter(trainer.train_dataloader))
    assert batch["points"].shape == (2, 256, 3) and set(batch["shape_index"].tolist()) == {0, 1}
    assert len(trainer.train(max_steps=2)) == 2
    config["model"] = {"dim_hidden": 16, "num_layers": 1}  # unconditional: the (empty) val split -> none
    assert create_trainer_from_config(config, data_root=data).val_dataloader is None


def _train_cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "occnet_backend", "train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_train_cli_runs_resumes_and_reports_errors(tmp_path):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(tiny_config(max_steps=3)))
    out = tmp_path / "run"
    proc = _train_cli("--config", str(tmp_path / "run.yaml"), "--out", str(out), "--events", "jsonl")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    events = _events(stdout)
    assert events[0]["event"] == "start" and events[-1]["event"] == "done" and events[-1]["status"] == "ok"
    assert (out / "checkpoints" / "last.pt").exists() and list((out / "logs").glob("events.out.tfevents.*"))
    assert json.loads((out / "config.json").read_text())["trainer"]["max_steps"] == 3
    assert isinstance(load_model(out / "checkpoints" / "last.pt"), OccupancyNetwork)

    proc = _train_cli("--config", str(tmp_path / "run.yaml"), "--out", str(out), "--resume", "--max-steps", "5",
                      "--events", "jsonl")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    events = _events(stdout)
    assert events[0]["step"] == 3 and events[-1]["step"] == 5

    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**tiny_config(), "trainer": {"epochs": 1}}))
    proc = _train_cli("--config", str(tmp_path / "bad.yaml"), "--events", "jsonl")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "unknown key(s) ['epochs']" in stderr
    assert [e["event"] for e in _events(stdout)] == ["error", "done"]


def test_sigterm_mid_run_saves_a_loadable_checkpoint_and_exits_130(tmp_path):
    config = tiny_config(max_steps=100_000, checkpoint_every=None, val_every=None, progress_every=1)
    config["model"]["dim_hidden"] = 32
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    proc = _train_cli("--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "run"), "--events", "jsonl")
    lines = []
    deadline = time.time() + 60
    for line in proc.stdout:  # wait until training is under way
        lines.append(line)
        if '"progress"' in line and json.loads(line)["step"] >= 3 or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    events = _events("".join(lines) + stdout)
    assert proc.returncode == 130, stderr
    done = events[-1]
    assert done["event"] == "done" and done["status"] == "cancelled" and done["step"] >= 3
    assert any(e["event"] == "checkpoint" for e in events)
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["step"] == done["step"]
    load_model(tmp_path / "run" / "checkpoints" / "last.pt")
