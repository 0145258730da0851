"""Several shapes in one model: each close to its source, and blends between them that stay clean.

A model fitted on several meshes shares one feature grid; its logits are kept a signed distance
everywhere (`distance_loss`), so a blend of shapes is the blend of their distance fields, and a
blend drops the specks where two fields nearly cancel (`extraction.drop_small_parts`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from occnet_backend.data.labels import signed_distance
from occnet_backend.data.meshes import load_mesh, normalization, to_unit_cube
from occnet_backend.extraction import (EDGE_STEPS, MORPH_MIN_PART, MORPH_SMOOTHING, CachedField, FieldBlend, blend_options,
                                      drop_small_parts, extract_mesh, matched_inflation)
from occnet_backend.metrics import evaluate_mesh
from occnet_contract.settings import FitSettings
from test_grid_fit import independent_truth, parts, pyvista_mesh
from test_serve_cli import serve


def box(center, size) -> trimesh.Trimesh:
    return trimesh.creation.box([size] * 3, trimesh.transformations.translation_matrix(center))


def test_small_parts_are_dropped_relative_to_the_largest():
    big, speck = box([0, 0, 0], 0.4), box([0.4, 0, 0], 0.05)  # the speck: 0.2% of the big part's volume
    mesh = trimesh.util.concatenate([big, speck])
    v, f = mesh.vertices.astype(np.float32), mesh.faces.astype(np.int64)
    kept_v, kept_f, dropped = drop_small_parts(v, f, MORPH_MIN_PART)
    assert dropped == 1 and len(kept_f) == len(big.faces) and len(kept_v) == len(big.vertices)
    assert trimesh.Trimesh(kept_v, kept_f).volume == pytest.approx(big.volume)
    assert drop_small_parts(v, f, 0.0)[2] == 0 and drop_small_parts(v, f, 0.001)[2] == 0
    assert blend_options(None) == blend_options([0, 1, 0]) == {"min_part": 0.0, "edge_steps": EDGE_STEPS, "smoothing": 0.0,
                                                                       "denoise": True}
    assert blend_options([0.5, 0.5, 0]) == {"min_part": MORPH_MIN_PART, "edge_steps": 0, "smoothing": MORPH_SMOOTHING,
                                                    "denoise": False}
    ramp = [blend_options([1 - t, t])["smoothing"] for t in (0.02, 0.05, 0.1, 0.2)]  # none at a shape's own
    assert 0 < ramp[0] < ramp[1] < ramp[2] < ramp[3] == MORPH_SMOOTHING
    with pytest.raises(ValueError, match="a blend needs at least one shape of non-zero weight"):
        FieldBlend([], 0.004)


def ball(center, radius: float, scale: float = 0.004):
    """Logits of a ball whose distance field a grid model would learn: -(signed distance) / scale."""
    return CachedField(lambda p: ((radius - np.linalg.norm(p - np.asarray(center), axis=1)) / scale).astype(np.float32))


def test_a_blend_encloses_the_shapes_mean_volume_and_a_shape_its_own():
    """A plain blend of two distance fields keeps only what both shapes hold: two balls apart have an
    empty half-way blend, two nested ones a half-way ball thinner than their mean (`matched_inflation`)."""
    apart = [ball([-0.25, 0, 0], 0.15), ball([0.25, 0, 0], 0.15)]
    half = extract_mesh(FieldBlend([(0.5, apart[0]), (0.5, apart[1])], 0.004), resolution=64, edge_steps=0)
    mesh = trimesh.Trimesh(half["vertices"], half["faces"])
    assert mesh.is_watertight and parts(half["vertices"], half["faces"]) == 1
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * 0.15**3, rel=0.05)  # their mean; the plain blend: empty
    assert mesh.bounds[0][0] < -0.2 and mesh.bounds[1][0] > 0.2  # one body between the two balls' places
    for weights in ([0.0, 1.0], [3.0, 0.0]):  # a shape of its own is not inflated
        own = FieldBlend([(w, field) for w, field in zip(weights, apart) if w], 0.004)
        assert own.offset == 0.0
    nodes = np.stack(np.meshgrid(*[np.linspace(-0.55, 0.55, 65)] * 3, indexing="ij"), -1).reshape(-1, 3)
    nested = [np.linalg.norm(nodes, axis=1) - r for r in (0.2, 0.4)]  # the plain half-way blend: a ball of 0.3
    mean_radius = ((0.2**3 + 0.4**3) / 2) ** (1 / 3)
    inflation = matched_inflation([1, 1], nested, 1.1 / 64)
    assert inflation == pytest.approx(mean_radius - 0.3, abs=0.002)
    assert matched_inflation([0, 2], nested, 1.1 / 64) == 0.0
    assert 0 < matched_inflation([0.9, 0.1], nested, 1.1 / 64) < matched_inflation([0.7, 0.3], nested, 1.1 / 64)
    points = np.random.default_rng(0).uniform(-0.5, 0.5, (100, 3)).astype(np.float32)
    fields = [ball([0, 0, 0], r) for r in (0.2, 0.4)]
    # what `serve` blends: the same inflation, measured on MISE's grid (interpolated away from the surfaces)
    np.testing.assert_allclose(FieldBlend([(0.5, fields[0]), (0.5, fields[1])], 0.004)(points),
                               0.5 * fields[0](points) + 0.5 * fields[1](points) + inflation / 0.004, atol=0.25)


@pytest.fixture(scope="module")
def two_shapes(tmp_path_factory):
    """The pyvista nut (a hole through it) and sphere fitted together at fit's defaults."""
    from occnet_backend.fitting import fit_meshes, load_fit_checkpoint

    out = tmp_path_factory.mktemp("morph")
    result = fit_meshes([pyvista_mesh("nut"), pyvista_mesh("sphere")], out / "fit", FitSettings(resolution=64))
    model, payload = load_fit_checkpoint(result.checkpoint)
    return result, model, payload


