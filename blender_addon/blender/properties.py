"""Per-scene settings (saved with the .blend) and the last job's outcome (per session).

Machine-specific things (interpreter, work folder, device) live in the add-on preferences
instead, so a .blend opened on another machine keeps its reconstruction settings but uses that
machine's backend.
"""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from ..occnet_contract.settings import FitSettings, setting_field

_DEFAULTS = FitSettings()


def setting_property(name: str, minimum: float | None = None) -> dict:
    """The keyword arguments of a panel property for one `FitSettings` field: its label, help,
    default and bounds come from the contract (``minimum`` tightens the lower bound)."""
    f = setting_field(name)
    m = f.metadata
    kwargs: dict = {"name": m["label"] or name.replace("_", " ").title(),
                    "description": m["help"][0].upper() + m["help"][1:], "default": f.default}
    if m["choices"]:
        kwargs["items"] = [(str(c), f"{c}³", f"{c} cells per side") if name == "resolution" else (str(c), str(c), "")
                           for c in m["choices"]]
        kwargs["default"] = str(f.default)
        return kwargs
    lo, hi = m["minimum"], m["maximum"]
    if m["exclusive"]:  # a float strictly inside (lo, hi): the panel's two decimals stay inside
        lo, hi = lo + 0.01, hi - 0.01
    kwargs["min"], kwargs["max"] = (max(lo, minimum) if minimum is not None else lo), hi
    return kwargs


class OCCNET_PG_settings(bpy.types.PropertyGroup):
    """Reconstruction settings of a scene: ``scene.occnet``."""

    mode: EnumProperty(
        name="Shapes",
        description="How several selected objects are reconstructed",
        items=[
            ("SEPARATE", "One per Object", "Each object is its own shape (one model, a learned code per shape)"),
            ("UNION", "Union", "All selected objects together form one shape (one result)"),
        ],
        default="SEPARATE",
    )
    steps: IntProperty(**setting_property("steps"), soft_max=20000)
    points: IntProperty(**setting_property("points"), soft_max=65536)
    cached_points: IntProperty(**setting_property("cached_points"), soft_max=2_000_000, step=100_000)
    encoding: EnumProperty(**setting_property("encoding"))
    width: IntProperty(**setting_property("width"), soft_max=512)
    depth: IntProperty(**setting_property("depth"))
    use_fourier: BoolProperty(
        name="Fourier Features",
        description="Encode positions with random Fourier features: much faster convergence to fine detail",
        default=_DEFAULTS.fourier_frequencies > 0,
    )
    fourier_frequencies: IntProperty(**setting_property("fourier_frequencies", minimum=1), soft_max=256)
    resolution: EnumProperty(**setting_property("resolution"))
    threshold: FloatProperty(**setting_property("threshold"), step=1, precision=2)

    hide_sources: BoolProperty(
        name="Hide Sources",
        description="Hide the source objects when their reconstructions arrive (Alt+H or Ctrl+Z shows them again)",
        default=True,
    )


class OCCNET_PG_status(bpy.types.PropertyGroup):
    """The last job's outcome for the panel: ``window_manager.occnet_status`` (not saved)."""

    message: StringProperty(name="Message")
    is_error: BoolProperty(name="Is Error")
    job_dir: StringProperty(name="Job Folder", subtype="DIR_PATH")
    log_path: StringProperty(name="Log", subtype="FILE_PATH")


def set_status(context: bpy.types.Context, message: str, *, is_error: bool, job_dir: str = "",
               log_path: str = "") -> None:
    """What the panel's message box shows (the last job's or the installer's outcome)."""
    status = getattr(context.window_manager, "occnet_status", None)
    if status is not None:
        status.message, status.is_error, status.job_dir, status.log_path = message, is_error, job_dir, log_path


def fit_settings(scene: bpy.types.Scene | None, device: str = "auto") -> FitSettings:
    """The scene's settings as the backend's FitSettings (defaults when the scene has none)."""
    props = getattr(scene, "occnet", None) if scene is not None else None
    if props is None:
        return FitSettings(device=device)
    return FitSettings(
        steps=props.steps,
        resolution=int(props.resolution),
        threshold=round(props.threshold, 4),
        device=device,
        points=props.points,
        cached_points=props.cached_points,
        width=props.width,
        depth=props.depth,
        encoding=props.encoding,
        fourier_frequencies=props.fourier_frequencies if props.use_fourier else 0,
    )


classes = (OCCNET_PG_settings, OCCNET_PG_status)


_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register_classes()
    bpy.types.Scene.occnet = PointerProperty(type=OCCNET_PG_settings)
    bpy.types.WindowManager.occnet_status = PointerProperty(type=OCCNET_PG_status)


def unregister() -> None:
    del bpy.types.WindowManager.occnet_status
    del bpy.types.Scene.occnet
    _unregister_classes()
