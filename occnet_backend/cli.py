"""`python -m occnet_backend <command>`: one module per subcommand under occnet_backend.commands.

Each command module defines ``add_arguments(parser)`` and ``run(args, events) -> int``; it raises
`CommandError` for what the user must fix, and this module is the one place that turns it (or a
cancel, or a filesystem error) into stderr lines, events and an exit code. Modules are imported only when their command runs, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import re
import shutil
import signal
import sys
from pathlib import Path

from occnet_backend.allocator import keep_freed_memory
from occnet_backend.events import NULL_EVENTS
from occnet_contract.dependencies import REQUIREMENTS, install_command
from occnet_contract.protocol import EXIT_CANCELLED, EXIT_FAILED, EXIT_USAGE


class CommandError(Exception):
    """What a command raises for bad input or a failure it can explain: each message becomes an
    ``error: ...`` line on stderr and an `error` event, ``done_fields`` go into the `done` event."""

    def __init__(self, *messages: str, **done_fields):
        super().__init__("; ".join(messages))
        self.messages = list(messages)
        self.done_fields = done_fields

# name -> (module, one-line help). Keep in the order a user meets them.
COMMANDS: dict[str, str] = {
    "synthetic": "Train on an analytic shape and write its extracted mesh (a quick self-check).",
    "prepare": "Turn mesh files or folders into a dataset folder with cached, labelled samples.",
    "train": "Train a model from a config file (YAML/JSON): checkpoints, resume, TensorBoard, torchrun DDP.",
    "fit": "Reconstruct mesh files in one command: prepare, train, extract, evaluate.",
    "eval": "Score a checkpoint on a dataset split: IoU, Chamfer-L1, normal consistency, F-score, mesh quality.",
    "serve": "Keep a fitted model loaded and extract meshes on request (JSON lines on stdin/stdout).",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m occnet_backend",
        description="Occupancy Networks backend: prepare data, train, extract meshes, evaluate.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        args = parser.parse_args(argv)  # prints help / the unknown-command error and exits
        parser.print_help()
        return EXIT_USAGE
    name = argv[0]
    dashed = next((a for a in argv[1:] if a.startswith("-") and len(a) > 1 and Path(a).exists()), None)
    if dashed is not None:  # argparse would read it as an option and say "required: meshes"
        print(f"error: {dashed!r} is a file whose name starts with '-'; write ./{dashed} so it is not read as an "
              "option", file=sys.stderr)
        return EXIT_USAGE
    try:
        module = importlib.import_module(f"occnet_backend.commands.{name.replace('-', '_')}")
    except ModuleNotFoundError as err:
        return _fail([missing_requirement(err)], NULL_EVENTS)
    sub = argparse.ArgumentParser(prog=f"python -m occnet_backend {name}", description=COMMANDS[name])
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    keep_freed_memory()
    from occnet_backend.events import EventWriter

    events = EventWriter(enabled=getattr(args, "events", None) == "jsonl")
    out = getattr(args, "out", None)
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        return _fail([f"--out {out} is a file, not a folder; give a folder (it is created when missing)"], events)
    # SIGTERM ends a command like Ctrl-C (cleanly: workers stopped, a `done` event, exit 130);
    # train and fit replace this while they train, to finish the step and save first
    signal.signal(signal.SIGTERM, _interrupt)
    # and SIGINT (the add-on's Cancel) always does: a process started in the background by a
    # non-interactive shell inherits SIGINT ignored, and would run on through a Cancel
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return int(module.run(args, events) or 0)
    except CommandError as err:
        return _fail(err.messages, events, **err.done_fields)
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        events.emit("done", status="cancelled")
        return EXIT_CANCELLED
    except ModuleNotFoundError as err:  # an environment made before the backend needed it
        return _fail([missing_requirement(err)], events)
    except OSError as err:
        return _fail([describe_os_error(err, out)], events)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _fail(messages: list[str], events, **done_fields) -> int:
    for message in messages:
        print(f"error: {message}", file=sys.stderr)
    for message in messages:
        events.emit("error", message=message)
    events.emit("done", status="error", **done_fields)
    return EXIT_FAILED


def missing_requirement(err: ModuleNotFoundError) -> str:
    """A module the backend needs but this Python lacks, as one line with the command that installs it.
    The name is read from the message too: an error raised in a prepare worker arrives without it."""
    named = re.search(r"No module named '([^']+)'", str(err))
    module = (err.name or (named.group(1) if named else "")).partition(".")[0]
    if module not in REQUIREMENTS:
        raise err
    return (f"this Python lacks {REQUIREMENTS[module]}, which the backend needs; install it with: "
            f"{install_command(sys.executable, [module])}")


def describe_os_error(err: OSError, out: "os.PathLike | None" = None) -> str:
    """A filesystem error as one line: which path, what happened, what to do."""
    path = err.filename or out or "a file"
    if err.errno == errno.ENOSPC:
        try:
            free = shutil.disk_usage(Path(path) if Path(path).is_dir() else Path(path).parent).free / 1e6
            room = f" ({free:.0f} MB free there)"
        except OSError:
            room = ""
        return f"{path}: no space left on the disk{room}; free some space or choose --out on another disk"
    if err.errno == errno.EROFS:
        return f"{path}: the file system is read-only; choose an --out folder you can write to"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"{path}: permission denied; choose an --out folder you can write to, or fix its permissions"
    if err.errno == errno.ENOTDIR:
        return f"{path}: a file stands where a folder is needed; give another --out"
    if err.errno == errno.EISDIR:
        return f"{path}: is a folder where a file is needed"
    return f"{path}: {err.strerror or err}"
