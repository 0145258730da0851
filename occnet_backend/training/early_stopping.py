"""Stop training when the surface stops improving, measured on points it never trained on.

Why not a fixed step count: an easy shape (a sphere, a nut) is done in a third of the steps a
thin-walled part needs, and the step count that suits the part wastes the time of every other
shape. What is measured is what the user gets: the IoU of the network's inside/outside decision on
held-out labelled points, half of them near the surface (where the result changes).
"""

from __future__ import annotations

from typing import Callable


class HeldOutIoU:
    """Every `every` steps, the IoU of the model's decision on held-out points; `converged()` once
    it has not risen by `min_delta` for `patience` checks in a row (and `min_steps` have run).

    `evaluate` returns that IoU for the model as it is now; `history` keeps (step, IoU) pairs.
    """

    def __init__(self, evaluate: Callable[[], float], every: int = 25, patience: int = 3, min_delta: float = 5e-4,
                 min_steps: int = 100):
        if every < 1 or patience < 1 or min_steps < 0 or not min_delta >= 0:
            raise ValueError(f"every and patience must be >= 1, min_steps and min_delta >= 0, got {every}, "
                             f"{patience}, {min_steps}, {min_delta}")
        self.evaluate, self.every, self.patience = evaluate, every, patience
        self.min_delta, self.min_steps = min_delta, min_steps
        self.best = -1.0
        self.stale = 0
        self.history: list[tuple[int, float]] = []

    def converged(self, step: int) -> bool:
        """Called after each optimizer step (`step` steps done)."""
        if step % self.every:
            return False
        score = float(self.evaluate())
        self.history.append((step, score))
        if score > self.best + self.min_delta:
            self.best, self.stale = score, 0
        else:
            self.best = max(self.best, score)
            self.stale += 1
        return step >= self.min_steps and self.stale >= self.patience
