"""Where a fit's normals part from the source's: near sharp edges or on flat faces? `fit` (defaults)
vs the direct field (the source's own signed distance, no network), at the same resolution.

For 200k points on the source's surface, 1 - |cos| between the source's normal and that of the nearest
of 200k points on the reconstruction, binned by the distance (unit cube) to the source's nearest sharp
edge (dihedral angle > 30°). Normal consistency is 1 minus the mean of such values (both ways), so a
bin's share times its error is its part of the gap. Near edges both methods round the corner; a fit
noisier on flat faces learned a bumpy surface where the source is flat.

    make bench-meshes
    .venv/bin/python bench/normals.py [--meshes servo gear_ring ...] [--amp off]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from common import machine, package_meshes
from occnet_backend.data.meshes import load_mesh, normalization, to_unit_cube
from occnet_backend.direct_field import direct_field_mesh
from occnet_backend.fitting import fit_meshes
from occnet_contract.ply import read_ply
from occnet_contract.settings import FitSettings

SHARP_DEGREES = 30.0
BINS = (0.0, 0.005, 0.01, 0.02, 0.05, np.inf)
POINTS = 200_000


def distance_to_sharp_edges(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance from each point to the nearest sharp edge of the mesh (edges sampled every 1/20 of their length)."""
    welded = trimesh.Trimesh(vertices, faces, process=True)
    edges = welded.face_adjacency_edges[welded.face_adjacency_angles > np.radians(SHARP_DEGREES)]
    if not len(edges):
        return np.full(len(points), np.inf)
    t = np.linspace(0.0, 1.0, 20)[:, None, None]
    a, b = welded.vertices[edges[:, 0]], welded.vertices[edges[:, 1]]
    return cKDTree((a[None] * (1 - t) + b[None] * t).reshape(-1, 3)).query(points)[0]


def normal_error(source: trimesh.Trimesh, points: np.ndarray, normals: np.ndarray, vertices: np.ndarray,
                 faces: np.ndarray) -> np.ndarray:
    """1 - |cos| between each source point's normal and the nearest reconstruction point's."""
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    near, face = trimesh.sample.sample_surface(mesh, POINTS, seed=np.random.default_rng(2))
    _, index = cKDTree(near).query(points)
    return 1.0 - np.abs(np.sum(normals * mesh.face_normals[face][index], axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meshes", nargs="+", default=["servo", "gear_ring", "camera", "board"])
    parser.add_argument("--resolution", type=int, default=FitSettings().resolution)
    parser.add_argument("--amp", default=FitSettings().amp, help="fit's precision (off = fp32)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"1 - |cos| per source point, by distance to the nearest sharp edge (> {SHARP_DEGREES:.0f}°); "
          f"share of the points in brackets; fit defaults, amp {args.amp}, {args.resolution}³")
    labels = [f"[{lo:g}, {hi:g})" for lo, hi in zip(BINS[:-1], BINS[1:])]
    print(f"{'mesh':<12} {'method':<13} {'all':>7}  " + "  ".join(f"{label:>18}" for label in labels))
    paths = package_meshes(args.meshes)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.meshes:
            loaded = load_mesh(paths[name])
            center, scale = normalization(loaded.vertices)
            unit = to_unit_cube(loaded.vertices, center, scale)
            source = trimesh.Trimesh(unit, loaded.faces, process=False)
            points, face = trimesh.sample.sample_surface(source, POINTS, seed=np.random.default_rng(1))
            normals = source.face_normals[face]
            to_edge = distance_to_sharp_edges(unit, loaded.faces, points)
            share = [np.mean((to_edge >= lo) & (to_edge < hi)) for lo, hi in zip(BINS[:-1], BINS[1:])]

            result = fit_meshes([paths[name]], Path(tmp) / name, FitSettings(resolution=args.resolution, amp=args.amp))
            v, f = read_ply(result.mesh_paths[result.shape_ids[0]])
            direct = direct_field_mesh(unit, loaded.faces, args.resolution)
            for method, (mv, mf) in (("fit", (to_unit_cube(v, center, scale), f)),
                                     ("direct field", (direct["vertices"], direct["faces"]))):
                error = normal_error(source, points, normals, mv, mf)
                cells = [f"{error[(to_edge >= lo) & (to_edge < hi)].mean() if s else float('nan'):.4f} ({s:.2f})"
                         for (lo, hi), s in zip(zip(BINS[:-1], BINS[1:]), share)]
                print(f"{name:<12} {method:<13} {error.mean():7.4f}  " + "  ".join(f"{c:>18}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
