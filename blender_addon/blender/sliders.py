"""Live sliders, the bpy half: per-result properties, debounced updates, the mesh swap, clean-up.

Every result object has ``ob.occnet_live`` (saved with the .blend): resolution, threshold, one
weight per learned shape and an A <-> B morph. Changing one (UI) schedules the object; a
``bpy.app.timers`` tick sends the latest values ``DEBOUNCE_S`` after the last change, keeps at
most one request per object in flight (a change during a request is sent when it is answered)
and swaps the answered mesh in (new datablock, the old one removed: no orphans). Scripts and
``blender --background`` (no timers there) call ``update_result``, which blocks.

Servers (``slider_client.SliderClient``, one per checkpoint) start on demand - also after reopening a
.blend, since the checkpoint path is on the object - and end when no result needs them any more
(checked after every depsgraph update), when a file is loaded, and at unregister / exit.
Only the main thread touches bpy: the servers' reader threads just queue lines.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import bpy
import numpy as np
from bpy.app.handlers import persistent
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, PointerProperty

from ..occnet_contract import ply
from ..occnet_contract.settings import RESOLUTIONS, FitSettings
from ..runner import interpreter, slider_client
from ..runner.errors import OccNetError
from . import preferences, results, ui

TICK_S = 0.05  # timer interval while something is pending or in flight
REQUEST_TIMEOUT_S = 600.0  # update_result: a 512³ extraction on a slow CPU takes minutes

POOL = slider_client.ClientPool()
_DEBOUNCE = slider_client.Debouncer()


@dataclass
class _Request:
    uid: int  # the object's session_uid (stable across renames)
    seq: int
    key: str  # server key
    values: dict[str, Any]
    sent_at: float


@dataclass
class Status:
    """What the panel shows for one result (per session, not saved)."""

    state: str = "idle"  # idle | pending | updating | ok | error
    message: str = ""
    seconds: float | None = None  # from the change being sent to the new mesh in the object
    stats: dict[str, Any] = field(default_factory=dict)  # the backend's numbers for the last update


_IN_FLIGHT: dict[tuple[str, int], _Request] = {}  # (server key, request id) -> request
_SEQ: dict[int, int] = {}  # uid -> last sequence number given out
_APPLIED: dict[int, int] = {}  # uid -> sequence number of the mesh now shown
_STATUS: dict[int, Status] = {}
_QUIET = [0]  # > 0: property updates come from the add-on itself, not the user


@contextmanager
def quiet():
    """Property writes inside do not schedule an update."""
    _QUIET[0] += 1
    try:
        yield
    finally:
        _QUIET[0] -= 1


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

_ENUM_CACHE: dict[str, list[tuple[str, str, str]]] = {}  # Blender needs the item strings kept alive


def _shape_items(self, context):
    ob = self.id_data
    ids = [str(s) for s in (ob.get(results.PROP_SHAPE_IDS) or [])] if ob is not None else []
    items = [(s, s, f"Learned shape '{s}'") for s in ids] or [("", "(none)", "")]
    _ENUM_CACHE[ob.name if ob is not None else ""] = items
    return items


def _on_change(self, context) -> None:
    if not _QUIET[0]:
        schedule(self.id_data)


def _on_weight(self, context) -> None:
    if _QUIET[0]:
        return
    ob = self.id_data
    with quiet():
        rebalance_weights(ob.occnet_live, self.name)
    schedule(ob)


def _on_morph(self, context) -> None:
    if _QUIET[0]:
        return
    ob = self.id_data
    with quiet():
        apply_morph(ob.occnet_live)
    schedule(ob)


class OCCNET_PG_shape_weight(bpy.types.PropertyGroup):
    """One learned shape's weight in the blend (``name`` is the shape id)."""

    value: FloatProperty(
        name="Weight", description="How much of this learned shape the result is (weights are normalised to sum to 1)",
        default=0.0, min=0.0, max=1.0, subtype="FACTOR", update=_on_weight,
    )


