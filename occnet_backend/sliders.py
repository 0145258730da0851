"""The live sliders' server (`serve`): a loaded model answering "extract at (resolution, threshold,
shape)" requests.

Blender's sliders must feel live, so the add-on keeps one `serve` process per result: the model
stays loaded, and keeps a `GridCache` per learned shape (a model that blends fields: every blend is
Σ wᵢ·fᵢ of those shapes, so a node evaluated once serves every blend) or per distinct blend (a
model that blends codes). A threshold change only evaluates the few grid nodes the new surface
needs, a resolution change reuses all coarser MISE levels, and a morph slider's small step reuses
most of the previous blend's nodes. While no request waits, the server fills the learned shapes'
caches at the fit's resolution and threshold (`warm_up`), so the first slider move after a
reconstruction pays only for the nodes its blend adds (BENCHMARKS.md, "Warm shapes"). It starts from the
grids the fit's own extraction evaluated, when the fit left them beside its checkpoint (`warm_grids`).

Protocol (``occnet_contract.protocol``; one request per line on stdin, one response per line on
stdout, after a ``ready`` event):

    {"id": 1, "command": "extract", "resolution": 128, "threshold": 0.5,
     "weights": [1, 0, ...] | "shape": "shape_id" | (neither: the first shape)}
    -> {"id": 1, "ok": true, "path": ".../mesh-000001.ply", "vertices": V, "faces": F,
        "stats": {"evaluations": ..., "seconds": ..., ...}}
    {"id": 2, "command": "info"}  -> {"id": 2, "ok": true, "shapes": [...], "device": ...,
                                      "warmed": [the shapes whose grids are cached]}
    {"id": 3, "command": "quit"}  -> {"id": 3, "ok": true} and the server exits

A bad request gets {"id": ..., "ok": false, "error": "..."}; the server keeps running. EOF ends it.
The mesh is written in the coordinates of the shape's source (normalisation undone; for a blend,
the blended normalisation), as binary PLY, atomically.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import numpy as np
import torch

from occnet_backend.events import EventWriter
from occnet_backend.extraction import METHODS, CachedField, FieldBlend, GridCache, blend_options, extract_mesh
from occnet_contract.ply import write_ply
from occnet_contract.protocol import encode_response
from occnet_contract.settings import FitSettings, check_resolution

MAX_CACHED_SHAPES = 4
"""Blends of a code-blending model kept cached (each up to ~85 MB at 256³). A field-blending model
keeps one cache per learned shape instead (the add-on fits 2-10)."""
WARM_AFTER_IDLE_S = 0.25
"""`serve` warms the shapes' caches once no request has come for this long (a slider drag sends
one every 0.15 s at most), so warming never delays a burst of requests."""


class ShapeModel:
    """What the server needs from a trained model, independent of its class.

    Args:
        logit_fn_for: weights over the learned shapes [S] -> (points [N,3] -> logits [N]).
        shape_ids: the learned shapes, in code-table order.
        centers, scales: each shape's normalisation (unit cube -> source coordinates).
        distance_scale: the model's, when its logits are distance-like (see `extraction.mise_grid`).
        blends_fields: whether a blend's logits are Σ wᵢ·(shape i's logits) (`OccupancyNetwork.
            blends_fields`), which lets the shapes' caches serve every blend.
        settings: the fit's settings (its resolution and threshold are where `warm_up` fills the
            caches: the result's sliders start there).
        grids: each shape's grid cache from the fit's own extraction (`warm_grids`), or None.
    """

    def __init__(
        self,
        logit_fn_for: Callable[[np.ndarray], Callable[[np.ndarray], torch.Tensor]],
        shape_ids: list[str],
        centers: np.ndarray,
        scales: np.ndarray,
        device: str = "cpu",
        distance_scale: float | None = None,
        blends_fields: bool = False,
        settings: FitSettings | None = None,
        grids: list[GridCache] | None = None,
    ):
        self.logit_fn_for = logit_fn_for
        self.grids = grids
        self.settings = settings or FitSettings()
        self.distance_scale = distance_scale
        self.blends_fields = blends_fields
        self.shape_ids = list(shape_ids)
        self.centers = np.asarray(centers, dtype=np.float64).reshape(len(self.shape_ids), 3)
        self.scales = np.asarray(scales, dtype=np.float64).reshape(len(self.shape_ids))
        self.device = device


def load_shape_model(checkpoint: str | Path, device: str = "auto") -> ShapeModel:
    """A `fit` checkpoint -> ShapeModel. Raises ValueError naming the file for anything unusable."""
    from occnet_backend.fitting import load_fit_checkpoint
    from occnet_backend.training.precision import resolve_device
    from occnet_backend.warm_grids import load_grids

    model, payload = load_fit_checkpoint(checkpoint)
    try:
        settings = FitSettings(**{k: payload["settings"][k] for k in ("resolution", "threshold")}).validate()
    except (KeyError, TypeError, ValueError):  # an older or hand-made checkpoint: warm at the defaults
        settings = FitSettings()
    device = resolve_device(device)
    model.to(device).eval()
    return ShapeModel(lambda weights: model.logit_fn(weights=weights), payload["shape_ids"], payload["centers"].numpy(), payload["scales"].numpy(),
                      device=str(device), distance_scale=model.distance_scale,
                      blends_fields=model.blends_fields, settings=settings,
                      grids=load_grids(checkpoint, len(payload["shape_ids"])))


class SliderServer:
    def __init__(self, model: ShapeModel, out_dir: Path):
        self.model = model
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.caches: OrderedDict[tuple, GridCache] = OrderedDict()
        self.shape_fields: dict[int, CachedField] = {}
        self.warmed: list[str] = []
        self.counter = 0
        for index, cache in enumerate(model.grids or []):
            one_hot = self._one_hot(index)
            if model.blends_fields:
                self.shape_fields[index] = CachedField(model.logit_fn_for(one_hot), cache)
            elif index < MAX_CACHED_SHAPES:
                self.caches[self._key(one_hot)] = cache

    def _weights(self, request: dict) -> np.ndarray:
        n = len(self.model.shape_ids)
        if "weights" in request and "shape" in request:
            raise ValueError("give either 'weights' or 'shape', not both")
        if "shape" in request:
            if request["shape"] not in self.model.shape_ids:
                raise ValueError(f"unknown shape {request['shape']!r}; known shapes: {self.model.shape_ids}")
            return self._one_hot(self.model.shape_ids.index(request["shape"]))
        if "weights" not in request:
            return self._one_hot(0)
        try:
            weights = np.asarray(request["weights"], dtype=np.float64)
        except (TypeError, ValueError):
            weights = np.full(n + 1, np.nan)  # not numbers: the message below
        if weights.shape != (n,) or not np.isfinite(weights).all():
            raise ValueError(f"'weights' must be a list of {n} finite numbers (one per learned shape), got {request['weights']!r}")
        if (weights < 0).any():
            raise ValueError(f"'weights' must be >= 0 with a positive sum (they are normalised to sum to 1), "
                             f"got {request['weights']!r}")
        total = weights.sum()
        if not np.isfinite(total):
            raise ValueError(f"'weights' {request['weights']!r} are too large to add up; they are normalised to sum to 1, "
                             "so use e.g. [0.5, 0.5]")
        if total <= 0:
            raise ValueError("'weights' must be >= 0 with a positive sum (they are normalised to sum to 1), got all zeros")
        return weights / total

    @staticmethod
    def _key(weights: np.ndarray) -> tuple:
        return tuple(np.round(weights, 6))

    def _cache(self, weights: np.ndarray) -> GridCache:
        key = self._key(weights)
        if key in self.caches:
            self.caches.move_to_end(key)
        else:
            self.caches[key] = GridCache()
            while len(self.caches) > MAX_CACHED_SHAPES:
                self.caches.popitem(last=False)
        return self.caches[key]

    def _field(self, weights: np.ndarray) -> tuple[Any, GridCache | None]:
        """(what extract_mesh evaluates, its cache) for these weights."""
        if not self.model.blends_fields:
            return self.model.logit_fn_for(weights), self._cache(weights)
        terms = []
        for i, w in enumerate(weights):
            if w:
                if i not in self.shape_fields:
                    self.shape_fields[i] = CachedField(self.model.logit_fn_for(self._one_hot(i)), GridCache())
                terms.append((float(w), self.shape_fields[i]))
        return FieldBlend(terms, self.model.distance_scale), None

    def _one_hot(self, index: int) -> np.ndarray:
        weights = np.zeros(len(self.model.shape_ids))
        weights[index] = 1.0
        return weights

    def warm_up(self) -> Iterator[None]:
        """Fills one learned shape's grid cache per step, at the fit's resolution and threshold: its
        grid's nodes and its vertices' samples on their edges (a whole extraction, mesh discarded), and,
        where blends are of fields, the grid blends match their volume on (`FieldBlend`).

        A model that blends fields warms every shape: each blend reuses them all. A model that blends
        codes caches per blend, so only the shapes its cache keeps (`MAX_CACHED_SHAPES`) are warmed.
        """
        resolution, threshold = self.model.settings.resolution, self.model.settings.threshold
        count = len(self.model.shape_ids) if self.model.blends_fields else min(len(self.model.shape_ids), MAX_CACHED_SHAPES)
        for index in range(count):
            weights = self._one_hot(index)
            field, cache = self._field(weights)
            extract_mesh(field, resolution=resolution, threshold=threshold, cache=cache,
                         distance_scale=self.model.distance_scale, **blend_options(weights))
            if self.model.blends_fields:  # what every blend with this shape measures its volume on
                self.shape_fields[index].volume_grid(self.model.distance_scale)
            self.warmed.append(self.model.shape_ids[index])
            yield

    def extract(self, request: dict) -> dict:
        defaults = FitSettings()
        method = request.get("method", "mise")
        if method not in METHODS:
            raise ValueError(f"'method' must be one of {', '.join(METHODS)}, got {method!r}")
        # checked before anything is allocated: a 2048³ request must not take the machine's memory
        resolution = check_resolution(request.get("resolution", defaults.resolution), method)
        threshold = request.get("threshold", defaults.threshold)
        weights = self._weights(request)
        start = time.perf_counter()
        field, cache = self._field(weights)
        out = extract_mesh(
            field,
            resolution=resolution,
            threshold=threshold,
            method=method,
            cache=cache,
            distance_scale=self.model.distance_scale,
            **blend_options(weights),
        )
        center = weights @ self.model.centers
        scale = float(weights @ self.model.scales)
        vertices = (out["vertices"].astype(np.float64) * scale + center).astype(np.float32)
        self.counter += 1
        path = self.out_dir / f"mesh-{self.counter:06d}.ply"
        write_ply(path, vertices, out["faces"])
        stats = {**out["stats"], "total_seconds": time.perf_counter() - start}
        return {"path": str(path), "vertices": len(vertices), "faces": len(out["faces"]), "stats": stats}

    def handle(self, request: Any) -> tuple[dict, bool]:
        """One request -> (response, keep_running)."""
        if not isinstance(request, dict):
            return {"ok": False, "error": "a request must be a JSON object"}, True
        rid = request.get("id")
        command = request.get("command", "extract")
        try:
            if command == "extract":
                return {"id": rid, "ok": True, **self.extract(request)}, True
            if command == "info":
                return {"id": rid, "ok": True, "shapes": self.model.shape_ids, "device": self.model.device,
                        "warmed": list(self.warmed)}, True
            if command == "quit":
                return {"id": rid, "ok": True}, False
            raise ValueError(f"unknown command {command!r}; use 'extract', 'info' or 'quit'")
        except (ValueError, TypeError) as err:
            return {"id": rid, "ok": False, "error": str(err)}, True
        except MemoryError:
            return {"id": rid, "ok": False, "error": "out of memory for this request; use a lower resolution"}, True
        except Exception as err:  # noqa: BLE001 - one bad request must not end the sliders' server
            return {"id": rid, "ok": False, "error": f"the request failed ({type(err).__name__}: {err})"}, True

    def serve(self, stdin: TextIO, stdout: TextIO, events: EventWriter) -> None:
        """Answers each line of `stdin` in order until EOF or `quit`; warms the caches in between.

        A reader thread queues the lines, so the loop can tell "no request waits" from "one does":
        once none has come for `WARM_AFTER_IDLE_S`, it warms one shape at a time, and a request that
        comes meanwhile waits for that one shape only (~0.1-0.3 s at 128³ on 2 cores)."""
        events.emit("ready", shapes=self.model.shape_ids, device=self.model.device)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_read_lines, args=(stdin, lines), daemon=True).start()
        warming: Iterator[None] | None = self.warm_up()
        idle = WARM_AFTER_IDLE_S
        while True:
            try:
                line = lines.get(timeout=idle) if warming is not None else lines.get()
            except queue.Empty:
                idle = 0.0
                try:
                    next(warming)
                except StopIteration:
                    warming = None
                except Exception as err:  # noqa: BLE001 - warming only saves time: a request reports the fault
                    print(f"warning: warming the sliders' caches stopped ({type(err).__name__}: {err})", file=sys.stderr)
                    warming = None
                continue
            if line is None:
                break
            idle = WARM_AFTER_IDLE_S
            response, keep = self._answer(line)
            stdout.write(encode_response(response))
            stdout.flush()
            if not keep:
                break

    def _answer(self, line: bytes | str) -> tuple[dict, bool]:
        """One line of stdin (bytes: the command reads stdin.buffer, or text) -> (response, keep_running)."""
        try:
            text = line.decode("utf-8") if isinstance(line, bytes) else line
        except UnicodeDecodeError as err:
            return {"ok": False, "error": f"a request must be UTF-8 text ({err})"}, True
        try:
            request = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as err:
            return {"ok": False, "error": f"not valid JSON: {err}"}, True
        return self.handle(request)


def _read_lines(stdin: TextIO, lines: queue.Queue) -> None:
    """Queues the non-blank lines of `stdin`, then None at EOF."""
    try:
        for line in stdin:
            if line.strip():
                lines.put(line)
    finally:
        lines.put(None)
