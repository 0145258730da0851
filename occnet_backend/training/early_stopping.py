"""Stop training when the surface stops improving, measured on points it never trained on.

Why not a fixed step count: an easy shape (a sphere, a nut) is done in a third of the steps a
thin-walled part needs, and the step count that suits the part wastes the time of every other
shape. What is measured is what the user gets: the IoU of the network's inside/outside decision on
held-out labelled points, half of them near the surface (where the result changes).

What is measured, and kept, is an exponential moving average of the weights (Polyak averaging,
`torch.optim.swa_utils`), not the weights of the last step: at a fit's constant learning rate the
last step's weights jitter, and so does their held-out IoU (a duck's: 0.9875, 0.9750, 0.9635 in 50
steps), so a stall was noise as often as convergence, and a 60-step anneal at a tenth of the rate
had to calm the weights after it. The average's IoU rises smoothly, so two flat checks mean the
surface has stopped improving, and it ends a fit as good as the anneal did in about 100 fewer
steps (BENCHMARKS.md). The averaged weights of the best check are kept too: a loss spike late in a
run (an 8-shape fit's held-out IoU fell 0.9456 -> 0.9320 in 50 steps) then costs only the steps it
took to notice, not the result.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator

import torch


CHECK_EVERY = 25
"""Steps between two held-out checks of a model that trains all its shapes every step (1-4 shapes:
`fitting` scales it for more)."""
PATIENCE = 2
"""Checks in a row without a rise of `min_delta` after which training stops."""


class HeldOutIoU:
    """Every `every` steps, the IoU on held-out points of the averaged weights; `converged()` once
    it has not risen by `min_delta` for `patience` checks in a row (and `min_steps` have run), counting
    from the first check with any surface.

    The trainer calls `start(parameters)` before its first step, `update()` after every optimizer
    step and `finish()` when training ends, so the model ends with whichever measures best: the
    averaged weights, those of the best check, or its own.
    `evaluate` returns the IoU of the model as its parameters are now; `history` keeps (step, IoU).
    `average`: the decay of the moving average per step (0.95: about the last 20 steps).
    """

    def __init__(self, evaluate: Callable[[], float], every: int = CHECK_EVERY, patience: int = PATIENCE,
                 min_delta: float = 5e-4, min_steps: int = 100, average: float = 0.95):
        if every < 1 or patience < 1 or min_steps < 0 or not min_delta >= 0 or not 0 <= average < 1:
            raise ValueError(f"every and patience must be >= 1, min_steps and min_delta >= 0, average in [0, 1), "
                             f"got {every}, {patience}, {min_steps}, {min_delta}, {average}")
        self.evaluate, self.every, self.patience = evaluate, every, patience
        self.min_delta, self.min_steps, self.average = min_delta, min_steps, average
        self.best = -1.0
        self.stale = 0
        self.history: list[tuple[int, float]] = []
        self._parameters: list[torch.Tensor] = []
        self._averaged: list[torch.Tensor] = []
        self._best_weights: list[torch.Tensor] = []  # the average at the check that measured best
        self._best_score = -1.0

    def start(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Begin averaging from these parameters' current values (again on every call)."""
        from torch.optim.swa_utils import get_ema_multi_avg_fn

        self._parameters = [p for p in parameters if p.requires_grad]
        self._averaged = [p.detach().clone() for p in self._parameters]
        self._best_weights, self._best_score = [], -1.0
        self._lerp = get_ema_multi_avg_fn(self.average)

    @torch.no_grad()
    def update(self) -> None:
        """Fold the parameters as they are after an optimizer step into the average."""
        if self._averaged:
            self._lerp(self._averaged, [p.detach() for p in self._parameters], 1)

    @contextlib.contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own after it."""
        if not self._averaged:
            yield
            return
        own = [p.detach().clone() for p in self._parameters]
        _copy(self._parameters, self._averaged)
        try:
            yield
        finally:
            _copy(self._parameters, own)

    def finish(self) -> None:
        """The model keeps the best on the held-out points of: the averaged weights, the averaged
        weights of the best check, its own weights (the trainer calls this when training ends; a
        tie goes to the average). Why not always the average: it lags the weights by about
        1 / (1 - average) steps, which a run of a few dozen steps (a quick look, a test) has not
        left behind, while the weights are still improving fast."""
        if not self._averaged:
            return
        own = float(self.evaluate())
        with self.averaged_weights():
            averaged = float(self.evaluate())
        best = max(averaged, self._best_score, own)
        if averaged == best:
            _copy(self._parameters, self._averaged)
        elif self._best_score == best:
            _copy(self._parameters, self._best_weights)

    def converged(self, step: int) -> bool:
        """Called after each optimizer step (`step` steps done)."""
        if step % self.every:
            return False
        with self.averaged_weights():
            score = float(self.evaluate())
        self.history.append((step, score))
        if score > self._best_score:
            if not self._best_weights:
                self._best_weights = [a.clone() for a in self._averaged]
            else:
                _copy(self._best_weights, self._averaged)
            self._best_score = score
        if score > self.best + self.min_delta:
            self.best, self.stale = score, 0
        elif self.best > 0:  # no stall before a surface appears (the average lags the weights at first)
            self.best = max(self.best, score)
            self.stale += 1
        return step >= self.min_steps and self.stale >= self.patience


@torch.no_grad()
def _copy(targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    for target, source in zip(targets, sources):
        target.copy_(source)
