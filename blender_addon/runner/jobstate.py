"""What a backend's event stream has said so far, for the panel and the progress printer.

No bpy in here. Tolerant by design: a malformed or unknown event is ignored, never raised, so a
backend newer or older than the add-on cannot crash Blender's timer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class JobState:
    """What the event stream has told so far; the panel and the progress printer read this."""

    device: str = ""
    step: int = 0
    total: int = 0
    loss: float | None = None
    iou: float | None = None
    points_per_s: float | None = None
    eta_s: float | None = None
    checkpoint: str = ""
    meshes: dict[str, str] = field(default_factory=dict)  # shape_id -> PLY path
    previews: dict[str, str] = field(default_factory=dict)  # shape_id -> PLY of the direct field, before training
    metrics: dict[str, Any] = field(default_factory=dict)
    parameters: Any = None  # what the backend says about its model (e.g. the parameter count)
    error: str = ""
    done: str = ""  # "", "ok", "cancelled", "error"
    phase: str = "starting"
    revision: int = 0  # counts applied events: the panel redraws only when it changed

    def apply(self, event: dict[str, Any]) -> None:
        """Folds one event into the state. Tolerant: a malformed field is ignored, never raised,
        so a backend newer or older than the add-on cannot crash Blender's timer."""
        self.revision += 1
        try:
            self._apply(event)
        except (TypeError, ValueError, AttributeError):
            pass

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":
            self.device = str(event.get("device", ""))
            self.total = _int(event.get("total_steps"), self.total)
            self.parameters = event.get("parameters")
            self.phase = "training"
        elif kind == "stage":
            self.phase = {"prepare": "preparing", "train": "training", "extract": "extracting"}.get(
                str(event.get("name")), str(event.get("name", self.phase)))
        elif kind == "progress":
            self.step = _int(event.get("step"), self.step)
            self.total = _int(event.get("total"), self.total)
            for name in ("loss", "iou", "points_per_s", "eta_s"):
                if name in event:  # absent: keep the last value; null: unknown now
                    setattr(self, name, _num(event[name]))
            self.phase = "training"
        elif kind == "checkpoint":
            self.checkpoint = str(event.get("path", ""))
        elif kind == "preview":
            self.previews[str(event.get("shape_id"))] = str(event.get("path"))
        elif kind == "mesh":
            self.meshes[str(event.get("shape_id"))] = str(event.get("path"))
            self.phase = "extracting"
        elif kind == "metrics":
            fields = {k: v for k, v in event.items() if k not in ("event", "time", "shape_id")}
            if "shape_id" in event:
                self.metrics[str(event["shape_id"])] = fields
            else:
                self.metrics.update(fields)
        elif kind == "error":
            self.error = str(event.get("message", "unknown error"))
        elif kind == "done":
            self.done = str(event.get("status", ""))
            if self.done == "error" and not self.error:
                self.error = str(event.get("message", ""))
            self.phase = "done"

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total else 0.0

    @property
    def phase_text(self) -> str:
        """What the backend is doing, for the progress bar."""
        if self.phase == "training":
            if not self.step:
                return "Starting training..."
            return f"Step {self.step} / {self.total}" if self.total else f"Step {self.step}"
        return PHASE_TEXT.get(self.phase, self.phase.capitalize())

    def evaluation_line(self, shape_ids: list[str]) -> str:
        """The backend's evaluation of the results (not the last training batch): IoU, Chamfer-L1,
        closedness; the mean over shapes when there are several."""
        found = [self.metrics[s] for s in shape_ids if isinstance(self.metrics.get(s), dict)]
        if not found:
            return ""

        def mean(key: str) -> float | None:
            values = [_num(m.get(key)) for m in found]
            values = [v for v in values if v is not None and math.isfinite(v)]
            return sum(values) / len(values) if values else None

        parts = []
        iou, chamfer = mean("iou"), mean("chamfer_l1")
        prefix = "mean " if len(found) > 1 else ""
        if iou is not None:
            parts.append(f"{prefix}IoU {iou:.3f}")
        if chamfer is not None:
            parts.append(f"Chamfer-L1 {chamfer:.4f}")
        closed = sum(bool(m.get("watertight")) for m in found)
        parts.append(("watertight" if closed else "not watertight") if len(found) == 1 else f"{closed}/{len(found)} watertight")
        return ", ".join(parts)

    def progress_line(self) -> str:
        parts = [f"step {self.step}/{self.total}" if self.total else self.phase]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.iou is not None:
            parts.append(f"IoU {self.iou:.3f}")
        if self.eta_s is not None:
            parts.append(f"ETA {format_seconds(self.eta_s)}")
        if self.device:
            parts.append(self.device)
        return ", ".join(parts)


PHASE_TEXT = {
    "starting": "Starting the backend...",
    "preparing": "Preparing data (sampling and labelling points)...",
    "extracting": "Extracting and evaluating the surface...",
    "done": "Finishing...",
}


def _int(value: Any, default: int) -> int:
    try:
        return default if value is None else int(value)
    except (TypeError, ValueError):
        return default


def _num(value: Any) -> float | None:
    """A finite float, or None (missing, malformed, NaN or infinite: the panel shows '-')."""
    try:
        number = None if value is None else float(value)
    except (TypeError, ValueError):
        return None
    return number if number is not None and math.isfinite(number) else None


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
