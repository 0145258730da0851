"""Losses for occupancy training.

`OccupancyTrainer` minimises ``model.compute_loss(logits, target)``: the callable receives the
network's **logits** (float32, even under mixed precision) and the 0/1 target of the same shape.
Assign any such callable to ``model.compute_loss`` to change the training loss, e.g.
``model.compute_loss = FocalLoss(alpha=0.25, gamma=2.0)``.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class FocalLoss(nn.Module):
    """Focal loss (Lin et al., 2017): α_t·(1 − p_t)^γ·BCE, mean over points.

    Down-weights the many easy points far from the surface so training concentrates on the
    ambiguous ones near it. Works on logits (numerically stable, what the trainer passes); set
    ``from_logits=False`` to feed probabilities instead, as in the seed's example.

    Args:
        alpha: weight of the positive (inside) class; the negative class gets 1 − alpha.
            ``None`` weighs both classes equally (1).
        gamma: focusing exponent; 0 gives α-weighted BCE.
        from_logits: whether `forward` receives logits (default) or probabilities.
    """

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0, from_logits: bool = True):
        super().__init__()
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] or None, got {alpha}")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.alpha = alpha
        self.gamma = gamma
        self.from_logits = from_logits

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.reshape(pred.shape).to(pred.dtype)
        if self.from_logits:
            ce = F.binary_cross_entropy_with_logits(pred, target, reduction="none")
            p = torch.sigmoid(pred)
        else:
            p = pred.clamp(1e-7, 1 - 1e-7)
            ce = F.binary_cross_entropy(p, target, reduction="none")
        p_t = p * target + (1 - p) * (1 - target)
        loss = ce * (1 - p_t).pow(self.gamma)
        if self.alpha is not None:
            loss = loss * (self.alpha * target + (1 - self.alpha) * (1 - target))
        return loss.mean()

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, from_logits={self.from_logits}"
