"""`python -m occnet_backend eval`: per-shape CSV/JSON and means from a fit checkpoint."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import trimesh

REPO = Path(__file__).resolve().parents[1]


def backend(*args):
    return subprocess.run([sys.executable, "-m", "occnet_backend", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_eval_scores_the_fitted_shape_and_refuses_unknown_ones(tmp_path):
    box = tmp_path / "box.obj"
    trimesh.creation.box(extents=[1.0, 0.6, 0.4]).export(box)
    run = tmp_path / "run"
    fit = backend("fit", box, "--out", run, "--steps", "150", "--width", "64", "--depth", "2", "--resolution", "64",
                  "--fourier-frequencies", "16", "--cached-points", "20000", "--device", "cpu", "--workers", "1")
    assert fit.returncode == 0, fit.stderr[-2000:]

    out = tmp_path / "eval"
    result = backend("eval", "--checkpoint", run / "checkpoint.pt", "--data", run / "data", "--split", "train",
                     "--out", out, "--resolution", "64")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["shapes"]["box"]["iou"] > 0.8 and summary["mean"]["iou"] == summary["shapes"]["box"]["iou"]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["shape_id"] for r in rows] == ["box", "mean"] and float(rows[0]["chamfer_l1"]) < 0.05

    (run / "data" / "test.json").write_text(json.dumps(["other"]))
    trimesh.creation.icosphere().export(run / "data" / "meshes" / "other.obj")
    refused = backend("eval", "--checkpoint", run / "checkpoint.pt", "--data", run / "data", "--out", out)
    assert refused.returncode == 1 and "no code for shape 'other'" in refused.stderr
    assert "Traceback" not in refused.stderr
