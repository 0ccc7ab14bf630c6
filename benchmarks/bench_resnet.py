"""FastResNet trained with the fast recipe on CIFAR-10 (JPEG), optionally under a time budget.

Prints one line per epoch, then a table: epochs run, training minutes, test accuracy without
test-time augmentation, with flips, and with flips and translations. Run it from the
repository root, alone on the machine (the CPU is shared)::

    flock /tmp/p2p-heavy.lock .venv/bin/python benchmarks/bench_resnet.py \\
        --budget-minutes 9.7 --epochs 20 --widths 64,128,128 --head-lr 0.335  # the 10-minute run
    flock /tmp/p2p-heavy.lock .venv/bin/python benchmarks/bench_resnet.py \\
        --n-train 5000 --n-test 1000 --epochs 1                         # smoke run

With ``--budget-minutes`` the schedule follows the clock and training stops at the budget
(or after ``--epochs``, whichever comes first); data loading and scoring are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from pix2pred.data import load_dataset
from pix2pred.metrics import accuracy
from pix2pred.nn_torch.fast_train import FastTrainConfig, predict_tta, train_fast
from pix2pred.nn_torch.resnet import FastResNet

DATA = "../shared/data/cifar10-jpeg.tar.gz"


def _device_name(device: str) -> str:
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=DATA)
    parser.add_argument("--epochs", type=float, default=8.0)
    parser.add_argument("--budget-minutes", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=0.24, help="Muon lr of the conv filters.")
    parser.add_argument("--head-lr", type=float, default=0.67)
    parser.add_argument("--widths", default="64,256,256")
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--translate", type=int, default=2)
    parser.add_argument("--cutout", type=int, default=0)
    parser.add_argument("--ema", type=float, default=None)
    parser.add_argument("--whiten-bias-until", type=float, default=0.375)
    parser.add_argument("--amp", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = parser.parse_args()
    # Fixed shapes throughout: let cuDNN pick its fastest kernels (no effect on the CPU).
    torch.backends.cudnn.benchmark = True

    t0 = time.perf_counter()
    sizes = {k: v for k, v in (("n_train", args.n_train), ("n_test", args.n_test)) if v}
    ds = load_dataset("folder", root=args.root, val_size=0, seed=args.seed, **sizes)
    load_seconds = time.perf_counter() - t0
    widths = tuple(int(w) for w in args.widths.split(","))
    model = FastResNet(len(ds.classes), ds.X_train.shape[-1], widths, args.depth, seed=args.seed)
    cfg = FastTrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        head_lr=args.head_lr,
        translate=args.translate,
        cutout=args.cutout,
        ema=args.ema,
        whiten_bias_until=args.whiten_bias_until,
        amp=args.amp,
        time_budget=None if args.budget_minutes is None else 60.0 * args.budget_minutes,
        seed=args.seed,
    )
    print(
        f"FastResNet{widths} depth {args.depth}, {model.num_params():,} parameters; "
        f"{len(ds.y_train)} train / {len(ds.y_test)} test images of CIFAR-10 (JPEG), loaded in "
        f"{load_seconds:.1f} s; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{_device_name(args.device)}; load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    def report(r: dict) -> None:
        print(
            f"  epoch {r['epoch']:2d} ({r['epochs_done']:.2f} done): loss {r['train_loss']:.4f}, "
            f"train acc {r['train_acc']:.4f}, {r['train_seconds']:.0f} s, "
            f"load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )

    result = train_fast(model, ds.X_train, ds.y_train, cfg, device=args.device, progress=report)
    t0 = time.perf_counter()
    levels = predict_tta(model, ds.X_test, max_tta=2)
    score_seconds = time.perf_counter() - t0
    acc = {k: accuracy(ds.y_test, v.argmax(1)) for k, v in levels.items()}

    budget = "none" if args.budget_minutes is None else f"{args.budget_minutes:g} min"
    header = ("epochs", "train min", "no TTA", "TTA flip", "TTA flip+shift", "steps", "budget")
    row = (
        f"{result.epochs:.2f}",
        f"{result.train_seconds / 60:.2f}",
        f"{acc[0]:.2%}",
        f"{acc[1]:.2%}",
        f"{acc[2]:.2%}",
        str(result.steps),
        budget,
    )
    widths_col = [max(len(h), len(c)) for h, c in zip(header, row, strict=True)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths_col, strict=True)) + " |"
    print()
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths_col) + "|")
    print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths_col, strict=True)) + " |")
    print(f"(test scoring with all TTA views: {score_seconds:.1f} s; batch {result.batch_size})")
    if args.json is not None:
        record = {
            "args": vars(args) | {"json": str(args.json)},
            "epochs": result.epochs,
            "steps": result.steps,
            "train_seconds": result.train_seconds,
            "test_accuracy": {str(k): v for k, v in acc.items()},
            "score_seconds": score_seconds,
            "history": result.history,
            "command": " ".join(sys.argv),
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
