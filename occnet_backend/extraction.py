"""Mesh extraction from an occupancy function: dense grid or hierarchical (MISE), then marching cubes.

MISE (Multiresolution IsoSurface Extraction, Mescheder et al. 2019) evaluates a coarse grid, then
repeatedly doubles the resolution, evaluating the network only at the corners of cells whose
corners straddle the threshold; every other value is filled in by trilinear interpolation, which
keeps its sign, so marching cubes sees the same crossings as on the dense grid with a fraction of
the network evaluations. Marching cubes then places each vertex on the function itself along its
grid edge (`place_on_edges`), not on the straight line between two node values, and a learned
surface's sub-cell bumps are flattened (`denoising`). Written in numpy: no compiled extension.

Grid convention (as in the reference code): `resolution` cells per axis over the box
[-box_size/2, box_size/2]³, so `resolution + 1` samples per axis. The grid is padded with a very
"outside" layer before marching cubes, so the surface is always closed.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.ndimage import gaussian_filter, map_coordinates
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.measure import marching_cubes as lewiner_marching_cubes

from occnet_backend.denoising import denoise as denoise_surface
from occnet_contract.settings import EVAL_BOX, MISE_BASE_RESOLUTION, RESOLUTIONS, FitSettings

DEFAULTS = FitSettings()

LogitFunction = Callable[[np.ndarray], "np.ndarray | torch.Tensor"]

BOX_SIZE = 2 * EVAL_BOX  # the unit cube plus the reference implementation's padding of 0.1
METHODS = ("mise", "dense")
MORPH_MIN_PART = 0.02
"""A blend of shapes drops its connected parts smaller than 2% of its largest part's volume: where
two distance fields nearly cancel, their zero set breaks into specks that neither shape has (even
the exact fields' blend does: BENCHMARKS.md). A shape's own reconstruction keeps every part."""
CAVITY_CELLS = 8
"""Cavities (closed pockets of empty space inside the solid) smaller than this many cells of the grid are
filled: narrower than two cells each way, below what the grid resolves, they are where a thin wall's
learned field dips across the level inside the wall (a heatsink's fit: 9 pockets of 1-4 cells, 1-3
thousandths of the unit cube under its surface, where its direct field has none: BENCHMARKS.md)."""
LEVEL_MARGIN = 1e-2  # logits: how far every grid node is kept from the level (see marching_cubes)
EDGE_STEPS = 2
"""Bisections of each vertex's grid edge on the function itself (`place_on_edges`): a thin
channel's 128³ surface IoU 0.34 -> 0.67, a plate's 0.910 -> 0.926, Suzanne's unchanged; 2 more
evaluations per vertex (BENCHMARKS.md)."""
MAX_EDGE_STEPS = 8
"""The most bisections `extract_mesh` takes (`edge_steps`)."""
EDGE_END = 0.01
"""How close to a grid node a placed vertex may come, as a fraction of its edge: as LEVEL_MARGIN,
so that no two vertices coincide at a node, which a weld would turn into non-manifold edges."""


VOLUME_RESOLUTION = 2 * MISE_BASE_RESOLUTION
"""Cells per side of the grid a blend's volume is matched on (`matched_inflation`): MISE's second level, whose
nodes a slider's shape caches keep. On MISE's first (32 cells) the ant's legs, thinner than a cell, hardly
counted, and the blend just off the ant (0.9 ant + 0.1 torus) broke them into 29 parts (BENCHMARKS.md)."""
BLEND_NEAR = 2 * BOX_SIZE / VOLUME_RESOLUTION
"""Distance from a shape's own surface within which a blend's grid nodes ask the network for that shape's
field; beyond it `FieldBlend` interpolates the shape's volume grid (`CachedField.volume_grid`), which a
slider has cached, and where a distance field is smooth. Why: a blend's surface runs away from the shapes'
own, where no cached node is: a half-way slider move of a 4-shape model asked for 754k evaluations
(1.1 s at 128³), most of them far from every shape's surface (BENCHMARKS.md)."""
MORPH_SMOOTHING = 0.015
"""σ (unit-cube distance) of the Gaussian a half-way blend's grid is smoothed with (`blend_options`). Why: a
blend's surface runs where every shape is far from its own surface, where the learned distances are least
exact (|error| 0.004 median, 0.017 at the 95th percentile 0.1-0.3 away), and their bumps become the blend's:
smoothed, the half-way areas of a 2- and a 4-shape model's paths over the same blend of the exact fields went
from 1.2-3.9x to 1.0-1.6x, the shapes' forms kept (0.01: up to 2.0x; BENCHMARKS.md)."""


def blend_options(weights) -> dict:
    """`extract_mesh`'s `min_part`, `edge_steps`, `smoothing` and `denoise` for these weights over the learned
    shapes (None: one shape). A blend of two or more drops its specks (MORPH_MIN_PART), keeps marching cubes'
    straight line between nodes and is smoothed, up to MORPH_SMOOTHING half-way and less towards a
    shape's own weights, instead of denoised (a shape's own reconstruction keeps every part, places its
    vertices and is denoised, not smoothed, and a slider moved off it does not jump). Why the straight
    line: where two distance fields nearly cancel, the blend is flat and noisy, and vertices placed
    exactly on it follow the noise (a 4-shape model's Suzanne -> torus path: largest area jump 8.0 x the
    endpoints' difference placed, 2.8 not, 4.4 for the exact fields), while a half-way slider move
    evaluated 1.4x the nodes (804k vs 565k, 1.12 vs 0.69 s at 128³; BENCHMARKS.md)."""
    w = np.zeros(1) if weights is None else np.asarray(weights, dtype=np.float64)
    if np.count_nonzero(w) < 2:
        return {"min_part": 0.0, "edge_steps": EDGE_STEPS, "smoothing": 0.0, "denoise": True}
    w = w / w.sum()
    return {"min_part": MORPH_MIN_PART, "edge_steps": 0, "denoise": False,
            "smoothing": MORPH_SMOOTHING * min(1.0, 4.0 * (1.0 - float(np.sum(w * w))))}


def matched_inflation(weights: Sequence[float], distances: Sequence[np.ndarray], cell: float) -> float:
    """Distance c that the blend Σ wᵢ·dᵢ of shapes' signed distances (negative inside) is inflated by, the blend
    less c, so that it encloses Σ wᵢ·Vᵢ, the shapes' own volumes in the weights' proportions; 0 for one shape.

    `distances`: each shape's values at the same grid nodes (`CachedField.volume_grid`), `cell` their spacing; a
    volume is counted there with a soft step one cell wide, so c moves smoothly with the weights and is 0
    where one shape has all the weight. Why: a plain blend of two distance fields keeps only what both
    shapes hold, so two shapes that overlap little thin out half-way or vanish (the GUI test's torus and
    cone: 194 vertices half-way, the exact fields' blend empty); a fixed inflation was too little for some
    pairs and too much for others (BENCHMARKS.md)."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    if np.count_nonzero(w) < 2:
        return 0.0
    fields = [np.asarray(d, dtype=np.float64).reshape(-1) for d in distances]
    target = sum(wi * float(np.clip(0.5 - d / cell, 0.0, 1.0).sum()) for wi, d in zip(w, fields))
    blend = np.sort(sum(wi * d for wi, d in zip(w, fields)))
    prefix = np.concatenate([[0.0], np.cumsum(blend)])

    def volume(c: float) -> float:  # Σ clip(0.5 - (blend - c) / cell, 0, 1), from the sorted values
        inside, edge = np.searchsorted(blend, [c - cell / 2, c + cell / 2])
        return inside + (edge - inside) * (0.5 + c / cell) - (prefix[edge] - prefix[inside]) / cell

    low, high = float(blend[0]) - cell, float(blend[-1]) + cell  # volume 0 and every node
    for _ in range(50):  # the volume grows with c: bisection to far below a thousandth of a cell
        middle = 0.5 * (low + high)
        low, high = (middle, high) if volume(middle) < target else (low, middle)
    return 0.5 * (low + high)


def threshold_to_logit(threshold: float) -> float:
    """Probability threshold in (0, 1) -> logit level for marching cubes."""
    if not isinstance(threshold, (int, float)) or not 0.0 < float(threshold) < 1.0 or math.isnan(threshold):
        raise ValueError(
            f"threshold must be a probability strictly between 0 and 1 (e.g. 0.5), got {threshold!r}"
        )
    return math.log(threshold) - math.log1p(-threshold)


def check_resolution(resolution: int, method: str, resolution0: int) -> int:
    """Number of doublings from `resolution0` to `resolution` (0 for dense); ValueError if unreachable."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(resolution, (int, np.integer)) or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2, got {resolution!r}")
    if method == "dense":
        return 0
    if not isinstance(resolution0, (int, np.integer)) or resolution0 < 2:
        raise ValueError(f"resolution0 (the coarse MISE grid) must be an integer >= 2, got {resolution0!r}")
    if resolution < resolution0:
        raise ValueError(
            f"resolution {resolution} is below the coarse MISE grid {resolution0}; "
            f"use resolution >= {resolution0}, a smaller resolution0, or method='dense'"
        )
    steps = 0
    r = resolution0
    while r < resolution:
        r *= 2
        steps += 1
    if r != resolution:
        reachable = [resolution0 * 2**k for k in range(max(steps - 1, 0), steps + 1)]
        raise ValueError(
            f"resolution {resolution} is not reachable by doubling the coarse MISE grid {resolution0}; "
            f"use one of {reachable}, set resolution0 so that resolution0 * 2^k == resolution, "
            f"or method='dense'"
        )
    return steps


