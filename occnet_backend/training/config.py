"""Config -> trainer: the seed's config dict (or the same as a YAML/JSON file) builds everything.

    config = {
        'model':     {'type': 'occupancy', 'dim_hidden': 256, 'num_layers': 8, ...},
        'dataset':   {'type': 'mesh', 'data_root': 'data/shapenet', 'num_points': 100000,
                      'surface_sampling': 0.5, 'uniform_sampling': 0.5, 'batch_size': 4},
        'optimizer': {'type': 'adam', 'lr': 1e-4, 'weight_decay': 1e-5, 'schedule': 'cosine'},
        'trainer':   {'device': 'cuda', 'log_dir': 'logs/run', 'checkpoint_dir': 'checkpoints/run',
                      'max_steps': 10000},
    }
    trainer = create_trainer_from_config(config)
    trainer.train()            # runs for the config's max_steps / num_epochs

Every section and key is checked up front: an unknown key or a bad value is a ValueError that
names the key and what is allowed, instead of a late failure inside training.

- ``model.type``: 'occupancy' (`OccupancyNetwork`) or 'conditional' (`ConditionalOccupancyNetwork`);
  the other keys are the class's constructor arguments. A conditional model's ``num_shapes``
  defaults to 'auto': one learned code per training shape (0 when it has an encoder).
- ``dataset.type``: 'synthetic' (`SyntheticOccupancyDataset`), 'mesh' (`OccupancyDataset`; the
  default when ``data_root`` is given) or 'shapenet' (`ShapeNetOccupancyDataset`: the reference
  implementation's preprocessed ShapeNet, ``data_root`` the folder of category folders); the other keys are the dataset's constructor arguments plus
  the loader's ``batch_size``, ``num_workers``, ``shuffle`` and ``validation`` (held-out points).
- ``optimizer``: ``type`` adam/adamw, ``lr``, ``weight_decay``, ``schedule`` constant/cosine/step,
  ``warmup_steps``, ``step_size``, ``gamma``, ``min_lr_ratio``.
- ``trainer``: see `TRAINER_KEYS`.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import os
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from occnet_backend.events import NULL_EVENTS, EventWriter

log = logging.getLogger(__name__)

SECTIONS = ("model", "dataset", "optimizer", "trainer")
MODEL_TYPES = ("occupancy", "conditional")
DATASET_TYPES = ("synthetic", "mesh", "shapenet")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


# key -> (default, check, description of allowed values)
Check = tuple[Any, Callable[[Any], bool], str]
OPTIMIZER_KEYS: dict[str, Check] = {
    "type": ("adam", lambda v: v in ("adam", "adamw"), "'adam' or 'adamw'"),
    "lr": (1e-3, lambda v: _is_number(v) and 0 < v < float("inf"), "a finite number > 0"),
    "weight_decay": (0.0, lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "schedule": ("constant", lambda v: v in ("constant", "cosine", "step"), "'constant', 'cosine' or 'step'"),
    "warmup_steps": (0, lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "step_size": (None, lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1 (steps between LR decays)"),
    "gamma": (0.1, lambda v: _is_number(v) and v > 0, "a number > 0"),
    "min_lr_ratio": (0.0, lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
}
_opt_int = lambda v: v is None or (_is_int(v) and v >= 1)  # noqa: E731
TRAINER_KEYS: dict[str, Check] = {
    "device": ("auto", lambda v: isinstance(v, str) and (v in ("auto", "cpu") or v.startswith("cuda")), "'auto', 'cpu' or 'cuda[:N]'"),
    "log_dir": (None, lambda v: v is None or isinstance(v, (str, os.PathLike)), "a folder path or null"),
    "checkpoint_dir": (None, lambda v: v is None or isinstance(v, (str, os.PathLike)), "a folder path or null"),
    "max_steps": (None, _opt_int, "an integer >= 1 or null"),
    "num_epochs": (None, _opt_int, "an integer >= 1 or null"),
    "val_every": (500, _opt_int, "an integer >= 1 or null (validate only at the end)"),
    "checkpoint_every": (500, _opt_int, "an integer >= 1 or null (save only at the end)"),
    "progress_every": (10, lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "grad_clip": (None, lambda v: v is None or (_is_number(v) and v > 0), "a number > 0 or null"),
    "accumulate_steps": (1, lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "amp": (False, lambda v: v in (True, False, "off", "auto", "bf16", "fp16"), "true, false, 'auto', 'bf16' or 'fp16'"),
    "val_meshes": (2, lambda v: _is_int(v) and v >= 0, "an integer >= 0 (meshes extracted at each validation)"),
    "val_mesh_resolution": (64, lambda v: _is_int(v) and v >= 8, "an integer >= 8 (32·2^k for MISE)"),
    "seed": (0, lambda v: _is_int(v), "an integer"),
    "progress_bar": ("auto", lambda v: v in (True, False, "auto"), "true, false or 'auto'"),
    "handle_signals": (True, lambda v: isinstance(v, bool), "true or false"),
}
LOADER_KEYS: dict[str, Check] = {
    "type": (None, lambda v: v in DATASET_TYPES, f"one of {DATASET_TYPES}"),
    "batch_size": (4, lambda v: _is_int(v) and v >= 1, "an integer >= 1 (shapes per batch)"),
    "num_workers": (0, lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "shuffle": (True, lambda v: isinstance(v, bool), "true or false"),
    "validation": (True, lambda v: isinstance(v, bool), "true or false (held-out points of the training shapes, "
                   "or the 'val' split for an unconditional model on meshes)"),
}


class ConfigError(ValueError):
    """A config problem; the message names the section, the key and what is allowed."""


def load_config(source: dict | str | os.PathLike) -> dict[str, Any]:
    """A config dict from a dict (deep-copied) or a .yaml/.yml/.json file."""
    if isinstance(source, dict):
        return copy.deepcopy(source)
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"{path}: config files must end in .yaml, .yml or .json")
    except (ValueError, ImportError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {err}") from None
    except Exception as err:  # yaml.YAMLError and friends
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with sections {list(SECTIONS)}")
    return data


def _check_section(name: str, values: dict, schema: dict[str, Check], extra: set[str] = frozenset()) -> dict:
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{name}' must be a mapping, got {type(values).__name__}")
    unknown = sorted(set(values) - set(schema) - set(extra))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in config section '{name}'; allowed: {sorted(set(schema) | set(extra))}")
    out = {}
    for key, (default, check, allowed) in schema.items():
        value = values.get(key, default)
        if key in values and not check(value):
            raise ConfigError(f"config {name}.{key} must be {allowed}, got {value!r}")
        out[key] = value
    return out


def _constructor_kwargs(section: str, values: dict, func: Callable, skip: set[str] = frozenset()) -> dict:
    """Check `values` against `func`'s keyword arguments (names, and types inferred from defaults)."""
    params = {k: p for k, p in inspect.signature(func).parameters.items() if k != "self" and k not in skip}
    unknown = sorted(set(values) - set(params))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in config section '{section}'; allowed: {sorted(params) + sorted(skip)}")
    for key, value in values.items():
        default = params[key].default
        if default is inspect.Parameter.empty or default is None or value is None:
            continue
        if isinstance(default, bool):
            ok, allowed = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, allowed = _is_int(value) or (isinstance(value, (list, tuple)) and key == "num_points"), "an integer"
        elif isinstance(default, float):
            ok, allowed = _is_number(value), "a number"
        elif isinstance(default, str):
            ok, allowed = isinstance(value, str), "a string"
        else:
            ok, allowed = True, ""
        if not ok:
            raise ConfigError(f"config {section}.{key} must be {allowed}, got {value!r}")
    return dict(values)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _datasets(section: dict, model_section: dict, seed: int, data_root: str | None) -> tuple[Any, Any]:
    """(train dataset, validation dataset or None) from the dataset section."""
    values = {k: v for k, v in section.items() if k not in LOADER_KEYS}
    kind = section.get("type") or ("mesh" if (data_root or values.get("data_root")) else "synthetic")
    if kind not in DATASET_TYPES:
        raise ConfigError(f"config dataset.type must be one of {DATASET_TYPES}, got {kind!r}")
    values.setdefault("seed", seed)
    num_shapes = model_section.get("num_shapes", 0 if model_section.get("encoder") else "auto")
    with_codes = model_section.get("type") == "conditional" and num_shapes != 0
    if kind == "synthetic":
        from occnet_backend.data.synthetic import SyntheticOccupancyDataset

        values = _constructor_kwargs("dataset", values, SyntheticOccupancyDataset.__init__)
        try:
            train = SyntheticOccupancyDataset(**values)
            val = SyntheticOccupancyDataset(**values) if section["validation"] else None
        except ValueError as err:
            raise ConfigError(f"config dataset: {err}") from None
        if val is not None:
            val.set_epoch(10**6)  # same shapes, points no training epoch draws
        return train, val
    if kind == "shapenet":
        from occnet_backend.data.shapenet import ShapeNetOccupancyDataset as dataset_class
    else:
        from occnet_backend.data.dataset import OccupancyDataset as dataset_class
    if data_root is not None:
        values["data_root"] = data_root
    if not values.get("data_root"):
        raise ConfigError(f"config dataset.data_root is required for dataset.type {kind!r} (or pass --data DIR)")
    if kind == "shapenet":  # the reader calls its folder `root`
        values["root"] = values.pop("data_root")
    values = _constructor_kwargs("dataset", values, dataset_class.__init__)
    train = dataset_class(**values)
    val = None
    if section["validation"]:
        plain = {"augment": False} if kind == "mesh" else {}
        if with_codes:  # codes exist only for training shapes: validate on their other points
            val = dataset_class(**{**values, "seed": values["seed"] + 1, **plain})
        else:
            try:
                val = dataset_class(**{**values, "split": "val", **plain})
            except ValueError as err:
                log.info("no validation set: %s", err)
    return train, val


