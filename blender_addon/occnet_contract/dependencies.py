"""The backend's requirements, listed once: `pyproject.toml` declares the same list (a test holds
them equal), Check Backend probes the modules, and the install hint names the packages."""

from __future__ import annotations

import os
from pathlib import Path

REQUIREMENTS: dict[str, str] = {
    # module the backend imports: the pip requirement that provides it
    "torch": "torch==2.13.0",
    "numpy": "numpy>=1.24,<2",
    "trimesh": "trimesh>=4",
    "skimage": "scikit-image>=0.22",
    "scipy": "scipy>=1.11",
    "igl": "libigl>=2.6",
    "manifold3d": "manifold3d>=3.5",
    "tensorboard": "tensorboard>=2.15",
    "tqdm": "tqdm>=4.66",
    "matplotlib": "matplotlib>=3.8",
    "yaml": "pyyaml>=6",
}

MODULES = tuple(REQUIREMENTS)
"""What an interpreter must be able to import for every backend command to run."""

READY_FILE = "occnet-backend-ready.json"
"""Written last into an environment that Install Backend built, once every module imported: only
an environment holding it is ever picked up by auto-detection."""


def env_python(env: str | os.PathLike) -> Path:
    """The interpreter of a virtual environment."""
    return Path(env) / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def install_command(python: str, modules: list[str] | tuple[str, ...] = MODULES) -> str:
    """A pip command line (for a person to copy) installing what provides `modules`."""
    return f'"{python}" -m pip install ' + " ".join(f'"{REQUIREMENTS[m]}"' for m in modules)
