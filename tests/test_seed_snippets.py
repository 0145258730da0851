"""The seed's own snippets (docs/seed/, the user's specification) run as written.

Each Python block of the seed runs in one shared namespace, in order, as a user pasting them one
after another would, on real data made here (Blender's Suzanne and a sphere, prepared into the
dataset folders the snippets name: ``path/to/data``, ``data/shapenet``). What is changed, and
only that (``EDITS``): the import line (``src.models.occupancy_net`` -> ``occnet_backend``),
sizes that would take minutes on a CPU, and ``device='cuda'`` where there is no GPU. Names a
snippet uses without defining (the basic usage's ``dataloader``; the conditional snippet's
``points``, ``occupancy``, ``query_points``; ``nn``, ``F``, ``torch``, ``create_trainer_from_config``,
``ConditionalOccupancyNetwork``) come from a short prelude, as the README's complete versions do.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "docs" / "seed" / "occupancy_networks_seed.zh.md"

EDITS = [
    ("from src.models.occupancy_net import", "from occnet_backend import"),
    ("num_points=100000", "num_points=2048"),
    ("'num_points': 100000", "'num_points': 2048"),
    ("num_points=[50000, 100000, 200000]", "num_points=[512, 1024, 2048]"),
    ("trainer.train(num_epochs=100)", "trainer.train(num_epochs=30)"),
    ("resolution=128", "resolution=32"),
    ("'dim_hidden': 256", "'dim_hidden': 32"),
    ("'num_layers': 8", "'num_layers': 2"),
]
if not torch.cuda.is_available():
    EDITS += [("device='cuda'", "device='cpu'"), ("'device': 'cuda'", "'device': 'cpu'")]

PRELUDE = """
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from occnet_backend import ConditionalOccupancyNetwork, OccupancyDataset, create_trainer_from_config

dataloader = DataLoader(OccupancyDataset(data_root='path/to/data', split='train', num_points=2048), batch_size=2,
                        shuffle=True)
