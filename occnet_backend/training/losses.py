"""Losses for occupancy training, and the contract for a user's own.

`OccupancyTrainer` minimises ``model.compute_loss(pred, target)``. What ``pred`` is depends on who
wrote the loss:

- a **user's loss** (any callable assigned to ``model.compute_loss``, e.g. the seed's
  ``FocalLoss`` that calls ``F.binary_cross_entropy(pred, target)``) gets **probabilities** in
  [0, 1] (float32, also under mixed precision), as the seed's example implies;
- a loss that declares ``takes_logits = True`` (the built-in ones below, and the models' default
  binary cross-entropy) gets the network's **logits**, the numerically stable path.

``target`` is the 0/1 occupancy, float32, the same shape as ``pred``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F


def _probabilities_and_ce(pred: torch.Tensor, target: torch.Tensor, from_logits: bool) -> tuple[torch.Tensor, torch.Tensor]:
    target = target.reshape(pred.shape).to(pred.dtype)
    if from_logits:
        return torch.sigmoid(pred), F.binary_cross_entropy_with_logits(pred, target, reduction="none")
    return pred, F.binary_cross_entropy(pred, target, reduction="none")


class FocalLoss(nn.Module):
    """Focal loss as the seed defines it: ``alpha · (1 − p_t)^gamma · BCE``, mean over points.

    Down-weights the many easy points far from the surface so training concentrates on the
    ambiguous ones near it. ``alpha`` is a constant factor (it scales the loss and so the step
    size, not the balance between the classes: that is `BalancedFocalLoss`).

    Args:
        alpha: constant factor.
        gamma: focusing exponent; 0 gives ``alpha · BCE``.
        from_logits: whether `forward` receives logits (default: what the trainer hands a loss
            with ``takes_logits``, numerically stable) or probabilities, as in the seed's class.
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, from_logits: bool = True):
        super().__init__()
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.alpha, self.gamma, self.from_logits = float(alpha), float(gamma), from_logits

    @property
    def takes_logits(self) -> bool:
        return self.from_logits

    def _focal(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, ce = _probabilities_and_ce(pred, target, self.from_logits)
        t = target.reshape(pred.shape)
        p_t = torch.where(t == 1, p, 1 - p)
        return (1 - p_t).pow(self.gamma) * ce

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (self.alpha * self._focal(pred, target)).mean()

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, from_logits={self.from_logits}"


class BalancedFocalLoss(FocalLoss):
    """Focal loss with class balancing (Lin et al., 2017): ``alpha_t · (1 − p_t)^gamma · BCE``,
    where the inside class is weighted ``alpha`` and the outside class ``1 − alpha``."""

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, from_logits: bool = True):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        super().__init__(alpha=max(alpha, 1e-12), gamma=gamma, from_logits=from_logits)
        self.alpha = float(alpha)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target.reshape(pred.shape).to(pred.dtype)
        return ((self.alpha * t + (1 - self.alpha) * (1 - t)) * self._focal(pred, target)).mean()


def training_loss(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(logits, target) -> loss`` for the trainer: a loss that takes logits gets them, any other
    (a user's, written for probabilities like the seed's) gets ``sigmoid(logits)``."""
    if getattr(loss, "takes_logits", False):
        return loss
    return lambda logits, target: loss(torch.sigmoid(logits), target)
