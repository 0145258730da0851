"""`serve`: keep a fitted model loaded and answer extraction requests (the add-on's live sliders).

    python -m occnet_backend serve --checkpoint RUN/checkpoint.pt [--out DIR --device auto]

Reads one JSON request per line on stdin and answers one JSON line on stdout; the protocol is in
occnet_contract/protocol.py and occnet_backend/sliders.py. EOF on stdin (Blender closed, or the add-on let go) ends the process.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt written by `fit`")
    parser.add_argument("--out", type=Path, help="folder for the mesh files (default: a temporary folder)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")


def run(args: argparse.Namespace, events) -> int:
    from occnet_backend.cli import CommandError
    from occnet_backend.sliders import SliderServer, load_shape_model

    events.enabled = True  # the add-on reads `serve`'s stdout: its events and responses share it
    try:
        model = load_shape_model(args.checkpoint, args.device)
    except ValueError as err:
        raise CommandError(str(err)) from None
    out = args.out or Path(tempfile.mkdtemp(prefix="occnet-serve-"))
    SliderServer(model, out).serve(sys.stdin.buffer, sys.stdout, events)  # bytes: a non-UTF-8 line is answered, not fatal
    return 0
