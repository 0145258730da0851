"""Reconstruction quality: `fit` vs Blender's Voxel Remesh on real meshes nobody on the team wrote.

Meshes: Blender's Suzanne (open eye sockets, overlapping eyes) and the airplane (open, loose parts),
ant (15 overlapping closed parts) and nut (a through-hole) shipped inside the pyvista wheel.
Both methods are scored by the same code (occnet_backend.metrics.evaluate_mesh) against the same
ground-truth samples in unit-cube coordinates; Voxel Remesh runs through `bpy` at the same grid
resolution as our extraction (voxel = 1.1 · longest side / resolution).

    .venv/bin/python bench/quality.py [--steps 600] [--resolution 128] [--meshes suzanne nut]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import trimesh

from common import machine, package_meshes, suzanne
from occnet_backend.data.folder import load_samples
from occnet_backend.fitting import fit_meshes
from occnet_contract.settings import FitSettings
from occnet_backend.data.meshes import load_mesh, to_unit_cube
from occnet_backend.metrics import evaluate_mesh
from occnet_backend.training.precision import resolve_amp, resolve_device

KEYS = ("iou", "chamfer_l1", "normal_consistency", "fscore", "watertight", "seconds")


def voxel_remesh(path: str, resolution: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Blender's Voxel Remesh of the mesh file at the same grid resolution: (vertices, faces, seconds)."""
    import bpy

    loaded = load_mesh(path)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    mesh = bpy.data.meshes.new("source")
    mesh.from_pydata(loaded.vertices.tolist(), [], loaded.faces.tolist())
    obj = bpy.data.objects.new("source", mesh)
    bpy.context.scene.collection.objects.link(obj)
    start = time.perf_counter()
    mod = obj.modifiers.new("remesh", "REMESH")
    mod.mode = "VOXEL"
    mod.voxel_size = 1.1 * float(np.ptp(loaded.vertices, axis=0).max()) / resolution
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    out = evaluated.to_mesh()
    out.calc_loop_triangles()
    vertices = np.empty(len(out.vertices) * 3, np.float32)
    out.vertices.foreach_get("co", vertices)
    faces = np.empty(len(out.loop_triangles) * 3, np.int32)
    out.loop_triangles.foreach_get("vertices", faces)
    seconds = time.perf_counter() - start
    evaluated.to_mesh_clear()
    return vertices.reshape(-1, 3), faces.reshape(-1, 3), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=FitSettings().steps)
    parser.add_argument("--resolution", type=int, default=FitSettings().resolution)
    parser.add_argument("--meshes", nargs="+", default=["suzanne", "airplane", "ant", "nut"])
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"fit defaults (width 128 x 5, Fourier 64 σ2), {args.steps} steps, resolution {args.resolution}; "
          "Chamfer-L1 in unit-cube units (not x10)")
    precision = resolve_amp(FitSettings().amp, resolve_device(FitSettings().device))
    print(f"training precision (amp auto): {str(precision).replace('torch.', '') if precision else 'float32'}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = dict(package_meshes())
        v, f = suzanne()
        paths["suzanne"] = str(Path(tmp) / "suzanne.ply")
        trimesh.Trimesh(v, f, process=False).export(paths["suzanne"])
        rows: dict[str, dict[str, dict]] = {"ours (fit)": {}, "Voxel Remesh": {}}
        for name in args.meshes:
            out = Path(tmp) / name
            start = time.perf_counter()
            result = fit_meshes([paths[name]], out, FitSettings(steps=args.steps, resolution=args.resolution))
            ours = dict(result.metrics["shapes"][name], seconds=time.perf_counter() - start)
            rows["ours (fit)"][name] = ours

            sample = load_samples(out / "data", name)
            vertices, faces, seconds = voxel_remesh(paths[name], args.resolution)
            in_box = np.all(np.abs(sample["uniform_points"]) <= 0.55, axis=1)
            theirs = evaluate_mesh(
                to_unit_cube(vertices, sample["center"], sample["scale"]), faces,
                sample["surface_points"], sample["surface_normals"],
                sample["uniform_points"][in_box], sample["uniform_occupancy"][in_box],
            )
            rows["Voxel Remesh"][name] = dict(theirs, seconds=seconds)
            for method in rows:
                m = rows[method][name]
                print(f"{name:<9} {method:<13} IoU {m['iou']:.3f}  CD-L1 {m['chamfer_l1']:.4f}  "
                      f"NC {m['normal_consistency']:.3f}  F@1% {m['fscore']:.3f}  "
                      f"watertight {str(bool(m['watertight'])):<5}  {m['seconds']:6.1f} s", flush=True)
        print("\nmedians over", ", ".join(args.meshes))
        for method, per_mesh in rows.items():
            med = {k: statistics.median(float(m[k]) for m in per_mesh.values()) for k in KEYS if k != "watertight"}
            closed = sum(bool(m["watertight"]) for m in per_mesh.values())
            print(f"{method:<13} IoU {med['iou']:.3f}  CD-L1 {med['chamfer_l1']:.4f}  NC {med['normal_consistency']:.3f}  "
                  f"F@1% {med['fscore']:.3f}  watertight {closed}/{len(per_mesh)}  {med['seconds']:.1f} s")
        print(json.dumps({m: {n: {k: float(v[k]) for k in KEYS} for n, v in r.items()} for m, r in rows.items()}))


if __name__ == "__main__":
    main()
