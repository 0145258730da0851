"""The main job: a real Blender scene reconstructed headless through the add-on, with pictures.

Builds a scene from meshes nobody on the team wrote (Blender's Suzanne with a subdivision
modifier, and the nut and ant that ship inside the pyvista wheel), then runs the add-on's own
blocking path (``blender_addon.blender.api.reconstruct``, what the Reconstruct button runs) twice:

1. Suzanne alone: one network, one shape.
2. The nut and the ant together: one conditional network with a learned code per shape, then a
   half-way morph between them (``update_result(..., weights=[0.5, 0.5])``, the shape sliders),
   which crosses a change of topology that shape keys cannot.

Writes to OUT (default ``out/demo``): ``scene.blend`` (originals, reconstructions and the morph),
``suzanne.png`` (original | reconstruction), ``morph.png`` (nut | nut reconstruction | half-way |
ant reconstruction | ant), both rendered with Workbench, ``training_curve_*.png``,
``metrics.json`` (IoU, Chamfer-L1, NC, F@1%, watertight, seconds per stage) and the job folders.
Prints a summary table. Run with the project's environment: ``make demo`` or
``.venv/bin/python examples/demo.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The settings of a full run and of --quick (a smoke test: seconds, rough shapes).
FULL = {"steps": 600, "resolution": 128, "points": 8192, "width": 128, "depth": 5, "fourier_frequencies": 64}
QUICK = {"steps": 150, "resolution": 64, "points": 2048, "width": 64, "depth": 2, "fourier_frequencies": 32}
MORPH = (0.5, 0.5)
RENDER_SIZE = 360


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="examples/demo.py",
        description="Reconstruct a real Blender scene headless through the OccNet add-on and write "
                    "scene.blend, renders, metrics and training curves.",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "demo",
                        help="output folder (default: out/demo); earlier demo files there are replaced")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the backend trains: auto (default: the GPU when there is one, else the CPU), "
                             "cpu or cuda")
    parser.add_argument("--quick", action="store_true",
                        help="tiny models and grids: finishes in well under a minute, rough shapes (smoke test)")
    parser.add_argument("--steps", type=int, help="training steps per run (default 600, --quick 150)")
    parser.add_argument("--resolution", type=int, choices=(32, 64, 128, 256),
                        help="extraction grid cells per side (default 128, --quick 64)")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be at least 1 (got {args.steps})")
    return args


# --------------------------------------------------------------------------------------------
# The scene
# --------------------------------------------------------------------------------------------

def sample_mesh_paths() -> dict[str, Path]:
    """The pyvista wheel's nut and ant (installed with --no-deps by `make venv`; files only)."""
    import importlib.metadata

    try:
        files = importlib.metadata.files("pyvista") or []
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit("The demo's sample meshes come from the pyvista wheel, which is not installed. "
                         "Run `make demo` (it installs everything), or `.venv/bin/pip install --no-deps pyvista==0.49.1`.")
    found = {f.stem: Path(str(f.locate())) for f in files
             if str(f).startswith("pyvista/examples/") and f.suffix == ".ply"}
    missing = [name for name in ("nut", "ant") if name not in found]
    if missing:
        raise SystemExit(f"The pyvista wheel has no {', '.join(missing)}.ply; install pyvista==0.49.1.")
    return {"nut": found["nut"], "ant": found["ant"]}


def world_bounds(ob):
    """(centre, size) of the object's bounding box in world space."""
    import bpy
    from mathutils import Vector

    bpy.context.view_layer.update()
    corners = [ob.matrix_world @ Vector(c) for c in ob.bound_box]
    lo = Vector(tuple(min(c[i] for c in corners) for i in range(3)))
    hi = Vector(tuple(max(c[i] for c in corners) for i in range(3)))
    return (lo + hi) / 2, hi - lo


def fit_to_size(ob, size: float, location: tuple[float, float, float]) -> None:
    """Scales and moves an object (its transform, not its mesh) so its largest side is `size`."""
    from mathutils import Vector

    ob.scale = ob.scale * (size / max(world_bounds(ob)[1]))
    ob.location += Vector(location) - world_bounds(ob)[0]


