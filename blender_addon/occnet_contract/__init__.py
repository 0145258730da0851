"""The agreement between the Blender add-on and the PyTorch backend, written down once.

Both halves import this package: the add-on as its own subpackage (``from .occnet_contract
import ...``, as Blender extensions must import their own modules relatively), the backend as
``occnet_contract`` (the same files: the add-on folder is on the backend's PYTHONPATH, and
``pyproject.toml`` installs this folder under that name). So the zip carries it without a copy,
and a source checkout has exactly one.

Only the standard library and numpy may be imported here: this code runs inside Blender.

- ``settings``: what `fit` can be told (fields, defaults, bounds, CLI flags both ways), the
  resolutions marching cubes can reach, the evaluation and training boxes.
- ``protocol``: exit codes, every event kind with its fields, the one line encoder/decoder, the
  `serve` requests and responses.
- ``ply``: the one PLY reader/writer; ``files``: the one atomic write.
- ``dependencies``: the backend's pinned requirements (held equal to ``pyproject.toml``).
"""
