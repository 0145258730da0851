"""PLY with numpy alone: the one reader and writer of the meshes that cross the boundary (the
add-on writes the selected objects, the backend writes its results and the sliders' meshes).

What is supported, and why that much:

- Writing: binary little-endian, ``float x, y, z`` vertices and ``uchar``-counted ``int``
  triangle lists: the layout the backend's loaders read, and the cheapest to produce from
  ``foreach_get`` arrays.
- Reading: ``binary_little_endian``, ``binary_big_endian`` and ``ascii``; any scalar vertex
  properties besides ``x, y, z`` (normals, colours ...); a face list property named
  ``vertex_indices`` or ``vertex_index`` with any integer count / index types; extra face
  properties; extra elements (skipped). Polygons with more than three corners are fan
  triangulated. A PLY from another program (a scan, trimesh's exporter) may carry comments and
  colour properties, so the reader does not assume our own layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .files import atomic_write_bytes

__all__ = ["PLYError", "read_ply", "write_ply", "ply_bytes"]

# PLY scalar type names (both spellings) -> numpy kind + size, without byte order.
_SCALAR_TYPES: dict[str, str] = {
    "char": "i1", "int8": "i1",
    "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4",
    "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}
_FACE_LIST_NAMES = ("vertex_indices", "vertex_index")


class PLYError(ValueError):
    """A file that is not a PLY this reader understands; the message says which part and why."""


@dataclass
class _Property:
    name: str
    dtype: str  # numpy kind+size, e.g. "f4"
    count_dtype: str | None = None  # set for list properties


@dataclass
class _Element:
    name: str
    count: int
    properties: list[_Property] = field(default_factory=list)


def ply_bytes(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    """The bytes of a binary little-endian triangle PLY (float32 xyz, uchar/int32 faces)."""
    vertices = np.ascontiguousarray(vertices, dtype="<f4").reshape(-1, 3)
    faces = np.asarray(faces, dtype="<i4").reshape(-1, 3)
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise PLYError(f"face indices must lie in [0, {len(vertices)}); got [{faces.min()}, {faces.max()}]")
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment written by OccNet\n"
        f"element vertex {len(vertices)}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    ).encode("ascii")
    records = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
    records["n"] = 3
    records["v"] = faces
    return header + vertices.tobytes() + records.tobytes()


def write_ply(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray) -> Path:
    """Write a triangle mesh as binary PLY, atomically: a reader started right after (the backend,
    the add-on's importer) never meets a half-written file."""
    return atomic_write_bytes(path, ply_bytes(vertices, faces))


def _parse_header(data: bytes, where: str) -> tuple[str, list[_Element], int]:
    """Returns (format, elements, offset of the body)."""
    if not data.startswith(b"ply"):
        raise PLYError(f"{where}: not a PLY file (it does not start with 'ply')")
    end = data.find(b"end_header")
    if end < 0:
        raise PLYError(f"{where}: PLY header has no 'end_header' line (truncated file?)")
    newline = data.find(b"\n", end)
    if newline < 0:
        raise PLYError(f"{where}: PLY header ends without a newline (truncated file?)")
    body_start = newline + 1
    lines = data[:end].decode("ascii", errors="replace").replace("\r", "").split("\n")
    fmt = None
    elements: list[_Element] = []
    for line in lines[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            if len(words) < 2 or words[1] not in ("ascii", "binary_little_endian", "binary_big_endian"):
                raise PLYError(f"{where}: unsupported PLY format line {line!r}")
            fmt = words[1]
        elif words[0] == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise PLYError(f"{where}: bad element line {line!r}")
            elements.append(_Element(words[1], int(words[2])))
        elif words[0] == "property":
            if not elements:
                raise PLYError(f"{where}: property before any element: {line!r}")
            if len(words) == 5 and words[1] == "list":
                if words[2] not in _SCALAR_TYPES or words[3] not in _SCALAR_TYPES:
                    raise PLYError(f"{where}: unknown list types in {line!r}")
                elements[-1].properties.append(_Property(words[4], _SCALAR_TYPES[words[3]], _SCALAR_TYPES[words[2]]))
            elif len(words) == 3 and words[1] in _SCALAR_TYPES:
                elements[-1].properties.append(_Property(words[2], _SCALAR_TYPES[words[1]]))
            else:
                raise PLYError(f"{where}: bad property line {line!r}")
        else:
            raise PLYError(f"{where}: unknown header line {line!r}")
    if fmt is None:
        raise PLYError(f"{where}: PLY header has no 'format' line")
    return fmt, elements, body_start


def _read_binary_element(
    data: bytes, offset: int, element: _Element, order: str, where: str
) -> tuple[dict[str, np.ndarray], list[np.ndarray] | np.ndarray | None, int]:
    """Reads one element; returns (scalar columns, face lists or None, new offset).

    Fast path: an element whose only list property has the same count on every row (triangles)
    is one structured numpy read. Otherwise rows are walked one by one (only quads / n-gons
    from foreign files pay that).
    """
    lists = [p for p in element.properties if p.count_dtype is not None]
    if not lists:
        dtype = np.dtype([(p.name, order + p.dtype) for p in element.properties])
        size = dtype.itemsize * element.count
        if offset + size > len(data):
            raise PLYError(f"{where}: file ends inside element '{element.name}' (truncated)")
        table = np.frombuffer(data, dtype=dtype, count=element.count, offset=offset)
        return {p.name: table[p.name] for p in element.properties}, None, offset + size
    if element.count == 0:
        return {}, np.zeros((0, 3), dtype=np.int64), offset
    if len(lists) == 1:
        # Guess the fixed count from the first row and verify it on all rows.
        first = lists[0]
        pre = sum(np.dtype(p.dtype).itemsize for p in element.properties[: element.properties.index(first)])
        if offset + pre + np.dtype(first.count_dtype).itemsize > len(data):
            raise PLYError(f"{where}: file ends inside element '{element.name}' (truncated)")
        n = int(np.frombuffer(data, dtype=order + first.count_dtype, count=1, offset=offset + pre)[0])
        fields = []
        for p in element.properties:
            if p is first:
                fields += [("__count", order + p.count_dtype), (p.name, order + p.dtype, (n,))]
            else:
                fields.append((p.name, order + p.dtype))
        dtype = np.dtype(fields)
        size = dtype.itemsize * element.count
        if n > 0 and offset + size <= len(data):
            table = np.frombuffer(data, dtype=dtype, count=element.count, offset=offset)
            if np.all(table["__count"] == n):
                columns = {p.name: table[p.name] for p in element.properties if p is not first}
                columns[first.name] = table[first.name]
                return columns, table[first.name].reshape(-1, n), offset + size
    # General path: variable-length rows.
    columns: dict[str, list] = {p.name: [] for p in element.properties}
    pos = offset
    try:
        for _ in range(element.count):
            for p in element.properties:
                if p.count_dtype is None:
                    value = np.frombuffer(data, dtype=order + p.dtype, count=1, offset=pos)[0]
                    pos += np.dtype(p.dtype).itemsize
                    columns[p.name].append(value)
                else:
                    n = int(np.frombuffer(data, dtype=order + p.count_dtype, count=1, offset=pos)[0])
                    pos += np.dtype(p.count_dtype).itemsize
                    columns[p.name].append(np.frombuffer(data, dtype=order + p.dtype, count=n, offset=pos))
                    pos += n * np.dtype(p.dtype).itemsize
    except ValueError:
        raise PLYError(f"{where}: file ends inside element '{element.name}' (truncated)") from None
    face_name = next((p.name for p in lists if p.name in _FACE_LIST_NAMES), lists[0].name)
    scalars = {k: np.asarray(v) for k, v in columns.items() if k != face_name}
    return scalars, columns[face_name], pos


def _read_ascii(text_body: bytes, elements: list[_Element], where: str):
    tokens = text_body.split()
    pos = 0
    results = []
    try:
        for element in elements:
            columns: dict[str, list] = {p.name: [] for p in element.properties}
            for _ in range(element.count):
                for p in element.properties:
                    if p.count_dtype is None:
                        columns[p.name].append(float(tokens[pos]))
                        pos += 1
                    else:
                        n = int(tokens[pos])
                        columns[p.name].append(np.array([int(t) for t in tokens[pos + 1 : pos + 1 + n]]))
                        pos += 1 + n
            results.append(columns)
    except (IndexError, ValueError):
        raise PLYError(f"{where}: ASCII PLY body ends early or holds a non-number") from None
    return results


def _triangulate(polygons: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Fan-triangulates polygons given as rows; drops degenerate rows with fewer than 3 corners."""
    if len(polygons) == 0:
        return np.zeros((0, 3), dtype=np.int64)
    if isinstance(polygons, np.ndarray):
        rows = polygons.reshape(len(polygons), -1)
        n = rows.shape[1]
        if n < 3:
            return np.zeros((0, 3), dtype=np.int64)
        if n == 3:
            return rows.astype(np.int64)
        return np.concatenate([rows[:, [0, i, i + 1]] for i in range(1, n - 1)]).astype(np.int64)
    tris: list[np.ndarray] = []
    for poly in polygons:
        poly = np.asarray(poly, dtype=np.int64)
        for i in range(1, len(poly) - 1):
            tris.append(poly[[0, i, i + 1]])
    return np.array(tris, dtype=np.int64).reshape(-1, 3)


def read_ply(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Reads a PLY mesh: returns (vertices float32 [N,3], triangles int32 [M,3]).

    Raises PLYError naming the file and what is wrong with it.
    """
    path = Path(path)
    where = str(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PLYError(f"cannot read {where}: {err.strerror or err}") from None
    fmt, elements, body = _parse_header(data, where)
    vertex_columns: dict[str, np.ndarray] | None = None
    polygons: list[np.ndarray] | np.ndarray | None = None
    if fmt == "ascii":
        for element, columns in zip(elements, _read_ascii(data[body:], elements, where)):
            if element.name == "vertex":
                vertex_columns = {k: np.asarray(v) for k, v in columns.items()}
            elif element.name == "face":
                name = next((n for n in _FACE_LIST_NAMES if n in columns), None)
                polygons = columns[name] if name else None
    else:
        order = "<" if fmt == "binary_little_endian" else ">"
        offset = body
        for element in elements:
            scalars, lists, offset = _read_binary_element(data, offset, element, order, where)
            if element.name == "vertex":
                vertex_columns = scalars
            elif element.name == "face":
                polygons = lists
    if vertex_columns is None or not all(k in vertex_columns for k in "xyz"):
        raise PLYError(f"{where}: PLY has no 'vertex' element with x, y, z properties")
    vertices = np.stack([vertex_columns[k] for k in "xyz"], axis=1).astype(np.float32)
    if polygons is None:
        raise PLYError(f"{where}: PLY has no 'face' element with a vertex_indices list (a point cloud?)")
    faces = _triangulate(polygons)
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise PLYError(f"{where}: face indices point outside the {len(vertices)} vertices (corrupt file?)")
    return np.ascontiguousarray(vertices), faces.astype(np.int32)
