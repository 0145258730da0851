"""Add-on preferences: the machine-specific settings (backend interpreter, work folder, device)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from ..occnet_contract.dependencies import env_python
from ..runner import installer, interpreter
from ..runner.errors import OccNetError
from . import ui

ADDON_ID = __package__.rpartition(".")[0]  # the add-on package: "blender_addon" from source, "bl_ext.<repo>.occnet" as an extension

DEVICE_ITEMS = [
    ("auto", "Auto", "The GPU when the backend's torch sees one, the CPU otherwise"),
    ("cpu", "CPU", "Always train on the CPU"),
    ("cuda", "GPU (CUDA)", "Train on the NVIDIA GPU; fails clearly when torch has no CUDA"),
]


class OCCNET_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    python_path: StringProperty(
        name="Backend Python",
        description=(
            "Python interpreter with PyTorch that runs the backend. Empty: $OCCNET_PYTHON, "
            "else the first interpreter found with every required package"
        ),
        subtype="FILE_PATH",
    )
    work_dir: StringProperty(
        name="Work Folder",
        description="Where job folders (exports, checkpoints, results, logs) go. Empty: the user cache folder",
        subtype="DIR_PATH",
    )
    device: EnumProperty(name="Device", items=DEVICE_ITEMS, default="auto")
    check_result: StringProperty(name="Last Check", options={"SKIP_SAVE"})
    install_cpu_only: BoolProperty(
        name="CPU Only",
        description="Install PyTorch's CPU build (about 1.4 GB instead of 5-6 GB with CUDA; from PyTorch's own index)",
    )
    install_extra_index_url: StringProperty(
        name="Extra Index URL",
        description="A package index besides PyPI for Install Backend, e.g. PyTorch's CUDA builds for Windows: "
                    "https://download.pytorch.org/whl/cu128",
    )
    install_message: StringProperty(name="Install Result", options={"SKIP_SAVE"})
    install_is_error: BoolProperty(name="Install Failed", options={"SKIP_SAVE"})

    def draw(self, context: bpy.types.Context) -> None:
        draw_preferences(self.layout, self)


def draw_preferences(layout: bpy.types.UILayout, prefs: "OCCNET_AP_preferences") -> None:
    draw_installer(layout, bpy.context, prefs)
    layout.prop(prefs, "python_path")
    layout.prop(prefs, "work_dir")
    layout.prop(prefs, "device")
    layout.operator("occnet.check_backend", icon="CHECKMARK")
    if prefs.check_result:
        ui.draw_message(layout.box(), bpy.context, prefs.check_result)


@dataclass
class Prefs:
    """Plain copy of the preferences (defaults when the add-on is registered without being enabled,
    e.g. a test calling register() directly, where no preferences entry exists)."""

    python_path: str = ""
    work_dir: str = ""
    device: str = "auto"


def get_prefs(context: bpy.types.Context | None = None) -> Prefs:
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    prefs = getattr(addon, "preferences", None)
    if prefs is None:
        return Prefs()
    return Prefs(python_path=prefs.python_path, work_dir=prefs.work_dir, device=prefs.device)


def prefs_struct(context: bpy.types.Context | None = None) -> "OCCNET_AP_preferences | None":
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    return getattr(addon, "preferences", None)


def env_dir() -> Path:
    """The add-on's private environment: in the extension's user folder (kept across updates of the
    add-on), or, for the legacy add-on, in Blender's user config folder."""
    package = ADDON_ID
    try:
        return Path(bpy.utils.extension_path_user(package, create=True)) / "backend"
    except (ValueError, AttributeError, RuntimeError):  # not an extension (legacy add-on, a source checkout)
        return Path(bpy.utils.user_resource("CONFIG", path="occnet", create=True)) / "backend"


def backend_missing() -> bool:
    """No backend in sight, cheaply (no interpreter is started: this runs in draw()): no environment
    of Install Backend, no $OCCNET_PYTHON, no interpreter auto-detected so far, no `.venv` beside the
    backend (a source checkout's)."""
    if installer.ready_python(env_dir()) is not None or os.environ.get(interpreter.ENV_PYTHON):
        return False
    if interpreter.detected_before():
        return False
    try:
        return not env_python(interpreter.backend_root() / ".venv").is_file()
    except OccNetError:
        return True


def draw_installer(layout: bpy.types.UILayout, context: bpy.types.Context, prefs, hint: bool = False) -> None:
    """Install Backend's part of the preferences, and of the sidebar panel while no backend is found
    (``hint``: say why it is there)."""
    install = installer.active()
    box = layout.box()
    if install is None and hint:
        ui.draw_message(box, context, "No backend yet: training runs in its own Python with PyTorch. Install "
                                      "Backend sets one up (once; a few minutes).", icon="INFO")
    if install is not None:
        box.label(text="Installing the backend...", icon="IMPORT")
        ui.draw_message(box, context, install.state.line(install.elapsed))
        box.operator("occnet.cancel_install", icon="CANCEL")
        return
    ready = installer.ready_python(env_dir()) is not None
    row = box.row(align=True)
    row.operator("occnet.install_backend", text="Repair / Upgrade Backend" if ready else "Install Backend",
                 icon="FILE_REFRESH" if ready else "IMPORT")
    if ready:
        row.operator("occnet.remove_backend", text="", icon="TRASH")
    if prefs is not None:
        box.prop(prefs, "install_cpu_only")
        box.label(text="Extra index URL (optional):")
        box.prop(prefs, "install_extra_index_url", text="")
        if prefs.install_message:
            ui.draw_message(box, context, prefs.install_message, icon="ERROR" if prefs.install_is_error else "INFO")


classes = (OCCNET_AP_preferences,)


register, unregister = bpy.utils.register_classes_factory(classes)