@pytest.mark.slow
def test_each_shape_of_a_two_shape_model_is_close_to_its_source(two_shapes):
    result, model, payload = two_shapes
    assert result.status == "ok" and result.metrics["timings"]["converged"]
    assert model.blends_fields and model.config["encoding"] == "grid"
    for index, name in enumerate(payload["shape_ids"]):
        source = load_mesh(pyvista_mesh(name))
        center, scale = normalization(source.vertices)
        unit = to_unit_cube(source.vertices, center, scale)
        mesh = model.extract_mesh(64, shape_index=index)
        metrics = evaluate_mesh(mesh["vertices"], mesh["faces"], **independent_truth(unit, source.faces))
        assert metrics["watertight"] and metrics["iou"] > 0.96, (name, metrics["iou"])
        # the logits are a signed distance far from the surface too, which is what blends add up
        points = np.random.default_rng(index).uniform(-0.55, 0.55, (5000, 3)).astype(np.float32)
        learned = -model.predict_logits(points, shape_index=index).numpy() * model.distance_scale
        assert np.median(np.abs(learned - signed_distance(unit, source.faces, points))) < 0.01


@pytest.mark.slow
def test_a_half_way_blend_is_closed_clean_and_the_ends_are_the_shapes(two_shapes):
    _, model, payload = two_shapes
    own = [model.extract_mesh(64, shape_index=i) for i in range(2)]
    path = model.interpolate(0, 1, steps=3, resolution=64)
    for end, k in zip(own, (0, -1)):
        np.testing.assert_array_equal(path[k]["vertices"], end["vertices"])
        np.testing.assert_array_equal(path[k]["faces"], end["faces"])
    half = path[1]
    np.testing.assert_array_equal(half["weights"], [0.5, 0.5])
    mesh = trimesh.Trimesh(half["vertices"], half["faces"], process=False)
    assert mesh.is_watertight and mesh.volume > 0
    assert parts(half["vertices"], half["faces"]) <= max(parts(e["vertices"], e["faces"]) for e in own)
    volumes = [trimesh.Trimesh(m["vertices"], m["faces"]).volume for m in (own[0], half, own[1])]
    assert volumes[1] == pytest.approx((volumes[0] + volumes[2]) / 2, rel=0.05), volumes  # `matched_inflation`
    # the blend is the blend of the fields, moved by one inflation everywhere (here < 0: the nut and the sphere
    # overlap so much that their plain blend holds more than their mean volume)
    points = torch.rand(2000, 3) - 0.5
    moved = model.predict_logits(points, weights=[1, 1]) - 0.5 * (
        model.predict_logits(points, shape_index=0) + model.predict_logits(points, shape_index=1))
    assert float(moved.max() - moved.min()) < 1e-3 and abs(float(moved.mean())) > 0.1


@pytest.mark.slow
def test_serve_reuses_each_shapes_nodes_across_blends(two_shapes, tmp_path):
    """A morph step in `serve` evaluates only the nodes its new surface adds (each shape keeps its
    own cache), and gives the mesh a fresh server gives."""
    from occnet_backend.sliders import SliderServer, load_shape_model
    from occnet_contract.ply import read_ply

    result, _, _ = two_shapes
    alone = shutil.copy(result.checkpoint, tmp_path / "checkpoint.pt")  # without the fit's grids (`warm_grids`)
    warm = SliderServer(load_shape_model(alone, "cpu"), tmp_path / "warm")
    warm.extract({"resolution": 64, "weights": [0.5, 0.5]})
    moved = warm.extract({"resolution": 64, "weights": [0.6, 0.4]})
    fresh = SliderServer(load_shape_model(alone, "cpu"), tmp_path / "fresh")
    cold = fresh.extract({"resolution": 64, "weights": [0.6, 0.4]})
    assert moved["stats"]["evaluations"] < cold["stats"]["evaluations"] / 2, (moved["stats"], cold["stats"])
    (v_warm, f_warm), (v_cold, f_cold) = read_ply(moved["path"]), read_ply(cold["path"])
    np.testing.assert_array_equal(f_warm, f_cold)
    np.testing.assert_allclose(v_warm, v_cold, atol=1e-5)


