"""Validation during training: loss and IoU over the validation loader, and a few MISE meshes so a
user sees the shapes improve, not only a loss curve."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import torch

from occnet_backend.models.network import OccupancyNetwork


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def validate(model: OccupancyNetwork, loader: Iterable[dict], device: torch.device,
             loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> dict[str, float]:
    """Mean loss and IoU over `loader` (eval mode, float32); the model's mode is restored."""
    was_training = model.training
    model.eval()
    losses, inter, union = [], 0.0, 0.0
    try:
        for batch in loader:
            batch = to_device(batch, device)
            logits = model.forward_batch(batch).float()
            target = batch["occupancy"].reshape(logits.shape).to(logits.dtype)
            losses.append(float(loss_fn(logits, target)))
            pred, true = logits >= 0, target > 0.5
            inter += (pred & true).sum().item()
            union += (pred | true).sum().item()
    finally:
        model.train(was_training)
    if not losses:
        raise ValueError("the validation dataloader yielded no batches (is the validation set empty?)")
    return {"val_loss": sum(losses) / len(losses), "val_iou": inter / union if union else 1.0}


def validation_meshes(model: OccupancyNetwork, batch: dict, count: int, resolution: int, out_dir: Path,
                      step: int) -> list[tuple[str, dict, Path]]:
    """MISE meshes of the first `count` shapes of a validation batch, written as
    ``out_dir/step<N>_<shape>.ply``; returns (shape id, mesh, path) for each."""
    from occnet_backend.extraction import extract_mesh
    from occnet_contract.ply import write_ply

    count = min(count, len(batch["points"]))
    ids = batch.get("shape_id", [f"shape{i}" for i in range(count)])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            codes = model.condition_for_batch(batch)
        out = []
        for i in range(count):
            fn = model.logit_fn(condition=codes[i]) if codes is not None else model.logit_fn()
            mesh = extract_mesh(fn, resolution=resolution)
            path = write_ply(out_dir / f"step{step:07d}_{ids[i]}.ply", mesh["vertices"], mesh["faces"])
            out.append((str(ids[i]), mesh, path))
    finally:
        model.train(was_training)
    return out
