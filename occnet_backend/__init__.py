"""OccNet backend: occupancy networks (Mescheder et al., CVPR 2019) in PyTorch.

Runs in its own process (never inside Blender); the add-on talks to it through files and
JSON lines (`python -m occnet_backend ... --events jsonl`). The public names below are imported
lazily, so the CLI and `prepare` workers do not pay for a torch import they never use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "OccupancyNetwork": "occnet_backend.models",
    "ConditionalOccupancyNetwork": "occnet_backend.conditional",
    "OccupancyTrainer": "occnet_backend.training",
    "create_trainer_from_config": "occnet_backend.config",
    "FocalLoss": "occnet_backend.losses",
    "BalancedFocalLoss": "occnet_backend.losses",
    "load_model": "occnet_backend.checkpoints",
    "SyntheticOccupancyDataset": "occnet_backend.synthetic",
    "OccupancyDataset": "occnet_backend.dataset",
    "extract_mesh": "occnet_backend.extraction",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'occnet_backend' has no attribute {name!r}")
