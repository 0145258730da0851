"""When should a fit stop? Its early-stopping rule (`training.early_stopping`) against other rules, on the
same recorded training curves.

Each mesh is fit once with `fit`'s defaults but never stopped early (up to --steps). At every held-out
check the bench records what the rule sees (the held-out IoU of the averaged weights) and what the user
gets (the same weights' IoU on 100k uniform points labelled by winding number, `quality.ground_truth`,
in the evaluation box). Training does not depend on when it would have stopped, so a rule's stop on
this curve is where that rule's fit would have ended (its last check; the end keeps the better of the
averaged weights and their best check, which this bench does not replay). Printed per rule: its stop
per mesh, its steps against the current rule's (the time a fit trains), and the true IoU it ends at
against the current rule's.

    make bench-meshes
    .venv/bin/python bench/stopping.py [--meshes board lego ...] [--steps 800] [--json FILE]
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from common import PACKAGE_MESHES, machine, package_meshes
from quality import ground_truth
from occnet_backend import fitting
from occnet_backend.data.meshes import load_mesh, normalization, to_unit_cube
from occnet_backend.metrics import iou
from occnet_backend.training.early_stopping import PATIENCE, HeldOutIoU
from occnet_contract.settings import FitSettings

DEFAULT_MESHES = ["board", "lego", "camera", "gear_ring", "plate", "servo", "face_scan", "ant", "airplane", "bunny",
                  "nut", "duck"]
_DEFAULTS = inspect.signature(HeldOutIoU).parameters
MIN_DELTA = _DEFAULTS["min_delta"].default
MIN_STEPS = _DEFAULTS["min_steps"].default
Curve = list[tuple[int, float]]  # (step, held-out IoU) per check


class Recorder(HeldOutIoU):
    """`HeldOutIoU` that never stops training and records, at each check, the true IoU beside the held-out one."""

    truth: dict
    model: torch.nn.Module
    rows: list

    def converged(self, step: int) -> bool:
        super().converged(step)
        if step % self.every == 0:
            with self.averaged_weights(), torch.no_grad():
                logits = self.model.predict_logits(torch.from_numpy(self.truth["uniform_points"]))
            self.rows.append((step, self.history[-1][1], iou((logits >= 0).numpy(), self.truth["uniform_occupancy"])))
        return False


def record(path: str, folder: Path, steps: int) -> list[tuple[int, float, float]]:
    """(step, held-out IoU, true IoU) at every check of one fit of `path` trained `steps` steps."""
    source = load_mesh(path)
    center, scale = normalization(source.vertices)
    truth = ground_truth(to_unit_cube(source.vertices, center, scale), source.faces)
    rows: list = []
    original = fitting.held_out_iou

    def recording(model, dataset, every):
        rule = original(model, dataset, every)
        recorder = Recorder(rule.evaluate, every=rule.every, patience=rule.patience)
        recorder.truth, recorder.model, recorder.rows = truth, model, rows
        return recorder

    fitting.held_out_iou = recording
    try:
        fitting.fit_meshes([path], folder, FitSettings(amp="off", steps=steps))
    finally:
        fitting.held_out_iou = original
    return rows


def patience_rule(patience: int, min_delta: float = MIN_DELTA) -> Callable[[Curve], int]:
    """`HeldOutIoU.converged` replayed: the index of the check at which it stops (the last if never)."""
    def stop(curve: Curve) -> int:
        best, stale = -1.0, 0
        for i, (step, score) in enumerate(curve):
            if score > best + min_delta:
                best, stale = score, 0
            elif best > 0:
                best, stale = max(best, score), stale + 1
            if step >= MIN_STEPS and stale >= patience:
                return i
        return len(curve) - 1
    return stop


def slope_rule(checks: int, min_slope: float) -> Callable[[Curve], int]:
    """Stops once the least-squares slope of the last `checks` held-out IoUs falls below `min_slope` a check:
    a trend, which one noisy check neither ends nor prolongs."""
    def stop(curve: Curve) -> int:
        x = np.arange(checks)
        for i in range(checks - 1, len(curve)):
            if curve[i][0] >= MIN_STEPS and np.polyfit(x, [s for _, s in curve[i - checks + 1:i + 1]], 1)[0] < min_slope:
                return i
        return len(curve) - 1
    return stop


RULES = {
    f"now: patience {PATIENCE}, min rise {MIN_DELTA}": patience_rule(PATIENCE),
    f"patience {PATIENCE + 1}": patience_rule(PATIENCE + 1),
    f"patience {PATIENCE + 1}, min rise 0.002": patience_rule(PATIENCE + 1, 0.002),
    "slope of 5 checks < 0.00075": slope_rule(5, 0.00075),
    "slope of 5 checks < 0.001": slope_rule(5, 0.001),
    "slope of 6 checks < 0.001": slope_rule(6, 0.001),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meshes", nargs="+", default=DEFAULT_MESHES, choices=sorted(PACKAGE_MESHES))
    parser.add_argument("--steps", type=int, default=800, help="steps each fit trains, never stopped early")
    parser.add_argument("--json", type=Path, help="write every curve here")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"fit defaults (fp32), trained {args.steps} steps; at each check: held-out IoU / true IoU (100k uniform points)")
    curves: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = package_meshes(args.meshes)
        for name in args.meshes:
            curves[name] = record(paths[name], Path(tmp) / name, args.steps)
            print(f"  {name:11s} " + " ".join(f"{s}:{h:.3f}/{t:.4f}" for s, h, t in curves[name][3::4]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(curves))

    print(f"\n{'rule':34s} {'steps':>6s} {'true IoU vs now: mean':>22s} {'worst':>8s}   stop step per mesh")
    now_steps = now_iou = None
    for label, rule in RULES.items():
        stops = {n: curves[n][rule([(s, h) for s, h, _ in curves[n]])] for n in args.meshes}
        steps = np.array([stops[n][0] for n in args.meshes])
        true = np.array([stops[n][2] for n in args.meshes])
        if now_steps is None:
            now_steps, now_iou = steps, true
        gain = true - now_iou
        print(f"{label:34s} {steps.sum() / now_steps.sum():5.2f}x {gain.mean():+22.4f} {gain.min():+8.4f}   "
              + " ".join(f"{n} {s}" for n, s in zip(args.meshes, steps)))
    final = {n: curves[n][-1][2] - now_iou[i] for i, n in enumerate(args.meshes)}
    print(f"\ntrained all {args.steps} steps instead: true IoU vs now, median {statistics.median(final.values()):+.4f}; "
          + ", ".join(f"{n} {g:+.4f}" for n, g in sorted(final.items(), key=lambda kv: -kv[1])[:4]))


if __name__ == "__main__":
    main()
