"""What a training run tells the world: JSON-lines events (the add-on), log lines, a tqdm bar in a
terminal, TensorBoard scalars and meshes. Only rank 0 speaks; the others get a silent log."""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from occnet_backend.events import NULL_EVENTS, EventWriter

log = logging.getLogger("occnet_backend.training")

PROGRESS_INTERVAL_S = 1.0
"""A progress event at least this often on a slow machine, besides every `progress_every` steps."""


class RunLog:
    def __init__(self, events: EventWriter, log_dir: Path | None, progress_every: int, progress_bar: bool | str,
                 is_main: bool, world_size: int):
        self.events = events if is_main else NULL_EVENTS
        self.log_dir = log_dir if is_main else None
        self.progress_every = max(1, int(progress_every))
        self.show_bar = is_main and (progress_bar is True or (progress_bar == "auto" and sys.stderr.isatty()))
        self.world_size = world_size
        self.writer = None
        self.bar = None

    def start(self, *, device: torch.device, parameters: int, step: int, total: int | None, precision: str) -> None:
        """A run begins (also a resumed one): the `start` event, the bar, the TensorBoard writer."""
        from tqdm import tqdm

        self.events.emit("start", device=str(device), parameters=parameters, total_steps=total, step=step,
                         world_size=self.world_size)
        log.info("training on %s (%d process%s), %d parameters, step %d of %s; precision %s", device,
                 self.world_size, "es" if self.world_size > 1 else "", parameters, step, total or "?", precision)
        if self.log_dir is not None and self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.log_dir))
        self.bar = tqdm(total=total, initial=step, disable=not self.show_bar, file=sys.stderr, dynamic_ncols=True,
                        unit="step")
        self.started = self.progress_at = time.perf_counter()
        self.first_step = step
        self.points = self.compute_seconds = 0.0

    def step(self, record: dict[str, Any], points: float, compute_seconds: float, total: int | None) -> None:
        """After an optimizer step: the bar, scalars, and (every `progress_every` steps, at the last
        and at least every PROGRESS_INTERVAL_S) a progress event with the rate and the ETA."""
        self.points += points
        self.compute_seconds += compute_seconds
        now = time.perf_counter()
        record["seconds"] = now - self.started
        self.bar.update(1)
        step = record["step"]
        for name in ("loss", "iou", "lr"):
            self.scalar(f"train/{name}", record[name], step)
        if step % self.progress_every and step != total and now - self.progress_at < PROGRESS_INTERVAL_S:
            return
        self.progress_at = now
        rate = self.points * self.world_size / max(self.compute_seconds, 1e-9)
        done = step - self.first_step
        eta = (total - step) * (now - self.started) / done if total and done else None
        self.events.emit("progress", step=step, total=total, loss=record["loss"], iou=record["iou"],
                         points_per_s=rate, eta_s=eta, lr=record["lr"], epoch=record["epoch"])
        self.scalar("train/points_per_s", rate, step)
        log.info("step %d/%s loss %.4f iou %.3f lr %.2e %.0f pts/s", step, total or "?", record["loss"], record["iou"],
                 record["lr"], rate)

    def scalar(self, tag: str, value: float | None, step: int) -> None:
        if self.writer is not None and value is not None and math.isfinite(value):
            self.writer.add_scalar(tag, value, step)

    def mesh(self, tag: str, vertices, faces, step: int) -> None:
        if self.writer is not None and len(faces):
            self.writer.add_mesh(tag, torch.as_tensor(vertices[None]), faces=torch.as_tensor(faces[None].astype("int32")),
                                 global_step=step)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()
