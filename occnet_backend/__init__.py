"""OccNet backend: occupancy networks (Mescheder et al., CVPR 2019) in PyTorch.

Runs in its own process (never inside Blender); the add-on talks to it through files and
JSON lines (`python -m occnet_backend ... --events jsonl`).
"""

from occnet_backend.extraction import extract_mesh
from occnet_backend.models import OccupancyNetwork
from occnet_backend.synthetic import SyntheticOccupancyDataset
from occnet_backend.training import OccupancyTrainer

__version__ = "0.1.0"

__all__ = ["OccupancyNetwork", "OccupancyTrainer", "SyntheticOccupancyDataset", "extract_mesh", "__version__"]
