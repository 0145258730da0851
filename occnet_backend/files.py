"""Atomic file writes: a reader (the add-on, a resumed run) never sees a half-written file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_ply(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray) -> Path:
    """Binary little-endian PLY (float32 x, y, z; uchar-counted int32 triangle lists), atomically.

    Written by hand rather than through trimesh so the exact layout is fixed: the Blender add-on
    reads it with numpy alone.
    """
    vertices = np.ascontiguousarray(vertices, dtype="<f4").reshape(-1, 3)
    faces = np.asarray(faces, dtype="<i4").reshape(-1, 3)
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(vertices)}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    ).encode("ascii")
    face_records = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
    face_records["n"] = 3
    face_records["v"] = faces
    return atomic_write_bytes(path, header + vertices.tobytes() + face_records.tobytes())