def _index_to_points(index: np.ndarray, resolution: int, box_size: float) -> np.ndarray:
    return (index.astype(np.float32) * (box_size / resolution) - box_size / 2).astype(np.float32)


class GridCache:
    """Exact logits already evaluated, per grid resolution, for one occupancy function.

    Live sliders re-extract the same function at another threshold or resolution; MISE visits the
    same grid levels (32, 64, 128, ...) every time, so keeping each level's evaluated nodes makes a
    threshold change cost only the nodes the new surface needs that were never evaluated, and a
    resolution change reuse all coarser levels. Drop the cache when the function changes (new
    weights or shape code). Cached values are used only where extraction would evaluate anyway, so
    results are identical with and without a cache.

    `place_on_edges` samples the grid's edges at nodes of a 4x finer grid, far too large to hold
    densely (513³ at 128³): those few are kept sparsely, as sorted node numbers and their values.
    """

    def __init__(self) -> None:
        self.levels: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.sparse: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def level(self, resolution: int) -> tuple[np.ndarray, np.ndarray]:
        """(values, known) node arrays of shape (resolution+1)³ for `resolution`, created empty."""
        if resolution not in self.levels:
            n = resolution + 1
            self.levels[resolution] = (np.zeros((n, n, n), np.float32), np.zeros((n, n, n), bool))
        return self.levels[resolution]

    def lookup(self, resolution: int, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(values, found) at node numbers `keys` of a sparsely kept grid."""
        if resolution not in self.sparse:
            return np.zeros(len(keys), np.float32), np.zeros(len(keys), bool)
        known, values = self.sparse[resolution]
        at = np.minimum(np.searchsorted(known, keys), len(known) - 1)
        found = known[at] == keys
        return np.where(found, values[at], 0.0).astype(np.float32), found

    def store(self, resolution: int, keys: np.ndarray, values: np.ndarray) -> None:
        """Keep `values` at node numbers `keys` (none of them kept yet) of a sparsely kept grid."""
        if resolution in self.sparse:
            known, old = self.sparse[resolution]
            keys, values = np.concatenate([known, keys]), np.concatenate([old, values])
        order = np.argsort(keys, kind="stable")
        self.sparse[resolution] = (keys[order], values[order])

    def state(self) -> dict:
        """The evaluated nodes as tensors (what `torch.load(weights_only=True)` reads; `from_state`
        rebuilds the cache): per dense level a bit per node (`np.packbits`) and the known nodes' values
        in node order, per sparse level its sorted node numbers (int64) and values. A fit's extraction
        hands its caches to `serve` this way, so the sliders start warm (`warm_grids`)."""
        dense = {r: (torch.from_numpy(np.packbits(known.reshape(-1))), torch.from_numpy(values[known]))
                 for r, (values, known) in self.levels.items()}
        sparse = {r: (torch.from_numpy(keys), torch.from_numpy(values)) for r, (keys, values) in self.sparse.items()}
        return {"dense": dense, "sparse": sparse}

    @classmethod
    def from_state(cls, state: object) -> "GridCache":
        """The cache `state()` described; ValueError saying what is wrong with anything else (the state
        comes from a file: each level's sizes and node numbers are checked before it is allocated)."""
        if not isinstance(state, dict) or set(state) != {"dense", "sparse"}:
            raise ValueError("a grid cache must hold 'dense' and 'sparse' levels")
        cache = cls()
        for kind, limit in (("dense", max(RESOLUTIONS)), ("sparse", max(RESOLUTIONS) << MAX_EDGE_STEPS)):
            levels = state[kind]
            if not isinstance(levels, dict):
                raise ValueError(f"a grid cache's {kind} levels must be a mapping resolution -> (nodes, values)")
            for r, pair in levels.items():
                if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= limit:
                    raise ValueError(f"a grid cache's {kind} level {r!r} is not a resolution from 1 to {limit}")
                if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(map(torch.is_tensor, pair))):
                    raise ValueError(f"a grid cache's {kind} level {r} must be (nodes, values) tensors")
                nodes, values = (t.numpy() for t in pair)
                if values.ndim != 1 or values.dtype != np.float32 or not np.isfinite(values).all():
                    raise ValueError(f"a grid cache's {kind} level {r} must hold finite float32 values")
                count = (r + 1) ** 3
                if kind == "dense":
                    if nodes.dtype != np.uint8 or nodes.shape != (-(-count // 8),):
                        raise ValueError(f"a grid cache's dense level {r} must mark its {count} nodes in "
                                         f"{-(-count // 8)} bytes")
                    known = np.unpackbits(nodes, count=count).astype(bool)
                    if np.count_nonzero(known) != len(values):
                        raise ValueError(f"a grid cache's dense level {r} marks another number of nodes than it "
                                         "has values")
                    grid, cached = cache.level(r)
                    grid.reshape(-1)[known] = values
                    cached.reshape(-1)[:] = known
                else:
                    if nodes.dtype != np.int64 or nodes.shape != values.shape:
                        raise ValueError(f"a grid cache's sparse level {r} must hold one int64 node per value")
                    if len(nodes) and (nodes[0] < 0 or nodes[-1] >= count or (np.diff(nodes) <= 0).any()):
                        raise ValueError(f"a grid cache's sparse level {r} names nodes outside its grid or out "
                                         "of order")
                    cache.sparse[r] = (nodes.copy(), values.copy())
        return cache


class _Evaluator:
    """Calls the logit function, counts evaluations and rejects NaN outputs."""

    def __init__(self, fn: LogitFunction):
        self.fn = fn
        self.count = 0

    def __call__(self, points: np.ndarray) -> np.ndarray:
        if len(points) == 0:
            return np.zeros(0, dtype=np.float32)
        out = self.fn(points)
        if isinstance(out, torch.Tensor):
            out = out.detach().float().cpu().numpy()
        out = np.asarray(out, dtype=np.float32).reshape(-1)
        if out.shape[0] != len(points):
            raise ValueError(f"the occupancy function returned {out.shape[0]} values for {len(points)} points")
        if np.isnan(out).any():
            raise ValueError(
                "the network returned NaN occupancy logits: the model diverged or the checkpoint is "
                "corrupt; retrain with a lower learning rate (or mixed precision off) and extract again"
            )
        self.count += len(points)
        return out


def dense_grid(
    evaluate: LogitFunction, resolution: int, box_size: float = BOX_SIZE, cache: GridCache | None = None
) -> np.ndarray:
    """Logits on every sample of the grid, float32 [R+1, R+1, R+1]. Points are generated one x-slab
    at a time so memory stays bounded at high resolution."""
    if cache is not None:
        values, known = cache.level(resolution)
        if known.all():
            return values.copy()
    n = resolution + 1
    values = np.empty((n, n, n), dtype=np.float32)
    axis = np.linspace(-box_size / 2, box_size / 2, n, dtype=np.float32)
    gy, gz = np.meshgrid(axis, axis, indexing="ij")
    yz = np.stack([gy.ravel(), gz.ravel()], axis=1)
    slab = max(1, (1 << 20) // (n * n))
    for start in range(0, n, slab):
        xs = axis[start : start + slab]
        pts = np.concatenate([np.column_stack([np.full(len(yz), x, np.float32), yz]) for x in xs])
        values[start : start + len(xs)] = evaluate(pts).reshape(len(xs), n, n)
    if cache is not None:
        cache.levels[resolution] = (values.copy(), np.ones(values.shape, dtype=bool))
    return values


def _upsample(values: np.ndarray) -> np.ndarray:
    """Trilinear 2× upsampling of a node grid: (r+1)³ -> (2r+1)³ (new nodes average their neighbours)."""
    n = values.shape[0]
    m = 2 * n - 1
    out = np.empty((m, m, m), dtype=np.float32)
    out[::2, ::2, ::2] = values
    out[1::2, ::2, ::2] = 0.5 * (values[:-1] + values[1:])
    out[:, 1::2, ::2] = 0.5 * (out[:, 0:-1:2, ::2] + out[:, 2::2, ::2])
    out[:, :, 1::2] = 0.5 * (out[:, :, 0:-1:2] + out[:, :, 2::2])
    return out


def _straddling_cells(values: np.ndarray, level: float) -> np.ndarray:
    """Bool [r, r, r]: cells whose 8 corners are not all on the same side of `level`."""
    above = values >= level
    any_above = np.zeros(tuple(s - 1 for s in values.shape), dtype=bool)
    all_above = np.ones_like(any_above)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                corner = above[dx : dx + any_above.shape[0], dy : dy + any_above.shape[1], dz : dz + any_above.shape[2]]
                any_above |= corner
                all_above &= corner
    return any_above & ~all_above


def _near_cells(values: np.ndarray, known: np.ndarray, level: float, reach: float) -> np.ndarray:
    """Bool [r, r, r]: cells whose corners were all evaluated and one of them lies less than
    `reach` (in logits) from `level`: with distance-like logits, the surface may pass through
    such a cell (a thin part between two corners on the same side) where no other can."""
    gap = np.abs(values - level)
    shape = tuple(s - 1 for s in values.shape)
    nearest = np.full(shape, np.inf, dtype=values.dtype)
    all_known = np.ones(shape, dtype=bool)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                window = (slice(dx, dx + shape[0]), slice(dy, dy + shape[1]), slice(dz, dz + shape[2]))
                np.minimum(nearest, gap[window], out=nearest)
                all_known &= known[window]
    return all_known & (nearest < reach)


def _cell_corners(cells: np.ndarray) -> np.ndarray:
    """Bool node mask [(r+1)³] of every corner of the marked cells [r³]."""
    r = cells.shape[0]
    nodes = np.zeros((r + 1,) * 3, dtype=bool)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                nodes[dx : dx + r, dy : dy + r, dz : dz + r] |= cells
    return nodes


class CachedField:
    """A logit function evaluated at grid nodes, each node once when it has a `GridCache`."""

    def __init__(self, fn: LogitFunction, cache: GridCache | None = None):
        self.evaluate = _Evaluator(fn)
        self.cache = cache

    @property
    def count(self) -> int:
        return self.evaluate.count

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return self.evaluate(points)

    def nodes(self, resolution: int, mask: np.ndarray, box_size: float) -> np.ndarray:
        """Values at the nodes of `mask` [(r+1)³] (in `np.argwhere` order)."""
        if self.cache is None:
            return self.evaluate(_index_to_points(np.argwhere(mask), resolution, box_size))
        values, known = self.cache.level(resolution)
        need = mask & ~known
        values[need] = self.evaluate(_index_to_points(np.argwhere(need), resolution, box_size))
        known |= need
        return values[mask]

    def volume_grid(self, distance_scale: float) -> np.ndarray:
        """Logits [(r+1)³] on the grid blends match their volume on (r = VOLUME_RESOLUTION) of a function whose
        logits are distances (`distance_scale`): exact near its surface, interpolated from MISE's first grid
        elsewhere (`mise_grid`), so an extraction of the shape has evaluated them all already."""
        return mise_grid(self, VOLUME_RESOLUTION, 0.0, distance_scale=distance_scale).reshape(-1)

    def samples(self, resolution: int, index: np.ndarray, box_size: float) -> np.ndarray:
        """Values at the nodes `index` [N, 3] (each once) of a grid too fine to hold densely."""
        if self.cache is None:
            return self.evaluate(_index_to_points(index, resolution, box_size))
        keys = np.ravel_multi_index(tuple(index.T), (resolution + 1,) * 3)
        values, found = self.cache.lookup(resolution, keys)
        need = ~found
        values[need] = self.evaluate(_index_to_points(index[need], resolution, box_size))
        self.cache.store(resolution, keys[need], values[need])
        return values


class FieldBlend:
    """Σ wᵢ·fᵢ over cached fields, inflated to the shapes' mean volume (`matched_inflation`): the blend of
    shapes whose logits are distances (a model that `blends_fields`; `distance_scale`: distance per logit).
    Each shape keeps its own cache, so a node evaluated for one blend serves every other blend and the
    shape itself: a slider move costs only the nodes its new surface adds. Beyond BLEND_NEAR of a shape's
    own surface, a blend's grid nodes take that shape's field from its volume grid (trilinear), where it
    is a smooth distance, instead of from the network."""

    def __init__(self, terms: list[tuple[float, CachedField]], distance_scale: float):
        if not terms:
            raise ValueError("a blend needs at least one shape of non-zero weight")
        self.terms = terms
        self.distance_scale = distance_scale
        self._grids: list[np.ndarray] | None = None
        self._offset: np.float32 | None = None

    @property
    def count(self) -> int:
        return sum(field.count for _, field in self.terms)

    def _volume_grids(self) -> list[np.ndarray]:
        if self._grids is None:
            self._grids = [field.volume_grid(self.distance_scale) for _, field in self.terms]
        return self._grids

    @property
    def offset(self) -> np.float32:
        """The inflation in logits, measured at its first use (within an extraction, whose count it joins)."""
        if self._offset is None and len(self.terms) == 1:
            self._offset = np.float32(0.0)
        if self._offset is None:
            distances = [-grid * self.distance_scale for grid in self._volume_grids()]
            inflation = matched_inflation([w for w, _ in self.terms], distances, BOX_SIZE / VOLUME_RESOLUTION)
            self._offset = np.float32(inflation / self.distance_scale)
        return self._offset

    def _blend(self, values: Callable[[CachedField], np.ndarray]) -> np.ndarray:
        return sum(w * values(field) for w, field in self.terms) + self.offset

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return self._blend(lambda field: field(points))

    def nodes(self, resolution: int, mask: np.ndarray, box_size: float) -> np.ndarray:
        if len(self.terms) == 1 or box_size != BOX_SIZE:
            return self._blend(lambda field: field.nodes(resolution, mask, box_size))
        offset = self.offset
        index = np.argwhere(mask)
        at = index.T * (VOLUME_RESOLUTION / resolution)
        shape = (VOLUME_RESOLUTION + 1,) * 3
        blend = np.full(len(index), offset, dtype=np.float32)
        for (w, field), grid in zip(self.terms, self._volume_grids()):
            values = map_coordinates(grid.reshape(shape), at, order=1)
            near = np.abs(values) < BLEND_NEAR / self.distance_scale
            if near.any():
                own = np.zeros_like(mask)
                own[tuple(index[near].T)] = True
                values[near] = field.nodes(resolution, own, box_size)
            blend += w * values
        return blend

    def samples(self, resolution: int, index: np.ndarray, box_size: float) -> np.ndarray:
        return self._blend(lambda field: field.samples(resolution, index, box_size))


def mise_grid(
    evaluate: "LogitFunction | CachedField | FieldBlend",
    resolution: int,
    level: float,
    resolution0: int = 32,
    box_size: float = BOX_SIZE,
    cache: GridCache | None = None,
    distance_scale: float | None = None,
) -> np.ndarray:
    """Logit grid [R+1]³ equal to the dense grid wherever marching cubes can see a crossing.

    `distance_scale`: the function's logits are -(signed distance) / distance_scale (a direct
    field, or a network trained on soft targets from it). Then a cell is also refined when a corner
    lies closer to the surface than the cell's diagonal, which catches parts thinner than a coarse
    cell that plain MISE, seeing no sign change, leaves out (thin walls, blades, fine teeth).
    """
    field = evaluate if isinstance(evaluate, (CachedField, FieldBlend)) else CachedField(evaluate, cache)
    steps = check_resolution(resolution, "mise", resolution0)
    n0 = resolution0 + 1
    values = field.nodes(resolution0, np.ones((n0, n0, n0), dtype=bool), box_size).reshape(n0, n0, n0)
    known = np.ones(values.shape, dtype=bool)
    r = resolution0
    for _ in range(steps):
        active = _straddling_cells(values, level)
        if distance_scale:
            active |= _near_cells(values, known, level, math.sqrt(3) * box_size / r / distance_scale)
        values = _upsample(values)
        known_fine = np.zeros(values.shape, dtype=bool)
        known_fine[::2, ::2, ::2] = known
        known = known_fine
        r *= 2
        # each coarse active cell becomes 2x2x2 fine cells; evaluate their corners not yet known
        fine_cells = active.repeat(2, 0).repeat(2, 1).repeat(2, 2)
        todo = _cell_corners(fine_cells) & ~known
        values[todo] = field.nodes(r, todo, box_size)
        known |= todo
    return values


def marching_cubes(values: np.ndarray, level: float, box_size: float = BOX_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Closed, outward-facing triangle mesh of {values >= level} in box coordinates.

    scikit-image orients faces along the field's gradient, i.e. inward when inside has the larger
    values; we reverse the winding so normals point outward (positive volume, correct shading in
    Blender). tests/test_extraction.py checks this by signed volume.
    """
    resolution = values.shape[0] - 1
    if not values.max() >= level:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    # A node within a hair of the level puts the vertices of all its edges within float32 rounding
    # of the node itself: distinct vertices with equal coordinates, which any weld (trimesh.load,
    # Blender's Merge by Distance) turns into non-manifold edges. Keeping every node LEVEL_MARGIN
    # away from the level keeps vertices >= LEVEL_MARGIN/Δ of an edge from its ends (Δ: the field's
    # change along the edge) and moves them by no more than that: 1% of a cell at Δ = 1 logit.
    near = values > level - LEVEL_MARGIN  # two bool passes: |values - level| made 68 MB temporaries
    near &= values < level + LEVEL_MARGIN  # at 256³ and took 0.16-0.25 s, these take 0.01 s
    if near.any():
        values = values.copy()
        values[near] = np.where(values[near] >= level, level + LEVEL_MARGIN, level - LEVEL_MARGIN)
    # Close the surface with an outside layer chosen so the surface crosses 1/20 of a cell beyond
    # the border. A huge constant (the reference uses -1e6) puts those vertices within float32
    # rounding of the border nodes, where they merge and break watertightness.
    padded = np.pad(values, 1, mode="edge")
    border = np.ones(padded.shape, dtype=bool)
    border[1:-1, 1:-1, 1:-1] = False
    edge = padded[border]
    padded[border] = np.where(edge >= level, level - 19.0 * (edge - level), edge) - 1e-3
    vertices, faces, _, _ = lewiner_marching_cubes(padded, level=level, allow_degenerate=False)
    vertices = (vertices - 1.0) * (box_size / resolution) - box_size / 2
    return vertices.astype(np.float32), np.ascontiguousarray(faces[:, ::-1], dtype=np.int64)


def place_on_edges(field: "CachedField | FieldBlend", vertices: np.ndarray, values: np.ndarray, level: float,
                   steps: int = EDGE_STEPS, box_size: float = BOX_SIZE) -> np.ndarray:
    """Vertices moved along their grid edges to where the function itself crosses the level.

    Why: marching cubes puts a vertex where the straight line between its edge's two node values
    crosses the level. A learned field is not straight between nodes: across a wall thinner than
    a cell it rises and falls within one edge, so the straight line puts the wall's two faces too
    close together: a thin channel profile's network scored IoU 0.79 on held-out points and its
    128³ mesh 0.34 (0.67 placed; BENCHMARKS.md). `steps` bisections on the function, then the
    straight line within the last bracket, find its own crossing; vertices stay on their edges, so the mesh keeps
    its connectivity (closed, manifold) and orientation. `values`: the grid marching cubes ran on
    (its node values bracket each edge). Vertices on the closing layer outside the box stay."""
    if steps < 1 or not len(vertices):
        return vertices
    resolution = values.shape[0] - 1
    h = box_size / resolution
    index = (vertices.astype(np.float64) + box_size / 2) / h
    off_node = np.abs(index - np.round(index)) > 1e-4
    on_edge = np.flatnonzero((off_node.sum(axis=1) == 1) & np.all((index > -1e-4) & (index < resolution + 1e-4), axis=1))
    if not len(on_edge):
        return vertices
    axis = np.argmax(off_node[on_edge], axis=1)
    step = np.zeros((len(on_edge), 3), np.int64)  # along the vertex's edge, one node
    step[np.arange(len(on_edge)), axis] = 1
    start = np.where(step == 1, np.floor(index[on_edge]), np.round(index[on_edge])).astype(np.int64)
    low, high = values[tuple(start.T)] - level, values[tuple((start + step).T)] - level
    crossing = (low >= 0) != (high >= 0)
    on_edge, step, start, low, high = on_edge[crossing], step[crossing], start[crossing], low[crossing], high[crossing]
    fine = 1 << steps  # every bisection point is a node of the grid `fine` times finer
    k_low, k_high = np.zeros(len(on_edge), np.int64), np.full(len(on_edge), fine, np.int64)
    for _ in range(steps):
        k_mid = (k_low + k_high) // 2
        mid = field.samples(resolution * fine, start * fine + k_mid[:, None] * step, box_size) - level
        like_low = (mid >= 0) == (low >= 0)
        k_low, low = np.where(like_low, k_mid, k_low), np.where(like_low, mid, low)
        k_high, high = np.where(like_low, k_high, k_mid), np.where(like_low, high, mid)
    t = (k_low + (k_high - k_low) * low / (low - high)) / fine  # low and high differ in sign: no division by 0
    origin = start * h - box_size / 2
    direction = step * h
    out = vertices.copy()
    out[on_edge] = (origin + np.clip(t, EDGE_END, 1 - EDGE_END)[:, None] * direction).astype(np.float32)
    return out


def drop_small_parts(vertices: np.ndarray, faces: np.ndarray, min_part: float, min_volume: float = 0.0,
                     min_cavity: float = 0.0) -> tuple[np.ndarray, np.ndarray, int]:
    """(vertices, faces, parts dropped) without the connected parts whose enclosed volume is below
    `min_part` x the largest part's or below `min_volume`, and without the cavities (closed parts facing
    inward: empty space inside the solid) smaller than `min_cavity`, which fills them (parts share no
    vertex: marching cubes welds within a part, and orients every part outward from the solid). The
    largest part is always kept."""
    if not (min_part or min_volume or min_cavity) or not len(faces):
        return vertices, faces, 0
    n = len(vertices)
    edges = np.concatenate([faces[:, :2], faces[:, 1:]])
    count, label = connected_components(coo_matrix((np.ones(len(edges), np.int8), tuple(edges.T)), shape=(n, n)),
                                        directed=False)
    if count == 1:
        return vertices, faces, 0
    tri = vertices[faces].astype(np.float64)
    signed = np.bincount(label[faces[:, 0]], np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])) / 6,
                         minlength=count)
    volume = np.abs(signed)
    keep = ((volume >= min_part * volume.max()) & (volume >= min_volume) & ~((signed < 0) & (volume < min_cavity))
            | (volume == volume.max()))
    faces = faces[keep[label[faces[:, 0]]]]
    used = np.unique(faces)
    remap = np.zeros(n, dtype=faces.dtype)
    remap[used] = np.arange(len(used), dtype=faces.dtype)
    return vertices[used], remap[faces], int(count - keep.sum())


def extract_mesh(
    logit_fn: LogitFunction,
    resolution: int = DEFAULTS.resolution,
    threshold: float = DEFAULTS.threshold,
    method: str = "mise",
    resolution0: int = MISE_BASE_RESOLUTION,
    box_size: float = BOX_SIZE,
    cache: GridCache | None = None,
    distance_scale: float | None = None,
    min_part: float = 0.0,
    edge_steps: int = EDGE_STEPS,
    smoothing: float = 0.0,
    denoise: bool = True,
) -> dict:
    """Extract the threshold surface of an occupancy function.

    Args:
        logit_fn: float32 points [N, 3] -> logits [N] (numpy or torch), or a `FieldBlend`.
        resolution: cells per axis of the final grid (MISE: resolution0 · 2^k).
        threshold: occupancy probability of the surface, in (0, 1).
        method: 'mise' (hierarchical, default) or 'dense'.
        resolution0: coarse grid of MISE.
        cache: a `GridCache` to reuse evaluations across calls on the same function (sliders).
        distance_scale: for distance-like logits (see `mise_grid`), None for others.
        min_part: drop parts smaller than this fraction of the largest (`drop_small_parts`; a
            blend of shapes uses MORPH_MIN_PART), 0 keeps all. Parts smaller than one cell of
            the grid are always dropped: below what the grid resolves, they are specks where a
            thin part's field dips across the level between nodes (a heatsink's 213 of 225
            extra parts, a plate's 13 of 15, IoU unchanged; BENCHMARKS.md). Cavities smaller
            than CAVITY_CELLS cells are filled.
        edge_steps: bisections placing each vertex on the function's own crossing along its grid
            edge (`place_on_edges`); 0 is plain marching cubes.
        smoothing: σ of a Gaussian the grid's values are smoothed with before marching cubes, in the
            function's units (a blend of shapes uses `blend_options`'); 0 for none.
        denoise: flatten the surface's sub-cell bumps (`denoising.denoise`: a learned field's own
            surface; False for plain marching cubes of an exact field or a blend).

    Returns:
        {'vertices': float32 [V, 3], 'faces': int64 [F, 3], 'stats': {'evaluations', 'seconds',
        'method', 'resolution', 'threshold', 'parts_dropped'}} in the coordinates the function takes.
    """
    level = threshold_to_logit(threshold)
    if isinstance(edge_steps, bool) or not isinstance(edge_steps, (int, np.integer)) or not 0 <= edge_steps <= MAX_EDGE_STEPS:
        raise ValueError(f"edge_steps must be a whole number from 0 (plain marching cubes) to {MAX_EDGE_STEPS}, "
                         f"got {edge_steps!r}")
    if not isinstance(denoise, (bool, np.bool_)):
        raise ValueError(f"denoise must be True or False, got {denoise!r}")
    if not (isinstance(smoothing, (int, float)) and 0.0 <= smoothing < math.inf):
        raise ValueError(f"smoothing must be a distance >= 0 (0: none), got {smoothing!r}")
    check_resolution(resolution, method, resolution0)
    field = logit_fn if isinstance(logit_fn, FieldBlend) else CachedField(logit_fn, cache)
    counted = field.count
    start = time.perf_counter()
    if method == "dense":
        values = dense_grid(field, resolution, box_size, cache if isinstance(field, CachedField) else None)
    else:
        values = mise_grid(field, resolution, level, resolution0, box_size, distance_scale=distance_scale)
    if smoothing > 0:
        values = gaussian_filter(values, smoothing / (box_size / resolution), mode="nearest")
    vertices, faces = marching_cubes(values, level, box_size)
    vertices = place_on_edges(field, vertices, values, level, edge_steps, box_size)
    cell_volume = (box_size / resolution) ** 3
    vertices, faces, dropped = drop_small_parts(vertices, faces, min_part, min_volume=cell_volume,
                                                min_cavity=CAVITY_CELLS * cell_volume)
    if denoise:
        vertices = denoise_surface(vertices, faces, box_size / resolution)
    return {
        "vertices": vertices,
        "faces": faces,
        "stats": {
            "evaluations": field.count - counted,
            "seconds": time.perf_counter() - start,
            "method": method,
            "resolution": resolution,
            "threshold": float(threshold),
            "parts_dropped": dropped,
        },
    }
