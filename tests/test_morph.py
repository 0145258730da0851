"""Several shapes in one model: each close to its source, and blends between them that stay clean.

A model fitted on several meshes shares one feature grid; its logits are kept a signed distance
everywhere (`distance_loss`), so a blend of shapes is the blend of their distance fields, and a
blend drops the specks where two fields nearly cancel (`extraction.drop_small_parts`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from occnet_backend.data.labels import signed_distance
from occnet_backend.data.meshes import load_mesh, normalization, to_unit_cube
from occnet_backend.extraction import (EDGE_STEPS, MORPH_INFLATION, MORPH_MIN_PART, CachedField, FieldBlend,
                                      blend_inflation, blend_options, drop_small_parts)
from occnet_backend.metrics import evaluate_mesh
from occnet_contract.settings import FitSettings
from test_grid_fit import independent_truth, parts, pyvista_mesh


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
    assert blend_options(None) == blend_options([0, 1, 0]) == {"min_part": 0.0, "edge_steps": EDGE_STEPS}
    assert blend_options([0.5, 0.5, 0]) == {"min_part": MORPH_MIN_PART, "edge_steps": 0}
    with pytest.raises(ValueError, match="a blend needs at least one shape of non-zero weight"):
        FieldBlend([], 0.004)


def test_blends_are_inflated_half_way_and_not_at_the_shapes():
    """Two shapes that overlap little would thin out and break apart half-way (`blend_inflation`)."""
    assert blend_inflation([0, 1, 0]) == 0.0 and blend_inflation([2, 0]) == 0.0  # a shape of its own
    assert blend_inflation([0.5, 0.5, 0]) == pytest.approx(MORPH_INFLATION / 2)
    assert blend_inflation([1, 1, 1, 1]) == pytest.approx(MORPH_INFLATION * 0.75)  # most at the middle
    points = np.random.default_rng(0).uniform(-0.5, 0.5, (100, 3)).astype(np.float32)
    one, two = (CachedField(lambda p, k=k: (k - np.linalg.norm(p, axis=1)).astype(np.float32)) for k in (0.2, 0.4))
    np.testing.assert_allclose(FieldBlend([(0.5, one), (0.5, two)], 0.004)(points),  # what `serve`'s sliders blend
                               0.5 * one(points) + 0.5 * two(points) + MORPH_INFLATION / 2 / 0.004, rtol=1e-6)


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
    # between the ends' volumes, but for the inflation's shell (MORPH_INFLATION / 2 thick half-way)
    shell = MORPH_INFLATION / 2 * max(trimesh.Trimesh(m["vertices"], m["faces"]).area for m in own)
    assert min(volumes[0], volumes[2]) < volumes[1] < max(volumes[0], volumes[2]) + shell, volumes
    # the blend is the blend of the fields, inflated by MORPH_INFLATION / 2 half-way
    points = torch.rand(2000, 3) - 0.5
    torch.testing.assert_close(model.predict_logits(points, weights=[1, 1]),
                               0.5 * (model.predict_logits(points, shape_index=0) + model.predict_logits(points, shape_index=1))
                               + MORPH_INFLATION / 2 / model.distance_scale)


@pytest.mark.slow
def test_serve_reuses_each_shapes_nodes_across_blends(two_shapes, tmp_path):
    """A morph step in `serve` evaluates only the nodes its new surface adds (each shape keeps its
    own cache), and gives the mesh a fresh server gives."""
    from occnet_backend.sliders import SliderServer, load_shape_model
    from occnet_contract.ply import read_ply

    result, _, _ = two_shapes
    warm = SliderServer(load_shape_model(result.checkpoint, "cpu"), tmp_path / "warm")
    warm.extract({"resolution": 64, "weights": [0.5, 0.5]})
    moved = warm.extract({"resolution": 64, "weights": [0.6, 0.4]})
    fresh = SliderServer(load_shape_model(result.checkpoint, "cpu"), tmp_path / "fresh")
    cold = fresh.extract({"resolution": 64, "weights": [0.6, 0.4]})
    assert moved["stats"]["evaluations"] < cold["stats"]["evaluations"] / 2, (moved["stats"], cold["stats"])
    (v_warm, f_warm), (v_cold, f_cold) = read_ply(moved["path"]), read_ply(cold["path"])
    np.testing.assert_array_equal(f_warm, f_cold)
    np.testing.assert_allclose(v_warm, v_cold, atol=1e-5)


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
