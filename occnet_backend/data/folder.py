"""The dataset folder: the format the Blender add-on writes and the backend trains from.

```
DATA_ROOT/
  meshes/<shape_id>.<obj|ply|off|stl|glb|gltf>   one file per shape (several parts = their union)
  train.json  val.json  test.json                 JSON lists of shape ids
  prepare.json                                    the sampling settings the caches were made with
  cache/<shape_id>.npz                            per-shape samples (see below)
```

A cache file holds, in unit-cube coordinates: ``uniform_points`` (float16, in [-0.55, 0.55]³) and
``near_points`` (float16, surface samples plus Gaussian noise at two scales) with bit-packed
occupancies, ``surface_points`` (float32) and ``surface_normals`` (float16), the normalisation
(``center``, ``scale``: unit = (v - center) / scale), and ``meta`` (JSON: the mesh file's size,
mtime and SHA-256 and the sampling settings). A cache is rebuilt when its mesh file changes
(size and mtime differ and the content hash differs) or the settings change.

Every file here is written to a temporary name and renamed into place, so an interrupted run
never leaves a half-written file that a later run would trust.

This module does not import torch, so ``prepare`` workers start fast and stay small.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from occnet_contract.files import atomic_output, atomic_write_bytes
from occnet_backend.data.meshes import MESH_EXTENSIONS, LoadedMesh, MeshError, load_mesh
from occnet_backend.data.sampling import SamplingConfig, pack_occupancy, sample_shape, unpack_occupancy

log = logging.getLogger(__name__)

MESHES_DIR = "meshes"
CACHE_DIR = "cache"
SPLITS = ("train", "val", "test")
SETTINGS_FILE = "prepare.json"
CACHE_FORMAT = 3  # 2: signed distances of the labelled points; 3: to the exposed surface, with its closest points
DEFAULT_SPLIT = (0.8, 0.1, 0.1)
_FORBIDDEN_ID_CHARS = set("/\\\x00") | {chr(c) for c in range(32)} | {"\x7f"}


class DatasetError(ValueError):
    """The dataset folder or a request about it is wrong; the message names the file and the fix."""


class PrepareError(DatasetError):
    """Some meshes could not be prepared; `report` lists them (the others were prepared)."""

    def __init__(self, message: str, report: PrepareReport):
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------- shape ids


def validate_shape_id(shape_id: object, where: str = "shape id") -> str:
    """Return the id (NFC-normalised) if it is usable as a file name stem, else raise DatasetError.

    Spaces and non-ASCII letters are fine. Path separators, control characters, ``..`` and a
    leading dot are not: an id becomes ``meshes/<id>.ext`` and ``cache/<id>.npz``, and must never
    point outside those folders or collide with the hidden temporary files.
    """
    if not isinstance(shape_id, str):
        raise DatasetError(f"{where}: shape ids must be strings, got {shape_id!r} ({type(shape_id).__name__})")
    sid = unicodedata.normalize("NFC", shape_id)
    problem = None
    if not sid.strip():
        problem = "it is empty"
    elif any(c in _FORBIDDEN_ID_CHARS for c in sid):
        problem = "it contains a path separator or a control character"
    elif ".." in sid:
        problem = "it contains '..'"
    elif sid.startswith("."):
        problem = "it starts with '.'"
    elif sid != sid.strip():
        problem = "it starts or ends with whitespace"
    if problem:
        raise DatasetError(
            f"{where}: invalid shape id {shape_id!r}: {problem}; ids are file names without folders "
            "(letters, digits, spaces, '_', '-' are fine): rename the mesh file"
        )
    return sid


def shape_id_from_path(path: str | os.PathLike) -> str:
    """The shape id of a mesh file: its file name without the extension."""
    return unicodedata.normalize("NFC", Path(path).stem)


# --------------------------------------------------------------------------- folder


def find_meshes(data_root: str | os.PathLike) -> dict[str, Path]:
    """Shape id -> mesh file for every mesh in ``DATA_ROOT/meshes``, sorted by id.

    Raises DatasetError when two files would give the same id (same stem with different
    extensions, or names differing only in case, which collide on macOS and Windows disks).
    """
    folder = Path(data_root) / MESHES_DIR
    if not folder.is_dir():
        raise DatasetError(
            f"{folder}: no meshes folder; create the dataset with `python -m occnet_backend prepare MESHES... "
            f"--out {data_root}`"
        )
    found: dict[str, Path] = {}
    folded: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in MESH_EXTENSIONS:
            continue
        sid = validate_shape_id(shape_id_from_path(path), where=str(path))
        key = sid.casefold()
        if key in folded:
            raise DatasetError(
                f"duplicate shape id {sid!r}: {folded[key].name} and {path.name} in {folder}; "
                "keep one file per shape (rename or delete one)"
            )
        folded[key] = path
        found[sid] = path
    return dict(sorted(found.items()))


def mesh_path(data_root: str | os.PathLike, shape_id: str) -> Path:
    """The mesh file of `shape_id`; DatasetError naming the folder if there is none."""
    sid = validate_shape_id(shape_id)
    folder = Path(data_root) / MESHES_DIR
    for ext in MESH_EXTENSIONS:
        for candidate in (folder / f"{sid}{ext}", folder / f"{sid}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    meshes = find_meshes(data_root)  # slow path: other Unicode normalisation or case
    if sid in meshes:
        return meshes[sid]
    raise DatasetError(f"shape {sid!r}: no mesh file {folder}/{sid}.<{'|'.join(e[1:] for e in MESH_EXTENSIONS)}>")


def cache_path(data_root: str | os.PathLike, shape_id: str) -> Path:
    return Path(data_root) / CACHE_DIR / f"{validate_shape_id(shape_id)}.npz"


def read_split(data_root: str | os.PathLike, split: str, meshes: dict[str, Path] | None = None) -> list[str]:
    """The shape ids of `split` from ``DATA_ROOT/<split>.json``, validated against the meshes folder.

    Raises DatasetError naming the split file for: a missing or unreadable file, a file that is
    not a JSON list of strings, invalid ids, duplicates, and ids with no mesh file.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    path = Path(data_root) / f"{split}.json"
    if not path.is_file():
        raise DatasetError(
            f"{path}: split file missing; run `python -m occnet_backend prepare --out {data_root}` to write the splits"
        )
    try:
        ids = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: not valid JSON ({err}); it must be a list of shape ids") from None
    if not isinstance(ids, list):
        raise DatasetError(f"{path}: must be a JSON list of shape ids, got {type(ids).__name__}")
    ids = [validate_shape_id(s, where=str(path)) for s in ids]
    seen: set[str] = set()
    for sid in ids:
        if sid in seen:
            raise DatasetError(f"{path}: shape id {sid!r} is listed twice; list each shape once")
        seen.add(sid)
    meshes = find_meshes(data_root) if meshes is None else meshes
    missing = [s for s in ids if s not in meshes]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise DatasetError(
            f"{path}: names shapes with no mesh file in {Path(data_root) / MESHES_DIR}: "
            f"{', '.join(repr(s) for s in missing[:3])}{more}; add the meshes or remove the ids"
        )
    return ids


