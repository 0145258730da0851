"""OccupancyNetwork: shapes, identity-at-init blocks, chunked inference, determinism in eval mode."""

from pathlib import Path

import pytest
import torch

from occnet_backend import OccupancyNetwork
from occnet_backend.models.parts import ResnetBlock


def test_forward_shapes_for_single_and_batched_points():
    model = OccupancyNetwork(dim_hidden=32, num_layers=2)
    assert model(torch.rand(100, 3)).shape == (100,)
    assert model(torch.rand(4, 100, 3)).shape == (4, 100)
    probs = model.predict_probability(torch.rand(50, 3))
    assert probs.shape == (50,) and bool(((probs >= 0) & (probs <= 1)).all())


def test_bad_point_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"points must have shape \[N, 3\]"):
        OccupancyNetwork(dim_hidden=8, num_layers=1)(torch.rand(10, 2))


def test_residual_blocks_start_as_identity():
    block = ResnetBlock(16, norm="batch", dropout_prob=0.2)
    x = torch.randn(2, 32, 16)
    assert torch.equal(block(x, None), x)
    conditioned = ResnetBlock(16, dim_condition=4, norm="batch", dropout_prob=0.2)
    assert torch.equal(conditioned(x, torch.randn(2, 4)), x)


@pytest.mark.parametrize("fourier", [0, 16])
def test_chunked_and_unchunked_inference_agree(fourier):
    torch.manual_seed(0)
    model = OccupancyNetwork(dim_hidden=32, num_layers=2, use_batch_norm=True, fourier_frequencies=fourier)
    pts = torch.rand(1000, 3) - 0.5
    whole = model.predict_logits(pts, chunk_size=10_000)
    chunked = model.predict_logits(pts, chunk_size=7)
    assert torch.allclose(whole, chunked, atol=1e-5)


def test_eval_mode_is_deterministic_with_batch_norm_and_dropout():
    torch.manual_seed(0)
    model = OccupancyNetwork(dim_hidden=32, num_layers=3, use_batch_norm=True, dropout_prob=0.5)
    # make the blocks non-trivial so dropout would matter in training mode
    for block in model.decoder.blocks:
        torch.nn.init.normal_(block.fc_1.weight, std=0.3)
    model.train()
    pts = torch.rand(256, 3)
    model(pts)  # update batch-norm running statistics
    a = model.predict_logits(pts)
    b = model.predict_logits(pts)
    assert torch.equal(a, b)
    assert model.training, "predict_logits must restore the training mode"
    assert not torch.equal(model(pts), model(pts)), "dropout is active in training mode"


def test_fourier_features_are_reproducible_and_saved():
    a = OccupancyNetwork(dim_hidden=8, num_layers=1, fourier_frequencies=8, fourier_scale=3.0)
    b = OccupancyNetwork(dim_hidden=8, num_layers=1, fourier_frequencies=8, fourier_scale=3.0)
    assert torch.equal(a.encoding.B, b.encoding.B)
    assert "encoding.B" in a.state_dict()


def test_fourier_phases_stay_fp32_under_bf16_autocast():
    # bf16 would round 2π·Bx by up to ~0.1 rad and blur detail finer than a few hundredths
    encoding = OccupancyNetwork(dim_hidden=8, num_layers=1, fourier_frequencies=64, fourier_scale=2.0).encoding
    x = torch.rand(1000, 3) - 0.5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = encoding(x)
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, encoding(x))


def test_assigned_loss_replaces_the_default():
    model = OccupancyNetwork(dim_hidden=8, num_layers=1)
    logits, target = torch.zeros(10), torch.ones(10)
    default = model.compute_loss(logits, target)
    model.compute_loss = lambda lg, tg: (lg - tg).abs().mean()
    assert model.compute_loss(logits, target).item() == pytest.approx(1.0)
    assert default.item() == pytest.approx(0.6931, abs=1e-3)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="dropout_prob"):
        OccupancyNetwork(dropout_prob=1.5)
    with pytest.raises(ValueError, match="num_layers"):
        OccupancyNetwork(num_layers=0)


@pytest.mark.parametrize("name", ["single", "two_shapes"])
def test_checkpoints_written_before_the_decoder_was_a_part_still_load(name):
    """Results in .blend files saved with the two-class layout keep their sliders: the old weight
    names are mapped, and the network computes exactly what it computed then."""
    import numpy as np

    from occnet_backend.fitting import load_fit_checkpoint

    data = Path(__file__).parent / "data"
    model, payload = load_fit_checkpoint(data / f"checkpoint_v0_{name}.pt")
    expected = np.load(data / "checkpoint_v0_logits.npz")
    points = torch.as_tensor(expected["points"])
    if name == "single":
        got = model.predict_logits(points).numpy()
    else:
        got = np.stack([model.predict_logits(points, shape_index=i).numpy() for i in range(2)])
    np.testing.assert_allclose(got, expected[name], rtol=1e-5, atol=1e-5)


def test_a_grid_model_conditioned_at_its_input_round_trips_and_old_configs_keep_their_norms(tmp_path):
    """`fit` builds its multi-shape grid models with the code at the decoder's input only; a checkpoint
    must rebuild that (a 'norm' model has more weights and would not load them), and a config without the
    key (every checkpoint before it) still builds the code into the norms."""
    import numpy as np

    from occnet_backend.fitting import load_fit_checkpoint, save_fit_checkpoint
    from occnet_backend.models.network import ConditionalOccupancyNetwork

    small = dict(num_shapes=2, encoding="grid", dim_hidden=16, num_layers=1, grid_resolution=32, distance_scale=0.004)
    torch.manual_seed(0)
    model = ConditionalOccupancyNetwork(conditioning="input", **small)
    with torch.no_grad():
        model.codes.weight.normal_()  # two distinct shapes
    norms = ConditionalOccupancyNetwork(**small)
    assert sum(p.numel() for p in norms.parameters()) > sum(p.numel() for p in model.parameters())
    path = save_fit_checkpoint(tmp_path / "checkpoint.pt", model, ["a", "b"], centers=np.zeros((2, 3)), scales=np.ones(2))
    loaded, _ = load_fit_checkpoint(path)
    points = torch.rand(100, 3) - 0.5
    for index in range(2):
        torch.testing.assert_close(loaded.predict_logits(points, shape_index=index),
                                   model.predict_logits(points, shape_index=index))
    assert not torch.allclose(model.predict_logits(points, shape_index=0), model.predict_logits(points, shape_index=1))
    assert "conditioning" not in norms.config
    with pytest.raises(ValueError, match="conditioning must be one of"):
        ConditionalOccupancyNetwork(conditioning="film", **small)
