"""Training loop for occupancy networks, readable top to bottom.

`OccupancyTrainer.train` runs steps until `num_epochs` or `max_steps`; each step is one batch of
{'points': [B, N, 3], 'occupancy': [B, N, 1]} and minimises `model.compute_loss(logits, target)`
(binary cross-entropy on logits unless the user assigned another loss).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Iterable

import torch
from torch import nn

from occnet_backend.events import NULL_EVENTS, EventWriter

log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; an explicit 'cuda' without a GPU is a clear error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} was requested but PyTorch sees no CUDA GPU "
            f"(torch {torch.__version__}); use device='cpu' or 'auto', or install a CUDA build of torch"
        )
    if str(device) not in ("cpu",) and not str(device).startswith("cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return torch.device(device)


def occupancy_iou(logits: torch.Tensor, occupancy: torch.Tensor, threshold: float = 0.5) -> float:
    """IoU of the predicted (p >= threshold) and true occupancy over a set of points."""
    level = math.log(threshold / (1 - threshold))
    pred = logits >= level
    true = occupancy.reshape(logits.shape) > 0.5
    union = (pred | true).sum().item()
    return 1.0 if union == 0 else (pred & true).sum().item() / union


class OccupancyTrainer:
    """Trains `model` on batches from `train_dataloader`.

    Args:
        model: an `OccupancyNetwork` (or anything with the same forward/compute_loss).
        train_dataloader: yields dicts with 'points' [B, N, 3] and 'occupancy' [B, N, 1].
        val_dataloader: optional; `validate()` reports loss and IoU on it.
        device: 'auto' (GPU when there is one), 'cpu' or 'cuda'.
        optimizer: a torch optimizer; default Adam(lr, weight_decay).
        events: JSON-lines event writer (the Blender add-on reads it); silent by default.
        progress_every: steps between progress events / log lines.
    """

    def __init__(
        self,
        model: nn.Module,
        train_dataloader: Iterable[dict],
        val_dataloader: Iterable[dict] | None = None,
        device: str | torch.device = "auto",
        optimizer: torch.optim.Optimizer | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        events: EventWriter = NULL_EVENTS,
        progress_every: int = 10,
    ):
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.train_dataloader = train_dataloader
        self.val_dataloader = val_dataloader
        self.optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.events = events
        self.progress_every = max(1, int(progress_every))
        self.step = 0
        self.epoch = 0
        self.history: list[dict[str, Any]] = []

    def _to_device(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        points = batch["points"].to(self.device, non_blocking=True)
        occupancy = batch["occupancy"].to(self.device, non_blocking=True)
        return points, occupancy

    def train_step(self, batch: dict) -> dict[str, float]:
        """One optimisation step; returns the batch loss and IoU."""
        self.model.train()
        points, occupancy = self._to_device(batch)
        logits = self.model(points)
        target = occupancy.reshape(logits.shape).to(logits.dtype)
        loss = self.model.compute_loss(logits, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return {"loss": float(loss.detach()), "iou": occupancy_iou(logits.detach(), target)}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean loss and IoU over the validation loader (eval mode)."""
        if self.val_dataloader is None:
            return {}
        self.model.eval()
        losses, inter, union = [], 0, 0
        for batch in self.val_dataloader:
            points, occupancy = self._to_device(batch)
            logits = self.model(points)
            target = occupancy.reshape(logits.shape).to(logits.dtype)
            losses.append(float(self.model.compute_loss(logits, target)))
            pred, true = logits >= 0, target > 0.5
            inter += (pred & true).sum().item()
            union += (pred | true).sum().item()
        return {"val_loss": sum(losses) / max(len(losses), 1), "val_iou": inter / union if union else 1.0}

    def train(self, num_epochs: int | None = None, max_steps: int | None = None) -> list[dict[str, Any]]:
        """Train until `num_epochs` epochs or `max_steps` steps (whichever comes first); returns history."""
        if num_epochs is None and max_steps is None:
            raise ValueError("give num_epochs or max_steps (or both)")
        total = max_steps
        if total is None:
            try:
                total = num_epochs * len(self.train_dataloader)  # type: ignore[arg-type]
            except TypeError:
                total = None
        n_params = sum(p.numel() for p in self.model.parameters())
        self.events.emit("start", device=str(self.device), parameters=n_params, total_steps=total)
        log.info("training on %s, %d parameters, %s steps", self.device, n_params, total or "?")
        start = time.perf_counter()
        points_seen = 0
        while (num_epochs is None or self.epoch < num_epochs) and (max_steps is None or self.step < max_steps):
            dataset = getattr(self.train_dataloader, "dataset", None)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(self.epoch)
            batches = 0
            for batch in self.train_dataloader:
                metrics = self.train_step(batch)
                batches += 1
                points_seen += batch["points"].shape[:-1].numel()
                elapsed = time.perf_counter() - start
                self.history.append({"step": self.step, "epoch": self.epoch, **metrics, "seconds": elapsed})
                if self.step % self.progress_every == 0 or self.step == total:
                    rate = points_seen / max(elapsed, 1e-9)
                    eta = (total - self.step) * elapsed / self.step if total else None
                    self.events.emit(
                        "progress", step=self.step, total=total, loss=metrics["loss"], iou=metrics["iou"],
                        points_per_s=rate, eta_s=eta,
                    )
                    log.info("step %d/%s loss %.4f iou %.3f %.0f pts/s", self.step, total or "?",
                             metrics["loss"], metrics["iou"], rate)
                if max_steps is not None and self.step >= max_steps:
                    break
            if batches == 0:
                raise ValueError("the training dataloader yielded no batches (is the dataset empty?)")
            self.epoch += 1
        return self.history
