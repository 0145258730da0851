"""Stop training when the surface stops improving, measured on points it never trained on.

Why not a fixed step count: an easy shape (a sphere, a nut) is done in a third of the steps a
thin-walled part needs, and the step count that suits the part wastes the time of every other
shape. What is measured is what the user gets: the IoU of the network's inside/outside decision on
held-out labelled points, half of them near the surface (where the result changes).

Once the IoU stalls, a short anneal follows (`anneal_steps` at `anneal_factor` x the learning rate)
before training ends: at a constant rate the last weights still carry the optimizer's jitter, and
60 steps at a tenth of it lift held-out IoU by up to 0.007 and cut a blending model's far-field
distance error by a third (BENCHMARKS.md).
"""

from __future__ import annotations

from typing import Callable


class HeldOutIoU:
    """Every `every` steps, the IoU of the model's decision on held-out points; `converged()` once
    it has not risen by `min_delta` for `patience` checks in a row (and `min_steps` have run).

    Then `lr_factor` turns to `anneal_factor` for `anneal_steps` more steps, after which
    `converged()` is true. `evaluate` returns that IoU for the model as it is now; `history` keeps
    (step, IoU) pairs.
    """

    def __init__(self, evaluate: Callable[[], float], every: int = 25, patience: int = 3, min_delta: float = 5e-4,
                 min_steps: int = 100, anneal_steps: int = 60, anneal_factor: float = 0.1):
        if every < 1 or patience < 1 or min_steps < 0 or not min_delta >= 0 or anneal_steps < 0 or not 0 < anneal_factor <= 1:
            raise ValueError(f"every and patience must be >= 1, min_steps, min_delta and anneal_steps >= 0, anneal_factor "
                             f"in (0, 1], got {every}, {patience}, {min_steps}, {min_delta}, {anneal_steps}, {anneal_factor}")
        self.evaluate, self.every, self.patience = evaluate, every, patience
        self.min_delta, self.min_steps = min_delta, min_steps
        self.anneal_steps, self.anneal_factor = anneal_steps, anneal_factor
        self.best = -1.0
        self.stale = 0
        self.stalled_at: int | None = None
        self.history: list[tuple[int, float]] = []

    @property
    def lr_factor(self) -> float:
        """What the learning rate is multiplied by now: 1 until the IoU stalls, then `anneal_factor`."""
        return 1.0 if self.stalled_at is None else self.anneal_factor

    def converged(self, step: int) -> bool:
        """Called after each optimizer step (`step` steps done)."""
        if self.stalled_at is not None:
            return step - self.stalled_at >= self.anneal_steps
        if step % self.every:
            return False
        score = float(self.evaluate())
        self.history.append((step, score))
        if score > self.best + self.min_delta:
            self.best, self.stale = score, 0
        else:
            self.best = max(self.best, score)
            self.stale += 1
        if step >= self.min_steps and self.stale >= self.patience:
            self.stalled_at = step
        return self.stalled_at is not None and self.anneal_steps == 0