def split_ids(ids: Sequence[str], fractions: Sequence[float], seed: int = 0) -> dict[str, list[str]]:
    """Shuffle `ids` (seeded) and cut them into train/val/test by `fractions` (summing to 1).

    Rounds to whole shapes, and gives train at least one shape when there is any, so a
    one-shape dataset (the usual Blender case) trains.
    """
    fr = [float(x) for x in fractions]
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise DatasetError(f"split fractions must be three numbers >= 0 summing to 1 (train,val,test), got {fractions}")
    order = sorted(ids)
    perm = np.random.default_rng(seed).permutation(len(order))
    shuffled = [order[i] for i in perm]
    n = len(shuffled)
    n_train = int(round(fr[0] * n))
    n_val = int(round(fr[1] * n))
    if n and fr[0] > 0:
        n_train = max(n_train, 1)
    n_train = min(n_train, n)
    n_val = min(n_val, n - n_train)
    return {
        "train": sorted(shuffled[:n_train]),
        "val": sorted(shuffled[n_train : n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val :]),
    }


def write_json(path: Path, value: object) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))


def read_settings(data_root: str | os.PathLike) -> SamplingConfig:
    """The sampling settings the folder was prepared with (defaults when it never was)."""
    path = Path(data_root) / SETTINGS_FILE
    if not path.is_file():
        return SamplingConfig()
    try:
        return SamplingConfig.from_dict(json.loads(path.read_text(encoding="utf-8"))["sampling"])
    except (ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"{path}: unreadable settings ({err}); delete it and run prepare again") from None


