"""Shared benchmark helpers: the machine description and real meshes nobody on the team wrote."""

from __future__ import annotations

import os
import platform

import numpy as np
import torch
import trimesh

from occnet_backend.data.labels import inside


def machine() -> str:
    """One line naming the CPU, core count, whether it multiplies bf16 natively (then `amp auto` trains in bf16)
    and the torch build, printed by every benchmark."""
    import torch

    from occnet_backend.training.precision import cpu_has_native_bf16

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    return f"{cpu}, {os.cpu_count()} cores, {bf16}, {gpu}, torch {torch.__version__}, Python {platform.python_version()}"


PACKAGE_MESHES = {
    # pyvista: airplane (open, loose parts), ant (15 overlapping closed parts), nut (a through-hole)
    "airplane": ("pyvista", "examples/airplane.ply"),
    "ant": ("pyvista", "examples/ant.ply"),
    "nut": ("pyvista", "examples/nut.ply"),
    # pymeshlab's test meshes: a scan, bones, an animal, an open 166k-face range scan of a face
    "bunny": ("pymeshlab", "sample_meshes/bunny.obj"),
    "bone": ("pymeshlab", "sample_meshes/bone.ply"),
    "cow": ("pymeshlab", "sample_meshes/cow.obj"),
    "face_scan": ("pymeshlab", "rangemaps/face000.ply"),
    # pybullet's robot and object models: CAD parts (gears with fine teeth, thin plates and
    # channels, open sheet-metal parts), multi-part models, convex-hull sets
    "gear_ring": ("pybullet", "differential/diff_ring.stl"),
    "pinion": ("pybullet", "differential/diff_pinion.stl"),
    "spider_gear": ("pybullet", "differential/diff_spider.stl"),
    "bike_frame": ("pybullet", "bicycle/files/frame_scaled.stl"),
    "bike_wheel": ("pybullet", "bicycle/files/wheel_scaled.stl"),
    "plate": ("pybullet", "microtaur/plate.stl"),
    "channel": ("pybullet", "microtaur/channel.stl"),
    "board": ("pybullet", "microtaur/xavier.stl"),
    "camera": ("pybullet", "microtaur/d435i.stl"),
    "servo": ("pybullet", "microtaur/xm430w210.stl"),
    "duck": ("pybullet", "pybullet_data/duck.obj"),
    "teddy_hulls": ("pybullet", "pybullet_data/teddy2_VHACD_CHs.obj"),
    "lego": ("pybullet", "lego/lego.obj"),
    "mug": ("pybullet", "objects/mug.obj"),
    "robot_link": ("pybullet", "kuka_iiwa/meshes/link_0.obj"),
    "panda_hand": ("pybullet", "meshes/visual/hand.obj"),
}
"""Real meshes nobody on the team wrote, inside wheels that `make bench-meshes` installs with
--no-deps (their code is never imported): name -> (distribution, end of the file's path)."""


def package_meshes(names=None) -> dict[str, str]:
    """name -> path of the PACKAGE_MESHES (all, or `names`) whose distribution is installed."""
    import importlib.metadata

    wanted = {n: PACKAGE_MESHES[n] for n in (names or PACKAGE_MESHES)}
    found: dict[str, str] = {}
    for dist in sorted({d for d, _ in wanted.values()}):
        try:
            files = importlib.metadata.files(dist) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for f in files:
            for name, (d, tail) in wanted.items():
                if d == dist and str(f).endswith(tail):
                    found[name] = str(f.locate())
    missing = sorted(set(wanted) - set(found))
    if names and missing:
        raise RuntimeError(f"meshes {missing} come from wheels that are not installed: run `make bench-meshes`")
    return found


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


def warm_up_fit(mesh_path, folder, amp: str) -> None:
    """One small untimed fit. Why: a process's first fit imports what every later one finds loaded
    (torch._dynamo, matplotlib: 2-4 s here), which would count against whichever fit is timed first."""
    from occnet_backend.fitting import fit_meshes
    from occnet_contract.settings import FitSettings

    fit_meshes([mesh_path], folder, FitSettings(steps=20, resolution=32, amp=amp))
