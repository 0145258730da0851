"""`train`: train a model from a config file (YAML or JSON), with checkpoints, resume and DDP.

    python -m occnet_backend train --config run.yaml [--data DIR] [--out RUN_DIR] [--device auto]
        [--max-steps N] [--resume [CHECKPOINT]] [--events jsonl]
    torchrun --nproc_per_node=2 -m occnet_backend train --config run.yaml --out RUN_DIR

With ``--out``, logs go to RUN_DIR/logs (TensorBoard), checkpoints to RUN_DIR/checkpoints
(``last.pt``, ``best.pt``), and RUN_DIR/config.json records the resolved config.
``--resume`` alone continues from the run's ``last.pt``; with a path, from that checkpoint.

Exit codes: 0 done; 1 bad config, data or checkpoint (one line on stderr, an ``error`` event);
130 cancelled by SIGINT/SIGTERM (the current step finishes, ``last.pt`` is saved, a ``done``
event with status 'cancelled' is written). A second signal stops at once, leaving the previous
checkpoint intact.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from occnet_contract.protocol import EXIT_CANCELLED

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="config file (.yaml/.yml/.json) with sections "
                        "model, dataset, optimizer, trainer")
    parser.add_argument("--data", type=Path, help="dataset folder (overrides dataset.data_root; of type 'mesh' unless the config names another)")
    parser.add_argument("--out", type=Path, help="run folder: logs/, checkpoints/, config.json (config paths win)")
    parser.add_argument("--device", help="auto | cpu | cuda[:N] (overrides trainer.device)")
    parser.add_argument("--max-steps", type=int, help="train to this many steps in total (overrides trainer.max_steps)")
    parser.add_argument("--resume", nargs="?", const="last", metavar="CHECKPOINT",
                        help="continue a run: from CHECKPOINT, or (no value) from CHECKPOINT_DIR/last.pt")
    parser.add_argument("--allow-different-data", action="store_true",
                        help="with --resume: continue on data other than the checkpoint's (fine-tuning); refused otherwise")
    parser.add_argument("--events", choices=["jsonl"], help="write JSON-lines events on stdout (for the add-on)")


def run(args: argparse.Namespace, events) -> int:
    from occnet_backend.cli import CommandError
    from occnet_backend.training import distributed
    from occnet_backend.training.config import create_trainer_from_config
    from occnet_contract.files import atomic_write_json
    from occnet_contract.protocol import jsonable

    events.enabled = events.enabled and distributed.current().is_main

    try:
        trainer = create_trainer_from_config(
            args.config, events=events, data_root=args.data, out_dir=args.out, device=args.device,
            max_steps=args.max_steps,
        )
        events.enabled = events.enabled and trainer.dist.is_main
        if args.resume:
            path = Path(args.resume)
            if args.resume == "last":
                if trainer.checkpoint_dir is None:
                    raise ValueError("--resume without a path needs --out or trainer.checkpoint_dir")
                path = trainer.checkpoint_dir / "last.pt"
            trainer.resume(path, allow_different_data=args.allow_different_data)
        if args.out is not None and trainer.dist.is_main:
            atomic_write_json(args.out / "config.json", jsonable(trainer.config))
        if trainer.num_epochs is None and trainer.max_steps is None:
            raise ValueError("the config sets neither trainer.max_steps nor trainer.num_epochs (or pass --max-steps)")
        trainer.train()
    except ValueError as err:
        raise CommandError(str(err)) from None
    except KeyboardInterrupt:  # a second signal: stopped at once, nothing saved after the last checkpoint
        events.emit("done", status="cancelled", step=None)
        print("cancelled immediately; the previous checkpoint (if any) is intact", file=sys.stderr)
        return EXIT_CANCELLED
    finally:
        distributed.cleanup()

    last = trainer.checkpoint_dir / "last.pt" if trainer.checkpoint_dir else None
    if trainer.dist.is_main and args.out is not None and trainer.history:
        try:
            from occnet_backend.viz import plot_training_curves

            plot_training_curves(trainer.history, args.out / "training_curve.png", title="train")
        except Exception as err:  # a picture must never fail a finished run
            log.warning("could not draw the training curve: %s", err)
    final = trainer.history[-1] if trainer.history else {}
    events.emit("done", status=trainer.status, step=trainer.step, loss=final.get("loss"), iou=final.get("iou"),
                val_iou=final.get("val_iou"), best_val_iou=trainer.best_metric,
                checkpoint=str(last.resolve()) if last else None)
    if trainer.status == "cancelled":
        print(f"cancelled at step {trainer.step}; checkpoint: {last}", file=sys.stderr)
        return EXIT_CANCELLED
    print(f"done: step {trainer.step}, loss {final.get('loss', float('nan')):.4f}, IoU {final.get('iou', float('nan')):.3f}"
          + (f", best val IoU {trainer.best_metric:.3f}" if trainer.best_metric is not None else "")
          + (f"; checkpoint: {last}" if last else ""), file=sys.stderr)
    return 0
