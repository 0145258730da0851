"""Add-on preferences: the machine-specific settings (backend interpreter, work folder, device)."""

from __future__ import annotations

from dataclasses import dataclass

import bpy
from bpy.props import EnumProperty, StringProperty

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

    def draw(self, context: bpy.types.Context) -> None:
        draw_preferences(self.layout, self)


def draw_preferences(layout: bpy.types.UILayout, prefs: "OCCNET_AP_preferences") -> None:
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


classes = (OCCNET_AP_preferences,)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