class OCCNET_PG_live(bpy.types.PropertyGroup):
    """A result's live surface settings: ``ob.occnet_live`` (saved with the .blend)."""

    ready: BoolProperty(name="Set Up", description="Initialised from the result's reconstruction settings")
    resolution: EnumProperty(
        name="Resolution", description="Marching-cubes grid of the result (cells per side); re-extracted live",
        items=[(str(r), f"{r}³", f"{r} cells per side") for r in RESOLUTIONS], default=str(FitSettings().resolution), update=_on_change,
    )
    threshold: FloatProperty(
        name="Threshold", description="Occupancy probability of the surface (lower: fatter, higher: thinner)",
        default=0.5, min=0.01, max=0.99, step=1, precision=2, subtype="FACTOR", update=_on_change,
    )
    weights: CollectionProperty(type=OCCNET_PG_shape_weight, name="Shape Weights")
    morph_a: EnumProperty(name="A", description="Shape at morph 0", items=_shape_items, update=_on_morph)
    morph_b: EnumProperty(name="B", description="Shape at morph 1", items=_shape_items, update=_on_morph)
    morph: FloatProperty(
        name="Morph", description="Blend from shape A (0) to shape B (1); sets the shape weights",
        default=0.0, min=0.0, max=1.0, subtype="FACTOR", update=_on_morph,
    )


def apply_morph(live: "OCCNET_PG_live") -> None:
    """Writes the morph slider into the weights: A gets 1 - t, B gets t, the others 0."""
    t = live.morph
    for item in live.weights:
        value = 0.0
        if item.name == live.morph_a:
            value += 1.0 - t
        if item.name == live.morph_b:
            value += t
        item.value = value


def rebalance_weights(live: "OCCNET_PG_live", changed: str) -> None:
    """After the user set one weight: the others share the rest in their old proportions (evenly
    when they were all 0), so the weights always show the blend they make (they sum to 1); the
    Morph slider follows when the blend lies between its A and B."""
    items = list(live.weights)
    edited = next((item for item in items if item.name == changed), None)
    others = [item for item in items if item.name != changed]
    if edited is None or not others:
        return
    rest = max(0.0, 1.0 - edited.value)
    total = sum(item.value for item in others)
    for item in others:
        item.value = item.value * rest / total if total > 1e-9 else rest / len(others)
    values = {item.name: item.value for item in items}
    a, b = live.morph_a, live.morph_b
    if a != b and a in values and b in values and all(v < 1e-6 for k, v in values.items() if k not in (a, b)):
        pair = values[a] + values[b]
        if pair > 1e-9:
            live.morph = values[b] / pair


def blend_description(ob: bpy.types.Object) -> str:
    """A line for the panel when the result shows a blend of shapes rather than its own shape."""
    live = ob.occnet_live
    own = str(ob.get(results.PROP_SHAPE_ID, ""))
    parts = [(item.name, item.value) for item in live.weights if item.value > 1e-3]
    if len(parts) == 1 and parts[0][0] == own:
        return ""
    mix = ", ".join(f"{round(100 * v)}% '{name}'" for name, v in parts)
    return (f"This object now shows a blend: {mix}. It moves and scales between the shapes' own places "
            f"(set the weight of '{own}' to 1 for its own shape).")


def is_result(ob: Any) -> bool:
    """A live-updatable OccNet result: a mesh object that knows its checkpoint."""
    try:
        return ob is not None and ob.type == "MESH" and bool(ob.get(results.PROP_CHECKPOINT))
    except ReferenceError:
        return False


def shape_ids(ob: bpy.types.Object) -> list[str]:
    ids = [str(s) for s in (ob.get(results.PROP_SHAPE_IDS) or [])]
    return ids or [str(ob.get(results.PROP_SHAPE_ID, ""))]


def ensure_live(ob: bpy.types.Object) -> "OCCNET_PG_live":
    """Fills ``ob.occnet_live`` from the result's custom properties the first time (quietly)."""
    live = ob.occnet_live
    if live.ready or ob.library is not None:
        return live
    try:
        settings = json.loads(ob.get(results.PROP_SETTINGS, "{}"))
    except (TypeError, ValueError):
        settings = {}
    ids = shape_ids(ob)
    own = str(ob.get(results.PROP_SHAPE_ID, ids[0]))
    with quiet():
        if settings.get("resolution") in RESOLUTIONS:
            live.resolution = str(settings["resolution"])
        threshold = settings.get("threshold")
        if isinstance(threshold, (int, float)) and 0.01 <= threshold <= 0.99:
            live.threshold = float(threshold)
        live.weights.clear()
        for sid in ids:
            item = live.weights.add()
            item.name = sid
            item.value = 1.0 if sid == own else 0.0
        if len(ids) > 1:
            live.morph_a = own if own in ids else ids[0]
            live.morph_b = next(s for s in ids if s != live.morph_a)
        live.morph = 0.0
        live.ready = True
    return live


