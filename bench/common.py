"""Shared benchmark helpers: the machine description and real meshes nobody on the team wrote."""

from __future__ import annotations

import os
import platform

import numpy as np
import torch
import trimesh

from occnet_backend.data.labels import inside


def machine() -> str:
    """One line naming the CPU, core count, and torch build, printed by every benchmark."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, Python {platform.python_version()}"


def package_meshes() -> dict[str, str]:
    """Real meshes shipped inside the pyvista wheel (installed with --no-deps by `make`): name -> path.

    airplane is open (8 loose parts), ant closed (15 overlapping parts), nut closed with a through-hole.
    """
    import importlib.metadata

    try:
        files = importlib.metadata.files("pyvista") or []
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError("the sample meshes come from the pyvista wheel: run `make venv` (or "
                           "`pip install --no-deps pyvista==0.49.1`)") from None
    wanted = ("airplane", "ant", "nut")
    found = {f.stem: str(f.locate()) for f in files if str(f).startswith("pyvista/examples/") and f.suffix == ".ply"}
    return {name: found[name] for name in wanted if name in found}


def suzanne(subdivisions: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Blender's Suzanne (subdivided, as artists use it) as (vertices float64 [V,3], faces int64 [F,3]).

    Suzanne is not closed (open eye sockets, separate eyes that overlap the head): a real-world
    test for labels that must survive holes and overlapping parts.
    """
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.mesh.primitive_monkey_add()
    obj = bpy.context.active_object
    if subdivisions:
        mod = obj.modifiers.new("subdiv", "SUBSURF")
        mod.levels = subdivisions
    depsgraph = bpy.context.evaluated_depsgraph_get()
    mesh = obj.evaluated_get(depsgraph).to_mesh()
    mesh.calc_loop_triangles()
    vertices = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", vertices)
    faces = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int32)
    mesh.loop_triangles.foreach_get("vertices", faces)
    obj.evaluated_get(depsgraph).to_mesh_clear()
    return vertices.reshape(-1, 3).astype(np.float64), faces.reshape(-1, 3).astype(np.int64)


def labelled_pool(vertices, faces, n=400_000, seed=0, uniform_box=0.6):
    """Half near-surface (two noise scales), half uniform in [-uniform_box, uniform_box]³, after
    normalising the mesh to the unit cube."""
    rng = np.random.default_rng(seed)
    lo, hi = vertices.min(0), vertices.max(0)
    v = (vertices - (lo + hi) / 2) / (hi - lo).max()
    mesh = trimesh.Trimesh(v, faces, process=False)
    surface, _ = trimesh.sample.sample_surface(mesh, n // 2, seed=seed)
    noise = np.where(rng.random((n // 2, 1)) < 0.5, 0.01, 0.05)
    near = surface + rng.normal(size=surface.shape) * noise
    uniform = rng.uniform(-uniform_box, uniform_box, (n - n // 2, 3))
    points = np.concatenate([near, uniform]).astype(np.float32)
    return v, torch.from_numpy(points), torch.from_numpy(inside(v, faces, points).astype(np.float32))
