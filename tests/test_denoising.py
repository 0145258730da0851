"""`denoising.denoise`: a learned surface's sub-cell bumps flattened, its edges kept, the mesh still closed."""

import numpy as np
import trimesh

from occnet_backend.denoising import MAX_MOVE, denoise
from occnet_backend.extraction import BOX_SIZE, extract_mesh

HALF = np.array([0.3, 0.2, 0.25])  # a box, off the grid's axes' symmetry


def bumpy_box(points: np.ndarray) -> np.ndarray:
    """Logits of a box whose faces carry bumps 0.1 cells high every 1.5 cells: what a learned field's finest
    level leaves between the exact distances it was fit to."""
    cell = BOX_SIZE / 64
    bumps = 0.1 * cell * np.sin(points[:, 0] / (0.25 * cell)) * np.sin(points[:, 1] / (0.22 * cell)) * np.sin(points[:, 2] / (0.24 * cell))
    return (np.min(HALF - np.abs(points), axis=1) + bumps) * 200.0


def true_normals(centers: np.ndarray) -> np.ndarray:
    """The box's outward normal at each face centre (the axis of the nearest side)."""
    axis = np.argmin(HALF - np.abs(centers), axis=1)
    normals = np.zeros_like(centers)
    normals[np.arange(len(centers)), axis] = np.sign(centers[np.arange(len(centers)), axis])
    return normals


def normal_error(vertices: np.ndarray, faces: np.ndarray) -> float:
    """1 - the mean |cos| between each face's normal and the box's, weighted by area (as normal consistency),
    on the sides away from the box's edges (marching cubes bevels those, with or without bumps)."""
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    centers = mesh.triangles_center
    side = np.sort(HALF - np.abs(centers), axis=1)[:, 1] > 2 * BOX_SIZE / 64
    cos = np.abs(np.einsum("ij,ij->i", mesh.face_normals, true_normals(centers)))[side]
    return float(1 - np.average(cos, weights=mesh.area_faces[side]))


def test_bumps_are_flattened_and_the_box_keeps_its_edges_and_volume():
    raw = extract_mesh(bumpy_box, resolution=64, denoise=False)
    smooth = extract_mesh(bumpy_box, resolution=64)
    assert np.array_equal(raw["faces"], smooth["faces"])
    assert normal_error(smooth["vertices"], smooth["faces"]) < 0.5 * normal_error(raw["vertices"], raw["faces"])
    mesh = trimesh.Trimesh(smooth["vertices"], smooth["faces"], process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    assert abs(mesh.volume / np.prod(2 * HALF) - 1) < 0.01
    # the edges stay sharp: the box's corners are still reached
    assert np.allclose(np.abs(smooth["vertices"]).max(axis=0), HALF, atol=0.25 * BOX_SIZE / 64)


def test_no_vertex_moves_more_than_its_bound():
    raw = extract_mesh(bumpy_box, resolution=32, denoise=False)
    cell = BOX_SIZE / 32
    moved = denoise(raw["vertices"], raw["faces"], cell)
    assert moved.dtype == raw["vertices"].dtype and moved.shape == raw["vertices"].shape
    assert np.linalg.norm(moved - raw["vertices"], axis=1).max() <= MAX_MOVE * cell * (1 + 1e-5)
    assert len(denoise(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), cell)) == 0


def test_a_flat_surface_stays_where_it_is():
    """Nothing to flatten: a plane's vertices do not move (no shrinking of what is already right)."""
    plane = lambda p: (0.013 - p[:, 2]) * 100.0  # noqa: E731
    raw = extract_mesh(plane, resolution=32, denoise=False)
    on_plane = (np.abs(raw["vertices"][:, 2] - 0.013) < 1e-6) & np.all(np.abs(raw["vertices"][:, :2]) < 0.4, axis=1)
    moved = denoise(raw["vertices"], raw["faces"], BOX_SIZE / 32)
    assert on_plane.sum() > 100
    assert np.abs(moved[on_plane, 2] - 0.013).max() < 1e-6
