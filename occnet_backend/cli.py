"""`python -m occnet_backend <command>`: one module per subcommand under occnet_backend.commands.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their command runs, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from occnet_backend.allocator import keep_freed_memory

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
        return 2
    name = argv[0]
    module = importlib.import_module(f"occnet_backend.commands.{name.replace('-', '_')}")
    sub = argparse.ArgumentParser(prog=f"python -m occnet_backend {name}", description=COMMANDS[name])
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    keep_freed_memory()
    return int(module.run(args) or 0)
