"""The Python API for scripts and ``blender --background``: ``reconstruct(objects, ...)``.

Example (save as ``script.py``, run with
``blender --background scene.blend --python-exit-code 1 --python script.py``)::

    import bpy
    from blender_addon.blender import api as occnet  # extension: from bl_ext.user_default.occnet.blender import api
    # (once the add-on is enabled, ``import occnet`` works too)

    suzanne = bpy.data.objects["Suzanne"]
    results = occnet.reconstruct([suzanne], steps=300, resolution=128)
    print(results[0].name)                 # "Suzanne OccNet", in the "OccNet Results" collection
    bpy.ops.wm.save_mainfile()

It blocks until the backend is done, printing progress; it returns the new objects or raises
``OccNetError`` (``OccNetCancelled`` when cancelled) with a message fit for the user. The scene
is only changed on success, and then only by adding result objects (replacing earlier results
of the same sources).

``update_result(obj, resolution=..., threshold=..., weights=...)`` re-extracts a result's surface
from its trained model (the live sliders' blocking path)::

    ob = occnet.update_result(results[0], resolution=256, threshold=0.4)
    ob = occnet.update_result(ob, weights=[0.5, 0.5])   # a two-shape run: half-way between them
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

import bpy

from ..occnet_contract.settings import FitSettings
from ..runner.errors import OccNetCancelled, OccNetError
from . import jobs, preferences, properties, sliders

__all__ = ["reconstruct", "update_result", "install_backend", "remove_backend", "OccNetError", "OccNetCancelled",
           "FitSettings"]


def reconstruct(
    objects: Iterable[bpy.types.Object] | None = None,
    *,
    union: bool | None = None,
    python: str | None = None,
    work_dir: str | os.PathLike | None = None,
    scene: bpy.types.Scene | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    cancel: Callable[[], bool] | threading.Event | None = None,
    verbose: bool = True,
    **settings: Any,
) -> list[bpy.types.Object]:
    """Reconstructs ``objects`` (default: the selected objects) and returns the new result objects.

    Settings left as None come from the scene's OccNet settings (``scene.occnet``), then the
    add-on preferences (device, interpreter, work folder), then the backend's defaults.

    Args:
        objects: mesh (or curve/text/metaball) objects; evaluated with modifiers, in world space.
        **settings: any of `FitSettings`' fields (``steps``, ``resolution``, ``threshold``,
            ``points``, ``width``, ``depth``, ``fourier_frequencies`` (0 = off), ``device``
            ("auto", "cpu", "cuda"), ``amp``, ``lr``, ``seed`` ...): they override the scene's.
        union: True reconstructs all objects as one shape; False (default) one shape each.
        python: the backend interpreter (else preference, $OCCNET_PYTHON, auto-detection).
        work_dir: where the job folder goes.
        on_event: called on the main thread with every backend event dict (``start``,
            ``progress``, ``checkpoint``, ``mesh``, ``metrics``, ``error``, ``done``).
        cancel: a callable returning True, or a threading.Event, that asks the job to stop.
        verbose: print progress lines to stdout.

    Raises:
        OccNetError: nothing usable selected, bad settings, no backend interpreter, backend
            failure; OccNetCancelled when ``cancel`` fired or Ctrl-C was pressed.
    """
    context = bpy.context
    scene = scene or context.scene
    prefs = preferences.get_prefs(context)
    base = properties.fit_settings(scene, prefs.device)
    known = FitSettings.__dataclass_fields__
    unknown = [name for name in settings if name not in known]
    if unknown:
        raise OccNetError(f"reconstruct() has no setting {', '.join(map(repr, unknown))}; the settings are "
                          f"{', '.join(known)}")
    for name, value in settings.items():
        if value is not None:
            setattr(base, name, value)
    if union is None:
        union = getattr(getattr(scene, "occnet", None), "mode", "SEPARATE") == "UNION"
    if objects is None:
        objects = list(context.selected_objects)
    should_cancel: Callable[[], bool] | None
    if isinstance(cancel, threading.Event):
        should_cancel = cancel.is_set
    else:
        should_cancel = cancel
    job = jobs.Job(
        list(objects),
        base,
        scene=scene,
        depsgraph=_depsgraph(context, scene),
        union=bool(union),
        python=python if python is not None else prefs.python_path,
        work_dir=work_dir if work_dir is not None else (prefs.work_dir or None),
    )
    if verbose:
        for note in job.skipped:
            print(f"OccNet: skipped {note}")
    return job.run(on_event=on_event, should_cancel=should_cancel, verbose=verbose)


def update_result(
    obj: bpy.types.Object,
    *,
    resolution: int | None = None,
    threshold: float | None = None,
    weights: Iterable[float] | None = None,
    timeout: float = sliders.REQUEST_TIMEOUT_S,
) -> bpy.types.Object:
    """Re-extracts a result object's surface from its trained model and swaps its mesh in place.

    Blocks until the new mesh is in the scene and returns ``obj``. Arguments left as None keep the
    object's current slider values (``obj.occnet_live``: set them directly, then call
    ``update_result(obj)`` to apply them in the background, where no timer runs).

    The model stays loaded in a ``serve`` process per checkpoint (started on the first call, also
    after reopening the .blend; it ends when the result is deleted, a file is loaded, the add-on is
    unregistered or Blender exits), so later calls are fast: a threshold change at 128³ takes about
    0.1 s in the backend plus the mesh swap.

    Args:
        obj: a result object (``reconstruct`` made it; it carries ``occnet_checkpoint``).
        resolution: 32, 64, 128, 256 or 512 (cells per side).
        threshold: occupancy probability of the surface, 0.01 - 0.99.
        weights: one non-negative weight per learned shape (``obj["occnet_shape_ids"]`` order),
            normalised to sum 1: ``[1, 0]`` is the first shape, ``[0.5, 0.5]`` half-way between two.
        timeout: seconds to wait for the answer.

    Raises:
        OccNetError: not a result, checkpoint missing, the server cannot start (message with the
            log's last lines), a bad setting, or the backend's own message for a rejected request
            (e.g. the wrong number of weights). The object is unchanged then.
    """
    return sliders.update_blocking(obj, resolution=resolution, threshold=threshold, weights=weights, timeout=timeout)


def install_backend(
    env_dir: str | os.PathLike | None = None,
    *,
    extra_index_url: str = "",
    cpu_only: bool = False,
    base_python: str | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    cancel: Callable[[], bool] | threading.Event | None = None,
    verbose: bool = True,
) -> str:
    """Builds the backend's private environment (what the Install Backend button does) and blocks
    until it is ready; returns its interpreter (auto-detection picks it when it is in the default
    place, the add-on's user folder; elsewhere, give it as Backend Python). Provisioning a
    machine headless: ``blender --background --python-expr "import occnet; occnet.install_backend()"``.

    Args:
        env_dir: where the environment goes (default: the add-on's user folder).
        extra_index_url: a package index besides PyPI (e.g. PyTorch's CUDA builds on Windows).
        cpu_only: PyTorch's CPU build (smaller; from PyTorch's own index).
        base_python: the Python to build it from (default: $OCCNET_BASE_PYTHON, Blender's own
            Python, python3.12 / python3.11 on PATH: the first that is 3.11 or 3.12 with venv).
        on_event: called with every installer event; cancel: a callable or threading.Event.

    Raises:
        OccNetError: no fitting Python, not enough disk, pip failed (summarised; the log has all),
            the packages do not import; OccNetCancelled when cancelled. Nothing half built is
            left where auto-detection would pick it up.
    """
    from ..runner import installer as runner_installer
    from . import installer

    env = Path(env_dir) if env_dir else preferences.env_dir()
    install = runner_installer.Install(env, installer.log_path(env), base_python=base_python,
                                       extra_index_url=extra_index_url, cpu_only=cpu_only)

    def event(e: dict[str, Any]) -> None:
        if verbose:
            print("OccNet install:", install.state.line(install.elapsed), flush=True)
        if on_event is not None:
            on_event(e)

    should_cancel = cancel.is_set if isinstance(cancel, threading.Event) else cancel
    return runner_installer.run_blocking(install, on_event=event, should_cancel=should_cancel)


def remove_backend(env_dir: str | os.PathLike | None = None) -> bool:
    """Deletes the environment `install_backend` built; False when there was none."""
    from ..runner import installer as runner_installer

    return runner_installer.remove_environment(Path(env_dir) if env_dir else preferences.env_dir())


def _depsgraph(context: bpy.types.Context, scene: bpy.types.Scene) -> bpy.types.Depsgraph:
    """The evaluated dependency graph for ``scene`` (another scene than the context's: its first view layer)."""
    if scene == context.scene:
        return context.evaluated_depsgraph_get()
    depsgraph = scene.view_layers[0].depsgraph
    depsgraph.update()
    return depsgraph
