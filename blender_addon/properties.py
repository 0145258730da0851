"""Per-scene settings (saved with the .blend) and the last job's outcome (per session).

Machine-specific things (interpreter, work folder, device) live in the add-on preferences
instead, so a .blend opened on another machine keeps its reconstruction settings but uses that
machine's backend.
"""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from .backend import RESOLUTIONS, FitSettings

_DEFAULTS = FitSettings()


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
    steps: IntProperty(
        name="Steps", description="Training steps (more: closer fit, longer wait)",
        default=_DEFAULTS.steps, min=1, soft_max=20000,
    )
    points: IntProperty(
        name="Points", description="Points sampled per shape and training step",
        default=_DEFAULTS.points, min=256, soft_max=65536,
    )
    width: IntProperty(
        name="Width", description="Hidden units per layer of the network",
        default=_DEFAULTS.width, min=16, max=1024, soft_max=512,
    )
    depth: IntProperty(
        name="Depth", description="Residual blocks in the network",
        default=_DEFAULTS.depth, min=1, max=16,
    )
    use_fourier: BoolProperty(
        name="Fourier Features",
        description="Encode positions with random Fourier features: much faster convergence to fine detail",
        default=_DEFAULTS.fourier_frequencies > 0,
    )
    fourier_frequencies: IntProperty(
        name="Frequencies", description="Number of Fourier frequencies",
        default=_DEFAULTS.fourier_frequencies or 64, min=1, max=1024, soft_max=256,
    )
    resolution: EnumProperty(
        name="Resolution",
        description="Marching-cubes grid resolution of the extracted surface (cells per side)",
        items=[(str(r), f"{r}³", f"{r} cells per side") for r in RESOLUTIONS],
        default=str(_DEFAULTS.resolution),
    )
    threshold: FloatProperty(
        name="Threshold", description="Occupancy probability at which the surface is extracted",
        default=_DEFAULTS.threshold, min=0.01, max=0.99, step=1, precision=2,
    )

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
        width=props.width,
        depth=props.depth,
        fourier_frequencies=props.fourier_frequencies if props.use_fourier else 0,
    )


classes = (OCCNET_PG_settings, OCCNET_PG_status)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.occnet = PointerProperty(type=OCCNET_PG_settings)
    bpy.types.WindowManager.occnet_status = PointerProperty(type=OCCNET_PG_status)


def unregister() -> None:
    del bpy.types.WindowManager.occnet_status
    del bpy.types.Scene.occnet
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