_sample = OccupancyDataset(data_root='path/to/data', split='train', num_points=2048)[0]
points, occupancy = _sample['points'], _sample['occupancy']
query_points = torch.rand(1000, 3) - 0.5
"""


def seed_blocks() -> list[str]:
    return [code for lang, code in re.findall(r"```(\w*)\n(.*?)```", SEED.read_text(encoding="utf-8"), flags=re.S)
            if lang == "python"]


def edited(code: str) -> str:
    for old, new in EDITS:
        code = code.replace(old, new)
    return code


@pytest.fixture
def seed_world(tmp_path, monkeypatch, suzanne):
    """A working folder with the dataset folders the snippets name, from real meshes."""
    import trimesh

    from occnet_backend.data.folder import prepare_dataset
    from occnet_backend.data.sampling import SamplingConfig

    monkeypatch.chdir(tmp_path)
    meshes = tmp_path / "source_meshes"
    meshes.mkdir()
    trimesh.Trimesh(*suzanne).export(meshes / "suzanne.obj")
    trimesh.creation.icosphere(subdivisions=3, radius=0.8).export(meshes / "ball.obj")
    config = SamplingConfig(num_uniform=5000, num_near=5000)
    for root, split in (("path/to/data", (1.0, 0.0, 0.0)), ("data/shapenet", (0.5, 0.5, 0.0))):
        prepare_dataset(tmp_path / root, sorted(meshes.iterdir()), split=split, workers=1, config=config, seed=0)
    return tmp_path


def test_every_python_block_of_the_seed_is_covered():
    blocks = seed_blocks()
    assert len(blocks) == 7
    assert "from src.models.occupancy_net import" in blocks[0]
    assert all(old in "".join(blocks) for old, _ in EDITS[:8]), "an edit no longer matches the seed"


@pytest.mark.slow
def test_seed_snippets_run_in_order_on_real_data(seed_world):
    import trimesh

    from occnet_backend.data.folder import DatasetError

    blocks = [edited(b) for b in seed_blocks()]
    ns: dict = {}
    exec(compile(PRELUDE, "prelude", "exec"), ns)

    # 1. basic usage: a model, a dataset folder, a trainer, training
    exec(compile(blocks[0], "seed basic usage", "exec"), ns)
    trainer = ns["trainer"]
    assert trainer.status == "ok" and trainer.step == 30 and len(ns["dataset"]) == 2
    assert trainer.history[-1]["loss"] < trainer.history[0]["loss"]

    # 2. mesh reconstruction, saved with trimesh
    exec(compile(blocks[1], "seed mesh reconstruction", "exec"), ns)
    mesh = trimesh.load(seed_world / "reconstructed_mesh.obj", force="mesh")
    assert len(mesh.faces) > 100 and mesh.is_watertight and mesh.volume > 0

    # 3. the config dict builds a trainer (batch norm, dropout), which trains and validates
    exec(compile(blocks[2], "seed config", "exec"), ns)
    trainer = ns["trainer"]
    assert trainer.model.config["use_batch_norm"] is True and trainer.model.config["dropout_prob"] == 0.1
    trainer.train(max_steps=3)
    assert trainer.status == "ok" and "val_iou" in trainer.history[-1]
    assert (seed_world / "checkpoints" / "occupancy_net" / "last.pt").is_file()
    assert (seed_world / "checkpoints" / "occupancy_net" / "best.pt").is_file()
    assert list((seed_world / "checkpoints" / "occupancy_net" / "val_meshes").glob("*.ply"))
    assert list((seed_world / "logs" / "occupancy_net").glob("events.out.tfevents.*"))

    # 4. the sample format
    exec(compile(blocks[3], "seed sample format", "exec"), ns)
    real = ns["_sample"]
    assert set(ns["sample"]) <= set(real) and isinstance(real["points"], ns["sample"]["points"])
    assert real["points"].shape == (2048, 3) and real["occupancy"].shape == (2048, 1)
    assert set(real["occupancy"].unique().tolist()) <= {0.0, 1.0} and isinstance(real["shape_id"], str)

    # 5. conditional: encode a shape, then predict with its code
    exec(compile(blocks[4], "seed conditional", "exec"), ns)
    code, pred = ns["shape_code"], ns["pred_occupancy"]
    assert code.shape[-1] == 128 and pred.shape[-1] == 1000 and torch.isfinite(pred).all()

    # 6. multi-scale without data_root: a clear error that says what to pass
    with pytest.raises(DatasetError, match=r"OccupancyDataset needs data_root='path/to/data'.*prepare"):
        exec(compile(blocks[5], "seed multiscale", "exec"), ns)

    # 7. the seed's own FocalLoss class, verbatim: it trains, and its loss is the formula's value
    exec(compile(blocks[6], "seed focal loss", "exec"), ns)
    model = ns["model"]
    assert isinstance(model.compute_loss, ns["FocalLoss"])
    batch = next(iter(ns["dataloader"]))
    model.train()
    with torch.no_grad():
        p = torch.sigmoid(model(batch["points"])).double().numpy()
    t = batch["occupancy"].reshape(p.shape).double().numpy()
    p_t = np.where(t == 1, p, 1 - p)
    expected = np.mean(0.25 * (1 - p_t) ** 2 * -np.log(np.clip(p_t, 1e-12, 1)))
    from occnet_backend import OccupancyTrainer

    step = OccupancyTrainer(model=model, train_dataloader=ns["dataloader"], device="cpu", progress_bar=False).train_step(batch)
    assert step["loss"] == pytest.approx(expected, rel=1e-4)
    history = OccupancyTrainer(model=model, train_dataloader=ns["dataloader"], device="cpu",
                               progress_bar=False).train(max_steps=3)
    assert all(np.isfinite(r["loss"]) for r in history)


def test_multiscale_training_in_its_full_form(seed_world):
    """The README's working form of the seed's multi-scale snippet: batches of every size."""
    from occnet_backend import create_trainer_from_config

    trainer = create_trainer_from_config({
        "model": {"dim_hidden": 16, "num_layers": 1},
        "dataset": {"data_root": "path/to/data", "num_points": [256, 512, 1024], "multiscale_training": True,
                    "batch_size": 1, "validation": False},
        "trainer": {"device": "cpu", "max_steps": 12, "progress_bar": False},
    })
    from occnet_backend.data.dataset import MultiscaleBatchSampler

    assert isinstance(trainer.train_dataloader.batch_sampler, MultiscaleBatchSampler)
    sizes = set()
    for epoch in range(6):
        trainer.train_dataloader.batch_sampler.set_epoch(epoch)
        sizes |= {batch["points"].shape[1] for batch in trainer.train_dataloader}
    trainer.train()
    assert sizes <= {256, 512, 1024} and len(sizes) >= 2 and trainer.step == 12


def test_eval_scores_a_train_checkpoint_without_shape_ids(seed_world):
    """A model trained on synthetic shapes (its checkpoint has no shape ids) on a mesh dataset folder."""
    import json
    import subprocess
    import sys

    from occnet_backend import create_trainer_from_config

    trainer = create_trainer_from_config({
        "model": {"dim_hidden": 16, "num_layers": 1},
        "dataset": {"type": "synthetic", "shapes": ["sphere"], "num_samples": 1, "num_points": 512, "batch_size": 1},
        "trainer": {"device": "cpu", "max_steps": 3, "progress_bar": False, "checkpoint_dir": "ckpt"},
    })
    trainer.train()
    proc = subprocess.run([sys.executable, "-m", "occnet_backend", "eval", "--checkpoint", "ckpt/last.pt", "--data",
                           "path/to/data", "--split", "train", "--out", "eval", "--resolution", "32"],
                          capture_output=True, text=True, timeout=300, cwd=seed_world)
    assert proc.returncode == 0, proc.stderr
    scores = json.loads((seed_world / "eval" / "metrics.json").read_text())
    assert sorted(scores["shapes"]) == ["ball", "suzanne"]


def test_the_seeds_shape_names_are_accepted():
    """The seed says "sphere, cube, cylinder"; the project calls the cube 'box'."""
    from occnet_backend import SyntheticOccupancyDataset

    dataset = SyntheticOccupancyDataset(num_samples=3, shapes=["sphere", "cube", "cylinder"], num_points=256)
    assert [s.kind for s in dataset.shapes] == ["sphere", "box", "cylinder"]
    with pytest.raises(ValueError, match=r"unknown synthetic shapes \['cubes'\].*'cube' for 'box'"):
        SyntheticOccupancyDataset(shapes=["cubes"])