def current_values(ob: bpy.types.Object) -> dict[str, Any]:
    """The request the object's properties describe: resolution, threshold and (several shapes) weights."""
    live = ensure_live(ob)
    values: dict[str, Any] = {"resolution": int(live.resolution), "threshold": round(float(live.threshold), 4)}
    if len(live.weights) > 1:
        values["weights"] = [round(float(item.value), 6) for item in live.weights]
    return values


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------

def _server_factory(ob: bpy.types.Object):
    checkpoint = str(ob[results.PROP_CHECKPOINT])

    def make() -> slider_client.SliderClient:
        prefs = preferences.get_prefs(bpy.context)
        python, _origin = interpreter.resolve_python(prefs.python_path, prefs.work_dir or None)
        job = Path(str(ob.get(results.PROP_JOB, "")))
        if job.is_dir() and os.access(job, os.W_OK):
            out = job / "live"
        else:
            out = Path(tempfile.mkdtemp(prefix="occnet-live-"))
        return slider_client.SliderClient(checkpoint, python=python, out_dir=out, log_path=out / "serve.log",
                                    device=prefs.device)

    return make


def server_for(ob: bpy.types.Object) -> slider_client.SliderClient:
    """The running server for ``ob``'s checkpoint, started when there is none (not waiting for it)."""
    if not is_result(ob):
        raise OccNetError(f"'{getattr(ob, 'name', ob)}' is not an OccNet result (it has no checkpoint); "
                          "only reconstructions have live sliders.")
    checkpoint = str(ob[results.PROP_CHECKPOINT])
    if not Path(checkpoint).is_file():
        raise OccNetError(
            f"The checkpoint of '{ob.name}' ({checkpoint}) no longer exists (job folder deleted or moved?). "
            "Reconstruct again to get the sliders back."
        )
    return POOL.get(checkpoint, _server_factory(ob))


def prewarm(objects: list[bpy.types.Object]) -> None:
    """Starts the sliders' server of fresh results without waiting for it.

    The server's start (torch import + model load) is ~1.1 s of the first slider move on 2 CPU
    cores, where a move on a running server at 128³ takes 0.1-0.3 s (BENCHMARKS.md); started
    right after a reconstruction, it loads while the user looks at the result, then fills the
    shapes' grids at the fit's resolution (`serve` warms them while idle). Anything wrong
    (checkpoint gone, no interpreter) is left for the first slider move to report.
    """
    for ob in objects:
        if is_result(ob):
            try:
                server_for(ob)
            except OccNetError:
                pass


def needed_checkpoints() -> set[str]:
    return {str(ob[results.PROP_CHECKPOINT]) for ob in bpy.data.objects
            if ob.users > 0 and ob.library is None and is_result(ob)}


def reap() -> None:
    """Ends the servers no result object needs any more (the results were deleted)."""
    if not len(POOL):
        return
    ended = POOL.keep_only(needed_checkpoints())
    for key in ended:
        for rid_key in [k for k in _IN_FLIGHT if k[0] == key]:
            del _IN_FLIGHT[rid_key]


def shutdown() -> None:
    """Ends every server and forgets all pending work (file loaded, add-on unregistered)."""
    _DEBOUNCE.pending.clear()
    _IN_FLIGHT.clear()
    _STATUS.clear()
    _APPLIED.clear()
    _SEQ.clear()
    POOL.stop_all()
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)


# --------------------------------------------------------------------------------------------
# Applying a response
# --------------------------------------------------------------------------------------------

def find_object(uid: int) -> bpy.types.Object | None:
    for ob in bpy.data.objects:
        if ob.session_uid == uid:
            return ob
    return None


def status(ob: bpy.types.Object) -> Status:
    return _STATUS.setdefault(ob.session_uid, Status())


def _read_response_mesh(response: dict[str, Any]):
    path = response.get("path", "")
    try:
        vertices, faces = ply.read_ply(path)
    except ply.PLYError as err:
        raise OccNetError(f"The updated mesh cannot be read: {err}") from None
    finally:
        try:
            os.unlink(path)  # one file per request: they would pile up while dragging
        except OSError:
            pass
    return vertices, faces


