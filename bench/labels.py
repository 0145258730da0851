"""Inside/outside labels: ours (libigl fast winding number) vs trimesh.contains, on Blender's Suzanne.

    python bench/labels.py [--subdivisions 3 --points 1000000 --exact-points 20000 --contains-points 1000]

Suzanne (subdivided as artists use it) is a real mesh nobody on the team wrote, and not closed:
open eye sockets and separate eyes that overlap the head. It is measured as it is ("watertight-
ish") and with scattered holes punched, like a scan. For each: points/s of both methods, and
their disagreement with the exact generalised winding number (igl.winding_number) on a random
subset of the same points (half uniform in [-0.55, 0.55]³, half near the surface at two noise
scales, as the training data). All in one run, with the machine printed.

trimesh.contains needs `rtree` (not a project dependency); without embree it is ray parity in
Python, ~10^2 points/s, so it gets only a few hundred points. Without rtree it is reported as
unavailable: `pip install rtree` (or put it on PYTHONPATH) to include it.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, suzanne  # noqa: E402
from occnet_backend.data.labels import inside  # noqa: E402
from occnet_backend.data.meshes import normalization, to_unit_cube  # noqa: E402


def punch_holes(vertices: np.ndarray, faces: np.ndarray, count: int, radius: float, seed: int = 0) -> np.ndarray:
    """Remove every face whose centroid is within `radius` of `count` random face centroids."""
    rng = np.random.default_rng(seed)
    centroids = vertices[faces].mean(axis=1)
    centers = centroids[rng.choice(len(faces), count, replace=False)]
    d = np.full(len(faces), np.inf)
    for c in centers:
        d = np.minimum(d, np.linalg.norm(centroids - c, axis=1))
    return faces[d > radius]


def query_points(vertices: np.ndarray, faces: np.ndarray, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """`n` points of each kind the training data uses: uniform, near the surface at sigma 0.005 and 0.05."""
    import trimesh

    rng = np.random.default_rng(seed)
    surface, _ = trimesh.sample.sample_surface(trimesh.Trimesh(vertices, faces, process=False), 2 * n, seed=seed)
    return {
        "uniform in [-0.55, 0.55]^3": rng.uniform(-0.55, 0.55, (n, 3)),
        "near surface, sigma 0.005": surface[:n] + rng.normal(size=(n, 3)) * 0.005,
        "near surface, sigma 0.05": surface[n:] + rng.normal(size=(n, 3)) * 0.05,
    }


def timed(fn, *args, repeat: int = 1):
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t)
    return out, best


def measure(name: str, v: np.ndarray, f: np.ndarray, args: argparse.Namespace) -> None:
    import igl
    import trimesh

    kinds = query_points(v, f, args.points)
    print(f"{name}: {len(f):,} faces, watertight {trimesh.Trimesh(v, f).is_watertight}")
    print(f"  {'method, points':<52}{'points/s':>12}{'disagree vs exact':>19}")
    labels = {}
    for kind, pts in kinds.items():
        labels[kind], seconds = timed(inside, v, f, pts, repeat=2)
        print(f"  {'ours (fast winding number), ' + kind:<52}{len(pts) / seconds:>12,.0f}")
    # the training mix: half uniform, a quarter at each noise scale
    n = args.points
    names = list(kinds)
    mix = np.concatenate([kinds[names[0]], kinds[names[1]][: n // 2], kinds[names[2]][: n // 2]])
    mix_labels = np.concatenate([labels[names[0]], labels[names[1]][: n // 2], labels[names[2]][: n // 2]])
    mix_labels_timed, seconds = timed(inside, v, f, mix)
    assert (mix_labels_timed == mix_labels).all()
    pick = np.random.default_rng(1).permutation(len(mix))[: args.exact_points]
    w_exact, exact_s = timed(igl.winding_number, v, f, mix[pick])
    exact = np.abs(w_exact) > 0.5
    ours_err = int((mix_labels[pick] != exact).sum())
    print(f"  {'ours, training mix (50% uniform, 50% near)':<52}{len(mix) / seconds:>12,.0f}"
          f"{ours_err / len(pick) * 100:>18.4f}%  ({ours_err} of {len(pick):,} differ)")
    print(f"  {'exact winding number (igl), training mix':<52}{len(pick) / exact_s:>12,.0f}{'-':>19}")
    try:
        import rtree  # noqa: F401
    except ImportError:
        print(f"  {'trimesh.contains':<52}unavailable: needs rtree (pip install rtree)")
        return
    mesh = trimesh.Trimesh(v, f, process=False)
    few = pick[: args.contains_points]
    contained, contains_s = timed(mesh.contains, mix[few])
    contains_err = int((contained != exact[: len(few)]).sum())
    ours_few = int((mix_labels[few] != exact[: len(few)]).sum())
    print(f"  {'trimesh.contains (ray parity), training mix':<52}{len(few) / contains_s:>12,.0f}"
          f"{contains_err / len(few) * 100:>18.4f}%  ({contains_err} of {len(few):,} differ; ours: {ours_few})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subdivisions", type=int, default=3, help="Suzanne subdivision level (3: 63k faces)")
    parser.add_argument("--points", type=int, default=1_000_000, help="query points of each kind for our method")
    parser.add_argument("--exact-points", type=int, default=20_000, help="subset labelled by the exact winding number")
    parser.add_argument("--contains-points", type=int, default=1_000, help="subset for trimesh.contains")
    parser.add_argument("--holes", type=int, default=40, help="holes punched in the second run")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes on these cores slow every number)")
    import trimesh

    print(f"trimesh {trimesh.__version__}")
    v, f = suzanne(args.subdivisions)
    center, scale = normalization(v)
    v = to_unit_cube(v, center, scale)
    measure(f"Suzanne (subdivision {args.subdivisions})", v, f, args)
    holed = punch_holes(v, f, args.holes, 0.02)
    measure(f"Suzanne with {args.holes} holes punched ({len(f) - len(holed):,} faces removed)", v, holed, args)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (most of it trimesh.contains), "
          f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
