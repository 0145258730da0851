"""Result PLYs -> new mesh objects in the "OccNet Results" collection.

Meshes are built with ``foreach_set`` (0.29 s for 160k vertices vs 0.47 s with from_pydata).
The backend writes results in the sources' own world coordinates (its normalisation already
undone), so objects get an identity matrix and land exactly over their sources.

Each result object keeps a small store in custom properties (``occnet_*``): which sources it
came from, its shape id, the checkpoint, the job folder and the model's shape list. Re-running
uses the sources to replace the previous result; the live sliders use the rest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import bpy
import numpy as np

from . import plyio
from .errors import OccNetError

COLLECTION_NAME = "OccNet Results"
PROP_SOURCES = "occnet_sources"
PROP_SHAPE_ID = "occnet_shape_id"
PROP_SHAPE_IDS = "occnet_shape_ids"
PROP_CHECKPOINT = "occnet_checkpoint"
PROP_JOB = "occnet_job"
PROP_SETTINGS = "occnet_settings"


@dataclass
class ResultSpec:
    """One mesh the backend produced, and where it belongs."""

    shape_id: str
    sources: list[str]
    path: str
    checkpoint: str = ""
    job_dir: str = ""
    shape_ids: list[str] = field(default_factory=list)  # every shape in the model, code order
    settings: dict = field(default_factory=dict)


def result_name(sources: list[str]) -> str:
    return f"{sources[0]} OccNet" if len(sources) == 1 else f"{sources[0]} +{len(sources) - 1} OccNet"


def source_key(sources: list[str]) -> str:
    """Identifies "the same source" across runs: the sorted object names."""
    return json.dumps(sorted(sources))


def results_collection(scene: bpy.types.Scene) -> bpy.types.Collection:
    """The scene's results collection, created and linked on first use."""
    coll = bpy.data.collections.get(COLLECTION_NAME)
    if coll is None or coll.library is not None:
        coll = bpy.data.collections.new(COLLECTION_NAME)
    if scene.collection.children.find(coll.name) < 0 and not _is_nested(scene.collection, coll):
        scene.collection.children.link(coll)
    return coll


def _is_nested(parent: bpy.types.Collection, coll: bpy.types.Collection) -> bool:
    return any(child == coll or _is_nested(child, coll) for child in parent.children)


def mesh_from_arrays(name: str, vertices: np.ndarray, faces: np.ndarray) -> bpy.types.Mesh:
    """A new mesh datablock from triangle arrays, via foreach_set (in 5.0 only loop_start is needed)."""
    vertices = np.ascontiguousarray(vertices, dtype=np.float32).reshape(-1, 3)
    faces = np.ascontiguousarray(faces, dtype=np.int32).reshape(-1, 3)
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(vertices))
    mesh.vertices.foreach_set("co", vertices.ravel())
    mesh.loops.add(faces.size)
    mesh.loops.foreach_set("vertex_index", faces.ravel())
    mesh.polygons.add(len(faces))
    mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    mesh.update()
    # Marching-cubes surfaces are smooth by nature; flat shading shows every tiny facet.
    mesh.shade_smooth()
    return mesh


def remove_object_and_mesh(ob: bpy.types.Object) -> None:
    """Deletes a result object and, when nothing else uses it, its mesh (no orphan datablocks)."""
    mesh = ob.data if ob.type == "MESH" else None
    bpy.data.objects.remove(ob, do_unlink=True)
    if mesh is not None and mesh.users == 0:
        bpy.data.meshes.remove(mesh)


def replace_mesh(ob: bpy.types.Object, vertices: np.ndarray, faces: np.ndarray) -> bpy.types.Mesh:
    """Gives ``ob`` a new mesh built from the arrays (the live sliders' swap).

    A new datablock rather than an edit in place: clearing and refilling a mesh that the viewport
    may be drawing is not safe, and building one with foreach_set is as fast. The new mesh takes
    the old one's name and materials; the old one is removed when nothing else uses it (no orphans).
    """
    old = ob.data
    name = old.name
    mesh = mesh_from_arrays(name, vertices, faces)
    for material in old.materials:
        mesh.materials.append(material)
    ob.data = mesh
    if old.users == 0:
        bpy.data.meshes.remove(old)
        mesh.name = name
    return mesh


def previous_results(sources: list[str]) -> list[bpy.types.Object]:
    key = source_key(sources)
    found = []
    for ob in bpy.data.objects:
        value = ob.get(PROP_SOURCES)
        if value is not None and ob.library is None and source_key(list(value)) == key:
            found.append(ob)
    return found


def import_results(scene: bpy.types.Scene, specs: list[ResultSpec]) -> list[bpy.types.Object]:
    """Creates one object per spec, replacing earlier results of the same sources.

    All files are read before the scene is touched: a bad file leaves the scene as it was.
    """
    loaded = []
    for spec in specs:
        try:
            vertices, faces = plyio.read_ply(spec.path)
        except plyio.PLYError as err:
            raise OccNetError(f"The result for '{', '.join(spec.sources)}' cannot be read: {err}") from None
        if len(faces) == 0:
            raise OccNetError(
                f"The reconstruction of '{', '.join(spec.sources)}' is empty (no surface at threshold "
                f"{spec.settings.get('threshold', '?')}). Train longer or change the threshold."
            )
        loaded.append((spec, vertices, faces))
    coll = results_collection(scene)
    created = []
    for spec, vertices, faces in loaded:
        for old in previous_results(spec.sources):
            remove_object_and_mesh(old)
        name = result_name(spec.sources)
        ob = bpy.data.objects.new(name, mesh_from_arrays(name, vertices, faces))
        ob[PROP_SOURCES] = list(spec.sources)
        ob[PROP_SHAPE_ID] = spec.shape_id
        ob[PROP_SHAPE_IDS] = list(spec.shape_ids) or [spec.shape_id]
        ob[PROP_CHECKPOINT] = spec.checkpoint
        ob[PROP_JOB] = spec.job_dir
        ob[PROP_SETTINGS] = json.dumps(spec.settings)
        if hasattr(ob, "occnet_live"):  # the live sliders start from the run's settings
            from . import live

            live.ensure_live(ob)
        coll.objects.link(ob)
        created.append(ob)
    return created
