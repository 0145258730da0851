"""OccNet for Blender: reconstruct selected meshes with occupancy networks.

The add-on exports the selected meshes, trains an occupancy network on them in a separate
backend process (``occnet_backend``, PyTorch; never imported here), and imports the
marching-cubes results as new objects in the "OccNet Results" collection.

Works as a Blender 4.2+ extension (``blender_manifest.toml``) and as a legacy add-on
(``bl_info``). Scripts use ``blender.api.reconstruct`` and ``update_result``; once registered it is
also importable as ``occnet``. Result objects get live sliders (blender/sliders.py): resolution,
threshold and shape weights re-extract the surface in place.

Layout, by what a module may touch:

- ``occnet_contract/``: what the add-on and the backend agree on (settings, events, exit codes,
  PLY, atomic writes, dependencies); standard library and numpy; the backend imports it too.
- ``runner/``: the backend's processes seen from here (interpreter discovery, the process
  runner, job state from events, the slider client, errors); no bpy, tested on plain CPython.
- ``blender/``: everything that touches bpy (properties, panels, operators, export, results,
  jobs, the sliders' properties and timer, the Python API).

Nothing here imports bpy at module level, so ``runner`` and ``occnet_contract`` stay importable
outside Blender.
"""

from __future__ import annotations

import sys

bl_info = {
    "name": "OccNet Reconstruction",
    "author": "OccNet for Blender developers",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "View3D > Sidebar > OccNet",
    "description": "Watertight reconstructions of selected meshes with occupancy networks",
    "category": "Mesh",
}

_modules: tuple = ()
_ALIAS = "occnet"


def _abort_on_load(*_args) -> None:
    """Loading another file ends the running job: the scene it would import into is gone."""
    from .blender import jobs

    job = jobs.active_job()
    if job is not None:
        job.abort()


MIN_BLENDER = (4, 2, 0)


def _check_host(version: tuple | None = None, version_string: str = "", numpy_found: bool | None = None) -> None:
    """Refuses to enable, with the reason, where the add-on could only fail later (a Blender 3.x
    lacks UILayout.progress and Mesh.shade_smooth; some distributions' Blender has no numpy)."""
    import importlib.util

    import bpy

    version = tuple(version or bpy.app.version)
    if version < MIN_BLENDER:
        raise RuntimeError(
            f"OccNet Reconstruction needs Blender {'.'.join(map(str, MIN_BLENDER))} or newer; this is Blender "
            f"{version_string or bpy.app.version_string}. Install a newer Blender from blender.org."
        )
    if numpy_found is None:
        numpy_found = importlib.util.find_spec("numpy") is not None
    if not numpy_found:
        raise RuntimeError(
            "OccNet Reconstruction needs numpy in Blender's own Python, and this Blender has none (some Linux "
            "distributions package it separately: install python3-numpy, or use Blender from blender.org)."
        )


def register() -> None:
    global _modules
    _check_host()
    import bpy

    from .blender import api, installer, operators, panel, preferences, previews, properties, sliders

    _modules = (properties, sliders, previews, preferences, operators, installer, panel)
    for module in _modules:
        module.register()
    bpy.app.handlers.persistent(_abort_on_load)
    bpy.app.handlers.load_pre.append(_abort_on_load)
    if _ALIAS not in sys.modules:
        sys.modules[_ALIAS] = api  # `import occnet; occnet.reconstruct(...)` in scripts


def unregister() -> None:
    import bpy

    from .blender import api, jobs, sliders
    from .runner import process

    job = jobs.active_job()
    if job is not None:
        job.abort("the add-on was disabled")
    sliders.shutdown()  # the slider servers: EOF first, so they end cleanly
    process.shutdown_all()
    if _abort_on_load in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_abort_on_load)
    if sys.modules.get(_ALIAS) is api:
        del sys.modules[_ALIAS]
    for module in reversed(_modules):
        module.unregister()
