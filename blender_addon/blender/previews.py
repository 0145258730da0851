"""While the network trains: each source's direct field (its own signed distance, no network),
which `fit` writes before training, shown as a wireframe object named "... OccNet (preview)".

A preview is not a result: it has no sliders and no sources record, nothing re-runs from it, and
it is removed when the job ends, whatever the outcome (the learned result takes its place, or
the scene is as it was before Reconstruct).
"""

from __future__ import annotations

import bpy
import numpy as np
from bpy.app.handlers import persistent
from mathutils import Matrix

from ..occnet_contract import ply
from . import results

PROP_PREVIEW = "occnet_preview"  # the job folder the preview belongs to
PREVIEW_SUFFIX = " (preview)"


def show(scene: bpy.types.Scene, job_dir: str, sources: list[str], path: str) -> bpy.types.Object | None:
    """Adds the preview of `sources` from the PLY at `path`; None when it cannot be read (a
    preview is a courtesy: the job goes on without it)."""
    try:
        vertices, faces = ply.read_ply(path)
    except (ply.PLYError, OSError):
        return None
    if len(faces) == 0 or not np.isfinite(vertices).all():
        return None
    name = results.result_name(sources) + PREVIEW_SUFFIX
    origin = results.source_origin(sources)
    ob = bpy.data.objects.new(name, results.mesh_from_arrays(name, vertices.astype(np.float64) - origin, faces))
    ob.matrix_world = Matrix.Translation(origin)
    ob.display_type = "WIRE"
    ob.hide_render = True
    ob[PROP_PREVIEW] = job_dir
    scene.collection.objects.link(ob)  # not the results collection: removing it leaves the scene as it was
    return ob


def clear(job_dir: str) -> None:
    """Removes every preview of the job (and its mesh)."""
    for ob in [ob for ob in bpy.data.objects if ob.get(PROP_PREVIEW) == job_dir and ob.library is None]:
        results.remove_object_and_mesh(ob)


@persistent
def remove_saved_previews(*_args) -> None:
    """After a file loads: a preview saved in it (the file was saved while a job trained) belongs
    to no running job (loading ends the job), so it goes."""
    for ob in [ob for ob in bpy.data.objects if ob.get(PROP_PREVIEW) is not None and ob.library is None]:
        results.remove_object_and_mesh(ob)


def register() -> None:
    if remove_saved_previews not in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.append(remove_saved_previews)


def unregister() -> None:
    if remove_saved_previews in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(remove_saved_previews)
