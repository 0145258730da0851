# Two entry points (see README): `make demo` runs the main job, `make test` runs the tests: the
# suite on bpy and plain CPython, then the real-window suite (a windowed Blender 4.3 under Xvfb,
# tests/gui; needs root; `make unit-test` or `make gui-test` runs one half).
# All create .venv with Python 3.11 and install what they need.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: demo test unit-test gui-test venv clean bench-meshes

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# real meshes nobody on the team wrote (airplane, ant, nut): PLY files inside the pyvista wheel;
	# only the files are used, so its heavy vtk dependency is not installed
	$(PY) -m pip install -q --no-deps pyvista==0.49.1
	touch $@

# more real meshes for bench/quality.py: files inside the pybullet and pymeshlab wheels (never imported)
bench-meshes: venv
	$(PY) -m pip install -q --no-deps pybullet==3.2.7 pymeshlab==2025.7.post1

demo: venv
	$(PY) examples/demo.py $(ARGS)

test: unit-test gui-test

unit-test: venv
	$(PY) -m pytest -q $(ARGS)

# Blender's modal operator, timers and sidebar only run in a real window: see tests/gui/run.py
gui-test: venv
	$(PY) tests/gui/run.py

clean:
	rm -rf $(VENV) out dist .pytest_cache
