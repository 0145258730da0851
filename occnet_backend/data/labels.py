"""Inside/outside labels by generalised winding number.

Ray parity and ``trimesh.contains`` are wrong on open meshes and overlapping parts, and slow
without embree. The generalised winding number (libigl's fast, hierarchical approximation) is
≈1 inside, ≈0 outside, and degrades gracefully across holes; 0.5 is the decision level.
"""

from __future__ import annotations

import hashlib

import numpy as np

WINDING_THRESHOLD = 0.5


CHUNK_POINTS = 4_000_000
"""Query points per libigl call at most: chunks only bound the float64 copies of huge query sets
(e.g. a 256³ grid = 16.8 M points = 400 MB as float64)."""


MAX_EDGE = 0.05
"""Longest edge, as a fraction of the mesh's longest side, of the triangles libigl's winding-number
hierarchy and distance tree are built from. CAD exports are full of long slivers whose bounding
boxes overlap, which make both trees useless: splitting edges longer than this first (it adds no new
surface, only smaller triangles on it) labels a differential gear's points 3.4x faster, a heatsink's
4.1x, and finds a heatsink's distances 3.2x faster (BENCHMARKS.md); the winding numbers differ by at
most ~0.015 (both are approximations), the distances not at all."""
MAX_SPLIT_FACES = 2_000_000  # a mesh that would split into more is used as it is (memory)
_SPLIT_CACHE: dict[bytes, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
_HIERARCHY_CACHE: dict[bytes, object] = {}


def split_mesh(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices float64, faces int64, the input face each face lies on [F']) of the mesh with its long
    edges split (see MAX_EDGE); the last few are kept, because labelling a shape asks for the same
    mesh's split many times."""
    import trimesh

    v = np.ascontiguousarray(vertices, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64)
    key = _mesh_key(v, f)
    if key not in _SPLIT_CACHE:
        source = np.arange(len(f))
        edges = np.linalg.norm(v[f] - v[np.roll(f, 1, axis=1)], axis=2).max(axis=1) if len(f) else np.zeros(0)
        longest = float(np.ptp(v, axis=0).max()) if len(v) else 0.0
        splits = np.ceil(np.log2(np.maximum(edges / max(MAX_EDGE * longest, 1e-300), 1.0)))
        if len(f) and longest > 0 and splits.max() > 0 and float((4.0 ** splits).sum()) <= MAX_SPLIT_FACES:
            split_v, split_f, source = trimesh.remesh.subdivide_to_size(v, f, max_edge=MAX_EDGE * longest,
                                                                         max_iter=20, return_index=True)
            v, f = np.ascontiguousarray(split_v, dtype=np.float64), np.ascontiguousarray(split_f, dtype=np.int64)
        _remember(_SPLIT_CACHE, key, (v, f, np.asarray(source, dtype=np.int64)))
    return _SPLIT_CACHE[key]


HIERARCHY_MIN_POINTS = 4_000
"""Fewer query points than this (the exposed distance's checks of single spots on the surface) are
answered on the mesh as it is rather than on `split_mesh`: near the surface, libigl evaluates a few
large triangles exactly, while the split mesh's many small ones are approximated (1e-4 off a box's
face: errors 1e-4 vs 4e-3), and those checks decide which pieces of a partly covered face are kept
(test_grid_fit's stud on a plate)."""


def winding_hierarchy(vertices: np.ndarray, faces: np.ndarray, split: bool = True):
    """libigl's fast-winding-number hierarchy (`igl.FastWindingNumberBVH`) of `split_mesh` (or of the
    mesh as it is). Built once per mesh and kept for the last few: labelling a shape queries the same
    mesh a dozen times, and a heatsink's hierarchy costs 0.3 s to build, more than most of those
    queries (BENCHMARKS.md)."""
    import igl

    v = np.ascontiguousarray(vertices, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64)
    key = _mesh_key(v, f) + bytes([split])
    if key not in _HIERARCHY_CACHE:
        if split:
            v, f, _ = split_mesh(v, f)
        hierarchy = igl.FastWindingNumberBVH()
        hierarchy.init(v, f)
        _remember(_HIERARCHY_CACHE, key, hierarchy)
    return _HIERARCHY_CACHE[key]


def _mesh_key(v: np.ndarray, f: np.ndarray) -> bytes:
    return hashlib.blake2b(v.tobytes() + f.tobytes(), digest_size=16).digest()


def _remember(cache: dict, key: bytes, value) -> None:
    """Keeps the last few meshes' entries: labelling a shape asks for the same mesh several times."""
    while len(cache) >= 4:
        cache.pop(next(iter(cache)))
    cache[key] = value


FAST_ACCURACY = 1.0
"""libigl's `accuracy_scale` for a first, coarse answer (its default, 2, is the accurate one): a node
of the hierarchy is summed as one far-field expansion from this many times its radius away. 4-5x
faster on CAD parts (a gear ring's 220k sample points: 1.1 vs 5.3 s), off by at most 0.36 on 1.8 M
points of eight package meshes, near their surfaces too (BENCHMARKS.md)."""
RECHECK_BAND = 0.45
"""Points whose coarse |winding number| lies within this of WINDING_THRESHOLD are answered again
accurately: the rest are more than any coarse error seen from the decision, so every label is the
accurate answer's (no label changed on those 1.8 M points)."""


def winding_numbers(
    vertices: np.ndarray, faces: np.ndarray, points: np.ndarray, chunk_size: int = CHUNK_POINTS
) -> np.ndarray:
    """Generalised winding number of each query point, float64 [N], in chunks of `chunk_size` points
    (libigl answers each on every core): libigl's accurate answer where it is within RECHECK_BAND of
    the decision level, its coarse one (FAST_ACCURACY) elsewhere."""
    q = np.asarray(points).reshape(-1, 3)
    if len(q) == 0 or len(faces) == 0:  # no faces wind around anything (and libigl crashes on none)
        return np.zeros(len(q), dtype=np.float64)
    hierarchy = winding_hierarchy(vertices, faces, split=len(q) >= HIERARCHY_MIN_POINTS)
    order = spatial_order(q) if len(q) >= SORT_MIN_POINTS else None
    if order is not None:
        q = q[order]

    def answer(chunk: np.ndarray) -> np.ndarray:
        w = hierarchy.winding_number(chunk, FAST_ACCURACY)
        unsure = np.flatnonzero(np.abs(np.abs(w) - WINDING_THRESHOLD) < RECHECK_BAND)
        if len(unsure):
            w[unsure] = hierarchy.winding_number(chunk[unsure])  # a gathered copy: contiguous
        return w

    w = np.concatenate([answer(np.ascontiguousarray(q[start:start + chunk_size], dtype=np.float64))
                        for start in range(0, len(q), chunk_size)])
    return w if order is None else _unsorted(order, w)


def _unsorted(order: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Results of queries made in `order` (see `spatial_order`), back in the queries' own order."""
    out = np.empty_like(values)
    out[order] = values
    return out


SORT_MIN_POINTS = 20_000
SORT_GRID = 32


def spatial_order(points: np.ndarray, resolution: int = SORT_GRID) -> np.ndarray:
    """A permutation that groups query points by cell of a coarse grid over their bounding box.

    Why: libigl walks its face hierarchy per query point; neighbouring queries visit the same
    nodes, so grouping them keeps those nodes in cache.
    Measured on Suzanne (63k faces, 2 cores): 0.40 M points/s for the training mix in the order it
    was drawn (uniform, then near-surface), 0.65 M shuffled, 0.88 M grid-sorted; sorting (a radix
    sort of 16-bit cell keys) costs ~0.03 s per million points.
    """
    p = np.asarray(points, dtype=np.float64)
    lo, hi = p.min(axis=0), p.max(axis=0)
    cell = np.clip(((p - lo) / np.maximum(hi - lo, 1e-12) * resolution).astype(np.int64), 0, resolution - 1)
    key = (cell[:, 0] * resolution + cell[:, 1]) * resolution + cell[:, 2]
    if resolution**3 <= 1 << 16:  # 16-bit keys: numpy's stable sort is a radix sort, 5x faster
        return np.argsort(key.astype(np.uint16), kind="stable")
    return np.argsort(key)


def inside(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bool [N]: which points lie inside the (possibly open, overlapping) mesh.

    Uses |w| so that a mesh whose faces all point inward is still labelled correctly.
    """
    return np.abs(winding_numbers(vertices, faces, points)) > WINDING_THRESHOLD


BOUNDARY_OFFSET = 1e-4
"""How far off a face (in the mesh's units: fit's are the unit cube's) its two sides are probed."""
PROBE_WEIGHTS = np.array([[2, 2, 2], [4, 1, 1], [1, 4, 1], [1, 1, 4]]) / 6.0
"""Barycentric spots a face is probed at: its centroid and those of its three corner sub-triangles, so a
face only partly covered by another part (a stud on a brick) still bounds the volume where it is exposed."""


_BOUNDARY_CACHE: dict[bytes, np.ndarray] = {}


def boundary_faces(vertices: np.ndarray, faces: np.ndarray, offset: float = BOUNDARY_OFFSET) -> np.ndarray:
    """Bool [F]: the faces that bound the labelled volume: inside on one side, outside on the other.

    Why: overlapping parts (kit-bashed models, convex-hull sets, CAD assemblies) leave faces
    *inside* the union, and open flaps leave faces with outside on both sides. The distance to
    such a face is not the distance to the surface: inside a union it would put a "surface" a hair
    away from every internal face, and a network trained on it grows specks there. The side test
    uses the same winding number as the labels, at four spots of each face plus and minus
    `offset` along its normal (a face counts when one spot differs); all faces count when none
    passes (a mesh of only such faces)."""
    v = np.ascontiguousarray(vertices, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64)
    key = _mesh_key(v, f) + np.float64(offset).tobytes()
    if key not in _BOUNDARY_CACHE:  # the samples, the preview and the direct field ask for the same mesh's
        corners = v[f]
        bounding = _bounds_volume(v, f, corners, PROBE_WEIGHTS) & (_face_normals(corners)[1] > 0)
        _remember(_BOUNDARY_CACHE, key, bounding if bounding.any() else np.ones(len(f), dtype=bool))
    return _BOUNDARY_CACHE[key].copy()


def _face_normals(corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals [T, 3] (zero for degenerate triangles) and twice the areas [T] of triangles [T, 3, 3]."""
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    length = np.linalg.norm(normal, axis=1)
    return np.divide(normal, length[:, None], out=np.zeros_like(normal), where=length[:, None] > 0), length


def _thinner_than_probes(corners: np.ndarray) -> np.ndarray:
    """Bool [T]: triangles [T, 3, 3] less than BOUNDARY_OFFSET high (twice the area over the longest edge).

    Why: the side test (`boundary_faces`) cannot decide such a sliver, its probes stand further off than it
    is wide, so one failing is no sign of overlapping parts; and it covers nothing a point could be closer
    to by more than that. A gear ring's 39 failing faces were all such slivers (areas ~1e-11): refining its
    distances for them cost 2.3 s per 100k near points and changed none (BENCHMARKS.md)."""
    _, twice_area = _face_normals(corners)
    longest = np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=2).max(axis=1)
    return twice_area < BOUNDARY_OFFSET * longest


def _bounds_volume(v: np.ndarray, f: np.ndarray, corners: np.ndarray, weights: np.ndarray,
                   offset: float = BOUNDARY_OFFSET) -> np.ndarray:
    """Bool [T]: triangles [T, 3, 3] with a spot (barycentric `weights` [P, 3]) that has the mesh's
    inside on one side and its outside on the other. The spots are tried in turn, each only on the
    triangles no earlier spot decided: most faces bound the volume at their first spot, so a closed
    mesh costs a quarter of the probes of all four spots at once."""
    normal, _ = _face_normals(corners)
    bounds = np.zeros(len(corners), dtype=bool)
    for spot_weights in weights:
        todo = np.flatnonzero(~bounds)
        if not len(todo):
            break
        spots = np.einsum("k,fkd->fd", spot_weights, corners[todo])
        offsets = offset * normal[todo]
        side = inside(v, f, np.concatenate([spots + offsets, spots - offsets]))
        bounds[todo] = side[: len(todo)] != side[len(todo):]
    return bounds


_SURFACE_CACHE: dict[bytes, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def bounding_surface(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices, faces, which of them bound the labelled volume [F']): the surface the distances are
    taken to (`exposed_distance`). A mesh whose faces all bound its volume is its own; one with
    overlapping parts has every closed, outward part replaced by the union of those parts (manifold3d's
    exact boolean), and keeps its other parts' faces as they are, with `boundary_faces`' answer.

    Why: the union is the exposed surface at once. Found otherwise (splitting the faces that hold a covered
    closest point until the pieces are small, `exposed_distance`), a heatsink's 676k points cost 10 s more than
    their closest points alone, and a face whose four probe spots are all covered was missed, so an outside
    point 0.0005 from the surface was given 0.008 (BENCHMARKS.md). A part that is open or inside out (a
    cavity) is left to that splitting: what a union would do to it is not what its winding number says."""
    v = np.ascontiguousarray(vertices, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64)
    key = _mesh_key(v, f)
    if key not in _SURFACE_CACHE:
        outer = boundary_faces(v, f)
        surface = (v, f, outer)
        if not _all_bound(v[f], outer):
            union = _union_of_closed_parts(v, f)
            if union is not None:
                union_v, union_f, rest = union
                surface_v = np.concatenate([union_v, v])
                surface_f = np.concatenate([union_f, f[rest] + len(union_v)])
                union_bounds = (_bounds_volume(v, f, union_v[union_f], PROBE_WEIGHTS) if rest.any()
                                else np.ones(len(union_f), dtype=bool))  # nothing else to cover them
                surface = (surface_v, surface_f, np.concatenate([union_bounds, outer[rest]]))
        _remember(_SURFACE_CACHE, key, surface)
    return _SURFACE_CACHE[key]


def exact_surface(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """Whether `bounding_surface` is the exposed surface as it is: every face of it bounds the volume (or is a
    sliver the side test cannot decide), so no closest point found on it is covered."""
    surface_v, surface_f, bounds = bounding_surface(vertices, faces)
    return _all_bound(surface_v[surface_f], bounds)


def _all_bound(triangles: np.ndarray, bounds: np.ndarray) -> bool:
    """Whether every triangle [T, 3, 3] bounds the volume (`bounds` [T]) or is a sliver the side test cannot
    decide (`_thinner_than_probes`): then no part of them is covered."""
    return bool((bounds | _thinner_than_probes(triangles)).all())


def _union_of_closed_parts(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(vertices, faces, the faces of `f` in no closed part: bool [F]) of the union of the mesh's closed,
    outward parts (connected by shared corners, duplicated vertices merged first); None when fewer than
    two parts are such solids."""
    import manifold3d
    import trimesh

    mesh = _merged(v, f)
    parts = trimesh.graph.connected_components(mesh.face_adjacency, nodes=np.arange(len(f)), min_len=1)
    sealed = _sealed_faces(mesh.faces)
    solids, rest = [], np.ones(len(f), dtype=bool)
    for part in parts:
        if not sealed[part].all():  # manifold3d crashes on some such parts (an edge used twice one way)
            continue
        corners, tri_verts = np.unique(mesh.faces[part], return_inverse=True)
        solid = manifold3d.Manifold(manifold3d.Mesh64(
            vert_properties=np.ascontiguousarray(mesh.vertices[corners], dtype=np.float64),
            tri_verts=np.ascontiguousarray(tri_verts.reshape(-1, 3), dtype=np.uint32)))
        if solid.status() == manifold3d.Error.NoError and solid.volume() > 0:
            solids.append(solid)
            rest[part] = False
    if len(solids) < 2:
        return None
    union = manifold3d.Manifold.batch_boolean(solids, manifold3d.OpType.Add).to_mesh64()
    return (np.ascontiguousarray(union.vert_properties[:, :3], dtype=np.float64),
            np.ascontiguousarray(union.tri_verts, dtype=np.int64), rest)


def _merged(v: np.ndarray, f: np.ndarray):
    """The mesh as a trimesh.Trimesh with its duplicated vertices merged (its faces and their order kept)."""
    import trimesh

    mesh = trimesh.Trimesh(v, f, process=False, validate=False)
    mesh.merge_vertices()
    return mesh


def sealed(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """Whether every part of the mesh is closed and consistently oriented (duplicated vertices merged):
    then its inside changes only across faces that bound the volume."""
    return bool(_sealed_faces(_merged(np.asarray(vertices), np.asarray(faces)).faces).all())


def _sealed_faces(faces: np.ndarray) -> np.ndarray:
    """Bool [F]: faces each of whose edges is used as often against its direction as along it (by its
    neighbours): a part made only of such faces is closed and consistently oriented."""
    n = int(faces.max()) + 1 if len(faces) else 0
    tails, heads = faces.reshape(-1), np.roll(faces, -1, axis=1).reshape(-1)
    edges, count = np.unique(tails * n + heads, return_counts=True)

    def uses(key: np.ndarray) -> np.ndarray:
        at = np.minimum(np.searchsorted(edges, key), len(edges) - 1)
        return np.where(edges[at] == key, count[at], 0)

    good = uses(tails * n + heads) == uses(heads * n + tails)
    return good.reshape(-1, 3).all(axis=1)


EXPOSED_EDGE = 0.002
"""How finely, as a fraction of the mesh's longest side, the exposed part of a partly covered face
is found (`exposed_distance`): the distances of points near it are exact to about this much."""
EXPOSED_BAND = 0.02
"""Only inside points nearer than this (a fraction of the longest side, as EXPOSED_EDGE) to the faces
are looked at: a point farther from them is farther from the surface too, where a soft target has
long saturated (the unit cube's 0.02 is five DISTANCE_SCALEs)."""
EXPOSED_RELATIVE = 0.25
"""... and, for a point farther away, to about this fraction of its distance."""
EXPOSED_ROUNDS = 8
"""At most this many rounds of splits (each splits a face once, or twice where it is far larger
than the distances it must give: down to 1/65536 of its edge)."""
CENTROID = np.array([[1, 1, 1]]) / 3.0


def exposed_distance(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray, occupied: np.ndarray,
                     boundary: np.ndarray | None = None, exact: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(distance [N], closest point [N, 3]) from each point to the surface that bounds the labelled
    volume: `bounding_surface` (its closed parts' union, and the faces of the others that bound the
    volume; or the `boundary` faces of the mesh as it is, when given), less the parts of those faces
    covered by another part. `occupied`: the points' labels (`inside`).

    Why: a face can be partly covered (a stud standing on a brick's top face, a fin through a
    heatsink's base) and still bound the volume elsewhere; the distance to its covered part is no
    distance to the surface, and an inside point near it would get a distance of almost 0 (13% of
    the near-surface points of a Lego brick: the network then grows specks inside the studs). So
    for an inside point whose closest point has the inside beyond it too (covered), the face it lies
    on is split in four (or sixteen), the pieces whose centre is covered are dropped, and the
    distance is taken again, until no closest point is covered or the pieces are small enough
    (EXPOSED_EDGE, EXPOSED_RELATIVE). An outside point's closest point is never covered (the path
    to it would cross the surface first). A surface whose every face bounds the volume (no overlapping
    parts, or only closed ones) skips all this; so does `exact=False` (a quick look: the signs are the
    same, only distances near covered faces are too small)."""
    import igl

    v = np.ascontiguousarray(vertices, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64)
    q = np.ascontiguousarray(np.asarray(points).reshape(-1, 3), dtype=np.float64)
    # the distances are to `surface_v[surface_f]`; the sides are always the mesh's own (`inside(v, f, ...)`)
    surface_v, surface_f, outer = bounding_surface(v, f) if boundary is None else (v, f, boundary)
    # every call starts from the whole faces: a piece dropped at one query's tolerance can hold a later
    # query's closest point, so pieces kept across calls would make its distance too far and every label
    # depend on what the process had asked before
    soup = None  # triangles [T, 3, 3] once a face was split
    size = float(np.ptp(v, axis=0).max()) if len(v) else 0.0

    def closest_on_soup(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order = spatial_order(points) if len(points) >= SORT_MIN_POINTS else None
        if order is not None:  # neighbouring queries walk the same boxes: 1.2-1.6x faster (BENCHMARKS.md)
            points = np.ascontiguousarray(points[order])
        if soup is None:  # the bounding faces, found on their pieces in `split_mesh` (slivers: 3x faster)
            split_v, split_f, source = split_mesh(surface_v, surface_f)
            pieces = np.flatnonzero(outer[source])
            squared, piece, point = igl.point_mesh_squared_distance(points, split_v, split_f[pieces])
            host = (np.cumsum(outer) - 1)[source[pieces[piece]]]  # the face's place in surface_f[outer]
        else:
            squared, host, point = igl.point_mesh_squared_distance(points, soup.reshape(-1, 3),
                                                                   np.arange(3 * len(soup)).reshape(-1, 3))
        if order is not None:
            squared, host, point = (_unsorted(order, a) for a in (squared, host, point))
        return np.sqrt(np.maximum(squared, 0.0)), host, point

    distance, host, closest = closest_on_soup(q)
    refine = exact and not _all_bound(surface_v[surface_f], outer)
    todo = np.flatnonzero(occupied & (distance < EXPOSED_BAND * size)) if refine else np.zeros(0, dtype=np.int64)
    for _ in range(EXPOSED_ROUNDS):
        if not len(todo):
            break
        if soup is None:
            soup = surface_v[surface_f[outer]]
        edges = np.linalg.norm(soup - np.roll(soup, 1, axis=1), axis=2).max(axis=1)
        tolerance = np.maximum(EXPOSED_EDGE * size, EXPOSED_RELATIVE * distance[todo])
        check = edges[host[todo]] > tolerance
        todo, tolerance = todo[check], tolerance[check]
        if not len(todo):
            break
        away = q[todo] - closest[todo]
        length = np.linalg.norm(away, axis=1, keepdims=True)
        # beyond the closest point, seen from the query; a query on the face itself looks along the normal
        beyond = np.where(length > 2 * BOUNDARY_OFFSET, away / np.maximum(length, 1e-300),
                          _face_normals(soup[host[todo]])[0])
        covered = inside(v, f, closest[todo] - BOUNDARY_OFFSET * beyond)
        todo, tolerance = todo[covered], tolerance[covered]
        if not len(todo):
            break
        split, which = np.unique(host[todo], return_inverse=True)
        need = np.full(len(split), np.inf)
        np.minimum.at(need, which, tolerance)
        pieces = _quarters(soup[split])
        twice = np.tile(edges[split] > 4 * need, 4)  # a face far larger than it must be is split twice at once
        pieces = np.concatenate([pieces[~twice], _quarters(pieces[twice])])
        keep = np.ones(len(soup), dtype=bool)
        keep[split] = False
        soup = np.concatenate([soup[keep], pieces[_bounds_volume(v, f, pieces, CENTROID)]])
        if not len(soup):
            raise ValueError("no face of the mesh bounds its volume once the covered parts are taken away")
        distance[todo], host[todo], closest[todo] = closest_on_soup(q[todo])
    return distance, closest


def _quarters(triangles: np.ndarray) -> np.ndarray:
    """Each triangle [T, 3, 3] split at its edges' midpoints into four [4T, 3, 3], quarter-major."""
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    ab, bc, ca = (a + b) / 2, (b + c) / 2, (c + a) / 2
    return np.concatenate([np.stack(t, axis=1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])


def signed_distance(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray,
                    boundary: np.ndarray | None = None, exact: bool = True) -> np.ndarray:
    """Distance of each point to the surface, negative inside (by `inside`), float64 [N].

    The surface is the faces that bound the labelled volume, without their covered parts
    (`exposed_distance`; `exact=False` keeps them), so internal faces of overlapping parts do not
    count; the distance is exact (libigl's AABB tree); the sign is the winding number's, so it agrees with the 0/1 labels
    everywhere, also across the holes of an open mesh, where a distance signed by normals would flip."""
    return signed_distance_and_closest(vertices, faces, points, boundary, exact)[0]


def signed_distance_and_closest(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray,
                                boundary: np.ndarray | None = None,
                                exact: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """`signed_distance` and each point's closest surface point [N, 3] (float64)."""
    q = np.ascontiguousarray(np.asarray(points).reshape(-1, 3), dtype=np.float64)
    if len(q) == 0:
        return np.zeros(0, dtype=np.float64), np.zeros((0, 3), dtype=np.float64)
    occupied = inside(vertices, faces, q)
    distance, closest = exposed_distance(vertices, faces, q, occupied, boundary, exact)
    return np.where(occupied, -distance, distance), closest
