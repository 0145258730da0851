"""Shape codes: an N-shape model against N single-shape fits, and the morph paths between codes.

For N = 2, 4, 8 real meshes of different topology (Blender's Suzanne and primitives, the ant, nut
and airplane inside the pyvista wheel), in one run and at `fit`'s defaults:

- per shape: IoU of the N-shape model vs the shape's own single-shape fit, and the time of the one
  N-shape fit vs the sum of the N single fits (all after an untimed warm-up fit), and its training steps
  vs theirs (the work, which this VM's drifting speed does not move);
- along straight paths between two shapes (their weights, as the panel's sliders set them), at 11
  evenly spaced points: watertight, the connected components against the endpoints' own, and the
  largest jump of enclosed volume and surface area between neighbours relative to the endpoints'
  difference (0.1 is a straight line; much more is a spike); the endpoints equal the shapes' own
  reconstructions; and, for reference, the extra components of the same blend of the exact fields
  (the source meshes' signed distances, no network, no part filter);
- the time of slider moves at 128³ as the add-on meets them (its `SliderClient` and a `serve`
  process, request to answer): the first shape alone, then the half-way blend with the second
  shape, then two morph steps of 0.1; right after the server is ready (cold: the worst case, a move
  before the idle warm-up) and once it warmed its shapes' grids while idle (what `serve` does);
- a strip picture per path (PNG) into --out.

    .venv/bin/python bench/morph.py [--sizes 2 4 8] [--steps 600] [--amp off] [--path-resolution 64] [--out out/bench_morph]

Issue 16's targets: each shape within 0.01 IoU of its single fit, the N-shape fit <= 0.6 x N single
fits, every path watertight with no extra components and no spikes, a slider move <= 0.5 s.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import trimesh

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the add-on's slider client

from common import machine, package_meshes, warm_up_fit  # noqa: E402


def blender_meshes(folder: Path) -> dict[str, Path]:
    """Blender's own meshes, written as PLY: Suzanne (subdivided), a torus, a cone, a UV sphere, a
    cylinder (genus 0 and 1, open and closed: different topology on purpose)."""
    import bpy

    from occnet_contract.ply import write_ply

    makers = {
        "suzanne": lambda: bpy.ops.mesh.primitive_monkey_add(),
        "torus": lambda: bpy.ops.mesh.primitive_torus_add(),
        "cone": lambda: bpy.ops.mesh.primitive_cone_add(),
        "sphere": lambda: bpy.ops.mesh.primitive_uv_sphere_add(),
        "cylinder": lambda: bpy.ops.mesh.primitive_cylinder_add(),
    }
    out = {}
    for name, make in makers.items():
        bpy.ops.wm.read_factory_settings(use_empty=True)
        make()
        ob = bpy.context.active_object
        if name == "suzanne":
            ob.modifiers.new("subdiv", "SUBSURF").levels = 2
        mesh = ob.evaluated_get(bpy.context.evaluated_depsgraph_get()).to_mesh()
        mesh.calc_loop_triangles()
        v = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", v)
        f = np.empty(len(mesh.loop_triangles) * 3, np.int32)
        mesh.loop_triangles.foreach_get("vertices", f)
        out[name] = write_ply(folder / f"{name}.ply", v.reshape(-1, 3), f.reshape(-1, 3))
    return out


def components(mesh: trimesh.Trimesh) -> int:
    return len(trimesh.graph.connected_components(mesh.face_adjacency, nodes=np.arange(len(mesh.faces)))) \
        if len(mesh.faces) else 0


def path_metrics(blend, i: int, j: int, n: int) -> dict:
    """`blend(weights)` -> an `extract_mesh` result, along the path from shape i to shape j."""
    rows = []
    for t in np.linspace(0.0, 1.0, 11):
        weights = np.zeros(n)
        weights[i], weights[j] = 1.0 - t, t
        out = blend(weights)
        mesh = trimesh.Trimesh(out["vertices"], out["faces"], process=False)
        rows.append({"t": float(t), "watertight": bool(mesh.is_watertight), "components": components(mesh),
                     "volume": float(mesh.volume) if len(mesh.faces) else 0.0, "area": float(mesh.area),
                     "vertices": out["vertices"], "faces": out["faces"]})
    ends = max(rows[0]["components"], rows[-1]["components"])

    def jump(key: str) -> float:
        span = abs(rows[-1][key] - rows[0][key])
        steps = [abs(b[key] - a[key]) for a, b in zip(rows, rows[1:])]
        return max(steps) / span if span > 1e-9 else float("inf")

    return {"rows": rows, "watertight": all(r["watertight"] for r in rows),
            "extra_components": max(r["components"] for r in rows) - ends,
            "volume_jump": jump("volume"), "area_jump": jump("area")}


def half_way_area(model, exact, i: int, j: int, n: int, resolution: int = 128) -> float:
    """Surface area of the half-way blend of shapes i and j at `resolution`³ over that of the same blend of
    the exact fields (`exact(weights, resolution)`): a surface rougher than the exact blend has more area
    (the README demo's half-way nut/ant at 128³ was 1.5x, a cloud of bumps, before `fitting.NEAR_SHARE_SHAPES`)."""
    weights = np.zeros(n)
    weights[[i, j]] = 0.5
    learned, reference = model.extract_mesh(resolution, weights=weights), exact(weights, resolution)
    area = [trimesh.Trimesh(m["vertices"], m["faces"], process=False).area for m in (learned, reference)]
    return area[0] / max(area[1], 1e-12)


def render(vertices: np.ndarray, faces: np.ndarray, size: int = 120) -> np.ndarray:
    """A flat-shaded front view (x right, z up; far faces first), no renderer needed."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (size, size), 0)
    if len(faces):
        tri = vertices[faces]
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
        shade = (40 + 215 * np.abs(normals @ np.array([0.3, -0.8, 0.5]) / np.linalg.norm([0.3, -0.8, 0.5]))).astype(int)
        xy = np.stack([(tri[..., 0] + 0.55) / 1.1 * (size - 1), (0.55 - tri[..., 2]) / 1.1 * (size - 1)], axis=-1)
        draw = ImageDraw.Draw(image)
        for k in np.argsort(-tri[..., 1].mean(1)):  # +y is away from the viewer
            draw.polygon([tuple(p) for p in xy[k]], fill=int(shade[k]))
    return np.asarray(image) / 255.0


def strip(paths: list[tuple[str, dict]], out_png: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11 * 1.0, len(paths) * 1.15), dpi=100, layout="constrained")
    axes = figure.subplots(len(paths), 11, squeeze=False)
    for row, (name, metrics) in zip(axes, paths):
        for ax, r in zip(row, metrics["rows"]):
            ax.imshow(render(r["vertices"], r["faces"]), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{r['t']:.1f}" + ("" if r["watertight"] else " open") + f" c{r['components']}", fontsize=6)
        row[0].set_ylabel(name, fontsize=6)
    figure.savefig(out_png)


def serve_moves(checkpoint: Path, requests: list[dict], warm: bool, folder: Path) -> tuple[float, list[tuple[float, dict]]]:
    """Slider moves the way the add-on makes them: each request sent to a `serve` process through
    the add-on's own `SliderClient` and timed until its answer is read (each sent as the previous one
    is answered). Cold: from the moment the server says it is ready; warmed: once `info` lists every
    shape as warmed. -> (seconds from ready to warmed, polled every 0.5 s; [(seconds, serve's stats)])."""
    from blender_addon.runner.slider_client import SliderClient

    client = SliderClient(str(checkpoint), python=sys.executable, out_dir=folder, log_path=folder / "serve.log",
                          device="cpu").start()
    try:
        client.wait_ready()
        start = time.perf_counter()
        while warm and len(client.wait(client.send("info"), 60)["warmed"]) < len(client.shapes):
            time.sleep(0.5)
        warm_s = time.perf_counter() - start
        timed = []
        for request in requests:
            start = time.perf_counter()
            answer = client.wait(client.send("extract", resolution=128, **request), 60)
            if not answer.get("ok"):
                raise RuntimeError(f"serve refused {request}: {answer.get('error')}")
            timed.append((time.perf_counter() - start, answer["stats"]))
        return warm_s, timed
    finally:
        client.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: fit's)")
    parser.add_argument("--path-resolution", type=int, default=64)
    parser.add_argument("--amp", default=None, help="precision (default: fit's; 'off' for fp32 figures)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench_morph")
    args = parser.parse_args()

    from occnet_backend.data.meshes import load_mesh, normalization, to_unit_cube
    from occnet_backend.direct_field import DISTANCE_SCALE, direct_field
    from occnet_backend.extraction import CachedField, FieldBlend, blend_options, extract_mesh
    from occnet_backend.fitting import fit_meshes, load_fit_checkpoint
    from occnet_contract.settings import FitSettings

    settings = FitSettings(**{k: v for k, v in (("steps", args.steps), ("amp", args.amp)) if v is not None})
    work = Path(tempfile.mkdtemp(prefix="occnet-bench-morph-"))
    args.out.mkdir(parents=True, exist_ok=True)
    meshes = {**blender_meshes(work / "meshes"), **{k: Path(v) for k, v in package_meshes().items()}}
    order = ["suzanne", "torus", "ant", "nut", "airplane", "cone", "sphere", "cylinder"]
    print(f"machine: {machine()}")
    print(f"fit: at most {settings.steps} steps x {settings.points} points, encoding {settings.encoding}, amp "
          f"{settings.amp}, {settings.resolution}³; paths at {args.path_resolution}³, 11 points each")

    warm_up_fit(meshes["cone"], work / "warm_up", settings.amp)  # else the first single fit pays the imports
    singles: dict[str, dict] = {}
    for name in order[: max(args.sizes)]:
        start = time.perf_counter()
        result = fit_meshes([meshes[name]], work / f"single_{name}", settings)
        singles[name] = {"iou": result.metrics["shapes"][name]["iou"], "seconds": time.perf_counter() - start,
                         "steps": result.metrics["timings"]["train_steps"]}
        print(f"  single fit {name:9s} IoU {singles[name]['iou']:.3f}  {singles[name]['seconds']:5.1f} s, "
              f"{singles[name]['steps']} steps", flush=True)

    for n in args.sizes:
        names = order[:n]
        start = time.perf_counter()
        result = fit_meshes([meshes[s] for s in names], work / f"multi_{n}", settings)
        seconds = time.perf_counter() - start
        single_total = sum(singles[s]["seconds"] for s in names)
        gaps = {s: result.metrics["shapes"][s]["iou"] - singles[s]["iou"] for s in names}
        single_steps = sum(singles[s]["steps"] for s in names)
        steps = result.metrics["timings"]["train_steps"]
        print(f"\nN = {n}: one fit {seconds:.1f} s = {seconds / single_total:.2f} x the {n} single fits "
              f"({single_total:.1f} s); training steps {steps} = {steps / single_steps:.2f} x theirs ({single_steps}; "
              f"steps of {settings.points} points each: a measure of the work that this VM's drift does not move)")
        for s in names:
            print(f"  {s:9s} IoU {result.metrics['shapes'][s]['iou']:.3f} vs single {singles[s]['iou']:.3f} "
                  f"({gaps[s]:+.3f})")
        print(f"  worst gap {min(gaps.values()):+.3f}, median {statistics.median(gaps.values()):+.3f}")

        model, payload = load_fit_checkpoint(result.checkpoint)
        ids = payload["shape_ids"]
        index = {s: ids.index(s) for s in names}
        pairs = list(itertools.combinations(names, 2)) if n <= 4 else list(zip(names, names[1:] + names[:1]))
        paths = []
        fields = []
        for sid in ids:
            source = load_mesh(meshes[sid])
            center, scale = normalization(source.vertices)
            fields.append(direct_field(to_unit_cube(source.vertices, center, scale), source.faces))
        res = args.path_resolution

        def exact(weights: np.ndarray, resolution: int = res) -> dict:
            blend = FieldBlend([(w, CachedField(fields[k])) for k, w in enumerate(weights) if w], DISTANCE_SCALE)
            return extract_mesh(blend, resolution=resolution, distance_scale=DISTANCE_SCALE, **blend_options(weights))

        roughness = []
        for a, b in pairs:
            m = path_metrics(lambda w: model.extract_mesh(res, weights=w), index[a], index[b], len(ids))
            reference = path_metrics(exact, index[a], index[b], len(ids))
            ends = [model.extract_mesh(res, shape_index=index[s])["vertices"] for s in (a, b)]
            m["endpoint_equal"] = all(np.array_equal(e, m["rows"][k]["vertices"]) for e, k in zip(ends, (0, -1)))
            m["half_way_area"] = half_way_area(model, exact, index[a], index[b], len(ids))
            paths.append((f"{a}->{b}", m))
            print(f"  path {a:>8s} -> {b:<8s} watertight {m['watertight']!s:5s} extra components "
                  f"{m['extra_components']:+d} (exact fields {reference['extra_components']:+d})  volume jump "
                  f"{m['volume_jump']:.2f} ({reference['volume_jump']:.2f})  area jump {m['area_jump']:.2f} "
                  f"({reference['area_jump']:.2f})  half-way at 128³: area {m['half_way_area']:.2f} x the exact fields'  "
                  f"endpoints = own {m['endpoint_equal']}", flush=True)
            roughness.append(m["half_way_area"])
        print(f"  half-way at 128³, area / the exact fields' (1 = as smooth; a rough surface has more): median "
              f"{statistics.median(roughness):.2f}, worst {max(roughness):.2f}")
        a, b = names[0], names[1]
        moves = [("own shape", {"shape": a})] + [
            (f"{1 - t:.1f} {a} + {t:.1f} {b}", {"weights": [1 - t if s == a else t if s == b else 0.0 for s in ids]})
            for t in (0.5, 0.6, 0.7)]
        for warm in (False, True):
            warm_s, timed = serve_moves(result.checkpoint, [request for _, request in moves], warm, work / f"serve_{n}_{warm}")
            if warm:
                print(f"  serve's warm-up while idle (the {n} shapes' grids at 128³): {warm_s:.1f} s after 'ready'")
            for (label, _), (seconds, stats) in zip(moves, timed):
                print(f"  slider at 128³, {'warmed' if warm else 'cold':6s} server, {label:24s} "
                      f"{seconds:.2f} s ({stats['total_seconds']:.2f} s in serve), {stats['evaluations']:7d} evaluations")
        strip(paths[:6], args.out / f"morph_paths_n{n}.png")
    print(f"\nstrips: {args.out}/morph_paths_n*.png; work folder {work}")


if __name__ == "__main__":
    main()
