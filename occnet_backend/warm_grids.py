"""The grids a fit's extraction evaluated, kept for `serve`, so that the sliders start warm.

`fit` extracts every shape at its resolution and threshold; `serve` then filled the same grids again
(its `warm_up`: 1.2 / 2.7 / 6.0 s of a 2-core CPU for 2 / 4 / 8 shapes after each result, while Blender
shares those cores), and a slider moved before that paid for them (0.33-0.55 s for the first move at 128³
against 0.08-0.22 s warmed). `fit` now writes each shape's evaluated nodes (`extraction.GridCache.state`)
beside its checkpoint, and `serve` starts from them.

The file names the checkpoint it belongs to by its SHA-256: a grid of other weights would give the
sliders wrong surfaces, so one that does not match (an older fit's, a checkpoint copied without it,
a damaged file) is ignored with a warning, and `serve` fills its grids itself, as before.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from occnet_backend.extraction import GridCache

log = logging.getLogger(__name__)

GRIDS_FILE = "grids.pt"
"""The grids' file, beside the checkpoint `fit` writes."""
GRIDS_FORMAT = "occnet-grids-1"
"""The file's `format` (its reader refuses others, as `load_checkpoint` does checkpoints')."""


def grids_path(checkpoint: str | Path) -> Path:
    return Path(checkpoint).with_name(GRIDS_FILE)


def save_grids(checkpoint: Path, states: Sequence[dict]) -> Path:
    """Writes each shape's `GridCache.state()`, in the checkpoint's shape order, atomically beside
    `checkpoint` (a cache holds exact values: it serves any resolution and threshold)."""
    from occnet_backend.data.folder import file_sha256
    from occnet_backend.training.checkpoints import save_checkpoint

    return save_checkpoint(grids_path(checkpoint), {
        "format": GRIDS_FORMAT, "checkpoint_sha256": file_sha256(checkpoint), "shapes": list(states),
    })


def load_grids(checkpoint: str | Path, num_shapes: int) -> list[GridCache] | None:
    """The grid caches `fit` left beside `checkpoint`, one per shape; None when there are none, or
    (with a warning saying why) when they are not this checkpoint's or cannot be read."""
    from occnet_backend.data.folder import file_sha256
    from occnet_backend.extraction import GridCache
    from occnet_backend.training.checkpoints import load_checkpoint

    path = grids_path(checkpoint)
    if not path.is_file():
        return None
    try:
        payload = load_checkpoint(path, formats=(GRIDS_FORMAT,))
        if payload.get("checkpoint_sha256") != file_sha256(Path(checkpoint)):
            raise ValueError(f"it belongs to another fit than {Path(checkpoint).name} (an older one, or the checkpoint "
                             "was replaced)")
        shapes = payload.get("shapes")
        if not isinstance(shapes, list) or len(shapes) != num_shapes:
            raise ValueError(f"it holds {len(shapes) if isinstance(shapes, list) else 'no'} shapes' grids for a model "
                             f"of {num_shapes}")
        return [GridCache.from_state(state) for state in shapes]
    except (ValueError, TypeError, OSError) as err:  # TypeError: tensors of a dtype numpy has not
        log.warning("%s: not used, the sliders fill their grids themselves (%s)", path, err)
        return None