def serve_at_once(checkpoint: Path, requests: list[dict], out: Path) -> tuple[list[dict], str]:
    """A real `serve` process given every request at once: it answers them before it warms anything
    (it warms only once no request has come for a while). -> (answers, stderr)"""
    run, lines = serve(checkpoint, [{"id": i, **r} for i, r in enumerate(requests)], out)
    assert run.returncode == 0, run.stderr[-2000:]
    answers = lines[1:]  # after 'ready'
    assert all(a["ok"] for a in answers), answers
    return answers, run.stderr


@pytest.mark.slow
def test_serve_starts_from_the_fits_own_grids_and_only_from_its_own(two_shapes, tmp_path):
    """`fit` leaves each shape's extraction grid beside its checkpoint (`warm_grids`): a fresh `serve`'s first
    moves evaluate no node the fit's extraction had, its own shape comes back as the fit's mesh, and a grid
    file that is not this checkpoint's, or is damaged, is ignored with a warning (the server fills its own)."""
    from occnet_backend.fitting import save_fit_checkpoint
    from occnet_backend.warm_grids import GRIDS_FILE
    from occnet_contract.ply import read_ply

    result, model, payload = two_shapes
    folder = result.checkpoint.parent
    assert (folder / GRIDS_FILE).is_file()
    requests = [{"resolution": 64, "shape": payload["shape_ids"][0]}, {"resolution": 64, "weights": [0.5, 0.5]}]
    (own, half), log = serve_at_once(result.checkpoint, requests, tmp_path / "with")
    assert own["stats"]["evaluations"] == 0 and "not used" not in log
    (v_fit, f_fit), (v_own, f_own) = read_ply(result.mesh_paths[payload["shape_ids"][0]]), read_ply(own["path"])
    np.testing.assert_array_equal(f_own, f_fit)
    np.testing.assert_array_equal(v_own, v_fit)

    alone = tmp_path / "alone"
    alone.mkdir()
    (own_cold, half_cold), _ = serve_at_once(shutil.copy(result.checkpoint, alone / "checkpoint.pt"), requests,
                                             tmp_path / "without")
    assert half["stats"]["evaluations"] < half_cold["stats"]["evaluations"] / 2, (half["stats"], half_cold["stats"])
    np.testing.assert_array_equal(read_ply(half["path"])[1], read_ply(half_cold["path"])[1])

    other = tmp_path / "other"  # another checkpoint beside this fit's grids: the same weights, other scales
    other.mkdir()
    save_fit_checkpoint(other / "checkpoint.pt", model, payload["shape_ids"], payload["centers"].numpy(),
                        payload["scales"].numpy() * 2)
    shutil.copy(folder / GRIDS_FILE, other / GRIDS_FILE)
    (own_other, _), log = serve_at_once(other / "checkpoint.pt", requests, tmp_path / "other_out")
    assert "belongs to another fit" in log and own_other["stats"]["evaluations"] > 0
    (other / GRIDS_FILE).write_bytes((folder / GRIDS_FILE).read_bytes()[:5000])
    (own_damaged, _), log = serve_at_once(other / "checkpoint.pt", requests, tmp_path / "damaged_out")
    assert "not used" in log and own_damaged["stats"]["evaluations"] == own_other["stats"]["evaluations"]


@pytest.mark.slow
def test_a_half_way_blend_is_as_smooth_as_the_exact_fields_blend(tmp_path):
    """The README demo's pair: the nut and the ant overlap little, so their half-way surface runs where
    both are far from their own surfaces (`fitting.NEAR_SHARE_SHAPES`). A surface rough with bumps has
    more area than the same blend of the sources' exact distance fields: 1.53x at 128³ with half of each
    step's points near the surface (a cloud of bumps), 1.06-1.2x with NEAR_SHARE_SHAPES."""
    from occnet_backend.direct_field import DISTANCE_SCALE, direct_field
    from occnet_backend.extraction import extract_mesh
    from occnet_backend.fitting import fit_meshes, load_fit_checkpoint

    result = fit_meshes([pyvista_mesh("nut"), pyvista_mesh("ant")], tmp_path / "fit", FitSettings(resolution=64))
    model, payload = load_fit_checkpoint(result.checkpoint)
    fields = []
    for name in payload["shape_ids"]:
        source = load_mesh(pyvista_mesh(name))
        center, scale = normalization(source.vertices)
        fields.append(CachedField(direct_field(to_unit_cube(source.vertices, center, scale), source.faces)))
    learned = model.extract_mesh(128, weights=[0.5, 0.5])
    exact = extract_mesh(FieldBlend([(0.5, f) for f in fields], DISTANCE_SCALE), resolution=128,
                         distance_scale=DISTANCE_SCALE, **blend_options([0.5, 0.5]))
    area = [trimesh.Trimesh(m["vertices"], m["faces"], process=False).area for m in (learned, exact)]
    assert area[0] < 1.35 * area[1], area
