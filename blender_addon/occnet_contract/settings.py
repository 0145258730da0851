"""What `fit` can be told, defined once: each setting is one field here (default, bounds, help,
its CLI flag), read by the backend's argument parser, the add-on's panel properties and the
add-on's command line builder. Defaults are measured for 2 CPU cores (BENCHMARKS.md).

Also here: the grid sizes marching cubes can reach, and the boxes that evaluation and training
sample in (unit-cube coordinates), because the panel, `serve`, `eval` and the metrics must agree.
"""

from __future__ import annotations

import argparse
import math
import numbers
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

MISE_BASE_RESOLUTION = 32
"""MISE evaluates a 32³ grid and doubles it; a resolution is reachable when it is 32·2^k."""
RESOLUTIONS = (32, 64, 128, 256, 512)
"""The resolutions offered (panel, sliders, `fit`, `serve` for MISE); 512 is the memory limit."""
MAX_DENSE_RESOLUTION = 256
"""A dense grid evaluates every node: 17 M points at 256³; refused above it."""

EVAL_BOX = 0.55
"""Half-width of the evaluation box [-0.55, 0.55]³: the reference protocol's IoU points, the
extraction grid and the slice pictures."""
TRAIN_BOX = 0.6
"""Half-width of the box uniform training points fill: wider than EVAL_BOX, or floaters grow at
the extraction box's border."""

DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("off", "auto", "bf16", "fp16")
ENCODINGS = ("auto", "grid", "fourier")
SHAPES_PER_STEP = 8
"""Shapes in one training step of `fit`, its `points` split among them; a model of more shapes takes
N / SHAPES_PER_STEP steps to train each once. Why 8, not 4: an 8-shape model that saw every shape in every step
(1024 points each) stopped at 475 steps where one that saw half of them (2048 points each) took 650, a fifth
sooner, 0.003-0.007 IoU closer to its single fits on six of its eight shapes (BENCHMARKS.md); more would thin
each shape's points."""
PREVIEW_RESOLUTION = 64
"""The grid of the preview `fit` shows before training: the source's own signed distance
(no network), 64³ so that it comes soon: 0.1-0.5 s for the pyvista meshes here, seconds for
CAD parts of long slivers."""
TYPES = {"int": int, "float": float, "str": str}
"""A field's annotation (a string: this module uses postponed annotations) -> its Python type."""
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class SettingsError(ValueError):
    """Invalid settings; the message names every wrong setting by its CLI flag and the rule."""


def setting(default: Any, help: str, *, minimum: float | None = None, maximum: float | None = None,
            choices: tuple = (), exclusive: bool = False, label: str = "") -> Any:
    """A dataclass field with what a parser or a panel needs to know about it.

    ``exclusive``: the bounds themselves are not allowed (a probability strictly in (0, 1)).
    """
    return field(default=default, metadata=dict(help=help, minimum=minimum, maximum=maximum, choices=choices,
                                                exclusive=exclusive, label=label))


