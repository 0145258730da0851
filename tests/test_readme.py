"""The README's examples run as written, so they cannot rot.

Python blocks run in plain Python; a block that imports bpy is a Blender script and runs in a bpy
session with the add-on enabled (the `blender` fixture), as it would in `blender --background`.
The training YAML is checked against a tiny ShapeNet folder in the reference layout.
"""

import re
import runpy
from pathlib import Path

import pytest
import yaml

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


PYTHON = [b for b in blocks("python") if "import bpy" not in b]
BLENDER = [b for b in blocks("python") if "import bpy" in b]


def test_readme_has_examples():
    assert PYTHON and BLENDER and blocks("yaml")


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_readme_python_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "example.py"
    script.write_text(PYTHON[index], encoding="utf-8")
    runpy.run_path(str(script), run_name="__main__")


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLENDER)))
def test_readme_blender_script_runs(index, blender, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "script.py"
    script.write_text(BLENDER[index], encoding="utf-8")
    runpy.run_path(str(script), run_name="__main__")
    assert (tmp_path / "reconstructed.blend").is_file()
    results = [ob for ob in blender.data.objects if ob.name.endswith(" OccNet")]
    assert len(results) == 2 and all(len(ob.data.polygons) > 100 for ob in results)
    assert "vertices, checkpoint" in capsys.readouterr().out


def test_readme_training_config_is_accepted(tmp_path):
    from occnet_backend.training.config import create_trainer_from_config
    from test_shapenet import write_model

    (config,) = [yaml.safe_load(b) for b in blocks("yaml")]
    category = config["dataset"]["categories"][0]
    for i, model in enumerate(("a", "b")):
        write_model(tmp_path / "ShapeNet" / category / model, 0.3, seed=i)
    (tmp_path / "ShapeNet" / category / "train.lst").write_text("a\nb\n")
    config["dataset"]["data_root"] = str(tmp_path / "ShapeNet")
    config["trainer"]["device"] = "cpu"  # the README's run is for a GPU box; the config is what is checked
    config["dataset"]["num_workers"] = 0
    trainer = create_trainer_from_config(config)
    assert type(trainer.model).__name__ == "OccupancyNetwork" and trainer.max_steps == 300000
