"""The add-on and the backend agree because there is one contract (blender_addon/occnet_contract):
these tests fail when a second definition creeps back in, or when one side drifts from it."""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from occnet_contract import dependencies, protocol, settings

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("occnet_backend", "blender_addon")


def sources(*folders: str) -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for folder in folders for p in (ROOT / folder).rglob("*.py")}


def test_both_halves_import_the_same_files():
    from blender_addon.occnet_contract import settings as addon_settings

    assert Path(addon_settings.__file__).resolve() == Path(settings.__file__).resolve()


def test_the_dependency_list_is_the_one_pyproject_declares():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert declared == list(dependencies.REQUIREMENTS.values())
    # and every module the backend imports at its top level is on it (tqdm and matplotlib once were not)
    imported = set()
    for text in sources("occnet_backend").values():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"occnet_backend", "occnet_contract", "__future__"}
    assert third_party <= set(dependencies.MODULES) | {"tensorboard"}, third_party - set(dependencies.MODULES)


def _emitted_kinds() -> set[str]:
    kinds = set()
    for text in sources("occnet_backend").values():
        kinds |= set(re.findall(r"""\bemit\(\s*["']([a-z_]+)["']""", text))
    return kinds


def test_every_event_the_backend_emits_is_in_the_contract_and_every_kind_is_used():
    emitted = _emitted_kinds()
    assert emitted == set(protocol.EVENTS), (emitted ^ set(protocol.EVENTS))
    with pytest.raises(protocol.ProtocolError, match="unknown event kind 'progres'"):
        protocol.encode_event("progres", step=1)
    with pytest.raises(protocol.ProtocolError, match=r"missing \['path'\]"):
        protocol.encode_event("mesh", shape_id="a")


def test_the_addon_reads_only_kinds_the_contract_defines():
    read = set()
    for text in sources("blender_addon/runner").values():
        read |= set(re.findall(r"""kind == ["']([a-z_]+)["']""", text))
    assert read and read <= set(protocol.EVENTS), read - set(protocol.EVENTS)


def test_exit_codes_and_the_json_line_decoder():
    assert protocol.decode_line(b'{"event": "done", "status": "ok"}\n') == {"event": "done", "status": "ok"}
    assert protocol.decode_line(b"a stray print\n") is None and protocol.decode_line(b"[1, 2]") is None
    assert protocol.decode_line(b'{"id": 3, "ok": false, "error": "x"}')["error"] == "x"
    spelled = [p for p, text in sources(*PACKAGES).items() if "occnet_contract" not in p
               for node in ast.walk(ast.parse(text))
               if isinstance(node, ast.Constant) and type(node.value) is int and node.value == protocol.EXIT_CANCELLED]
    assert not spelled, f"exit code 130 spelled as a number outside the contract in {spelled}"


def test_fit_takes_exactly_the_contract_settings_both_ways():
    from occnet_backend.commands import fit

    parser = argparse.ArgumentParser()
    fit.add_arguments(parser)
    options = {a.dest for a in parser._actions} - {"help", "meshes", "out", "events"}
    assert options == {f.name for f in fields(settings.FitSettings)}
    custom = settings.FitSettings(steps=17, threshold=0.35, width=48, fourier_frequencies=0, device="cpu")
    argv = ["a.ply", "--out", "o", *custom.to_argv()]
    assert settings.FitSettings.from_namespace(parser.parse_args(argv)) == custom


def test_no_second_settings_class_and_the_library_defaults_agree_with_fit():
    """No class outside the contract declares the fit settings again (the add-on once had its own
    FitSettings with steps = 300 against the backend's 600), and where the library's functions
    have the same knobs their defaults are the contract's."""
    import inspect

    from occnet_backend import OccupancyNetwork, extract_mesh

    names = {f.name for f in fields(settings.FitSettings)}
    for path, text in sources(*PACKAGES).items():
        if "occnet_contract" in path:
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                declared = {t.target.id for t in node.body  # `steps: int = 600` (a literal default)
                            if isinstance(t, ast.AnnAssign) and isinstance(t.target, ast.Name)
                            and isinstance(t.value, ast.Constant)}
                assert len(declared & names) < 3, f"{path}: class {node.name} declares {sorted(declared & names)} again"
    defaults = settings.FitSettings()
    for function in (extract_mesh, OccupancyNetwork.extract_mesh):
        signature = inspect.signature(function).parameters
        assert signature["resolution"].default == defaults.resolution, function
        assert signature["threshold"].default == defaults.threshold, function


def test_panel_properties_carry_the_contract_bounds_and_defaults(blender):
    bpy = blender
    rna = bpy.types.Scene.bl_rna.properties["occnet"].fixed_type.properties
    defaults = settings.FitSettings()
    for name in ("steps", "points", "width", "depth", "threshold"):
        meta = settings.setting_field(name).metadata
        prop = rna[name]
        assert prop.default == pytest.approx(getattr(defaults, name)), name
        low, high = meta["minimum"], meta["maximum"]
        if meta["exclusive"]:
            assert low < prop.hard_min and prop.hard_max < high, name
        else:
            assert (prop.hard_min, prop.hard_max) == (low, high), name
    assert [item.identifier for item in rna["resolution"].enum_items] == [str(r) for r in settings.RESOLUTIONS]
    assert rna["resolution"].default == str(defaults.resolution)


def test_the_bpy_free_half_and_the_contract_import_without_bpy_or_torch():
    code = ("import sys; sys.modules['bpy'] = None; sys.modules['torch'] = None\n"
            "import blender_addon.occnet_contract.settings, blender_addon.occnet_contract.protocol\n"
            "import blender_addon.occnet_contract.ply, blender_addon.occnet_contract.files\n"
            "import blender_addon.runner.interpreter, blender_addon.runner.process, blender_addon.runner.jobstate\n"
            "import blender_addon.runner.slider_client\n"
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """module -> the project's modules it imports (at any depth of the file, lazily or not)."""
    files = [p for pk in packages for p in (root / pk).rglob("*.py")]

    def name(p: Path) -> str:
        parts = list(p.relative_to(root).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {name(p): p for p in files}
    graph = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                subs = {f"{base}.{a.name}" for a in node.names}
                deps |= subs if subs & set(modules) else {base}
        graph[module] = {d for d in deps if d in modules and d != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    graph = import_graph(ROOT, ("occnet_backend", "blender_addon"))
    assert len(graph) > 40 and not cycles(graph), cycles(graph)
    # and the test can fail: a cycle made on purpose is found
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