def build_scene() -> dict[str, Any]:
    """Suzanne (subdivision modifier: the add-on exports the evaluated mesh), the nut and the ant."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    originals = bpy.data.collections.new("Originals")
    bpy.context.scene.collection.children.link(originals)
    bpy.context.view_layer.active_layer_collection = bpy.context.view_layer.layer_collection.children["Originals"]

    bpy.ops.mesh.primitive_monkey_add(location=(0.0, 0.0, 0.0))
    suzanne = bpy.context.active_object
    suzanne.modifiers.new("Subdivision", "SUBSURF").levels = 2
    bpy.ops.object.shade_smooth()

    objects = {"suzanne": suzanne}
    for (name, path), x in zip(sample_mesh_paths().items(), (4.0, 8.0)):
        bpy.ops.object.select_all(action="DESELECT")
        bpy.ops.wm.ply_import(filepath=str(path))
        ob = bpy.context.selected_objects[0]
        ob.name = name.capitalize()
        fit_to_size(ob, 2.0, (x, 0.0, 0.0))
        objects[name] = ob
    return objects


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

def setup_render(scene) -> None:
    import bpy

    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.resolution_x = scene.render.resolution_y = RENDER_SIZE
    scene.render.film_transparent = False
    shading = scene.display.shading
    shading.light = "STUDIO"
    shading.color_type = "SINGLE"
    shading.single_color = (0.8, 0.55, 0.35)
    shading.show_cavity = True
    scene.world = scene.world or bpy.data.worlds.new("World")
    camera = bpy.data.objects.new("Demo Camera", bpy.data.cameras.new("Demo Camera"))
    camera.data.lens = 50
    scene.collection.objects.link(camera)
    scene.camera = camera


def render_object(scene, ob, path: Path) -> None:
    """Renders `ob` alone, framed by the scene camera from the front-left, above."""
    import bpy
    from mathutils import Vector

    shown = {}
    for other in scene.objects:
        if other.type == "MESH":
            shown[other.name] = other.hide_render
            other.hide_render = other is not ob
    centre, size = world_bounds(ob)
    radius = size.length / 2
    camera = scene.camera
    fov = camera.data.angle
    direction = Vector((0.55, -1.0, 0.45)).normalized()
    camera.location = centre + direction * (radius / math.sin(fov / 2) * 1.02)
    camera.rotation_euler = (-direction).to_track_quat("-Z", "Y").to_euler()
    scene.render.filepath = str(path)
    try:
        bpy.ops.render.render(write_still=True)
    finally:
        for name, hidden in shown.items():
            scene.objects[name].hide_render = hidden


def side_by_side(paths: list[Path], out: Path) -> None:
    """One PNG of the given renders in a row, with a thin white gap."""
    import numpy as np
    from matplotlib import image

    tiles = [image.imread(p)[..., :3] for p in paths]
    gap = np.ones((tiles[0].shape[0], 6, 3), dtype=tiles[0].dtype)
    row = [tiles[0]]
    for tile in tiles[1:]:
        row += [gap, tile]
    image.imsave(out, np.concatenate(row, axis=1))
    for p in paths:
        p.unlink()


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------

def is_closed(ob) -> bool:
    """Every edge of the object's mesh has exactly two faces (watertight, no non-manifold edges)."""
    import bmesh

    bm = bmesh.new()
    try:
        bm.from_mesh(ob.data)
        return len(bm.faces) > 0 and all(len(edge.link_faces) == 2 for edge in bm.edges)
    finally:
        bm.free()


def job_metrics(result) -> dict[str, Any]:
    """The backend's metrics.json of the job that made `result`."""
    from blender_addon.blender import results

    path = Path(str(result[results.PROP_JOB])) / "output" / "metrics.json"
    return json.loads(path.read_text())


def shape_row(name: str, metrics: dict[str, Any]) -> dict[str, Any]:
    keep = ("iou", "chamfer_l1", "normal_consistency", "fscore_0.01", "watertight", "vertices", "faces",
            "extract_s", "evaluate_s")
    return {"shape": name, **{k: metrics[k] for k in keep if k in metrics}}


def machine() -> str:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'shape':<22} {'IoU':>6} {'Chamfer-L1':>11} {'NC':>6} {'F@1%':>6} {'closed':>7} {'faces':>8}")
    for row in rows:
        def num(key: str, fmt: str) -> str:
            return format(row[key], fmt) if key in row else "-".rjust(int(fmt.split(".")[0]))
        print(f"{row['shape']:<22} {num('iou', '6.3f')} {num('chamfer_l1', '11.4f')} "
              f"{num('normal_consistency', '6.3f')} {num('fscore_0.01', '6.3f')} "
              f"{'yes' if row['watertight'] else 'NO':>7} {row['faces']:>8}")