def _model(section: dict, num_train_shapes: int) -> torch.nn.Module:
    values = dict(section)
    kind = values.pop("type", "occupancy")
    if kind not in MODEL_TYPES:
        raise ConfigError(f"config model.type must be one of {MODEL_TYPES}, got {kind!r}")
    if kind == "occupancy":
        from occnet_backend.models.network import OccupancyNetwork as cls
    else:
        from occnet_backend.models.network import ConditionalOccupancyNetwork as cls

        num_shapes = values.get("num_shapes", "auto" if not values.get("encoder") else 0)
        if num_shapes == "auto":
            num_shapes = num_train_shapes
        values["num_shapes"] = num_shapes
    values = _constructor_kwargs("model", values, cls.__init__, skip={"type"})
    try:
        return cls(**values)
    except ValueError as err:
        raise ConfigError(f"config model: {err}") from None


def resolve_config(config: dict | str | os.PathLike) -> dict[str, Any]:
    """The config with every section present and every default filled in (checked)."""
    config = load_config(config)
    unknown = sorted(set(config) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; allowed: {list(SECTIONS)}")
    for name in SECTIONS:
        config.setdefault(name, {})
        if config[name] is None:
            config[name] = {}
        if not isinstance(config[name], dict):
            raise ConfigError(f"config section '{name}' must be a mapping, got {type(config[name]).__name__}")
    config["optimizer"] = _check_section("optimizer", config["optimizer"], OPTIMIZER_KEYS)
    config["trainer"] = _check_section("trainer", config["trainer"], TRAINER_KEYS)
    loader = _check_section("dataset", {k: v for k, v in config["dataset"].items() if k in LOADER_KEYS}, LOADER_KEYS)
    config["dataset"] = {**config["dataset"], **loader}
    model_type = config["model"].get("type", "occupancy")
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"config model.type must be one of {MODEL_TYPES}, got {model_type!r}")
    return config


