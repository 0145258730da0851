"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``, models rebuilt by name.

A checkpoint is a plain dict of tensors and primitive containers (no pickled classes), so loading
it can never run code, and a `kill -9` at any moment leaves the previous file intact (each save
goes to a temporary file beside the target, is fsynced, then renamed over it).

Training checkpoint layout (``format: 'occnet-train-1'``)::

    format            'occnet-train-1'
    model_class       'OccupancyNetwork' | 'ConditionalOccupancyNetwork'
    model_config      the model's constructor keyword arguments (model.config)
    model             state_dict (CPU tensors)
    optimizer         optimizer.state_dict()
    scheduler         LR scheduler state_dict (or None)
    scaler            AMP GradScaler state_dict (empty when unused)
    step, epoch       optimizer steps done; epochs completed
    batches_in_epoch  batches consumed in the current epoch (resume skips them)
    best_metric       best validation IoU so far (or None)
    config            the user's full config dict, if the trainer came from one
    rng               {'current': [per rank], 'epoch_start': [per rank]}: torch/cuda/numpy/python states
    history           the per-step history records
    shape_ids         training shape ids in code-table order (when the dataset has them)
    world_size, torch_version

`load_model(path)` rebuilds the model from any checkpoint of this package that stores
``model_class``/``model_config`` and weights (training checkpoints and `fit`'s ``occnet-fit-1``).
"""

from __future__ import annotations

import os
import pickle
import re
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from occnet_contract.files import atomic_output

TRAIN_FORMAT = "occnet-train-1"
KNOWN_FORMATS = (TRAIN_FORMAT, "occnet-fit-1")


def model_classes() -> dict[str, type[nn.Module]]:
    """The model classes a checkpoint may name: only our own, rebuilt from their stored config."""
    from occnet_backend.models.network import ConditionalOccupancyNetwork, OccupancyNetwork

    return {"OccupancyNetwork": OccupancyNetwork, "ConditionalOccupancyNetwork": ConditionalOccupancyNetwork}


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside DDP / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def model_payload(model: nn.Module) -> dict[str, Any]:
    """{'model_class', 'model_config', 'model'} for a model of this package (weights on the CPU)."""
    model = unwrap_model(model)
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise ValueError(
            f"{type(model).__name__} has no `config` dict of constructor arguments, so a checkpoint could not "
            "rebuild it; use OccupancyNetwork or ConditionalOccupancyNetwork (or give your model a .config)"
        )
    return {
        "model_class": type(model).__name__,
        "model_config": dict(config),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """torch.save `payload` to `path` atomically (temporary file, fsync, rename) and return the path."""
    with atomic_output(path) as f:
        torch.save(payload, f)
    return Path(path)


def _damaged_record(path: Path) -> str:
    """The first zip record whose CRC does not match ('' when all do, or the file is no zip at
    all: torch.load then says what is wrong). torch itself does not check the CRCs, so a flipped
    bit would load as garbage weights."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() or ""
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return ""


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    formats: tuple[str, ...] = KNOWN_FORMATS) -> dict[str, Any]:
    """A checkpoint dict, read with weights_only=True. ValueError naming the file if it is missing,
    corrupt (e.g. truncated) or not written by this package in one of `formats`."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a checkpoint file; pass the .pt file inside it (e.g. {path / 'checkpoint.pt'})")
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint file; check the path (training writes CHECKPOINT_DIR/last.pt)")
    damaged = _damaged_record(path)
    if damaged:
        raise ValueError(f"{path}: the checkpoint is corrupt (record {damaged!r} fails its CRC check: the file was "
                         "damaged on disk or in a copy); use another checkpoint (e.g. best.pt) or train again")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        text = str(err)
        found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
        if isinstance(err, pickle.UnpicklingError) and found:
            what = f" ({found.group(1)})"
            raise ValueError(
                f"{path}: refused: it holds Python objects{what} beyond tensors and plain data, which could run "
                "code when loaded; occnet_backend's checkpoints never do. Use a checkpoint written by `train` or `fit`"
            ) from None
        lines = [line.strip() for line in text.splitlines() if line.strip()] or [""]
        reason = lines[0].split(" In PyTorch 2.6")[0][:200]  # never pass on torch's weights_only=False hint
        raise ValueError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {reason}); "
            "the file is corrupt, truncated or not a PyTorch checkpoint of occnet_backend: "
            "use another checkpoint (e.g. best.pt) or train again"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") not in formats:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"{path}: not a checkpoint written by occnet_backend (format {found!r}, expected one of "
            f"{list(formats)}); pass a file written by `train` or `fit`"
        )
    return payload


def build_model(model_class: str, model_config: dict[str, Any]) -> nn.Module:
    """A fresh model of a known class from its constructor config; ValueError for anything else."""
    classes = model_classes()
    if model_class not in classes:
        raise ValueError(f"unknown model class {model_class!r}; known: {sorted(classes)}")
    try:
        return classes[model_class](**model_config)
    except TypeError as err:
        raise ValueError(f"model config does not fit {model_class}: {err}") from None


MAX_PARAMETERS = 200_000_000  # 0.8 GB of fp32 weights, far above any model this project trains


def model_from_payload(payload: dict[str, Any], source: str | os.PathLike = "checkpoint") -> nn.Module:
    """Rebuild the model a loaded checkpoint holds (class + config + weights); ValueError naming `source`.

    The model is first built on the meta device (no memory): a crafted config asking for 160 GB
    is refused by its parameter count, and weights of the wrong shapes before anything is allocated."""
    state = payload.get("model")
    config = payload.get("model_config", {})
    if not isinstance(payload.get("model_class"), str) or not isinstance(state, dict):
        raise ValueError(f"{source}: the checkpoint holds no model (model_class / weights missing)")
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise ValueError(f"{source}: the checkpoint's model_config is not a mapping of settings")
    state = stored_weights(payload)
    try:
        with torch.device("meta"):
            skeleton = build_model(payload["model_class"], config)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    count = sum(p.numel() for p in skeleton.parameters())
    if count > MAX_PARAMETERS:
        raise ValueError(f"{source}: its model config asks for {count / 1e6:,.0f} M parameters (the limit is "
                         f"{MAX_PARAMETERS / 1e6:.0f} M); it was not written by occnet_backend, or was edited")
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    stored = {k: tuple(v.shape) if torch.is_tensor(v) else None for k, v in state.items()}
    if expected != stored:
        key = next(k for k in sorted(set(expected) | set(stored)) if expected.get(k) != stored.get(k))
        raise ValueError(f"{source}: weights do not match the stored model config ({key}: stored "
                         f"{stored.get(key, 'nothing')}, the config needs {expected.get(key, 'nothing')})")
    try:
        model = build_model(payload["model_class"], config)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{source}: weights do not match the stored model config ({str(err).splitlines()[0]})") from None
    return model


def stored_weights(payload: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's weights in today's layout (older layouts renamed, see models.parts)."""
    from occnet_backend.models.parts import upgrade_state_dict

    config = payload.get("model_config") or {}
    conditional = payload.get("model_class") == "ConditionalOccupancyNetwork" or bool(config.get("dim_condition"))
    return upgrade_state_dict(dict(payload["model"]), conditional)


