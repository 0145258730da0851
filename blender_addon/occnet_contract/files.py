"""Atomic file writes: a reader (the add-on, the backend, a resumed run) never sees a half-written
file, and a failed or interrupted write leaves the old file (or none) in place, never a truncated
one and never a stray temporary file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A binary file to write `path`'s new content into: a temporary file beside it, fsynced and
    renamed over `path` when the block ends without an exception, deleted otherwise.

    ``mode`` is applied before the rename (mkstemp makes 0600 files; results are meant to be shared).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_output(path) as f:
        f.write(data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, value: Any) -> Path:
    """`value` as indented UTF-8 JSON (reports, split files, job records)."""
    return atomic_write_bytes(path, (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
