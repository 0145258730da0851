"""Small drawing helpers shared by the panels and operators: wrapped messages, sidebar redraws."""

from __future__ import annotations

import re

import bpy


def redraw_sidebars(context: bpy.types.Context | None = None) -> None:
    """Tags only the 3D Views' sidebars: a whole-viewport redraw costs 0.4-2 s on software GL."""
    wm = getattr(context or bpy.context, "window_manager", None)
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                for region in area.regions:
                    if region.type == "UI":
                        region.tag_redraw()


# a token is a run of non-blanks in which a quoted name counts as one character ("'Suzanne OccNet':");
# a quote only opens a name at the start of a word, so "doesn't" stays a plain word
_TOKEN = re.compile(r"(?:(?:(?<=\s)|^)'[^'\n]*'|\S)+")


def wrap(text: str, width: int) -> list[str]:
    """Splits a message into label-sized lines (Blender labels do not wrap).

    A quoted name ('Suzanne OccNet') is never split across lines, nor is a path; a token longer
    than a line gets a line of its own."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in _TOKEN.findall(paragraph):
            if line and len(line) + 1 + len(word) > width:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        lines.append(line)
    return lines


def label_width(context: bpy.types.Context, fallback: int = 40) -> int:
    """About how many characters fit on one label line of the region being drawn."""
    region = getattr(context, "region", None)
    if region is None or region.width <= 1:
        return fallback
    scale = context.preferences.system.ui_scale or 1.0
    return max(20, int((region.width - 70 * scale) / (7.0 * scale)))


def draw_message(layout: bpy.types.UILayout, context: bpy.types.Context, text: str, icon: str = "NONE",
                 max_lines: int = 12) -> None:
    """A message as wrapped labels, the icon on the first line only."""
    lines = wrap(text, label_width(context))
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + ["... (the full text is in the system console and the log)"]
    col = layout.column(align=True)
    for i, line in enumerate(lines):
        col.label(text=line, icon=icon if i == 0 else ("BLANK1" if icon != "NONE" else "NONE"))
