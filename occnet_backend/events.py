"""JSON-lines event stream: the only channel from a backend process to the Blender add-on.

One JSON object per line on stdout, each with an ``event`` key. Human-readable logs go to
stderr, so the stream stays machine-readable. Event kinds used across the backend:

- ``start``: device, parameters, total_steps
- ``progress``: step, total, loss, iou, points_per_s, eta_s
- ``checkpoint``: path
- ``mesh``: shape_id, path
- ``metrics``: per-shape or mean metrics
- ``error``: message
- ``done``: status ("ok" | "cancelled" | "error") plus anything useful
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any, TextIO


def jsonable(value: Any) -> Any:
    """Make numpy/torch scalars and non-finite floats JSON-safe (NaN/inf become null)."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


class EventWriter:
    """Writes events as JSON lines when enabled; a disabled writer does nothing.

    Disabled by default so library users (and tests) get no stray stdout output.
    """

    def __init__(self, stream: TextIO | None = None, enabled: bool = False):
        self.stream = stream if stream is not None else sys.stdout
        self.enabled = enabled

    def emit(self, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {"event": event, "time": round(time.time(), 3), **jsonable(fields)}
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()


NULL_EVENTS = EventWriter(enabled=False)
