"""Seconds per training epoch of a CNN on CIFAR-10 (JPEG): numpy backend against torch.

Each backend trains the same estimator (default: the course's SimpleCNN with `pix2pred train
cnn`'s defaults: Adam, batch 128, flip+crop, per-channel normalisation) for ``--epochs`` epochs
over the 45,000-image training split (the split `pix2pred train` uses), each in its own process
(two thread pools in one process slow each other down). Beside them, the same network in a
plain PyTorch loop shows what torch itself does on this machine. Where the environment sets
``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` (which can pin OpenBLAS to slower kernels), the numpy
backend runs twice: with them as they are, and with them unset. The table gives each run's
fastest epoch (steps and the epoch's accuracy check), the set-up before the first epoch, test
accuracy after the run, and the ratio to pix2pred's torch backend. Run from the repository
root, alone on the machine::

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
    """Train in this process and print one JSON line: seconds per epoch and test accuracy.

    Epochs are timed from the Solver's epoch callback (steps plus the epoch's accuracy check);
    set-up (preprocessing, building the model) and data loading are timed apart.
    """
    import numpy as np

    from pix2pred.data import load_dataset
    from pix2pred.estimators import CNN

    ds = load_dataset("folder", root=args.root, val_size=0.1, seed=0, n_train=args.n_train)
    if args.backend == "plain-torch":
        record = plain_torch(ds, args.epochs)
    else:
        est = CNN(spec=args.spec, epochs=args.epochs, backend=args.backend, device="cpu")
        t0 = time.perf_counter()
        est._validate()
        est.classes_, y = np.unique(ds.y_train, return_inverse=True)
        data = est._prepare(ds.X_train, y, ds.X_train[:0], y[:0], len(est.classes_))
        stamps = [time.perf_counter()]
        solver = est._solver(data, epoch_callback=lambda _: stamps.append(time.perf_counter()))
        solver.train()
        est.model_ = solver.model
        record = {
            "setup_seconds": stamps[0] - t0,
            "epoch_seconds": np.diff(stamps).tolist(),
            "test_accuracy": est.score(ds.X_test, ds.y_test),
        }
    print(json.dumps(record | {"n_train": len(ds.y_train)}))


def plain_torch(ds, epochs: int) -> dict:
    """SimpleCNN in a plain PyTorch loop, the reference the issue names: nn.Sequential, Adam
    (lr 1e-3, cosine), batch 128, random flips and 4-pixel zero-padded crops drawn per image.

    Its epochs are the steps alone: no accuracy check at the end (pix2pred's epochs include the
    Solver's, on 1,000 training images), and normalisation and padding happen before the clock
    starts, so the comparison leans slightly its way.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    x = torch.from_numpy(ds.X_train).permute(0, 3, 1, 2).float()
    mean, std = x.mean((0, 2, 3), keepdim=True), x.std((0, 2, 3), keepdim=True)
    x = F.pad((x - mean) / std, (4, 4, 4, 4))
    y = torch.from_numpy(ds.y_train.astype(np.int64))
    N, _, H, W = x.shape[0], *x.shape[1:]
    H, W = H - 8, W - 8
    model = nn.Sequential(
        nn.Conv2d(3, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * (H // 4) * (W // 4), 256), nn.ReLU(), nn.Linear(256, 10),
    )  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = epochs * -(-N // 128)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    rows, cols = torch.arange(H), torch.arange(W)
    stamps = [time.perf_counter()]
    for _ in range(epochs):
        for idx in torch.randperm(N).split(128):
            b = len(idx)
            dy, dx = torch.randint(0, 9, (2, b, 1))
            c = cols + dx
            c = torch.where(torch.rand(b, 1) < 0.5, c.flip(1), c)
            xb = x[idx[:, None, None, None], torch.arange(3)[None, :, None, None],
                   (rows + dy)[:, None, :, None], c[:, None, None, :]]  # fmt: skip
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        stamps.append(time.perf_counter())
    xt = torch.from_numpy(ds.X_test).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        pred = torch.cat([model((b - mean) / std).argmax(1) for b in xt.split(1000)])
    acc = float((pred.numpy() == ds.y_test).mean())
    return {"setup_seconds": 0.0, "epoch_seconds": np.diff(stamps).tolist(), "test_accuracy": acc}


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
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--spec", default=None, help="A ConvNet spec; default SimpleCNN.")
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--backend", default="numpy", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    set_here = [f"{v}={os.environ[v]}" for v in BLAS_VARS if v in os.environ]
    runs = [("torch", "pix2pred torch backend", False)]
    if not args.spec:
        runs.insert(0, ("plain-torch", "plain PyTorch loop (reference)", False))
    if set_here:  # the second numpy run differs from the first only when they are set
        runs += [
            ("numpy", f"pix2pred numpy, OpenBLAS with {' '.join(set_here)}", False),
            ("numpy", "pix2pred numpy, OpenBLAS variables unset", True),
        ]
    else:
        runs += [("numpy", "pix2pred numpy backend", False)]
    results = []
    for backend, label, unset in runs:
        r = run(backend, args, unset)
        r["epoch"] = min(r["epoch_seconds"])
        results.append((backend, label, r))
        print(f"{label}: {r['epoch']:.1f} s/epoch", flush=True)
    torch_s = next(r["epoch"] for b, _, r in results if b == "torch")
    model = f"ConvNet {args.spec}" if args.spec else "SimpleCNN"
    n = results[0][2]["n_train"]
    print(f"\n{model}, {n} training images, {args.epochs} epochs, load {os.getloadavg()[0]:.2f}")
    print("fastest epoch of each run; set-up = preprocessing and model before the first epoch")
    print("| run | s/epoch | set-up s | test acc | vs pix2pred torch |")
    print("|---|---:|---:|---:|---:|")
    for _, label, r in results:
        print(
            f"| {label} | {r['epoch']:.1f} | {r['setup_seconds']:.1f} | "
            f"{r['test_accuracy']:.2%} | {r['epoch'] / torch_s:.2f}x |"
        )


if __name__ == "__main__":
    main()
