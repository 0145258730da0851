"""The panel and preferences draw code, run against real UILayouts in bpy 5.0.1.

Without a display Blender never draws panels, but ``window_manager.popup_menu`` hands its
callback a real UILayout even in the background. Building the popup afterwards crashes
headless bpy (segfault after the callback returns; seen with 5.0.1), so the script runs in its
own process and leaves with ``os._exit`` from inside the callback, once everything was drawn.
The add-on is enabled the legacy way (repo root on sys.path + addon_utils.enable), which also
checks that it loads as a legacy add-on with working preferences.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("bpy")
ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import os, sys, traceback
    sys.path.insert(0, sys.argv[1])
    os.environ["XDG_CACHE_HOME"] = sys.argv[2]
    os.environ["OCCNET_PYTHON"] = sys.executable
    import bpy, addon_utils
    bpy.ops.wm.read_factory_settings(use_empty=True)
    assert addon_utils.enable("blender_addon", default_set=True) is not None, "legacy enable failed"
    from blender_addon.blender import jobs, operators, panel, preferences

    PANELS = (panel.OCCNET_PT_main, panel.OCCNET_PT_settings, panel.OCCNET_PT_backend)

    def draw_all(layout, context, state):
        for cls in PANELS:
            # The panel's methods on a plain object that carries the real layout.
            holder = type("Holder", (), {k: v for k, v in vars(cls).items() if callable(v)})()
            holder.layout = layout
            cls.draw(holder, context)
        preferences.draw_preferences(layout, preferences.prefs_struct())
        print("drawn:", state, flush=True)

    def states(layout, context):
        draw_all(layout, context, "nothing selected")
        bpy.ops.mesh.primitive_monkey_add()
        suzanne = context.active_object
        bpy.ops.object.empty_add()
        suzanne.select_set(True)
        draw_all(layout, context, "mesh and empty selected")
        preferences.prefs_struct().check_result = "Backend ready: " + "word " * 40
        status = context.window_manager.occnet_status
        status.message, status.is_error, status.job_dir = "'X' has no faces " * 5, True, sys.argv[2]
        draw_all(layout, context, "error shown")
        job = operators.create_job(context)
        job.state.apply({"event": "start", "device": "cpu", "total_steps": 300})
        job.state.apply({"event": "progress", "step": 120, "total": 300, "loss": 0.1, "iou": 0.8, "eta_s": 75})
        jobs._ACTIVE = job  # the panel's "running" state
        draw_all(layout, context, "running")
        job.state.apply({"event": "checkpoint", "path": "m.pt"})
        draw_all(layout, context, "extracting")
        jobs._ACTIVE = None

    def callback(self, context):
        try:
            states(self.layout, context)
            print("ALL DRAWN", flush=True)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            os._exit(0)

    bpy.context.window_manager.popup_menu(callback, title="OccNet")
    """
)


def test_panels_and_preferences_draw_in_every_state(tmp_path):
    script = tmp_path / "draw.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(ROOT), str(tmp_path / "cache")],
                         capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert "Traceback" not in text, text
    for state in ("nothing selected", "mesh and empty selected", "error shown", "running", "extracting"):
        assert f"drawn: {state}" in out.stdout, text
    assert "ALL DRAWN" in out.stdout
