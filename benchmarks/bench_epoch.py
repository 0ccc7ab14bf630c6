"""Seconds per training epoch of a CNN on CIFAR-10 (JPEG): numpy backend against torch.

Each backend trains the same estimator (default: the course's SimpleCNN with `pix2pred train
cnn`'s defaults: Adam, batch 128, flip+crop, per-channel normalisation) for ``--epochs`` epochs
over the 45,000-image training split (the split `pix2pred train` uses), each in its own process
(two thread pools in one process slow each other down). Where the environment sets
``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` (which can pin OpenBLAS to slower kernels), the numpy
backend runs twice: with them as they are, and with them unset. The table gives seconds per
epoch (the whole ``fit``, set-up included, over the epochs), test accuracy after the run, and
the ratio numpy / torch. Run from the repository root, alone on the machine::

    flock /tmp/p2p-heavy.lock .venv/bin/python benchmarks/bench_epoch.py
    flock /tmp/p2p-heavy.lock .venv/bin/python benchmarks/bench_epoch.py --spec 32,32,M,64,64,M|256
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "../shared/data/cifar10-jpeg.tar.gz"
BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def worker(args: argparse.Namespace) -> None:
    """Train in this process and print one JSON line: per-epoch seconds and test accuracy."""
    from pix2pred.data import load_dataset
    from pix2pred.estimators import CNN

    ds = load_dataset("folder", root=args.root, val_size=0.1, seed=0, n_train=args.n_train)
    est = CNN(spec=args.spec, epochs=args.epochs, backend=args.backend, device="cpu", val_size=0)
    t0 = time.perf_counter()
    est.fit(ds.X_train, ds.y_train)
    total = time.perf_counter() - t0
    acc = est.score(ds.X_test, ds.y_test)
    record = {"seconds_per_epoch": total / args.epochs, "test_accuracy": acc}
    print(json.dumps(record | {"n_train": len(ds.y_train)}))


def run(backend: str, args: argparse.Namespace, unset_blas: bool) -> dict:
    env = dict(os.environ)
    if unset_blas:
        for name in BLAS_VARS:
            env.pop(name, None)
    cmd = [sys.executable, __file__, "--worker", "--backend", backend, "--epochs", str(args.epochs)]
    cmd += ["--root", str(args.root)]
    if args.spec:
        cmd += ["--spec", args.spec]
    if args.n_train:
        cmd += ["--n-train", str(args.n_train)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{backend} worker failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DATA)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--spec", default=None, help="A ConvNet spec; default SimpleCNN.")
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--backend", default="numpy", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    set_here = [f"{v}={os.environ[v]}" for v in BLAS_VARS if v in os.environ]
    runs = [("torch", "torch (MKL/oneDNN)", False)]
    if set_here:  # the second numpy run differs from the first only when they are set
        runs += [
            ("numpy", f"numpy, OpenBLAS with {' '.join(set_here)}", False),
            ("numpy", "numpy, OpenBLAS variables unset", True),
        ]
    else:
        runs += [("numpy", "numpy (no OpenBLAS variables set)", False)]
    results = []
    for backend, label, unset in runs:
        r = run(backend, args, unset)
        results.append((label, r))
        print(f"{label}: {r['seconds_per_epoch']:.1f} s/epoch", flush=True)
    torch_s = results[0][1]["seconds_per_epoch"]
    model = f"ConvNet {args.spec}" if args.spec else "SimpleCNN"
    n = results[0][1]["n_train"]
    print(f"\n{model}, {n} training images, {args.epochs} epochs, load {os.getloadavg()[0]:.2f}")
    print("| backend | s/epoch | test acc | vs torch |")
    print("|---|---:|---:|---:|")
    for label, r in results:
        ratio = r["seconds_per_epoch"] / torch_s
        print(
            f"| {label} | {r['seconds_per_epoch']:.1f} | {r['test_accuracy']:.2%} | {ratio:.2f}x |"
        )


if __name__ == "__main__":
    main()
