"""Exact resume: the RNG streams and where the data order stands, saved and restored.

The data order of an epoch is fixed by the RNG state at its start (a DataLoader seeds and shuffles
from it, with its own generator when it has one), so a checkpoint holds the state at the start of
the current epoch, the batches consumed since, and the state of the moment it was written. A
resume re-creates the epoch's iterator from the first, skips the consumed batches, then restores
the second: the later losses equal the uninterrupted run's (on the CPU, bit for bit).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator

import torch

from occnet_backend.training.checkpoints import capture_rng_state, restore_rng_state


def capture_rng(loader: Iterable) -> dict[str, Any]:
    """The global RNG states plus the loader's own generator (it shuffles, and seeds the workers)."""
    state = capture_rng_state()
    generator = getattr(loader, "generator", None)
    if generator is not None:
        state["loader"] = generator.get_state()
    return state


def restore_rng(loader: Iterable, state: dict[str, Any]) -> None:
    restore_rng_state(state)
    generator = getattr(loader, "generator", None)
    if generator is not None and state.get("loader") is not None:
        generator.set_state(state["loader"].cpu().to(torch.uint8))


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (validation, mesh extraction) without disturbing the training RNG streams."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


class DataPosition:
    """Where training stands in the data: the epoch's starting RNG state and the batches consumed."""

    def __init__(self) -> None:
        self.batches_in_epoch = 0
        self.epoch_rng: dict | None = None
        self.pending_rng: dict | None = None  # the RNG state to continue with after a resume

    def start_epoch(self, loader: Iterable, epoch: int) -> tuple[Iterator[dict], int]:
        """An iterator over this epoch's batches, positioned after the ones already consumed;
        returns it with the number of batches skipped."""
        skip = self.batches_in_epoch
        current = None
        if skip and self.epoch_rng is not None:
            current = self.pending_rng or capture_rng(loader)
            restore_rng(loader, self.epoch_rng)
        else:
            skip = self.batches_in_epoch = 0
            if self.pending_rng is not None:
                restore_rng(loader, self.pending_rng)
            self.epoch_rng = capture_rng(loader)
        self.pending_rng = None
        for holder in (getattr(loader, "dataset", None), getattr(loader, "sampler", None),
                       getattr(loader, "batch_sampler", None)):
            set_epoch = getattr(holder, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)
        iterator = iter(loader)
        skipped = 0
        for _ in range(skip):
            if next(iterator, None) is None:
                break
            skipped += 1
        if current is not None:
            restore_rng(loader, current)
        return iterator, skipped

    def state(self, loader: Iterable, gather) -> dict[str, Any]:
        """For the checkpoint: ``gather`` collects one value per rank (DDP) into a list."""
        return {"batches_in_epoch": self.batches_in_epoch,
                "rng": {"current": gather(capture_rng(loader)), "epoch_start": gather(self.epoch_rng)}}

    def load(self, payload: dict[str, Any], rank: int) -> None:
        """From a checkpoint; a run resumed with another number of processes takes rank 0's streams."""
        self.batches_in_epoch = int(payload.get("batches_in_epoch", 0))
        rng = payload.get("rng") or {}
        if rng.get("current"):
            self.pending_rng = rng["current"][min(rank, len(rng["current"]) - 1)]
        if rng.get("epoch_start"):
            self.epoch_rng = rng["epoch_start"][min(rank, len(rng["epoch_start"]) - 1)]
