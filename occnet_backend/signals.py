"""Signals that must not interrupt native code: a KeyboardInterrupt raised inside scipy's cKDTree
once crashed the process (segmentation fault, exit 139) when the add-on's Cancel arrived during
`fit`'s evaluation."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Callable, Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def signals_deferred() -> Iterator[Callable[[], bool]]:
    """While the block runs, SIGINT/SIGTERM only set a flag (the yielded callable reads it) that the
    code checks between steps; a second signal raises KeyboardInterrupt, as the trainer does.
    Outside the main thread (where handlers cannot be set) nothing changes."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield lambda: flag["stop"]
        return

    def handler(signum, frame):
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True
        log.warning("%s: stopping after the current step (send it again to stop at once)", signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: flag["stop"]
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