# --------------------------------------------------------------------------- caches


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_meta(path: Path) -> dict | None:
    try:
        with np.load(path) as z:
            return json.loads(str(z["meta"]))
    except Exception as err:  # truncated/corrupt/foreign file: rebuild it
        log.warning("%s: unreadable cache (%s: %s); rebuilding it", path, type(err).__name__, err)
        return None


def cache_is_fresh(cache_file: Path, mesh_file: Path, config: SamplingConfig) -> bool:
    """Whether `cache_file` was built from the current `mesh_file` with `config`.

    Fast path: same size and mtime. If only the mtime changed (a touch, a copy), the content
    hash decides, so an unchanged file is not resampled.
    """
    if not cache_file.is_file():
        return False
    meta = _read_meta(cache_file)
    if not meta or meta.get("format") != CACHE_FORMAT or meta.get("sampling") != config.to_dict():
        return False
    st = mesh_file.stat()
    if meta.get("size") != st.st_size:
        return False
    if meta.get("mtime_ns") == st.st_mtime_ns:
        return True
    return meta.get("sha256") == file_sha256(mesh_file)


def _shape_seed(config: SamplingConfig, shape_id: str) -> list[int]:
    """A per-shape seed that depends on the id, not the shape's position, so adding shapes changes nothing."""
    digest = hashlib.sha256(shape_id.encode("utf-8")).digest()
    return [config.seed, int.from_bytes(digest[:8], "little")]


def build_cache(
    mesh_file: Path, cache_file: Path, config: SamplingConfig, shape_id: str, mesh: LoadedMesh | None = None
) -> dict:
    """Load, validate and sample one mesh and write its cache atomically. Returns a summary dict.

    `mesh`: the already loaded content of `mesh_file` (saves a second parse of a big file).
    """
    st = mesh_file.stat()
    sha = file_sha256(mesh_file)
    mesh = mesh if mesh is not None else load_mesh(mesh_file)
    s = sample_shape(mesh.vertices, mesh.faces, config, seed=_shape_seed(config, shape_id))
    meta = {
        "format": CACHE_FORMAT,
        "shape_id": shape_id,
        "source": mesh_file.name,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "sha256": sha,
        "sampling": config.to_dict(),
        "vertices": int(len(mesh.vertices)),
        "faces": int(len(mesh.faces)),
        "parts": mesh.num_parts,
        "dropped_degenerate_faces": mesh.dropped_degenerate_faces,
    }
    buf = io.BytesIO()
    np.savez(
        buf,
        uniform_points=s["uniform_points"],
        uniform_occupancy=pack_occupancy(s["uniform_occupancy"]),
        uniform_sdf=s["uniform_sdf"],
        near_points=s["near_points"],
        near_occupancy=pack_occupancy(s["near_occupancy"]),
        near_sdf=s["near_sdf"],
        uniform_to_surface=s["uniform_to_surface"],
        near_to_surface=s["near_to_surface"],
        surface_points=s["surface_points"],
        surface_normals=s["surface_normals"],
        center=s["center"],
        scale=np.float64(s["scale"]),
        bbox=s["bbox"],
        meta=np.array(json.dumps(meta)),
    )
    atomic_write_bytes(cache_file, buf.getvalue())
    return {
        "shape_id": shape_id,
        "faces": meta["faces"],
        "inside_fraction": float(s["uniform_occupancy"].mean()) if len(s["uniform_occupancy"]) else 0.0,
    }


