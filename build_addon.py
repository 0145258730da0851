#!/usr/bin/env python3
"""Build the installable add-on: ``dist/<id>-<version>.zip`` (a Blender 4.2+ extension).

    python build_addon.py            # -> dist/occnet-0.1.0.zip and dist/occnet-0.1.0-legacy.zip

The zip holds ``blender_addon``'s files at its root (as extensions require) plus a copy of
``occnet_backend``, so the installed add-on runs exactly the backend it was built with (its
runner puts the add-on folder first on the backend's PYTHONPATH).

The manifest and the package are checked with ``blender_ext.py``, the validator and builder that
ships inside Blender (and inside the ``bpy`` wheel), run with this plain Python. Without it the
build stops, unless ``--skip-validation`` asks for a plain zip.

The ``-legacy.zip`` has the same files inside one top-level folder, the layout that Blender's
legacy "Install from Disk" (and older versions) expect; ``bl_info`` in ``__init__.py`` makes it
loadable that way.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ADDON = ROOT / "blender_addon"
BACKEND = ROOT / "occnet_backend"
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "*.egg-info", ".*")


def find_blender_ext() -> Path | None:
    """blender_ext.py from $BLENDER_EXT, else from the installed bpy wheel (located, not imported)."""
    if os.environ.get("BLENDER_EXT"):
        return Path(os.environ["BLENDER_EXT"])
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
        if found:
            return found[-1]
    return None


def read_manifest() -> dict:
    with open(ADDON / "blender_manifest.toml", "rb") as f:
        manifest = tomllib.load(f)
    init = (ADDON / "__init__.py").read_text()
    version = tuple(int(x) for x in manifest["version"].split("."))
    if f'"version": {version}' not in init:
        raise SystemExit(
            f"error: blender_manifest.toml has version {manifest['version']} but bl_info in "
            f"blender_addon/__init__.py does not say \"version\": {version}; make them agree."
        )
    return manifest


def stage(dest: Path) -> None:
    """The add-on's files (the contract among them), a copy of the backend package, without caches,
    and the license (GPL-3.0-or-later, as the manifest declares)."""
    shutil.copytree(ADDON, dest, ignore=IGNORE)
    shutil.copytree(BACKEND, dest / "occnet_backend", ignore=IGNORE)
    shutil.copyfile(ROOT / "LICENSE", dest / "LICENSE")


def run_ext(blender_ext: Path, *args: str) -> None:
    cmd = [sys.executable, str(blender_ext), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 or "error" in output.lower().split("\n")[-1]:
        raise SystemExit(f"error: blender_ext.py {args[0]} failed (exit code {proc.returncode}):\n{output}")
    if output:
        print(output)


def legacy_zip(staged: Path, out: Path, folder: str) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(staged.rglob("*")):
            if path.is_file():
                zf.write(path, f"{folder}/{path.relative_to(staged).as_posix()}")


def build(out_dir: Path, *, skip_validation: bool = False, blender_ext: Path | None = None) -> Path:
    """Builds both zips into ``out_dir``; returns the extension zip's path."""
    manifest = read_manifest()
    addon_id, version = manifest["id"], manifest["version"]
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{addon_id}-{version}.zip"
    blender_ext = blender_ext or find_blender_ext()
    if blender_ext is None and not skip_validation:
        raise SystemExit(
            "error: blender_ext.py not found (it ships in the bpy wheel: pip install bpy==5.0.1, or set "
            "BLENDER_EXT to Blender's scripts/addons_core/bl_pkg/cli/blender_ext.py); "
            "--skip-validation builds an unchecked zip."
        )
    with tempfile.TemporaryDirectory(prefix="occnet-build-") as tmp:
        staged = Path(tmp) / addon_id
        stage(staged)
        target.unlink(missing_ok=True)
        if skip_validation:
            with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
                for path in sorted(staged.rglob("*")):
                    if path.is_file():
                        zf.write(path, path.relative_to(staged).as_posix())
        else:
            assert blender_ext is not None
            run_ext(blender_ext, "validate", str(staged))
            run_ext(blender_ext, "build", "--source-dir", str(staged), "--output-filepath", str(target))
            run_ext(blender_ext, "validate", str(target))
        legacy_zip(staged, out_dir / f"{addon_id}-{version}-legacy.zip", addon_id)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (default: dist/)")
    parser.add_argument("--skip-validation", action="store_true", help="build without blender_ext.py checks")
    parser.add_argument("--blender-ext", type=Path, help="path to Blender's blender_ext.py")
    args = parser.parse_args(argv)
    target = build(args.out, skip_validation=args.skip_validation, blender_ext=args.blender_ext)
    with zipfile.ZipFile(target) as zf:
        names = zf.namelist()
    print(f"built {target} ({target.stat().st_size / 1024:.0f} KiB, {len(names)} files, "
          f"{sum(n.startswith('occnet_backend/') for n in names)} of them the bundled backend)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
