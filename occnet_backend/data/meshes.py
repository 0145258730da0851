"""Mesh loading, validation and unit-cube normalisation for real-world meshes.

Users bring whatever Blender, a scanner or a download produced. Everything that enters the
dataset goes through :func:`load_mesh`, so a broken file fails here, once, with a message that
names the file, says what is wrong and what to do, instead of surfacing later as NaN losses or
an empty reconstruction. All errors are :class:`MeshError` (a ``ValueError``), which the CLI turns
into a one-line message and an ``error`` event.

A file with several parts (a glTF scene, an OBJ with several objects) is one shape: the union
of its parts. The parts are concatenated as a triangle soup; the winding-number labels
(:mod:`occnet_backend.data.labels`) treat overlapping closed parts as their union, so nothing needs
to be booleaned or welded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MESH_EXTENSIONS = (".obj", ".ply", ".off", ".stl", ".glb", ".gltf")
"""File types the dataset accepts (trimesh reads them all without optional dependencies)."""


class MeshError(ValueError):
    """A mesh file or array that cannot become a training shape; the message says why and what to do."""


@dataclass
class LoadedMesh:
    """A validated triangle soup: float64 vertices [V, 3], int64 faces [F, 3], and where it came from."""

    vertices: np.ndarray
    faces: np.ndarray
    source: str
    num_parts: int = 1
    dropped_degenerate_faces: int = 0


TEXT_FORMATS = (".obj", ".off")


def _explain_unreadable(path: Path, ext: str) -> None:
    """A specific MeshError when a file without faces is really garbage or a truncated PLY."""
    head = path.read_bytes()[:4096]
    if ext in TEXT_FORMATS or (ext == ".stl" and head.lstrip().startswith(b"solid")):
        binary = sum(b < 9 or 13 < b < 32 or b == 127 for b in head) + head.count(0)
        if binary > len(head) // 20:
            raise MeshError(f"{path}: is not a text {ext[1:].upper()} file (its bytes are not text); it may be damaged or "
                            "another format renamed: re-export it from your 3D application")
    if ext == ".stl" and len(head) >= 84 and not head.lstrip().startswith(b"solid"):
        declared = int.from_bytes(head[80:84], "little")
        if 84 + 50 * declared != path.stat().st_size:
            raise MeshError(f"{path}: is not a valid binary STL (it declares {declared:,} triangles but holds "
                            f"{path.stat().st_size:,} bytes); it may be damaged or another format renamed: re-export it")
    if ext == ".ply" and head.startswith(b"ply"):
        header = head.split(b"end_header", 1)[0].decode("ascii", "replace")
        for line in header.splitlines():
            parts = line.split()
            if parts[:2] == ["element", "face"] and len(parts) > 2 and parts[2].isdigit() and int(parts[2]) > 0:
                raise MeshError(f"{path}: is truncated or damaged: its header declares {int(parts[2]):,} faces but none "
                                "could be read; re-export it")


def load_mesh(path: str | os.PathLike) -> LoadedMesh:
    """Read a mesh file (obj/ply/off/stl/glb/gltf), merge all its parts, and validate it.

    Scene transforms are applied (a glTF node's placement is part of the shape). Non-triangle
    faces are triangulated by trimesh. Point clouds and line sets inside a scene are ignored if
    there are triangles too, and are an error if there are none.

    Raises:
        MeshError: unreadable file, unknown format, no faces, empty, NaN/inf vertices, or only
            degenerate (zero-area) faces.
    """
    import trimesh

    path = Path(path)
    ext = path.suffix.lower()
    if not path.is_file():
        raise MeshError(f"{path}: no such file; check the path (or the shape id in the split file)")
    if ext not in MESH_EXTENSIONS:
        raise MeshError(
            f"{path}: unknown mesh format {ext or '(no extension)'!r}; "
            f"export it as one of {', '.join(MESH_EXTENSIONS)}"
        )
    if path.stat().st_size == 0:
        raise MeshError(f"{path}: the file is empty (0 bytes); re-export the mesh")
    try:
        scene = trimesh.load_scene(str(path), file_type=ext[1:], process=False)
        geometries = scene.dump(concatenate=False)
    except Exception as err:  # trimesh raises many types (ValueError, KeyError, struct.error, ...)
        raise MeshError(
            f"{path}: cannot read it as {ext[1:].upper()} ({type(err).__name__}: {err}); "
            "the file is corrupt or not really that format: re-export it from your 3D application"
        ) from err

    meshes = [g for g in geometries if isinstance(g, trimesh.Trimesh) and len(g.faces) > 0]
    if not meshes:
        _explain_unreadable(path, ext)
        has_points = any(len(getattr(g, "vertices", ())) > 0 for g in geometries)
        if has_points:
            raise MeshError(
                f"{path}: has vertices but no faces (a point cloud or lines); occupancy needs a surface: "
                "export the mesh with its faces, or reconstruct a surface first"
            )
        raise MeshError(f"{path}: contains no geometry (empty mesh); check that the export selected the objects")

    vertices, faces = [], []
    offset = 0
    for m in meshes:
        vertices.append(np.asarray(m.vertices, dtype=np.float64))
        faces.append(np.asarray(m.faces, dtype=np.int64) + offset)
        offset += len(m.vertices)
    v = np.concatenate(vertices) if len(vertices) > 1 else vertices[0]
    f = np.concatenate(faces) if len(faces) > 1 else faces[0]
    v, f, dropped = validate_mesh(v, f, source=str(path))
    if dropped:
        log.info("%s: dropped %d degenerate faces of %d", path, dropped, dropped + len(f))
    return LoadedMesh(v, f, str(path), num_parts=len(meshes), dropped_degenerate_faces=dropped)


def validate_mesh(
    vertices: np.ndarray, faces: np.ndarray, source: str = "mesh"
) -> tuple[np.ndarray, np.ndarray, int]:
    """Check a triangle soup and drop its degenerate faces.

    Returns (vertices float64 [V,3], faces int64 [F,3] in a canonical order, number of faces dropped). Degenerate
    (zero-area) faces carry no surface, so they are removed rather than rejected; a mesh made
    only of them has no surface at all and is rejected.

    Raises:
        MeshError: naming `source`, for empty meshes, bad shapes, out-of-range indices,
            non-finite vertices, or all faces degenerate.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise MeshError(f"{source}: vertices must have shape [V, 3], got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise MeshError(f"{source}: faces must be triangles with shape [F, 3], got {f.shape}")
    if len(v) == 0 or len(f) == 0:
        raise MeshError(
            f"{source}: empty mesh ({len(v)} vertices, {len(f)} faces); check that the export selected the objects"
        )
    f = f.astype(np.int64, copy=False)
    if f.min() < 0 or f.max() >= len(v):
        raise MeshError(
            f"{source}: face indices out of range (min {f.min()}, max {f.max()}, {len(v)} vertices); "
            "the file is corrupt: re-export it"
        )
    finite = np.isfinite(v).all(axis=1)
    if not finite.all():
        bad = int((~finite).sum())
        raise MeshError(
            f"{source}: {bad} of {len(v)} vertices are NaN or infinite; fix the mesh in your 3D application "
            "(e.g. Blender: Mesh > Clean Up > Delete Loose / Merge by Distance) and export again"
        )
    # zero-area faces: repeated indices or collinear corners (relative to the mesh's size)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    double_area = np.linalg.norm(np.cross(b - a, c - a), axis=1)
    extent = float(np.ptp(v, axis=0).max())
    good = double_area > (extent * 1e-12) ** 2 if extent > 0 else np.zeros(len(f), dtype=bool)
    if not good.any():
        raise MeshError(
            f"{source}: all {len(f)} faces are degenerate (zero area: a point, a line or a flat sliver); "
            "there is no surface to learn: check the export (scale, applied modifiers)"
        )
    dropped = int(len(f) - good.sum())
    if dropped:
        f = f[good]
    # one order for the same triangles, whatever order an exporter wrote them in (each from its smallest
    # index, which keeps its orientation, then sorted): surface samples are drawn face by face, so a fit
    # would otherwise depend on it (Blender triangulated one UV sphere in two orders on two runs)
    f = np.take_along_axis(f, (np.argmin(f, axis=1)[:, None] + np.arange(3)) % 3, axis=1)
    return v, f[np.lexsort(f.T[::-1])], dropped


def normalization(vertices: np.ndarray) -> tuple[np.ndarray, float]:
    """(center, scale) that maps a shape into the unit cube: unit = (v - center) / scale.

    The centre of the bounding box and its longest side, as in the reference implementation's
    evaluation protocol, so IoU and Chamfer numbers sit beside published tables.
    """
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    if len(v) == 0:
        raise MeshError("cannot normalise an empty mesh (no vertices)")
    lo, hi = v.min(axis=0), v.max(axis=0)
    scale = float((hi - lo).max())
    if not np.isfinite(scale) or scale <= 0:
        raise MeshError(f"cannot normalise a mesh with bounding box {lo.tolist()}..{hi.tolist()} (zero size)")
    return (lo + hi) / 2.0, scale


def to_unit_cube(vertices: np.ndarray, center: np.ndarray, scale: float) -> np.ndarray:
    """Vertices (or points) in the original frame -> unit-cube frame."""
    return (np.asarray(vertices, dtype=np.float64) - center) / scale


def from_unit_cube(points: np.ndarray, center: np.ndarray, scale: float) -> np.ndarray:
    """Unit-cube frame -> the original frame (to place a reconstruction where the original was)."""
    return np.asarray(points, dtype=np.float64) * scale + center