def load_training_checkpoint(path: str | os.PathLike, model_class: str, data: dict | None,
                             allow_different_data: bool = False) -> dict[str, Any]:
    """A training checkpoint to resume from, checked: its format, its counters, its model class,
    and the data it was trained on (refused when it differs, unless ``allow_different_data``)."""
    payload = load_checkpoint(path, map_location="cpu")
    saved = payload.get("data") if isinstance(payload.get("data"), dict) else None
    if (not allow_different_data and saved and data
            and (saved.get("type"), saved.get("fingerprint")) != (data.get("type"), data.get("fingerprint"))):
        hint = f"pass --data {saved['root']}" if saved.get("root") else "use the saved run's dataset settings"
        raise ValueError(
            f"{path} was trained on {describe_data(saved)}, but this run trains on {describe_data(data)}; "
            f"to resume, {hint}. To continue training on this data deliberately, pass --allow-different-data "
            "(resume(..., allow_different_data=True))"
        )
    if payload.get("format") != TRAIN_FORMAT:
        raise ValueError(f"{path}: a {payload.get('format')!r} checkpoint holds no training state; "
                         f"resume needs a {TRAIN_FORMAT!r} file (CHECKPOINT_DIR/last.pt)")
    missing = [k for k in ("model_class", "model", "optimizer", "step", "epoch") if k not in payload]
    if missing or not isinstance(payload.get("step"), int) or not isinstance(payload.get("epoch"), int):
        raise ValueError(f"{path}: the training checkpoint lacks {', '.join(missing) or 'a valid step/epoch'}; "
                         "it was not written by `train`, or was edited; resume from another checkpoint")
    if payload["model_class"] != model_class:
        raise ValueError(f"{path}: holds a {payload['model_class']}, but this trainer trains a "
                         f"{model_class}; use the same model settings as the saved run")
    return payload


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the trained model stored in a checkpoint (class + config + weights), in eval mode.

    Works for training checkpoints (``last.pt``, ``best.pt``) and `fit` checkpoints. Raises
    ValueError naming the file when it cannot be read or its weights do not fit its config.
    """
    model = model_from_payload(load_checkpoint(path), path)
    if device is not None:
        from occnet_backend.training.precision import resolve_device

        model.to(resolve_device(device))
    return model.eval()


# -- RNG states as tensors / primitives (weights_only-safe) --------------------------------------
def capture_rng_state() -> dict[str, Any]:
    """torch (CPU and every CUDA device), numpy and python `random` states, weights_only-safe."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_state[0]), "state": list(py_state[1]), "gauss_next": py_state[2]},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state` (CUDA states only when the device count matches)."""
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu().to(torch.uint8) for s in cuda])
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


def data_fingerprint(kind: str, parts: object) -> str:
    """A short content hash of what a dataset holds (for `identity()`: resume refuses other data)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps([kind, parts], sort_keys=True, default=str).encode()).hexdigest()[:16]


def describe_data(identity: dict | None) -> str:
    """'the mesh dataset at /data (split train, 12 shapes)' for messages."""
    if not identity:
        return "an unrecorded dataset"
    where = f" at {identity['root']}" if identity.get("root") else ""
    split = f"split {identity['split']}, " if identity.get("split") else ""
    return f"the {identity.get('type')} dataset{where} ({split}{identity.get('size')} shapes)"
