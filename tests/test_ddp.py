"""Real 2-process DDP on the CPU (gloo), launched by torchrun: ranks agree, rank 0 writes, resume works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent

WORKER = textwrap.dedent(
    """
    import sys, torch
    from occnet_backend import create_trainer_from_config
    from occnet_backend.training.distributed import cleanup
    out = sys.argv[2]
    trainer = create_trainer_from_config(sys.argv[1])
    assert trainer.dist.world_size == 2 and type(trainer._module).__name__ == "DistributedDataParallel"
    trainer.train()
    torch.save({k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
               f"{out}/rank{trainer.dist.rank}.pt")
    cleanup()
    """
)


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ddp")
    config = {
        "model": {"dim_hidden": 16, "num_layers": 2, "fourier_frequencies": 8, "use_batch_norm": True},
        "dataset": {"type": "synthetic", "num_samples": 8, "num_points": 128, "batch_size": 2},
        "optimizer": {"lr": 1e-2},
        "trainer": {"device": "cpu", "max_steps": 4, "val_every": 2, "checkpoint_every": 2, "progress_bar": False,
                    "checkpoint_dir": str(tmp / "ckpt"), "accumulate_steps": 2, "grad_clip": 1.0},
    }
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_two_processes_train_to_identical_weights(config_file):
    out = config_file.parent
    (out / "worker.py").write_text(WORKER)
    result = torchrun(str(out / "worker.py"), str(config_file), str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    saved = torch.load(out / "ckpt" / "last.pt", weights_only=True)
    assert saved["step"] == 4 and saved["world_size"] == 2 and len(saved["rng"]["current"]) == 2
    changed = False
    for key in ranks[0]:
        torch.testing.assert_close(ranks[0][key], ranks[1][key], rtol=0, atol=0)
        torch.testing.assert_close(ranks[0][key], saved["model"][key], rtol=0, atol=0)
        changed |= "weight" in key and bool(ranks[0][key].abs().sum() > 0)
    assert changed


def test_torchrun_train_command_resumes_with_rank_zero_events(config_file):
    out = config_file.parent
    if not (out / "ckpt" / "last.pt").exists():
        pytest.skip("needs the checkpoint of test_two_processes_train_to_identical_weights")
    result = torchrun("-m", "occnet_backend", "train", "--config", str(config_file), "--resume",
                      str(out / "ckpt" / "last.pt"), "--max-steps", "6", "--events", "jsonl")
    assert result.returncode == 0, result.stderr[-3000:]
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events].count("start") == 1, "only rank 0 writes events"
    assert events[0]["step"] == 4 and events[0]["world_size"] == 2
    assert events[-1]["event"] == "done" and events[-1]["status"] == "ok" and events[-1]["step"] == 6
    assert torch.load(out / "ckpt" / "last.pt", weights_only=True)["step"] == 6
