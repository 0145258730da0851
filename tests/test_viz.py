"""Pictures: valid PNGs of the documented size, written atomically; slices sample the right planes;
training curves accept both history layouts; the same figures land in TensorBoard."""

import struct
import warnings

import numpy as np
import pytest
import torch
import trimesh

from occnet_backend import viz

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) from the PNG header, after checking the signature and the IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert data[-8:-4] == b"IEND", "truncated PNG"
    return width, height


def assert_valid_png(path, size_px):
    from matplotlib import image

    assert png_size(path) == size_px
    pixels = image.imread(path)  # decodes the whole image
    assert pixels.shape[:2] == (size_px[1], size_px[0])
    assert pixels.std() > 0.01, "blank image"
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def sphere_probability(radius=0.35):
    """A soft sphere as a network would give it: probabilities, as a torch tensor of shape [N, 1]."""
    def predict(points):
        p = torch.as_tensor(points)
        return torch.sigmoid((radius - p.norm(dim=1, keepdim=True)) * 40)
    return predict


def test_slices_prediction_vs_mesh_labels(tmp_path):
    box = trimesh.creation.box(extents=(0.6, 0.4, 0.8))
    out = tmp_path / "pics" / "slices.png"  # the folder is created
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no matplotlib warnings (e.g. contours of constant images)
        written = viz.plot_occupancy_slices(
            sphere_probability(), viz.mesh_occupancy_fn(box.vertices, box.faces), out, resolution=64,
            title="sphere vs box",
        )
    assert written == out
    assert_valid_png(out, viz.SLICES_SIZE_PX)


def test_slices_from_grids_of_logits_and_alone(tmp_path):
    """Grids as the extraction makes them (logits on [n, n, n] samples over the box), and a
    prediction without labels: the same pixel size either way; rewriting replaces the file."""
    n = 33
    axis = np.linspace(-0.55, 0.55, n)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    logits = (0.3 - np.sqrt(x**2 + y**2 + z**2)) * 50
    labels = np.sqrt(x**2 + y**2 + z**2) < 0.32
    out = tmp_path / "slices.png"
    viz.plot_occupancy_slices(logits, labels, out, logits=True)
    assert_valid_png(out, viz.SLICES_SIZE_PX)
    viz.plot_occupancy_slices(np.zeros((n, n, n)), None, out)  # constant prediction: no contour
    assert_valid_png(out, viz.SLICES_SIZE_PX)


def test_slices_sample_the_centre_planes_with_z_up():
    """Each slice's image is [vertical, horizontal] with rows bottom to top: x = 0 shows (y, z),
    y = 0 shows (x, z), z = 0 shows (x, y); a grid gives the same images as a callable."""
    n = 9
    f = lambda p: (p[:, 0] > 0.01).astype(np.float32) + 2 * (p[:, 2] > 0.01)  # noqa: E731
    s = viz.occupancy_slices(f, resolution=n)
    assert s.shape == (3, n, n)
    # x = 0: x term absent, z increases upwards (rows).
    assert (s[0][-1] == 2).all() and (s[0][0] == 0).all()
    # y = 0: x to the right (columns), z upwards.
    assert s[1][-1, -1] == 3 and s[1][-1, 0] == 2 and s[1][0, -1] == 1 and s[1][0, 0] == 0
    # z = 0: z term absent, x to the right.
    assert (s[2][:, -1] == 1).all() and (s[2][:, 0] == 0).all()

    axis = np.linspace(-0.55, 0.55, n)
    grid = f(np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)).reshape(n, n, n)
    np.testing.assert_array_equal(viz.occupancy_slices(grid), s)
    # logits=True applies the sigmoid.
    np.testing.assert_allclose(viz.occupancy_slices(lambda p: np.zeros(len(p)), resolution=4, logits=True), 0.5)


def test_slice_arguments_are_checked(tmp_path):
    out = tmp_path / "x.png"
    with pytest.raises(ValueError, match="one value per point"):
        viz.plot_occupancy_slices(lambda p: np.zeros(3), None, out, resolution=8)
    with pytest.raises(ValueError, match=r"cube \[n, n, n\]"):
        viz.plot_occupancy_slices(np.zeros((4, 4)), None, out)
    with pytest.raises(ValueError, match=r"cube \[n, n, n\]"):
        viz.plot_occupancy_slices(np.zeros((1, 1, 1)), None, out)
    with pytest.raises(ValueError, match="differ in size"):
        viz.plot_occupancy_slices(np.zeros((5, 5, 5)), np.zeros((7, 7, 7)), out)
    with pytest.raises(ValueError, match="resolution"):
        viz.plot_occupancy_slices(sphere_probability(), None, out, resolution=1)
    with pytest.raises(ValueError, match="threshold"):
        viz.plot_occupancy_slices(sphere_probability(), None, out, threshold=1.5)
    with pytest.raises(ValueError, match="box"):
        viz.plot_occupancy_slices(sphere_probability(), None, out, box=-1.0)
    assert not out.exists()


def trainer_history(steps=120):
    """Records as OccupancyTrainer.history holds them, with validation every 40 steps."""
    rng = np.random.default_rng(0)
    records = []
    for step in range(1, steps + 1):
        r = {"step": step, "epoch": step // 50, "loss": float(np.exp(-step / 40) + 0.02 * rng.random()),
             "iou": float(1 - np.exp(-step / 30)), "seconds": step * 0.08}
        if step % 40 == 0:
            r.update(val_loss=float(np.exp(-step / 40)), val_iou=0.8)
        records.append(r)
    return records


def test_training_curves_from_records_and_columns(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        viz.plot_training_curves(trainer_history(), tmp_path / "records.png", title="fit")
        viz.plot_training_curves({"step": [1, 2, 3], "loss": [0.9, 0.5, 0.3], "iou": [0.2, 0.5, 0.7]},
                                 tmp_path / "columns.png")
        viz.plot_training_curves({"loss": np.array([1.0, 0.5]), "iou": [0.1, 0.2]}, tmp_path / "nostep.png")
        viz.plot_training_curves([], tmp_path / "empty.png")  # a run cancelled before its first step
    for name in ("records", "columns", "nostep", "empty"):
        assert_valid_png(tmp_path / f"{name}.png", viz.CURVES_SIZE_PX)


def test_training_curves_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="differ in length"):
        viz.plot_training_curves({"step": [1, 2], "loss": [1.0]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="dict of columns or a list of dict records"):
        viz.plot_training_curves("loss.csv", tmp_path / "x.png")
    with pytest.raises(ValueError, match="dict of columns or a list of dict records"):
        viz.plot_training_curves([1, 2, 3], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
