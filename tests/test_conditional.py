"""ConditionalOccupancyNetwork: shapes of everything, encoder and code table, blends, meshes, fitting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from torch.utils.data import DataLoader

from occnet_backend import ConditionalOccupancyNetwork, OccupancyTrainer, SyntheticOccupancyDataset, load_model
from occnet_backend.models.network import interpolate_shapes
from occnet_backend.models.parts import Norm


def small(**kw) -> ConditionalOccupancyNetwork:
    kw = {"dim_condition": 8, "dim_hidden": 16, "num_layers": 2, "fourier_frequencies": 8, **kw}
    return ConditionalOccupancyNetwork(**kw)


def test_seed_api_encoder_by_default():
    torch.manual_seed(0)
    model = ConditionalOccupancyNetwork(dim_condition=128)
    assert model.encoder is not None and model.codes is None
    points = torch.rand(500, 3) - 0.5
    occupancy = (points.norm(dim=1) < 0.3).float().unsqueeze(1)
    code = model.encode_shape(points, occupancy)
    assert code.shape == (128,)
    query = torch.rand(200, 3) - 0.5
    assert model(query, condition=code).shape == (200,)
    codes = model.encode_shape(points.expand(2, -1, -1), occupancy.expand(2, -1, -1))
    assert codes.shape == (2, 128)
    assert model(query.expand(2, -1, -1), condition=codes).shape == (2, 200)
    assert model(query.expand(3, -1, -1), condition=code).shape == (3, 200), "one code broadcasts"
    with pytest.raises(ValueError, match="condition must have shape"):
        model(query, condition=torch.zeros(5))
    with pytest.raises(ValueError, match="give condition=code"):
        model(query)
    with pytest.raises(ValueError, match="no code table"):
        model.learned_codes()


def test_conditional_batch_norm_starts_as_plain_normalisation_and_depends_on_the_code():
    cbn = Norm(6, dim_condition=4, norm="batch")
    x = torch.randn(2, 50, 6) * 3 + 1
    c = torch.randn(2, 4)
    y = cbn(x, c)
    torch.testing.assert_close(y.reshape(-1, 6).mean(0), torch.zeros(6), atol=1e-5, rtol=0)
    with torch.no_grad():
        cbn.gamma.weight.normal_()
    y = cbn(x, c)
    assert not torch.allclose(y[0].std(0), y[1].std(0)), "each shape gets its own scale"
    film = Norm(6, dim_condition=4, norm="none")
    torch.testing.assert_close(film(x, c), x)
    with pytest.raises(ValueError, match="norm must be one of"):
        small(norm="group")
    assert small().config["norm"] == "batch", "the paper's CBN with an encoder"


def test_code_table_blends_and_batches():
    torch.manual_seed(0)
    model = small(num_shapes=3)
    assert model.encoder is None and model.learned_codes().shape == (3, 8)
    codes = model.learned_codes()
    torch.testing.assert_close(model.blend_codes([0, 2, 0]), codes[1])
    torch.testing.assert_close(model.blend_codes([1, 1, 0]), (codes[0] + codes[1]) / 2)
    with pytest.raises(ValueError, match="3 finite numbers"):
        model.blend_codes([1, 0])
    with pytest.raises(ValueError, match="sum to 0"):
        model.blend_codes([1, -1, 0])
    batch = {"points": torch.rand(2, 40, 3) - 0.5, "occupancy": torch.ones(2, 40, 1), "shape_index": torch.tensor([2, 0])}
    assert model.config["norm"] == "none", "a code table alone defaults to FiLM (no running statistics)"
    logits = model.forward_batch(batch)
    assert logits.shape == (2, 40)
    torch.testing.assert_close(logits[0], model(batch["points"][0], condition=codes[2]))
    assert model.regularization_loss(batch).item() == pytest.approx(
        1e-4 * codes[[2, 0]].pow(2).sum(-1).mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="out of range for a code table of 3"):
        model.forward_batch({**batch, "shape_index": torch.tensor([3, 0])})
    with pytest.raises(ValueError, match="no encoder"):
        model.encode_shape(batch["points"][0], batch["occupancy"][0])
    pts = np.random.default_rng(0).uniform(-0.5, 0.5, (1000, 3)).astype(np.float32)
    by_weights = model.logit_fn(weights=[0, 0, 1])(pts)
    torch.testing.assert_close(by_weights, model.predict_logits(pts, shape_index=2))
    torch.testing.assert_close(model.predict_logits(pts, shape_index=2, chunk_size=128), by_weights)


def test_encoder_batches_train_through_the_trainer():
    torch.manual_seed(0)
    data = SyntheticOccupancyDataset(num_samples=4, num_points=256, seed=1)
    model = small(encoder_points=64)
    trainer = OccupancyTrainer(model, DataLoader(data, batch_size=2), device="cpu", progress_bar=False)
    before = model.encoder.fc_in.weight.detach().clone()
    history = trainer.train(max_steps=3)
    assert len(history) == 3
    assert not torch.equal(before, model.encoder.fc_in.weight), "the encoder trains end to end"
    explicit = {"points": torch.rand(2, 30, 3), "occupancy": torch.zeros(2, 30, 1),
                "inputs": torch.rand(2, 20, 3), "inputs_occupancy": torch.ones(2, 20)}
    assert model.forward_batch(explicit).shape == (2, 30)


@pytest.fixture(scope="module")
def fitted():
    """Three shapes fitted with one code each (the add-on's multi-shape use), small and quick."""
    torch.manual_seed(0)
    data = SyntheticOccupancyDataset(num_samples=3, shapes=["sphere", "box", "torus"], num_points=1024, seed=4)
    model = ConditionalOccupancyNetwork(num_shapes=3, dim_condition=32, dim_hidden=64, num_layers=3,
                                        fourier_frequencies=32)
    loader = DataLoader(data, batch_size=3, shuffle=True)
    trainer = OccupancyTrainer(model, loader, device="cpu", lr=2e-3, progress_bar=False)
    trainer.train(max_steps=200)
    return model, data, trainer


def test_multi_shape_fit_gives_each_shape_its_own_surface(fitted):
    model, data, trainer = fitted
    pts = np.random.default_rng(1).uniform(-0.55, 0.55, (30_000, 3)).astype(np.float32)
    ious = []
    for i, shape in enumerate(data.shapes):
        pred = model.predict_logits(pts, shape_index=i).numpy() >= 0
        true = shape.contains(pts)
        ious.append((pred & true).sum() / (pred | true).sum())
    assert min(ious) > 0.85, ious
    mesh = model.extract_mesh(resolution=32, shape_index=1)
    assert trimesh.Trimesh(mesh["vertices"], mesh["faces"]).is_watertight


def test_interpolation_extracts_a_mesh_per_step(fitted):
    model, _, _ = fitted
    steps = interpolate_shapes(model, 0, 2, steps=3, resolution=32)
    assert [s["t"] for s in steps] == [0.0, 0.5, 1.0]
    torch.testing.assert_close(steps[1]["code"], model.blend_codes([1, 0, 1]).cpu())
    assert all(len(s["faces"]) > 0 for s in steps)
    again = model.interpolate(model.learned_codes()[0], 2, steps=2, resolution=32)
    np.testing.assert_array_equal(again[0]["faces"], steps[0]["faces"])
    with pytest.raises(ValueError, match="steps must be >= 2"):
        model.interpolate(0, 1, steps=1)


def test_load_model_rebuilds_the_conditional_model(fitted, tmp_path):
    model, _, trainer = fitted
    path = trainer.save_checkpoint(tmp_path / "last.pt")
    loaded = load_model(path)
    assert isinstance(loaded, ConditionalOccupancyNetwork) and loaded.num_shapes == 3
    pts = torch.rand(100, 3) - 0.5
    torch.testing.assert_close(loaded.predict_logits(pts, weights=[1, 1, 0]), model.predict_logits(pts, weights=[1, 1, 0]))
