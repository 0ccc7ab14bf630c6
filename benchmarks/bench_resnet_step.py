"""Seconds per training step of FastResNet against a plain torch build of the same network.

The reference is the fast CIFAR-10 recipes' network (airbench's layer order) written with
stock ``nn`` modules and trained by ``torch.optim.SGD``: whitening conv 2×2 → GELU → three
groups of conv3×3 → max-pool 2 → BN → GELU → conv3×3 → BN → GELU, then max-pool and a linear
head. Ours is `pix2pred.nn_torch.resnet.FastResNet` with `fast_train`'s optimizers (Muon for
the filters, Nesterov SGD for the rest). Both: channels-last memory, bf16 autocast where the
CPU has native bf16, loss summed over the batch, the whitening conv frozen (as after the
first 37.5% of training). Each side runs in its own process, the two take turns ``--rounds``
times, and each time is the best step over the rounds.

The ratio says whether a time-to-accuracy bar missed on this machine is lost in our code or
in the machine: ``s/epoch`` is 50,000 images' worth of steps.

    flock /tmp/p2p-heavy.lock .venv/bin/python benchmarks/bench_resnet_step.py
    flock /tmp/p2p-heavy.lock .venv/bin/python benchmarks/bench_resnet_step.py \\
        --config 64,256,256:1024 --config 64,128,128:2000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

TRAIN_IMAGES = 50_000


def _step_seconds(kind: str, widths: tuple[int, int, int], batch: int, steps: int) -> float:
    """Best wall time of one training step (forward, backward, optimizer) in this process."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from pix2pred.nn_torch.fast_train import FastTrainConfig, _param_groups, resolve_amp

    torch.manual_seed(0)
    if kind == "ours":
        from pix2pred.nn_torch.resnet import FastResNet

        model = FastResNet(10, 3, widths, depth=2)
        model.whiten.bias.requires_grad_(False)
        opt = _param_groups(model, FastTrainConfig(batch_size=batch), batch)
        optimizers = [opt["muon"], opt["sgd"]]
    else:

        def bn(c: int) -> nn.BatchNorm2d:
            norm = nn.BatchNorm2d(c, eps=1e-12, momentum=0.4)
            norm.weight.requires_grad_(False)
            return norm

        def group(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding="same", bias=False),
                nn.MaxPool2d(2),
                bn(c_out),
                nn.GELU(),
                nn.Conv2d(c_out, c_out, 3, padding="same", bias=False),
                bn(c_out),
                nn.GELU(),
            )

        whiten = nn.Conv2d(3, 24, 2, padding=0, bias=True).requires_grad_(False)
        model = nn.Sequential(
            whiten,
            nn.GELU(),
            group(24, widths[0]),
            group(widths[0], widths[1]),
            group(widths[1], widths[2]),
            nn.MaxPool2d(3),
            nn.Flatten(),
            nn.Linear(widths[2], 10, bias=False),
        )
        params = [p for p in model.parameters() if p.requires_grad]
        optimizers = [torch.optim.SGD(params, lr=1e-3, momentum=0.85, nesterov=True)]
    model = model.to(memory_format=torch.channels_last).train()
    amp = resolve_amp("auto", torch.device("cpu"), torch.float32)
    x = (torch.rand(batch, 3, 32, 32) * 255).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
            logits = model(x)
        F.cross_entropy(logits.float(), y, label_smoothing=0.2, reduction="sum").backward()
        for o in optimizers:
            o.step()
        model.zero_grad(set_to_none=True)

    step()
    best = float("inf")
    for _ in range(steps):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


def _parse_config(text: str) -> tuple[tuple[int, int, int], int]:
    try:
        widths_text, batch_text = text.split(":")
        widths = tuple(int(w) for w in widths_text.split(","))
        batch = int(batch_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected W1,W2,W3:BATCH, got {text!r}") from None
    if len(widths) != 3 or min(widths) < 1 or batch < 2:
        raise argparse.ArgumentTypeError(f"expected three widths and a batch >= 2, got {text!r}")
    return widths, batch  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["ours", "reference"], help=argparse.SUPPRESS)
    parser.add_argument(
        "--config",
        type=_parse_config,
        action="append",
        help="W1,W2,W3:BATCH (repeatable; default 64,256,256:1024, 64,256,256:2000, "
        "64,128,128:2000)",
    )
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process")
    parser.add_argument("--rounds", type=int, default=2, help="turns of the two processes")
    args = parser.parse_args()
    configs = args.config or [
        ((64, 256, 256), 1024),
        ((64, 256, 256), 2000),
        ((64, 128, 128), 2000),
    ]
    if args.worker:
        (widths, batch), *_ = configs
        print(json.dumps(_step_seconds(args.worker, widths, batch, args.steps)))
        return
    if args.steps < 1 or args.rounds < 1:
        parser.error("--steps and --rounds must be at least 1")

    import torch

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; best step of "
        f"{args.steps} in each of {args.rounds} rounds; load average {os.getloadavg()[0]:.2f}"
    )
    header = ("widths", "batch", "ours s/step", "reference s/step", "ours / reference")
    header += ("ours s/epoch", "reference s/epoch")
    rows = []
    for widths, batch in configs:
        best = {"ours": float("inf"), "reference": float("inf")}
        for _ in range(args.rounds):
            for kind in best:
                spec = f"{','.join(map(str, widths))}:{batch}"
                cmd = [sys.executable, __file__, "--worker", kind, "--config", spec]
                cmd += ["--steps", str(args.steps)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise SystemExit(f"the {kind} worker failed:\n{done.stderr}")
                best[kind] = min(best[kind], json.loads(done.stdout))
        per_epoch = TRAIN_IMAGES / batch
        rows.append(
            (
                ",".join(map(str, widths)),
                str(batch),
                f"{best['ours']:.3f}",
                f"{best['reference']:.3f}",
                f"{best['ours'] / best['reference']:.2f}x",
                f"{best['ours'] * per_epoch:.1f}",
                f"{best['reference'] * per_epoch:.1f}",
            )
        )
    widths_col = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths_col, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths_col) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths_col, strict=True)) + " |")


if __name__ == "__main__":
    main()