# --------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    import bpy

    import blender_addon
    from blender_addon.blender import api as occnet
    from occnet_contract.files import atomic_write_bytes

    settings = dict(QUICK if args.quick else FULL)
    if args.steps is not None:
        settings["steps"] = args.steps
    if args.resolution is not None:
        settings["resolution"] = args.resolution
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    jobs_dir = out / "jobs"
    shutil.rmtree(jobs_dir, ignore_errors=True)
    stages: dict[str, float] = {}
    started = time.perf_counter()

    # The backend runs in this interpreter's environment (it has torch), as a subprocess.
    os.environ.setdefault("OCCNET_PYTHON", sys.executable)
    objects = build_scene()
    blender_addon.register()
    try:
        scene = bpy.context.scene
        setup_render(scene)
        stages["scene_s"] = time.perf_counter() - started

        print(f"OccNet demo: {settings['steps']} steps, {settings['resolution']}³ grid, device {args.device}; "
              f"writing to {out}", flush=True)
        t = time.perf_counter()
        print("\n[1/2] Suzanne (subdivided, open eyes): one shape", flush=True)
        (suzanne_result,) = occnet.reconstruct([objects["suzanne"]], device=args.device, work_dir=jobs_dir, **settings)
        stages["single_shape_job_s"] = time.perf_counter() - t

        t = time.perf_counter()
        print("\n[2/2] Nut and ant: one model, a code per shape", flush=True)
        nut_result, ant_result = occnet.reconstruct([objects["nut"], objects["ant"]], device=args.device,
                                                    work_dir=jobs_dir, **settings)
        stages["two_shape_job_s"] = time.perf_counter() - t

        t = time.perf_counter()
        morph = nut_result.copy()
        morph.data = nut_result.data.copy()
        morph.name = "Nut-Ant Morph OccNet"
        nut_result.users_collection[0].objects.link(morph)
        occnet.update_result(morph, weights=MORPH)
        stages["morph_s"] = time.perf_counter() - t
        morph.location.x += 2.0  # a third row, between the nut (x=4) and the ant (x=8)
        morph.location.y -= 6.0

        t = time.perf_counter()
        for result in (suzanne_result, nut_result, ant_result):
            result.location.y -= 3.0  # results in a row in front of the originals
        bpy.context.view_layer.update()
        renders = out / "renders"
        renders.mkdir(exist_ok=True)
        tiles = {}
        for key, ob in (("suzanne", objects["suzanne"]), ("suzanne_result", suzanne_result),
                        ("nut", objects["nut"]), ("nut_result", nut_result), ("morph", morph),
                        ("ant_result", ant_result), ("ant", objects["ant"])):
            tiles[key] = renders / f"{key}.png"
            render_object(scene, ob, tiles[key])
        side_by_side([tiles["suzanne"], tiles["suzanne_result"]], out / "suzanne.png")
        side_by_side([tiles[k] for k in ("nut", "nut_result", "morph", "ant_result", "ant")], out / "morph.png")
        renders.rmdir()
        stages["render_s"] = time.perf_counter() - t

        single, multi = job_metrics(suzanne_result), job_metrics(nut_result)
        shutil.copyfile(Path(str(suzanne_result["occnet_job"])) / "output" / "training_curve.png",
                        out / "training_curve_suzanne.png")
        shutil.copyfile(Path(str(nut_result["occnet_job"])) / "output" / "training_curve.png",
                        out / "training_curve_nut_ant.png")
        rows = [shape_row("Suzanne", single["shapes"]["Suzanne"]),
                shape_row("Nut (with the ant)", multi["shapes"]["Nut"]),
                shape_row("Ant (with the nut)", multi["shapes"]["Ant"]),
                {"shape": "half-way morph", "watertight": is_closed(morph), "faces": len(morph.data.polygons),
                 "vertices": len(morph.data.vertices)}]

        blend = out / "scene.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(blend), check_existing=False)
        stages["total_s"] = time.perf_counter() - started
        report = {
            "machine": machine(),
            "device": single.get("device"),
            "settings": settings,
            "shapes": rows,
            "seconds": stages,
            "backend_seconds": {"suzanne": single.get("timings", {}), "nut_ant": multi.get("timings", {})},
            "units": "IoU on 100k points in [-0.55,0.55]^3 and Chamfer-L1 (1/2 accuracy + completeness, not x10) "
                     "in the unit cube the shape is normalised to; F@1% at 0.01 of that cube",
        }
        atomic_write_bytes(out / "metrics.json", (json.dumps(report, indent=2) + "\n").encode())
    finally:
        blender_addon.unregister()

    print_table(rows)
    print(f"\n{stages['total_s']:.0f} s in all (Suzanne {stages['single_shape_job_s']:.0f} s, nut+ant "
          f"{stages['two_shape_job_s']:.0f} s, morph {stages['morph_s']:.1f} s, renders {stages['render_s']:.0f} s)")
    print(f"Files in {out}:")
    for name in ("scene.blend", "suzanne.png", "morph.png", "training_curve_suzanne.png",
                 "training_curve_nut_ant.png", "metrics.json"):
        print(f"  {out / name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from blender_addon.runner.errors import OccNetError

    try:
        return run(args)
    except OccNetError as err:
        print(f"OccNet demo failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("OccNet demo cancelled.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