def _apply(ob: bpy.types.Object, response: dict[str, Any], values: dict[str, Any]) -> None:
    """Swaps the response's mesh into ``ob``; raises OccNetError for an error response or an empty surface."""
    if not response.get("ok"):
        raise OccNetError(f"The backend could not update '{ob.name}': {response.get('error', 'unknown error')}")
    vertices, faces = _read_response_mesh(response)
    if not np.isfinite(vertices).all():
        raise OccNetError(f"The updated mesh of '{ob.name}' has non-finite vertex positions; the previous mesh is kept.")
    if len(faces) == 0:
        what = f"threshold {values.get('threshold')}" + (f", weights {values['weights']}" if "weights" in values else "")
        raise OccNetError(f"No surface for '{ob.name}' at {what}; the previous mesh is kept. "
                          "Move the threshold towards 0.5.")
    if ob.mode == "EDIT":
        raise OccNetError(f"'{ob.name}' is in Edit Mode; leave it to update the surface.")
    results.replace_mesh(ob, vertices, faces)


def _settings_text(response: dict[str, Any]) -> str:
    return f"{response.get('vertices', 0):,} vertices"


# --------------------------------------------------------------------------------------------
# The UI path: debounced, asynchronous
# --------------------------------------------------------------------------------------------

def schedule(ob: bpy.types.Object) -> None:
    """A slider changed: update ``ob`` ``DEBOUNCE_S`` after the last change (timer-driven)."""
    if ob is None or not is_result(ob):
        return
    uid = ob.session_uid
    _DEBOUNCE.touch(uid)
    st = status(ob)
    if st.state != "updating":
        st.state, st.message = "pending", ""
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=TICK_S)


def _busy(uid: int) -> bool:
    return any(req.uid == uid for req in _IN_FLIGHT.values())


def _send(ob: bpy.types.Object) -> None:
    uid = ob.session_uid
    st = status(ob)
    try:
        values = current_values(ob)
        server = server_for(ob)
        rid = server.send("extract", **values)
    except OccNetError as err:
        st.state, st.message = "error", str(err)
        return
    _SEQ[uid] = _SEQ.get(uid, 0) + 1
    _IN_FLIGHT[(server.key, rid)] = _Request(uid, _SEQ[uid], server.key, values, time.monotonic())
    st.state = "updating"
    st.message = "" if server.ready else "starting the slider server..."


def _on_response(server: slider_client.SliderClient, response: dict[str, Any]) -> None:
    request = _IN_FLIGHT.pop((server.key, response.get("id")), None)
    if request is None:  # a blocking update_result's answer, or one whose object is gone
        if response.get("ok") and response.get("path"):
            Path(response["path"]).unlink(missing_ok=True)
        return
    ob = find_object(request.uid)
    stale = request.seq < _APPLIED.get(request.uid, 0) or request.seq < _SEQ.get(request.uid, 0)
    if ob is None or stale:
        if response.get("ok") and response.get("path"):
            Path(response["path"]).unlink(missing_ok=True)
        return
    st = status(ob)
    try:
        _apply(ob, response, request.values)
    except OccNetError as err:
        st.state, st.message = "error", str(err)
        return
    _APPLIED[request.uid] = request.seq
    st.stats = dict(response.get("stats") or {})
    st.seconds = time.monotonic() - request.sent_at
    st.state = "ok"
    st.message = f"{_settings_text(response)} in {st.seconds:.2f} s"


def _fail_in_flight(server: slider_client.SliderClient) -> None:
    message = server.failure_message()
    for key in [k for k in _IN_FLIGHT if k[0] == server.key]:
        request = _IN_FLIGHT.pop(key)
        ob = find_object(request.uid)
        if ob is not None:
            st = status(ob)
            st.state, st.message = "error", message


def process_once() -> bool:
    """One step of the UI path: collect answers, swap meshes, send what is due.

    Returns True while anything is pending or in flight. The timer calls it; tests may too.
    """
    for server in POOL:
        for response in server.poll():
            _on_response(server, response)
        if not server.alive and any(k[0] == server.key for k in _IN_FLIGHT):
            _fail_in_flight(server)
            POOL.stop(server.key)
    for uid in _DEBOUNCE.due(busy=_busy):
        ob = find_object(uid)
        if ob is not None and is_result(ob):
            _send(ob)
    return bool(_DEBOUNCE) or bool(_IN_FLIGHT)


def tick() -> float | None:
    """The bpy.app.timers callback: runs while there is work, then unregisters itself.

    Only the sidebars are redrawn, and only when a status changed: the viewport redraws by
    itself when a mesh is swapped, and a full 3D-View redraw costs 0.4-2 s on software GL."""
    before = {uid: (st.state, st.message) for uid, st in _STATUS.items()}
    try:
        busy = process_once()
    except Exception:  # noqa: BLE001 - a bug must not kill the timer silently mid-drag
        traceback.print_exc()
        busy = bool(_IN_FLIGHT)
    if before != {uid: (st.state, st.message) for uid, st in _STATUS.items()}:
        ui.redraw_sidebars()
    return TICK_S if busy else None


