"""What a backend process says and how it ends: exit codes, event lines, `serve` requests.

A backend command started with ``--events jsonl`` writes one JSON object per line on stdout,
each with an ``event`` key naming one of `EVENTS`; human-readable logs go to stderr. `serve`
answers requests (one JSON object per line on stdin) with one response line each, after a
``ready`` event. `encode_event` refuses a kind or a missing field the contract does not list, so
the backend cannot drift from what the add-on reads; `decode_line` is the add-on's one parser.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1  # bad input or a failure: one `error: ...` line on stderr and an `error` event
EXIT_USAGE = 2  # the command line itself is wrong (argparse's code)
EXIT_CANCELLED = 130  # SIGINT or SIGTERM: the step finishes and the checkpoint is saved first

STAGES = ("prepare", "train", "extract",  # fit
          "environment", "packages", "check")  # Install Backend
STATUSES = ("ok", "cancelled", "error")

EVENTS: dict[str, dict[str, tuple[str, ...]]] = {
    # kind: {"required": fields every such event has, "optional": fields it may have}
    "start": {"required": (), "optional": ("device", "parameters", "total_steps", "step", "world_size",
                                           "total", "out", "workers")},
    "stage": {"required": ("name",), "optional": ()},
    "progress": {"required": ("step",), "optional": ("total", "loss", "iou", "points_per_s", "eta_s", "lr", "epoch",
                                                     "shape_id", "status", "message", "bytes", "seconds")},
    "checkpoint": {"required": ("path",), "optional": ("kind", "step")},
    "mesh": {"required": ("shape_id", "path"), "optional": ("step",)},
    "preview": {"required": ("shape_id", "path"), "optional": ()},  # `fit`: the direct field, before training
    "metrics": {"required": (), "optional": ("shape_id", "step")},  # plus the metric values themselves
    "error": {"required": ("message",), "optional": ()},
    "done": {"required": ("status",), "optional": ("out", "checkpoint", "message", "step", "loss", "iou", "val_iou",
                                                   "best_val_iou", "prepared", "failed", "shapes", "built", "cached",
                                                   "splits", "seconds")},
    "ready": {"required": ("shapes", "device"), "optional": ()},  # `serve`: the model is loaded
}
OPEN_FIELDS = {"metrics"}
"""Kinds whose other fields are free (metric names come from the metrics module)."""

SERVE_COMMANDS: dict[str, tuple[str, ...]] = {
    # command: request fields besides "id" and "command"
    "extract": ("resolution", "threshold", "weights", "shape", "method"),
    "info": (),
    "quit": (),
}


class ProtocolError(ValueError):
    """An event or request the contract does not define (a bug in the sender, not a user error)."""


def jsonable(value: Any) -> Any:
    """numpy/torch scalars to Python numbers, non-finite floats to null, tuples to lists."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def encode_event(kind: str, /, **fields: Any) -> str:
    """One event line (with a trailing newline), checked against `EVENTS`."""
    spec = EVENTS.get(kind)
    if spec is None:
        raise ProtocolError(f"unknown event kind {kind!r}; the contract lists {', '.join(EVENTS)}")
    missing = [name for name in spec["required"] if name not in fields]
    extra = [] if kind in OPEN_FIELDS else [n for n in fields if n not in spec["required"] + spec["optional"]]
    if missing or extra:
        raise ProtocolError(f"event {kind!r}: missing {missing}, not in the contract {extra}")
    record = {"event": kind, "time": round(time.time(), 3), **jsonable(fields)}
    return json.dumps(record) + "\n"


def encode_response(response: dict[str, Any]) -> str:
    """One `serve` response line: {"id", "ok": true, ...} or {"id", "ok": false, "error"}."""
    return json.dumps(jsonable(response)) + "\n"


def decode_line(line: bytes | str) -> dict[str, Any] | None:
    """A line of a backend's stdout as a dict (an event, or a `serve` response), or None for a blank
    line or one that is not a JSON object (a stray print by a library: the caller logs it)."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = text.strip()
    if not text:
        return None
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return message if isinstance(message, dict) and ("event" in message or "ok" in message) else None


def request(command: str, request_id: int, /, **fields: Any) -> str:
    """One `serve` request line, checked against `SERVE_COMMANDS` (the add-on's side)."""
    allowed = SERVE_COMMANDS.get(command)
    if allowed is None:
        raise ProtocolError(f"unknown serve command {command!r}; the contract lists {', '.join(SERVE_COMMANDS)}")
    extra = [name for name in fields if name not in allowed]
    if extra:
        raise ProtocolError(f"serve command {command!r} takes no {extra}")
    return json.dumps({"id": request_id, "command": command, **jsonable(fields)}) + "\n"
