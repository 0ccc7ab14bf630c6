"""Folder-dataset load time on CIFAR-10 (JPEG): first load (decode + cache write) and cached loads.

The first load uses a fresh, empty cache folder, so it reads the tarball, decodes every JPEG and
writes the ``.npz`` cache; the cached loads hash the tarball, find the cache and read it. Each
goes through the public ``load_dataset("folder", ...)`` with ``val_size=0``.

Run from the repository root, one heavy job at a time::

    flock /tmp/p2p-heavy.lock .venv/bin/python benchmarks/bench_folder_load.py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from pix2pred.data import load_dataset

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "../shared/data/cifar10-jpeg.tar.gz"


def _timed_load(root: Path, cache_dir: Path, image_size: int | None):
    t = time.perf_counter()
    ds = load_dataset("folder", root=root, val_size=0, image_size=image_size, cache_dir=cache_dir)
    return time.perf_counter() - t, ds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="directory or archive")
    parser.add_argument("--repeats", type=int, default=5, help="cached loads to time")
    parser.add_argument("--image-size", type=int, default=None, help="resize to this side")
    args = parser.parse_args()
    root = args.root.resolve()

    with tempfile.TemporaryDirectory(prefix="pix2pred-bench-cache-") as tmp:
        first, ds = _timed_load(root, Path(tmp), args.image_size)
        assert not ds.info["from_cache"]
        cached = []
        for _ in range(args.repeats):
            seconds, again = _timed_load(root, Path(tmp), args.image_size)
            assert again.info["from_cache"]
            cached.append(seconds)
        cache_mb = Path(ds.info["cache"]).stat().st_size / 2**20

    name = "CIFAR-10 (JPEG)" if root.name == "cifar10-jpeg.tar.gz" else root.name
    rows = [
        ("dataset", name),
        ("source", str(root)),
        ("train / test images", f"{len(ds.y_train):,} / {len(ds.y_test):,}"),
        ("image shape", "x".join(map(str, ds.image_shape))),
        ("classes", str(len(ds.classes))),
        ("first load (decode + cache write)", f"{first:.2f} s"),
        (
            f"cached load (median / best of {args.repeats})",
            f"{statistics.median(cached):.2f} / {min(cached):.2f} s",
        ),
        ("cache file", f"{cache_mb:.0f} MiB"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