# --------------------------------------------------------------------------------------------
# The blocking path (scripts, blender --background)
# --------------------------------------------------------------------------------------------

def update_blocking(
    ob: bpy.types.Object,
    *,
    resolution: int | None = None,
    threshold: float | None = None,
    weights: Iterable[float] | None = None,
    timeout: float = REQUEST_TIMEOUT_S,
) -> bpy.types.Object:
    """Re-extracts ``ob``'s surface with the given settings (others: the object's current ones) and
    swaps its mesh; on success the object's slider properties show the new settings."""
    if not is_result(ob):
        raise OccNetError(f"'{getattr(ob, 'name', ob)}' is not an OccNet result (it has no checkpoint); "
                          "only reconstructions can be updated.")
    values = current_values(ob)
    if resolution is not None:
        if isinstance(resolution, bool) or not isinstance(resolution, (int, float, str)) or str(resolution).strip() not in {str(r) for r in RESOLUTIONS}:
            raise OccNetError(f"resolution must be one of {', '.join(map(str, RESOLUTIONS))} (got {resolution!r})")
        values["resolution"] = int(str(resolution).strip())
    if threshold is not None:
        try:
            number = float(threshold)
        except (TypeError, ValueError):
            raise OccNetError(f"threshold must be a number between 0.01 and 0.99 (got {threshold!r})") from None
        if isinstance(threshold, bool) or not 0.01 <= number <= 0.99:
            raise OccNetError(f"threshold must lie between 0.01 and 0.99 (got {threshold!r})")
        values["threshold"] = round(number, 4)
    if weights is not None:
        values["weights"] = slider_client.normalise_weights(weights)
    uid = ob.session_uid
    _DEBOUNCE.discard(uid)
    server = server_for(ob)
    server.wait_ready()
    rid = server.send("extract", **values)
    _SEQ[uid] = _SEQ.get(uid, 0) + 1
    seq = _SEQ[uid]
    started = time.monotonic()
    response = server.wait(rid, timeout)
    _apply(ob, response, values)
    _APPLIED[uid] = seq
    live = ob.occnet_live
    with quiet():
        live.resolution = str(values["resolution"])
        live.threshold = values["threshold"]
        if "weights" in values and len(values["weights"]) == len(live.weights):
            total = sum(values["weights"]) or 1.0
            for item, w in zip(live.weights, values["weights"]):
                item.value = min(1.0, max(0.0, w / total))
    st = status(ob)
    st.stats = dict(response.get("stats") or {})
    st.seconds = time.monotonic() - started
    st.state, st.message = "ok", f"{_settings_text(response)} in {st.seconds:.2f} s"
    return ob


# --------------------------------------------------------------------------------------------
# Handlers and registration
# --------------------------------------------------------------------------------------------

@persistent
def _on_load_pre(*_args) -> None:
    shutdown()


@persistent
def _on_load_post(*_args) -> None:
    for ob in bpy.data.objects:
        if is_result(ob) and ob.library is None:
            ensure_live(ob)


@persistent
def _on_depsgraph_update(*_args) -> None:
    try:
        reap()
    except Exception:  # noqa: BLE001
        traceback.print_exc()


_HANDLERS = (
    (bpy.app.handlers.load_pre, _on_load_pre),
    (bpy.app.handlers.load_post, _on_load_post),
    (bpy.app.handlers.depsgraph_update_post, _on_depsgraph_update),
)

classes = (OCCNET_PG_shape_weight, OCCNET_PG_live)


_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register_classes()
    bpy.types.Object.occnet_live = PointerProperty(type=OCCNET_PG_live)
    for handlers, fn in _HANDLERS:
        if fn not in handlers:
            handlers.append(fn)
    results.ON_CREATED.append(ensure_live)  # a new result's sliders start from its run's settings


def unregister() -> None:
    shutdown()
    if ensure_live in results.ON_CREATED:
        results.ON_CREATED.remove(ensure_live)
    for handlers, fn in _HANDLERS:
        if fn in handlers:
            handlers.remove(fn)
    del bpy.types.Object.occnet_live
    _unregister_classes()
