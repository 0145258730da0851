"""The backend's requirements, listed once: `pyproject.toml` declares the same list (a test holds
them equal), Check Backend probes the modules, and the install hint names the packages."""

from __future__ import annotations

REQUIREMENTS: dict[str, str] = {
    # module the backend imports: the pip requirement that provides it
    "torch": "torch>=2.2",
    "numpy": "numpy>=1.24,<2",
    "trimesh": "trimesh>=4",
    "skimage": "scikit-image>=0.22",
    "scipy": "scipy>=1.11",
    "igl": "libigl>=2.6",
    "tensorboard": "tensorboard>=2.15",
    "tqdm": "tqdm>=4.66",
    "matplotlib": "matplotlib>=3.8",
    "yaml": "pyyaml>=6",
}

MODULES = tuple(REQUIREMENTS)
"""What an interpreter must be able to import for every backend command to run."""


def install_command(python: str, modules: list[str] | tuple[str, ...] = MODULES) -> str:
    """A pip command line (for a person to copy) installing what provides `modules`."""
    return f'"{python}" -m pip install ' + " ".join(f'"{REQUIREMENTS[m]}"' for m in modules)
