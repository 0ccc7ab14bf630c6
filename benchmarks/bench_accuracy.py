"""Test accuracy of every numpy-backend model on CIFAR-10 (JPEG), trained on this machine.

Each model is trained by the command line exactly as a user would run it; the script prints
the commands, then one table (model, parameters, epochs, training time, test accuracy, goal).
Run from the repository root, alone on the machine::

    .venv/bin/python benchmarks/bench_accuracy.py                 # every model
    .venv/bin/python benchmarks/bench_accuracy.py --only softmax svm

Run folders go to ``runs/bench-accuracy/<model>`` (an existing one is left alone and its
metrics are reused, so an interrupted benchmark continues where it stopped).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

DATA = "../shared/data/cifar10-jpeg.tar.gz"

# model: (extra options, goal test accuracy from the issue)
RUNS: dict[str, tuple[list[str], float]] = {
    "softmax": (["--epochs", "20", "--lr", "2e-2", "--weight-decay", "1e-2"], 0.40),
    "svm": (["--epochs", "20", "--lr", "5e-3", "--weight-decay", "1e-2"], 0.39),
    "mlp": (["--epochs", "20", "--hidden", "500", "--lr", "1e-3", "--weight-decay", "1e-3"], 0.53),
    "fcnet": (
        ["--epochs", "30", "--hidden", "1024,512,256", "--dropout", "0.2", "--augment", "flip"],
        0.56,
    ),
    "cnn": (["--epochs", "20", "--augment", "flip,crop"], 0.75),
    "convnet": (
        ["--spec", "32,32,M,64,64,M,128,128,M|256", "--epochs", "17", "--augment", "flip,crop"],
        0.82,
    ),
}


def command(model: str, out: Path) -> list[str]:
    exe = str(Path(sys.executable).with_name("pix2pred"))
    extra, _ = RUNS[model]
    return [exe, "train", model, "--dataset", "folder", "--root", DATA, *extra, "--out", str(out)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--runs", type=Path, default=Path("runs/bench-accuracy"))
    args = parser.parse_args()

    rows = []
    for model in args.only:
        out = args.runs / model
        cmd = command(model, out)
        print("$", shlex.join(cmd), flush=True)
        if not (out / "metrics.json").is_file():
            if out.exists() and (out / "checkpoint").is_dir():
                cmd = [cmd[0], "train", model, "--resume", str(out)]
            subprocess.run(cmd, check=True)
        m = json.loads((out / "metrics.json").read_text())
        rows.append((model, m, RUNS[model][1]))

    print("\nCIFAR-10 (JPEG), test split (10,000 images), numpy backend, this machine")
    head = (
        f"{'model':<9} {'params':>10} {'epochs':>6} {'train s':>8} {'s/epoch':>8} "
        f"{'test acc':>9} {'goal':>6}"
    )
    print(head)
    print("-" * len(head))
    for model, m, goal in rows:
        ok = "ok" if m["test_accuracy"] >= goal else "MISS"
        print(
            f"{model:<9} {m['num_params']:>10,} {m['epochs_run']:>6} {m['train_seconds']:>8.0f} "
            f"{m['train_seconds'] / m['epochs_run']:>8.1f} {m['test_accuracy']:>9.2%} "
            f"{goal:>6.0%} {ok}"
        )


if __name__ == "__main__":
    main()
