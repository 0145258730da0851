"""Seconds to prepare each mesh as `fit` does (labels, signed distances, the cache file), and where they go.

    python bench/prepare.py [--meshes board camera ...] [--code OTHER_CHECKOUT]

`prepare` is the first stage of every `fit` and the one that grows with the mesh rather than the
network: CAD parts spend most of it in libigl's winding numbers and distances. To compare two versions
of the labelling code, run this twice in a row, once with `--code` pointing at the other checkout (its
`occnet_backend` is imported instead of this one's), on the same machine, and alternate the runs: the
VMs' speed drifts by +-30% within minutes. Each line gives the whole `prepare_dataset` call and the
seconds inside libigl's winding-number and distance queries.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meshes", nargs="+", default=None, help="names from bench/common.py (default: all)")
    parser.add_argument("--code", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the checkout whose occnet_backend prepares (default: this one)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.code.resolve()))
    sys.path.insert(1, str(Path(__file__).resolve().parent))

    import igl
    import occnet_backend
    from common import PACKAGE_MESHES, machine, package_meshes
    from occnet_backend.data import labels
    from occnet_backend.data.folder import prepare_dataset
    from occnet_backend.data.sampling import SamplingConfig
    from occnet_contract.settings import TRAIN_BOX, FitSettings

    spent: dict[str, float] = {}

    def timed(owner, name: str) -> None:
        call = getattr(owner, name)

        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return call(*a, **k)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start

        setattr(owner, name, wrapper)

    timed(labels, "winding_numbers")
    timed(igl, "point_mesh_squared_distance")
    print(f"machine: {machine()}")
    print(f"code: {Path(occnet_backend.__file__).resolve().parent.parent}")
    settings = FitSettings()
    near = settings.cached_points // 2
    config = SamplingConfig(num_uniform=settings.cached_points - near, num_near=near, uniform_box=TRAIN_BOX,
                            seed=settings.seed)
    names = args.meshes or list(PACKAGE_MESHES)
    unknown = sorted(set(names) - set(PACKAGE_MESHES))
    if unknown:
        parser.error(f"unknown mesh name(s) {', '.join(unknown)}; choose from {', '.join(PACKAGE_MESHES)}")
    paths = package_meshes(names)
    total = 0.0
    for name in names:
        spent.clear()
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            prepare_dataset(Path(tmp) / "data", [paths[name]], config=config, split=(1.0, 0.0, 0.0),
                            seed=settings.seed, workers=1)
            seconds = time.perf_counter() - start
        total += seconds
        print(f"  {name:<12} {seconds:6.2f} s   winding numbers {spent.get('winding_numbers', 0):5.2f} s   "
              f"distances {spent.get('point_mesh_squared_distance', 0):5.2f} s", flush=True)
    print(f"total {total:.1f} s over {len(names)} meshes")


if __name__ == "__main__":
    main()
