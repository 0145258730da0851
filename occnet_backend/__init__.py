"""OccNet backend: occupancy networks (Mescheder et al., CVPR 2019) in PyTorch.

Runs in its own process (never inside Blender); the add-on talks to it through files and
JSON lines (`python -m occnet_backend ... --events jsonl`). The public names below are imported
lazily, so the CLI and `prepare` workers do not pay for a torch import they never use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "OccupancyNetwork": "occnet_backend.models.network",
    "ConditionalOccupancyNetwork": "occnet_backend.models.network",
    "OccupancyTrainer": "occnet_backend.training.trainer",
    "create_trainer_from_config": "occnet_backend.training.config",
    "FocalLoss": "occnet_backend.training.losses",
    "BalancedFocalLoss": "occnet_backend.training.losses",
    "load_model": "occnet_backend.training.checkpoints",
    "SyntheticOccupancyDataset": "occnet_backend.data.synthetic",
    "OccupancyDataset": "occnet_backend.data.dataset",
    "extract_mesh": "occnet_backend.extraction",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'occnet_backend' has no attribute {name!r}")