def load_samples(data_root: str | os.PathLike, shape_id: str) -> dict:
    """The cached samples of one shape, unpacked, in unit-cube coordinates.

    Keys: uniform_points, near_points, surface_points (float32 [N, 3]); uniform_occupancy,
    near_occupancy (bool [N]); uniform_sdf, near_sdf (float32 [N], negative inside); uniform_to_surface,
    near_to_surface (float32 [N, 3], to the closest surface point); surface_normals (float32 [N, 3]); center (float64 [3]) and scale
    (float) with unit = (v - center) / scale; bbox (float32 [2, 3]); meta (dict).
    Does not check freshness: use :func:`ensure_caches` (OccupancyDataset does) for that.
    """
    path = cache_path(data_root, shape_id)
    if not path.is_file():
        raise DatasetError(
            f"{path}: no cached samples for shape {shape_id!r}; run `python -m occnet_backend prepare --out {data_root}`"
        )
    try:
        with np.load(path) as z:
            uniform = z["uniform_points"].astype(np.float32)
            near = z["near_points"].astype(np.float32)
            return {
                "uniform_points": uniform,
                "uniform_occupancy": unpack_occupancy(z["uniform_occupancy"], len(uniform)),
                "uniform_sdf": z["uniform_sdf"].astype(np.float32),
                "near_points": near,
                "near_occupancy": unpack_occupancy(z["near_occupancy"], len(near)),
                "near_sdf": z["near_sdf"].astype(np.float32),
                "uniform_to_surface": z["uniform_to_surface"].astype(np.float32),
                "near_to_surface": z["near_to_surface"].astype(np.float32),
                "surface_points": z["surface_points"].astype(np.float32),
                "surface_normals": z["surface_normals"].astype(np.float32),
                "center": z["center"].astype(np.float64),
                "scale": float(z["scale"]),
                "bbox": z["bbox"].astype(np.float32),
                "meta": json.loads(str(z["meta"])),
            }
    except (OSError, KeyError, ValueError, EOFError) as err:
        raise DatasetError(f"{path}: corrupt cache ({err}); delete it and run prepare again") from None


def _prepare_one(task: tuple) -> dict:
    """Worker: (source or None, data_root, shape_id, config dict, force) -> result dict.

    With a source file outside the folder, the mesh is validated *before* it is copied in, so
    a bad file never enters meshes/. Bad meshes are returned as errors, not raised, so one bad
    file does not stop the others.
    """
    source, data_root, shape_id, config_dict, force = task
    config = SamplingConfig.from_dict(config_dict)
    data_root = Path(data_root)
    cache_file = cache_path(data_root, shape_id)
    loaded = None
    try:
        if source is not None:
            source = Path(source)
            dest = data_root / MESHES_DIR / f"{shape_id}{source.suffix.lower()}"
            same = dest.is_file() and (
                dest.resolve() == source.resolve()
                or (dest.stat().st_size == source.stat().st_size and file_sha256(dest) == file_sha256(source))
            )
            if not same:
                loaded = load_mesh(source)  # validate before it enters the folder
                _atomic_copy(source, dest)
        else:
            dest = mesh_path(data_root, shape_id)
        if not force and cache_is_fresh(cache_file, dest, config):
            return {"shape_id": shape_id, "status": "cached", "path": str(dest)}
        summary = build_cache(dest, cache_file, config, shape_id, mesh=loaded)
        return {**summary, "status": "built", "path": str(dest)}
    except MeshError as err:
        return {"shape_id": shape_id, "status": "error", "message": str(err), "path": str(source or "")}


def _worker_init() -> None:
    """In each prepare worker: SIGTERM (sent when the run is interrupted) raises, so an atomic write
    in progress removes its temporary file instead of leaving it behind."""
    import signal

    def stop(signum, frame):
        raise SystemExit(128 + signum)  # quiet in multiprocessing's bootstrap, unlike KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def _atomic_copy(source: Path, dest: Path) -> None:
    with atomic_output(dest) as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out)


