"""The slider server: requests, errors, cached re-extraction, coordinates of the written mesh."""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh

from occnet_backend.events import EventWriter
from occnet_backend.sliders import ShapeModel, SliderServer


def two_spheres_model():
    """Two learned 'shapes': a small and a large sphere, blended by weights like shape codes."""
    radii = np.array([0.2, 0.4])

    def logit_fn_for(weights):
        r = float(weights @ radii)
        return lambda p: (r - np.linalg.norm(p, axis=1)) * 30

    return ShapeModel(logit_fn_for, ["small", "large"], centers=[[0, 0, 0], [10, 0, 0]], scales=[1.0, 2.0])


def test_extract_writes_a_closed_mesh_in_source_coordinates(tmp_path):
    server = SliderServer(two_spheres_model(), tmp_path)
    response, keep = server.handle({"id": 7, "command": "extract", "resolution": 64, "shape": "large"})
    assert keep and response["ok"] and response["id"] == 7
    mesh = trimesh.load(response["path"])
    assert mesh.is_watertight and response["vertices"] == len(mesh.vertices)
    assert np.allclose(mesh.bounds.mean(axis=0), [10, 0, 0], atol=0.02)  # centre of the 'large' source
    assert np.linalg.norm(mesh.vertices - [10, 0, 0], axis=1).max() == pytest.approx(0.8, abs=0.02)


def test_threshold_change_reuses_the_cache_and_blend_is_closed(tmp_path):
    server = SliderServer(two_spheres_model(), tmp_path)
    first, _ = server.handle({"resolution": 128, "threshold": 0.5})
    again, _ = server.handle({"resolution": 128, "threshold": 0.55})
    assert again["stats"]["evaluations"] < first["stats"]["evaluations"] / 2
    blend, _ = server.handle({"resolution": 64, "weights": [1, 1]})
    mesh = trimesh.load(blend["path"])
    assert mesh.is_watertight
    assert np.linalg.norm(mesh.vertices - [5, 0, 0], axis=1).max() == pytest.approx(0.3 * 1.5, abs=0.03)


@pytest.mark.parametrize(
    "request_, message",
    [
        ({"resolution": 100}, "resolution must be one of 32, 64, 128, 256, 512"),
        ({"threshold": 2}, "strictly between 0 and 1"),
        ({"shape": "teapot"}, "unknown shape 'teapot'"),
        ({"weights": [1]}, "list of 2 finite numbers"),
        ({"weights": [-1, 0]}, ">= 0 with a positive sum"),
        ({"command": "dance"}, "unknown command"),
    ],
)
def test_bad_requests_get_an_error_response_not_a_crash(tmp_path, request_, message):
    response, keep = SliderServer(two_spheres_model(), tmp_path).handle({"id": 1, **request_})
    assert keep and response["ok"] is False and message in response["error"]


def test_serve_loop_answers_each_line_and_ends_on_eof(tmp_path):
    stdin = io.StringIO('{"id": 1, "command": "info"}\nnot json\n{"id": 2, "resolution": 32}\n')
    stdout = io.StringIO()
    SliderServer(two_spheres_model(), tmp_path).serve(stdin, stdout, EventWriter(stdout, enabled=True))
    lines = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert lines[0]["event"] == "ready" and lines[0]["shapes"] == ["small", "large"]
    assert lines[1]["shapes"] == ["small", "large"]
    assert lines[2]["ok"] is False and "not valid JSON" in lines[2]["error"]
    assert lines[3]["ok"] and lines[3]["id"] == 2


def two_spheres_fields():
    """Two spheres as a model that blends fields: logits are -30 x their signed distances."""
    spheres = [(np.array([-0.2, 0, 0]), 0.15), (np.array([0.2, 0, 0]), 0.25)]

    def logit_fn_for(weights):
        return lambda p: sum(w * (r - np.linalg.norm(p - c, axis=1)) * 30 for w, (c, r) in zip(weights, spheres))

    return ShapeModel(logit_fn_for, ["left", "right"], centers=[[0, 0, 0]] * 2, scales=[1.0, 1.0],
                      distance_scale=1 / 30, blends_fields=True)


def test_warmed_shapes_make_their_own_extraction_free_and_a_blend_cheaper_with_the_same_mesh(tmp_path):
    cold, warm = SliderServer(two_spheres_fields(), tmp_path / "cold"), SliderServer(two_spheres_fields(), tmp_path / "warm")
    assert sum(1 for _ in warm.warm_up()) == 2 and warm.warmed == ["left", "right"]
    request = {"resolution": 128, "threshold": 0.5, "weights": [0.5, 0.5]}
    own = warm.extract({"resolution": 128, "threshold": 0.5, "shape": "right"})
    assert own["stats"]["evaluations"] == 0
    blend_cold, blend_warm = cold.extract(dict(request)), warm.extract(dict(request))
    assert blend_warm["stats"]["evaluations"] < 0.8 * blend_cold["stats"]["evaluations"]
    a, b = trimesh.load(blend_cold["path"]), trimesh.load(blend_warm["path"])
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)


FIRST_MOVE = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from occnet_backend.sliders import SliderServer
from test_sliders_server import two_spheres_fields

server = SliderServer(two_spheres_fields(), Path(sys.argv[2]))
before = set(sys.modules)
answer, _ = server.handle({"resolution": 64, "weights": [0.5, 0.5]})
assert answer["ok"], answer
print(sorted(set(sys.modules) - before))
"""


def test_a_first_slider_move_imports_nothing(tmp_path):
    """`serve` imports what an extraction uses before it says ready: scipy's ndimage and csgraph, imported
    on the first blend, made that move 0.70 s instead of 0.49 s on 2 cores (BENCHMARKS.md)."""
    result = subprocess.run([sys.executable, "-c", FIRST_MOVE, str(Path(__file__).parent), str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", result.stdout