@dataclass
class FitSettings:
    """Everything `occnet_backend fit` takes besides its paths."""

    steps: int = setting(600, "most training steps (training ends sooner once the surface stops improving on "
                         f"held-out points); a step trains up to {SHAPES_PER_STEP} shapes, so N > {SHAPES_PER_STEP} "
                         f"shapes get N/{SHAPES_PER_STEP} times as many",
                         minimum=1, maximum=1_000_000)
    points: int = setting(8192, "labelled points per training step, over all shapes", minimum=64, maximum=4_194_304)
    resolution: int = setting(128, "marching-cubes grid of the result, cells per side", choices=RESOLUTIONS)
    threshold: float = setting(0.5, "occupancy probability at which the surface is extracted",
                               minimum=0.0, maximum=1.0, exclusive=True)
    device: str = setting("auto", "auto (a GPU when there is one) | cpu | cuda[:N]")
    amp: str = setting("auto", "mixed precision: auto = fp16 on a GPU, bf16 on a CPU with native bf16 "
                       "(half the time, same quality), else off", choices=AMP_MODES, label="Precision")
    encoding: str = setting("auto", "input encoding: auto = grid | grid (learned multi-resolution features: a "
                            "close fit in seconds; a blend of shapes blends their distance fields) | fourier (random "
                            "Fourier features, the earlier network; a blend blends the shapes' codes)", choices=ENCODINGS)
    width: int = setting(128, "hidden units per layer of the Fourier network (a grid's decoder is 64 x 1)",
                         minimum=8, maximum=1024)
    depth: int = setting(5, "residual blocks of the Fourier network", minimum=1, maximum=16)
    fourier_frequencies: int = setting(64, "random Fourier features of the input (0 turns them off)",
                                       minimum=0, maximum=1024, label="Frequencies")
    fourier_scale: float = setting(2.0, "standard deviation of the Fourier frequencies, cycles per unit",
                                   minimum=0.0, maximum=64.0, exclusive=True)
    lr: float = setting(1e-3, "learning rate", minimum=0.0, maximum=1.0, exclusive=True, label="Learning Rate")
    seed: int = setting(0, "random seed (same seed, same result)", minimum=0, maximum=2**31 - 1)
    cached_points: int = setting(200_000, "labelled points computed per shape before training; more give a closer, "
                                 "smoother surface on large parts with thin walls or fine detail (CAD, scans), in "
                                 "up to twice the fit's time", minimum=1000, maximum=20_000_000, label="Labelled Points")
    workers: int = setting(1, "processes preparing shapes in parallel (libigl already labels on every core)",
                           minimum=1, maximum=64)

    def validate(self) -> "FitSettings":
        """Every rule at once, so a user fixes all of them in one go; numbers of another numeric
        type (numpy's, 300.0 for an integer) become the field's type. Returns self."""
        problems = [p for f in fields(self) if (p := _problem(f, getattr(self, f.name)))]
        if not problems:
            for f in fields(self):
                if f.type in ("int", "float"):
                    setattr(self, f.name, TYPES[f.type](getattr(self, f.name)))
        if not _DEVICE.match(str(self.device)):
            problems.append(f"{flag('device')} must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if problems:
            raise SettingsError("; ".join(problems))
        return self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_argv(self) -> list[str]:
        """The CLI flags that give the backend exactly these settings (the add-on's side)."""
        argv: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            argv += [flag(f.name), repr(float(value)) if f.type == "float" else str(value)]
        return argv

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One option per setting, named as `to_argv` names them (the backend's side)."""
        for f in fields(cls):
            parser.add_argument(flag(f.name), type=TYPES[f.type], default=f.default, choices=f.metadata["choices"] or None,
                                help=f"{f.metadata['help']} (default {f.default})")

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> "FitSettings":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)}).validate()


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def setting_field(name: str):
    """The dataclass field of one setting: its default and metadata (help, bounds, choices, label)."""
    return next(f for f in fields(FitSettings) if f.name == name)


def _problem(f, value: Any) -> str:
    m = f.metadata
    name = flag(f.name)
    number = f.type in ("int", "float")
    kind = "a whole number" if f.type == "int" else "a number"
    if number and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        return f"{name} must be {kind}, got {value!r}"
    if f.type == "int" and not float(value).is_integer():
        return f"{name} must be a whole number, got {value!r}"
    if number and not math.isfinite(value):
        return f"{name} must be a finite number, got {value!r}"
    if f.type == "str" and not isinstance(value, str):
        return f"{name} must be text, got {value!r}"
    if m["choices"] and value not in m["choices"]:
        why = " (MISE doubles a 32³ grid)" if f.name == "resolution" else ""
        return f"{name} must be one of {', '.join(map(str, m['choices']))}{why}, got {value!r}"
    lo, hi = m["minimum"], m["maximum"]
    if m["exclusive"] and lo is not None and not lo < value < hi:
        return f"{name} must lie strictly between {_number(lo)} and {_number(hi)}, got {value!r}"
    if not m["exclusive"] and lo is not None and not lo <= value <= hi:
        return f"{name} must be between {_number(lo)} and {_number(hi)}, got {value!r}"
    return ""


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def check_resolution(resolution: Any, method: str = "mise") -> int:
    """A resolution the extractor can reach, as an int; ValueError naming the allowed ones."""
    if isinstance(resolution, bool) or not isinstance(resolution, int):
        raise ValueError(f"resolution must be an integer, got {resolution!r}")
    if method == "dense":
        if not 2 <= resolution <= MAX_DENSE_RESOLUTION:
            raise ValueError(f"a dense grid's resolution must be between 2 and {MAX_DENSE_RESOLUTION}, got {resolution}")
    elif resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {', '.join(map(str, RESOLUTIONS))} "
                         f"(MISE doubles a {MISE_BASE_RESOLUTION}³ grid), got {resolution}")
    return resolution
