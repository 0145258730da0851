"""Stopping cleanly on SIGINT/SIGTERM: the first signal asks to stop after the current step (training
saves `last`; `fit` and `eval` write nothing half done), a second stops at once.

Signals must not interrupt native code: a KeyboardInterrupt raised inside scipy's cKDTree once
crashed the process (segmentation fault, exit 139) when the add-on's Cancel arrived during
`fit`'s evaluation. So handlers only set a flag that the code reads between steps.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator

log = logging.getLogger(__name__)


class StopRequest:
    """A stop flag: set by `request()` (any thread) or, inside `on_signals()`, by SIGINT/SIGTERM."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def request(self) -> None:
        self.requested = True

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt  # the user insists: stop now (what was saved before stays valid)
        self.requested = True
        log.warning("%s: stopping after the current step (send it again to stop at once)", signal.Signals(signum).name)

    @contextlib.contextmanager
    def on_signals(self) -> Iterator["StopRequest"]:
        """While the block runs, SIGINT/SIGTERM set the flag. Outside the main thread (where
        handlers cannot be set) nothing changes."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def signals_deferred() -> contextlib.AbstractContextManager[StopRequest]:
    """``with signals_deferred() as stop: ... if stop(): ...``: a fresh `StopRequest` on signals."""
    return StopRequest().on_signals()
