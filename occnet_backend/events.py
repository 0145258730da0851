"""The backend's side of the event stream (kinds and fields: ``occnet_contract.protocol``).

Events go to stdout, one JSON object per line; human-readable logs go to stderr, so the stream
stays machine-readable.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from occnet_contract.protocol import encode_event


class EventWriter:
    """Writes events as JSON lines when enabled; a disabled writer does nothing.

    Disabled by default so library users (and tests) get no stray stdout output. Even disabled,
    an event the contract does not define raises, so a test run catches it.
    """

    def __init__(self, stream: TextIO | None = None, enabled: bool = False):
        self.stream = stream if stream is not None else sys.stdout
        self.enabled = enabled

    def emit(self, event: str, /, **fields: Any) -> None:
        line = encode_event(event, **fields)
        if self.enabled:
            self.stream.write(line)
            self.stream.flush()


NULL_EVENTS = EventWriter(enabled=False)