# --------------------------------------------------------------------------- prepare


@dataclass
class PrepareReport:
    """What `prepare_dataset` did: every shape's status, the splits written, and the errors."""

    data_root: str
    built: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)  # {'shape_id', 'path', 'message'}
    splits: dict[str, list[str]] = field(default_factory=dict)

    @property
    def shapes(self) -> list[str]:
        return sorted(self.built + self.cached)


def collect_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Mesh files named directly or found (recursively) in folders, in a stable order.

    Raises DatasetError for paths that do not exist and files of unknown type named directly.
    """
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                q
                for q in p.rglob("*")
                if q.is_file() and q.suffix.lower() in MESH_EXTENSIONS and not q.name.startswith(".")
            )
            if not found:
                raise DatasetError(f"{p}: folder has no mesh files ({', '.join(MESH_EXTENSIONS)})")
            files.extend(found)
        elif p.is_file():
            if p.suffix.lower() not in MESH_EXTENSIONS:
                raise DatasetError(
                    f"{p}: unknown mesh format {p.suffix or '(no extension)'!r}; use one of {', '.join(MESH_EXTENSIONS)}"
                )
            files.append(p)
        else:
            raise DatasetError(f"{p}: no such file or folder")
    return files


def prepare_dataset(
    data_root: str | os.PathLike,
    inputs: Sequence[str | os.PathLike] = (),
    config: SamplingConfig | None = None,
    split: Sequence[float] | None = None,
    seed: int = 0,
    workers: int = 1,
    force: bool = False,
    on_progress: Callable[[int, int, dict], None] | None = None,
) -> PrepareReport:
    """Copy `inputs` (mesh files or folders) into DATA_ROOT/meshes and build every shape's cache.

    With no inputs, prepares the meshes already in the folder (what the add-on writes). Shapes
    whose cache is fresh are skipped. Splits: written from `split` fractions when given; else
    existing split files are kept if they cover exactly the meshes present; else written with
    0.8/0.1/0.1. `on_progress(done, total, result)` is called once with done=0 before the
    work starts, then after each shape.

    Raises:
        DatasetError: before any work, for bad ids, duplicate ids, missing inputs, bad fractions.
        PrepareError: after all shapes ran, if some meshes were bad (the good ones are
            prepared and cached; split files are not written, so no dataset silently lacks shapes).
    """
    root = Path(data_root)
    config = config or SamplingConfig(seed=seed)
    if split is not None:
        split_ids([], split)  # validate the fractions before doing any work
    existing = find_meshes(root) if (root / MESHES_DIR).is_dir() else {}
    sources = _new_sources(collect_inputs(inputs), existing)
    all_ids = sorted(set(existing) | set(sources))
    if not all_ids:
        raise DatasetError(f"no meshes to prepare: give mesh files or folders, or put meshes in {root / MESHES_DIR}")

    root.mkdir(parents=True, exist_ok=True)
    (root / MESHES_DIR).mkdir(exist_ok=True)
    write_json(root / SETTINGS_FILE, {"format": CACHE_FORMAT, "sampling": config.to_dict()})
    tasks = [(str(sources[s]) if s in sources else None, str(root), s, config.to_dict(), force) for s in all_ids]
    report = PrepareReport(str(root))
    done = 0
    if on_progress:
        on_progress(0, len(tasks), {"status": "start"})

    def record(result: dict) -> None:
        nonlocal done
        done += 1
        status = result["status"]
        if status == "error":
            report.errors.append({k: result[k] for k in ("shape_id", "path", "message")})
        else:
            (report.built if status == "built" else report.cached).append(result["shape_id"])
        if on_progress:
            on_progress(done, len(tasks), result)

    _run(tasks, workers, record)

    if report.errors:
        first = report.errors[0]["message"]
        raise PrepareError(
            f"{len(report.errors)} of {len(tasks)} meshes could not be prepared (first: {first}); "
            "fix or remove them and run prepare again (prepared shapes are reused)",
            report,
        )
    report.splits = _choose_splits(root, report.shapes, split, seed)
    return report


def _new_sources(files: list[Path], existing: dict[str, Path]) -> dict[str, Path]:
    """shape id -> input file, refusing ids that collide with each other or with a mesh already in
    the folder (also when they differ only in case, or in the file's extension)."""
    sources: dict[str, Path] = {}
    folded = {sid.casefold(): sid for sid in existing}
    given: dict[str, str] = {}  # casefolded id -> id, of the inputs
    for f in files:
        sid = validate_shape_id(shape_id_from_path(f), where=str(f))
        twin = given.get(sid.casefold())
        if twin is not None:
            # 'Sphere.obj' and 'sphere.obj' are one file on macOS and Windows disks: refused up front,
            # before a folder exists that every later command rejects
            raise DatasetError(
                f"duplicate shape id {sid!r}: {sources[twin]} and {f} (shape ids come from file names and must "
                "differ in more than case); rename one of them"
            )
        given[sid.casefold()] = sid
        old = folded.get(sid.casefold())
        if old is not None and existing[old].suffix.lower() != f.suffix.lower():
            raise DatasetError(
                f"duplicate shape id {sid!r}: {f} would sit beside {existing[old]}; "
                "delete the old file or rename the new one"
            )
        if old is not None and old != sid:
            raise DatasetError(f"shape ids {old!r} and {sid!r} differ only in case; rename one of them")
        sources[sid] = f
    return sources


def _run(tasks: list[tuple], workers: int, record: Callable[[dict], None]) -> None:
    """`_prepare_one` for every task, in up to `workers` processes; each result goes to `record`."""
    if workers <= 1 or len(tasks) == 1:
        for t in tasks:
            record(_prepare_one(t))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("spawn")  # no fork-after-threads surprises; same on all OSes
        pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx, initializer=_worker_init)
        try:
            futures = [pool.submit(_prepare_one, t) for t in tasks]
            for fut in as_completed(futures):
                record(fut.result())
        except BaseException:
            # Ctrl-C, SIGTERM (the add-on's Cancel) or an error: the workers stop now instead of
            # living on as orphans (~430 MB each); their caches are written atomically, so a
            # killed one leaves no half-written file, only work to redo
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()


