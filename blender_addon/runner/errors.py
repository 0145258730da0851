"""Exceptions the add-on raises to scripts and turns into reports in the UI.

Every message is meant to be shown as is: it names the object or file, says what is wrong and
what to do about it. Nothing here imports bpy, so the runner code that raises them stays
testable on plain CPython.
"""

from __future__ import annotations


class OccNetError(RuntimeError):
    """A reconstruction could not be done; ``str(err)`` is a message for the user.

    ``log_path`` points at the backend's log file when there is one (the full story behind a
    short message).
    """

    def __init__(self, message: str, *, log_path: str | None = None):
        super().__init__(message)
        self.log_path = log_path


class OccNetCancelled(OccNetError):
    """The job was cancelled (by the user, ESC, ``cancel`` callback, or Ctrl-C) before results came."""
