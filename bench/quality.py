"""Reconstruction quality on real meshes nobody on the team wrote: `fit` (defaults) vs the direct
field (the source's own signed distance, no network: the ceiling of what fit learns from) vs
Blender's Voxel Remesh, side by side, in one run.

Meshes: Blender's Suzanne (open eye sockets, overlapping eyes) and `common.PACKAGE_MESHES` (scans,
CAD parts with thin walls and fine teeth, multi-part and open models, a 166k-face range scan).
Every method is scored by the same code (occnet_backend.metrics.evaluate_mesh) on the same
held-out ground truth: 100k uniform points in the evaluation box labelled by winding number and
100k surface points with normals, drawn with a seed `fit` never uses. All three work at the same
grid resolution (Voxel Remesh: voxel = 1.1 · longest side / resolution). Components: connected
parts of the result minus the source's own (floaters > 0; lost parts < 0). Fits are timed after an
untimed warm-up fit. Given several precisions (`--amp off auto`), each mesh is fit in each in turn, so the
precisions are compared in one run (this VM's speed drifts between runs).

It also asks whether `fit` could give the better of its learned surface and the direct field without the
truth: both meshes are scored on the fit's own held-out points (the ones its early stopping measures), and
the one that scores better there is "picked"; the summary says how often that pick is the better on the
truth, and what the picked result's gap to the direct field would be.

    make bench-meshes
    .venv/bin/python bench/quality.py [--resolution 128] [--meshes suzanne nut ...] [--amp off [auto]] [--cached-points N]
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

from common import PACKAGE_MESHES, machine, package_meshes, suzanne, warm_up_fit
from occnet_backend.data.dataset import OccupancyDataset
from occnet_backend.data.labels import inside
from occnet_backend.data.meshes import load_mesh, normalization, to_unit_cube
from occnet_backend.direct_field import direct_field_mesh
from occnet_backend.fitting import fit_meshes, holdout_points
from occnet_backend.metrics import evaluate_mesh, mesh_iou
from occnet_contract.ply import read_ply
from occnet_contract.settings import EVAL_BOX, FitSettings

KEYS = ("iou", "chamfer_l1", "normal_consistency", "fscore", "components", "seconds")
BASELINES = ("direct field", "Voxel Remesh")


def voxel_remesh(vertices: np.ndarray, faces: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Blender's Voxel Remesh at the same grid resolution: (vertices, faces, seconds)."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    mesh = bpy.data.meshes.new("source")
    mesh.from_pydata(vertices.tolist(), [], faces.tolist())
    obj = bpy.data.objects.new("source", mesh)
    bpy.context.scene.collection.objects.link(obj)
    start = time.perf_counter()
    mod = obj.modifiers.new("remesh", "REMESH")
    mod.mode = "VOXEL"
    mod.voxel_size = 1.1 * float(np.ptp(vertices, axis=0).max()) / resolution
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    out = evaluated.to_mesh()
    out.calc_loop_triangles()
    v = np.empty(len(out.vertices) * 3, np.float32)
    out.vertices.foreach_get("co", v)
    f = np.empty(len(out.loop_triangles) * 3, np.int32)
    out.loop_triangles.foreach_get("vertices", f)
    seconds = time.perf_counter() - start
    evaluated.to_mesh_clear()
    return v.reshape(-1, 3), f.reshape(-1, 3), seconds


def components(vertices: np.ndarray, faces: np.ndarray) -> int:
    """Connected parts after welding coincident vertices."""
    mesh = trimesh.Trimesh(vertices, faces, process=True)
    return int(trimesh.graph.connected_components(mesh.face_adjacency, nodes=np.arange(len(mesh.faces)),
                                                  min_len=1).__len__())


def ground_truth(v: np.ndarray, f: np.ndarray, seed: int = 2026) -> dict:
    rng = np.random.default_rng(seed)
    mesh = trimesh.Trimesh(v, f, process=False)
    surface, face = trimesh.sample.sample_surface(mesh, 100_000, seed=rng)
    uniform = rng.uniform(-EVAL_BOX, EVAL_BOX, (100_000, 3))
    return {"surface_points": surface.astype(np.float32), "surface_normals": mesh.face_normals[face].astype(np.float32),
            "uniform_points": uniform.astype(np.float32), "uniform_occupancy": inside(v, f, uniform)}


def score(vertices, faces, truth: dict, source_parts: int, seconds: float) -> dict:
    m = evaluate_mesh(vertices, faces, truth["surface_points"], truth["surface_normals"], truth["uniform_points"],
                      truth["uniform_occupancy"])
    return dict(m, components=components(vertices, faces) - source_parts, seconds=seconds)


def gap_summary(gaps: dict[str, float]) -> str:
    """'median +0.0000; worst three: a -0.0100, ...' of IoU gaps per mesh."""
    worst = sorted((g, n) for n, g in gaps.items())[:3]
    return "median {:+.4f}; worst three: {}".format(statistics.median(gaps.values()),
                                                    ", ".join(f"{n} {g:+.4f}" for g, n in worst))


def picks_fit(row: dict) -> bool:
    """Whether a fit's mesh scores at least the direct field's on the fit's own held-out points."""
    return row["held_iou"] >= row["held_direct_iou"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=FitSettings().resolution)
    parser.add_argument("--amp", nargs="+", default=[FitSettings().amp],
                        help="fit's precision (off = fp32); several: a fit in each, side by side")
    parser.add_argument("--cached-points", type=int, default=FitSettings().cached_points,
                        help="fit's labelled points per shape (more: denser near the surface, longer to label)")
    parser.add_argument("--meshes", nargs="+", default=["suzanne", *PACKAGE_MESHES])
    parser.add_argument("--json", type=Path, help="write every row here")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"fit defaults (amp {' / '.join(args.amp)}, cached points {args.cached_points}), resolution {args.resolution}; "
          "Chamfer-L1 in unit-cube units")
    fits = {("fit" if len(args.amp) == 1 else f"fit {amp}"): amp for amp in args.amp}
    rows: dict[str, dict[str, dict]] = {m: {} for m in (*fits, *BASELINES)}
    with tempfile.TemporaryDirectory() as tmp:
        paths = package_meshes([n for n in args.meshes if n != "suzanne"])
        if "suzanne" in args.meshes:
            paths["suzanne"] = str(Path(tmp) / "suzanne.ply")
            trimesh.Trimesh(*suzanne(), process=False).export(paths["suzanne"])
        for amp in args.amp:  # else the first fit pays the imports (and a precision's first kernels)
            warm_up_fit(paths[args.meshes[0]], Path(tmp) / f"warm_up_{amp}", amp)
        for index, name in enumerate(args.meshes):
            source = load_mesh(paths[name])
            center, scale = normalization(source.vertices)
            unit = to_unit_cube(source.vertices, center, scale)
            truth = ground_truth(unit, source.faces)
            parts = components(unit, source.faces)

            # the second fit of a mesh finds its labelling structures cached: each precision goes first on every other mesh
            held_out = {}
            for method, amp in list(fits.items())[:: -1 if index % 2 else 1]:
                start = time.perf_counter()
                settings = FitSettings(resolution=args.resolution, amp=amp, cached_points=args.cached_points)
                result = fit_meshes([paths[name]], Path(tmp) / f"{name}_{amp}", settings)
                seconds = time.perf_counter() - start
                v, f = read_ply(result.mesh_paths[result.shape_ids[0]])
                v = to_unit_cube(v, center, scale)
                held_out[method] = OccupancyDataset(Path(tmp) / f"{name}_{amp}" / "data", preload=True,
                                                    holdout_points=holdout_points(settings)).holdout(0)
                timings = result.metrics["timings"]
                rows[method][name] = dict(score(v, f, truth, parts, seconds), held_iou=mesh_iou(v, f, **held_out[method]),
                                          steps=timings["train_steps"], train_s=timings["train_s"],
                                          prepare_s=timings["prepare_s"],
                                          precision=result.metrics["training_precision"])

            start = time.perf_counter()
            mesh = direct_field_mesh(unit, source.faces, args.resolution)
            rows["direct field"][name] = score(mesh["vertices"], mesh["faces"], truth, parts, time.perf_counter() - start)
            for method, held in held_out.items():
                rows[method][name]["held_direct_iou"] = mesh_iou(mesh["vertices"], mesh["faces"], **held)

            v, f, seconds = voxel_remesh(source.vertices, source.faces, args.resolution)
            rows["Voxel Remesh"][name] = score(to_unit_cube(v, center, scale), f, truth, parts, seconds)
            print(f"\n{name} ({len(source.faces)} faces, {parts} part(s))")
            for method in fits:
                m = rows[method][name]
                print(f"  {method}: {m['precision']}, labels {m['prepare_s']:.1f} s, {m['steps']:.0f} steps, training "
                      f"{m['train_s']:.1f} s ({1000 * m['train_s'] / max(m['steps'], 1):.1f} ms a step); on its "
                      f"{len(held_out[method]['points'])} held-out points IoU {m['held_iou']:.4f}, the direct field's "
                      f"{m['held_direct_iou']:.4f}: picks {'fit' if picks_fit(m) else 'the direct field'}")
            for method in rows:
                m = rows[method][name]
                print(f"  {method:<13} IoU {m['iou']:.4f}  CD-L1 {m['chamfer_l1']:.4f}  NC {m['normal_consistency']:.3f}  "
                      f"F@1% {m['fscore']:.3f}  watertight {str(bool(m['watertight'])):<5}  components {m['components']:+d}  "
                      f"{m['seconds']:6.1f} s", flush=True)
    print(f"\nmedians over {len(args.meshes)} meshes")
    for method, per_mesh in rows.items():
        med = {k: statistics.median(float(m[k]) for m in per_mesh.values()) for k in KEYS}
        closed = sum(bool(m["watertight"]) for m in per_mesh.values())
        floaters = sum(m["components"] > 0 for m in per_mesh.values())
        print(f"  {method:<13} IoU {med['iou']:.4f}  CD-L1 {med['chamfer_l1']:.4f}  NC {med['normal_consistency']:.3f}  "
              f"F@1% {med['fscore']:.3f}  watertight {closed}/{len(per_mesh)}  extra parts on {floaters}  "
              f"{med['seconds']:.1f} s")
    for method in fits:
        gaps = {n: rows[method][n]["iou"] - rows["direct field"][n]["iou"] for n in args.meshes}
        print(f"\n{method} - direct field IoU: {gap_summary(gaps)}")
    for method in fits:
        picked = {n: rows[method][n]["iou"] if picks_fit(rows[method][n]) else rows["direct field"][n]["iou"]
                  for n in args.meshes}
        right = sum(picked[n] == max(rows[method][n]["iou"], rows["direct field"][n]["iou"]) for n in args.meshes)
        gaps = {n: picked[n] - rows["direct field"][n]["iou"] for n in args.meshes}
        print(f"{method} or the direct field, whichever scores better on the fit's held-out points: fit on "
              f"{sum(picks_fit(rows[method][n]) for n in args.meshes)}, the better on the truth on {right} of "
              f"{len(args.meshes)}; gap to the direct field: {gap_summary(gaps)}")
    if args.json:
        args.json.write_text(json.dumps({m: {n: {k: v if isinstance(v, str) else float(v) for k, v in r.items()
                                                 if k != "fscore_thresholds"}
                                            for n, r in per.items()} for m, per in rows.items()}, default=float))


if __name__ == "__main__":
    main()
