"""Live sliders: time from a slider change to the updated mesh in the Blender scene.

Fits Suzanne once (default width 128, ``--steps`` steps, on the CPU) with ``occnet_backend fit``,
puts the result into a bpy 5.0.1 scene the way the add-on does, and times ``api.update_result``
(the blocking path: request -> backend extraction -> PLY -> new mesh swapped in -> depsgraph
update) for threshold and resolution changes at 64³, 128³ and 256³. Each resolution starts
from a freshly started server (first update timed separately: it includes loading torch and the
model). Also times the UI path once at 128³: a property change, the debounce, the timer's work.

    .venv/bin/python bench/sliders.py [--steps 300] [--repeats 5] [--device cpu]

Target (issue 7): <= 1 s at 128³ on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import machine, suzanne  # noqa: E402


def fit(folder: Path, steps: int, device: str) -> Path:
    from occnet_contract import ply

    vertices, faces = suzanne()
    ply.write_ply(folder / "Suzanne.ply", vertices, faces)
    argv = [sys.executable, "-m", "occnet_backend", "fit", str(folder / "Suzanne.ply"), "--out", str(folder / "out"),
            "--steps", str(steps), "--device", device, "--resolution", "128"]
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"fit failed:\n{done.stderr[-3000:]}")
    print(f"fit: Suzanne (subdivision 2), width 128 (default), {steps} steps on {device}: "
          f"{time.perf_counter() - start:.0f} s; {done.stderr.strip().splitlines()[-1]}")
    return folder / "out"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5, help="threshold changes per resolution")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--reuse", type=Path, help="a fit output folder from an earlier run (skips the fit)")
    args = parser.parse_args()

    print(f"machine: {machine()}")
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes on these cores slow every number)")
    work = Path(tempfile.mkdtemp(prefix="occnet-bench-sliders-"))
    out = args.reuse if args.reuse else fit(work, args.steps, args.device)

    import bpy

    import blender_addon
    from blender_addon.blender import api, results, sliders

    os.environ["OCCNET_PYTHON"] = sys.executable
    bpy.ops.wm.read_factory_settings(use_empty=True)
    blender_addon.register()
    settings = {"resolution": 128, "threshold": 0.5, "width": 128, "device": args.device}
    spec = results.ResultSpec(shape_id="Suzanne", sources=["Suzanne"], path=str(out / "meshes" / "Suzanne.ply"),
                              checkpoint=str(out / "checkpoint.pt"), job_dir=str(work), shape_ids=["Suzanne"],
                              settings=settings)
    (ob,) = results.import_results(bpy.context.scene, [spec])
    prefs_device = args.device

    def timed(**change) -> dict:
        start = time.perf_counter()
        api.update_result(ob, **change)
        bpy.context.view_layer.update()  # the scene sees the new mesh
        total = time.perf_counter() - start
        stats = sliders.status(ob).stats
        return {"total": total, "backend": stats.get("total_seconds", float("nan")),
                "evaluations": stats.get("evaluations", 0), "vertices": len(ob.data.vertices)}

    def line(label: str, rows: list[dict]) -> str:
        med = lambda key: statistics.median(r[key] for r in rows)  # noqa: E731
        spread = f" (min {min(r['total'] for r in rows):.3f}, max {max(r['total'] for r in rows):.3f})" if len(rows) > 1 else ""
        return (f"  {label:<58} {med('total'):7.3f} s{spread:<25} backend {med('backend'):6.3f} s  "
                f"add-on {med('total') - med('backend'):6.3f} s  {int(med('evaluations')):>9,} evals  "
                f"{int(med('vertices')):>8,} vertices")

    print(f"server device: {prefs_device}; times are update_result + depsgraph update, median of {args.repeats}")
    print(f"  {'change':<58} {'median':>9}")
    for res in args.resolutions:
        sliders.POOL.stop_all()  # a fresh server: no cached grid for this function
        half = max(32, res // 2)
        first = timed(resolution=half, threshold=0.5)
        print(line(f"{res}³: first update, server start + {half}³ (add-on = start)", [first]))
        print(line(f"{res}³: resolution {half}³ -> {res}³ (new level)", [timed(resolution=res)]))
        thresholds = [0.45, 0.55, 0.4, 0.6, 0.35, 0.65, 0.3, 0.7][: args.repeats]
        print(line(f"{res}³: threshold change (0.5 -> {thresholds[0]} ...)", [timed(threshold=t) for t in thresholds]))
        back = []
        for _ in range(max(1, args.repeats // 2)):
            timed(resolution=half)
            back.append(timed(resolution=res))
        print(line(f"{res}³: resolution {half}³ -> {res}³ (level seen before)", back))

    # The UI path: a property change -> debounce -> timer tick -> request -> swap.
    sliders.POOL.stop_all()
    api.update_result(ob, resolution=128, threshold=0.5)
    rows = []
    for t in (0.45, 0.55, 0.4, 0.6, 0.35)[: args.repeats]:
        start = time.perf_counter()
        ob.occnet_live.threshold = t
        while sliders.process_once():
            time.sleep(0.005)
        bpy.context.view_layer.update()
        rows.append({"total": time.perf_counter() - start, "backend": sliders.status(ob).stats.get("total_seconds", 0.0),
                     "evaluations": sliders.status(ob).stats.get("evaluations", 0), "vertices": len(ob.data.vertices)})
    print(line(f"128³ UI path: threshold property (incl. {sliders.slider_client.DEBOUNCE_S:.2f} s debounce)", rows))
    orphans = [m.name for m in bpy.data.meshes if m.users == 0]
    print(f"orphan meshes after all updates: {len(orphans)}; load average after: {os.getloadavg()[0]:.2f}")
    blender_addon.unregister()
    print(json.dumps({"work": str(work)}))


if __name__ == "__main__":
    main()
