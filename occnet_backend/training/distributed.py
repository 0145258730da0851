"""Data-parallel training with torch.distributed, launched by `torchrun`.

    torchrun --nproc_per_node=4 -m occnet_backend train --config run.yaml
    # two machines, 8 GPUs each (run on both; node_rank 0 and 1):
    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 --rdzv_backend=c10d \
        --rdzv_endpoint=HOST0:29500 -m occnet_backend train --config run.yaml

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; `init_distributed` reads them, picks NCCL for
CUDA and gloo for the CPU, and binds each process to GPU ``LOCAL_RANK``. Without those variables
everything runs as a single process, so the same command works with and without torchrun.
Only rank 0 logs, writes events, TensorBoard files and checkpoints.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher) set the process-group environment."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_distributed(device: str | torch.device = "auto", timeout_s: float = 1800) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun; returns (info, this process's device).

    `device` follows `training.precision.resolve_device`; with CUDA each process takes GPU LOCAL_RANK.
    Safe to call twice (an existing group is reused).
    """
    from occnet_backend.training.precision import resolve_device

    resolved = resolve_device(device)
    if not launched_by_torchrun():
        return DistInfo(), resolved
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if resolved.type == "cuda":
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank, world, local_rank), resolved


def current() -> DistInfo:
    """This process's place in an initialised process group (rank 0 of 1 without one)."""
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        return DistInfo(dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return DistInfo()


def cleanup() -> None:
    """Leave the process group (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
