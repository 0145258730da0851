"""The main job (`make demo` = examples/demo.py) in its quick mode: every file, valid and plausible."""

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo.py"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    return struct.unpack(">II", data[16:24])


def run_demo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DEMO), *args], cwd=cwd, capture_output=True, text=True, timeout=900)


def test_demo_help_names_its_options(tmp_path):
    result = run_demo("--help", cwd=tmp_path)
    assert result.returncode == 0
    for option in ("--quick", "--device", "--out", "--steps", "--resolution"):
        assert option in result.stdout


def test_demo_refuses_bad_steps_in_one_line(tmp_path):
    result = run_demo("--steps", "0", "--out", str(tmp_path / "demo"), cwd=tmp_path)
    assert result.returncode == 2 and "--steps must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "demo").exists()


@pytest.mark.slow
def test_quick_demo_writes_every_file(tmp_path):
    out = tmp_path / "demo out"
    result = run_demo("--quick", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    for name in ("scene.blend", "suzanne.png", "morph.png", "training_curve_suzanne.png",
                 "training_curve_nut_ant.png", "metrics.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    width, height = png_size(out / "suzanne.png")
    assert height == 360 and width == 2 * 360 + 6  # original | reconstruction
    width, height = png_size(out / "morph.png")
    assert height == 360 and width == 5 * 360 + 4 * 6  # nut | nut result | morph | ant result | ant
    assert png_size(out / "training_curve_suzanne.png")[0] > 100

    report = json.loads((out / "metrics.json").read_text())
    rows = {row["shape"]: row for row in report["shapes"]}
    assert set(rows) == {"Suzanne", "Nut (with the ant)", "Ant (with the nut)", "half-way morph"}
    assert all(row["watertight"] and row["faces"] > 100 for row in rows.values())
    assert rows["Suzanne"]["iou"] > 0.6 and rows["Nut (with the ant)"]["iou"] > 0.5
    for stage in ("single_shape_job_s", "two_shape_job_s", "morph_s", "render_s", "total_s"):
        assert report["seconds"][stage] > 0
    assert report["settings"]["steps"] == 150 and report["device"] == "cpu"
    assert "half-way morph" in result.stdout and str(out / "scene.blend") in result.stdout

    # the .blend holds the originals, the reconstructions and the morph
    listing = subprocess.run(
        [sys.executable, "-c",
         "import json, sys, bpy; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); "
         "print(json.dumps(sorted(ob.name for ob in bpy.data.objects if ob.type == 'MESH')))", str(out / "scene.blend")],
        capture_output=True, text=True, timeout=300)
    assert listing.returncode == 0, listing.stderr[-2000:]
    names = json.loads(listing.stdout.strip().splitlines()[-1])
    assert names == ["Ant", "Ant OccNet", "Nut", "Nut OccNet", "Nut-Ant Morph OccNet", "Suzanne", "Suzanne OccNet"]
