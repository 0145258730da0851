# --- Blender add-on fixtures (tests/test_addon*.py) ------------------------------------------
# bpy is imported lazily, inside the fixtures, so backend-only test runs never pay for it.
import os as _os
import sys as _sys
from pathlib import Path as _Path

import pytest as _pytest

_REPO_ROOT = _Path(__file__).resolve().parent.parent
if str(_REPO_ROOT) not in _sys.path:
    _sys.path.insert(0, str(_REPO_ROOT))


@_pytest.fixture
def blender(tmp_path, monkeypatch):
    """A fresh empty Blender session (bpy as a module) with the OccNet add-on registered.

    Job folders go to tmp_path (via XDG_CACHE_HOME, which the add-on's default work folder
    follows), and the backend interpreter is this test's own Python (it has torch).
    """
    bpy = _pytest.importorskip("bpy")
    import blender_addon

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("OCCNET_PYTHON", _sys.executable)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    blender_addon.register()
    try:
        yield bpy
    finally:
        blender_addon.unregister()
        bpy.ops.wm.read_factory_settings(use_empty=True)