def _choose_splits(root: Path, ids: list[str], split: Sequence[float] | None, seed: int) -> dict[str, list[str]]:
    if split is None and all((root / f"{s}.json").is_file() for s in SPLITS):
        try:
            current = {s: read_split(root, s) for s in SPLITS}
            covered = [i for s in SPLITS for i in current[s]]
            if sorted(covered) == sorted(ids) and len(set(covered)) == len(covered):
                return current
            log.info("existing split files do not cover the meshes present; rewriting them")
        except DatasetError as err:
            log.warning("rewriting split files: %s", err)
    splits = split_ids(ids, split or DEFAULT_SPLIT, seed)
    for name in SPLITS:
        write_json(root / f"{name}.json", splits[name])
    return splits


def ensure_caches(data_root: str | os.PathLike, shape_ids: Sequence[str], force: bool = False) -> list[str]:
    """Build the caches of `shape_ids` that are missing or stale (settings from prepare.json).

    Returns the ids rebuilt. Raises PrepareError if a mesh is bad.
    """
    root = Path(data_root)
    config = read_settings(root)
    rebuilt, errors = [], []
    for sid in shape_ids:
        mesh_file = mesh_path(root, sid)
        if not force and cache_is_fresh(cache_path(root, sid), mesh_file, config):
            continue
        log.info("building samples for %r", sid)
        result = _prepare_one((None, str(root), sid, config.to_dict(), True))
        if result["status"] == "error":
            errors.append(result)
        else:
            rebuilt.append(sid)
    if errors:
        report = PrepareReport(str(root), built=rebuilt, errors=errors)
        raise PrepareError(f"{len(errors)} meshes could not be prepared (first: {errors[0]['message']})", report)
    return rebuilt