def create_trainer_from_config(
    config: dict | str | os.PathLike,
    *,
    events: EventWriter = NULL_EVENTS,
    data_root: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    device: str | None = None,
    max_steps: int | None = None,
):
    """Build model, datasets, loaders, optimizer and an `OccupancyTrainer` from a config.

    Args:
        config: the config dict, or a path to a .yaml/.json file with the same content.
        events: JSON-lines event writer for the trainer.
        data_root, device, max_steps: override dataset.data_root, trainer.device, trainer.max_steps.
        out_dir: a run folder: log_dir and checkpoint_dir default to OUT/logs and OUT/checkpoints.

    The returned trainer's ``train()`` runs for the config's ``max_steps`` / ``num_epochs``;
    ``trainer.config`` is the resolved config (stored in every checkpoint). Under `torchrun` this
    joins the process group and shards the training set with a DistributedSampler.
    """
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    from occnet_backend.training.distributed import init_distributed
    from occnet_backend.training.trainer import OccupancyTrainer

    config = resolve_config(config)
    t, d, o = config["trainer"], config["dataset"], config["optimizer"]
    if device is not None:
        t["device"] = device
    if max_steps is not None:
        if not _is_int(max_steps) or max_steps < 1:
            raise ConfigError(f"max_steps must be an integer >= 1, got {max_steps!r}")
        t["max_steps"] = max_steps
    if out_dir is not None:
        t["log_dir"] = t["log_dir"] or str(Path(out_dir) / "logs")
        t["checkpoint_dir"] = t["checkpoint_dir"] or str(Path(out_dir) / "checkpoints")
    if data_root is not None:
        d["data_root"] = str(data_root)
        d.setdefault("type", None)
        if d["type"] is None:
            d["type"] = "mesh"
    if o["schedule"] == "step" and o["step_size"] is None:
        raise ConfigError("config optimizer.step_size is required for optimizer.schedule 'step' (steps between decays)")

    info, resolved_device = init_distributed(t["device"])
    _seed_everything(t["seed"])
    train_set, val_set = _datasets(d, config["model"], t["seed"], d.get("data_root"))
    model = _model(config["model"], len(train_set))

    batch_size = min(d["batch_size"], len(train_set))
    if batch_size < d["batch_size"]:
        log.info("batch_size %d > %d training shapes: using %d", d["batch_size"], len(train_set), batch_size)
    generator = torch.Generator().manual_seed(t["seed"])
    sampler = None
    if info.enabled:
        sampler = DistributedSampler(train_set, num_replicas=info.world_size, rank=info.rank, shuffle=d["shuffle"],
                                     seed=t["seed"], drop_last=True)
        batch_size = max(1, min(batch_size, len(train_set) // info.world_size))
    loader_options = dict(num_workers=d["num_workers"], generator=generator, pin_memory=resolved_device.type == "cuda",
                          persistent_workers=d["num_workers"] > 0)
    if len(getattr(train_set, "scales", ())) > 1 and not info.enabled:
        # multi-scale training: a new sample size for every batch (the dataset alone changes it per epoch)
        from occnet_backend.data.dataset import MultiscaleBatchSampler

        batches = MultiscaleBatchSampler(train_set, batch_size, shuffle=d["shuffle"], drop_last=True, seed=t["seed"])
        train_loader = DataLoader(train_set, batch_sampler=batches, **loader_options)
    else:
        train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=d["shuffle"] if sampler is None else False,
                                  sampler=sampler, drop_last=True, **loader_options)
    val_loader = None
    if val_set is not None:
        val_loader = DataLoader(val_set, batch_size=min(d["batch_size"], len(val_set)), shuffle=False,
                                num_workers=d["num_workers"])
    trainer = OccupancyTrainer(
        model, train_loader, val_loader, device=resolved_device, optimizer=o["type"], lr=o["lr"],
        weight_decay=o["weight_decay"], events=events, progress_every=t["progress_every"],
        lr_schedule=o["schedule"], warmup_steps=o["warmup_steps"], lr_step_size=o["step_size"],
        lr_gamma=o["gamma"], min_lr_ratio=o["min_lr_ratio"], grad_clip=t["grad_clip"],
        accumulate_steps=t["accumulate_steps"], amp=t["amp"], log_dir=t["log_dir"],
        checkpoint_dir=t["checkpoint_dir"], checkpoint_every=t["checkpoint_every"], val_every=t["val_every"],
        val_meshes=t["val_meshes"], val_mesh_resolution=t["val_mesh_resolution"],
        progress_bar=t["progress_bar"], handle_signals=t["handle_signals"], config=_jsonable_config(config),
    )
    trainer.num_epochs, trainer.max_steps = t["num_epochs"], t["max_steps"]
    return trainer


def _jsonable_config(config: dict) -> dict:
    """The config as JSON primitives (checkpoints are loaded with weights_only=True)."""
    return json.loads(json.dumps(config, default=str))
