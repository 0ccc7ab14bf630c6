"""``pix2pred compare``: kNN → LinearSVM → Softmax → TwoLayerNet → SimpleCNN, one report."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from pix2pred.cli_options import (
    ImageSizeOpt,
    NTestOpt,
    NTrainOpt,
    RootOpt,
    console,
    load_data,
    out,
)
from pix2pred.compare import BACKENDS, BUDGETS, STATE_FILE, budget_help

__all__ = ["compare", "register"]

_DATA_KEYS = ("dataset", "root", "seed", "image_size", "n_train", "n_test", "device")


def _saved_config(run_dir: Path, option: str) -> dict[str, Any] | None:
    """The config of an earlier compare in ``run_dir``; None when the folder is new or empty."""
    from pix2pred.checkpoint import read_json

    if not run_dir.exists():
        if option == "--resume":
            raise FileNotFoundError(f"--resume {run_dir}: no such folder")
        return None
    if not run_dir.is_dir():
        raise NotADirectoryError(f"{option} {run_dir}: not a folder")
    if (run_dir / STATE_FILE).is_file():
        return read_json(run_dir / STATE_FILE)["config"]
    if option == "--resume" or any(run_dir.iterdir()):
        raise FileExistsError(
            f"{option} {run_dir}: the folder holds no {STATE_FILE}, so it is not a compare run "
            "(pix2pred never writes into another folder's files)"
        )
    return None


def _command(config: dict[str, Any], out_dir: Path | None) -> str:
    """The command line that makes this comparison, for the report."""
    args = ["pix2pred", "compare", "--dataset", config["dataset"]]
    for key in ("root", "backend", "budget", "n_train", "n_test", "image_size"):
        if config[key] is not None:
            args += [f"--{key.replace('_', '-')}", str(config[key])]
    if config["seed"]:
        args += ["--seed", str(config["seed"])]
    if out_dir is not None:
        args += ["--out", str(out_dir)]
    return shlex.join(args)


def compare(
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="synthetic, cifar10 or folder.")
    ] = None,
    root: RootOpt = None,
    backend: Annotated[
        str | None,
        typer.Option(help="numpy (default), torch, or both (every model on each)."),
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option(
            help="quick (default; 8 min on CIFAR-10 on 2 idle CPU cores) or full "
            "(hours; adds FullyConnectedNet, ConvNet, the resnet on torch and the optimizer and "
            f"learning-rate experiments). Models and epochs: {budget_help()}."
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Compare folder (default runs/compare-<dataset>-<time>); an earlier compare "
            "there with the same options is continued.",
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue an interrupted compare folder with its own options."),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(help="Where torch models run: auto (default), cpu, cuda, cuda:N, mps."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for splits, sampling and initialisation (default 0).")
    ] = None,
    image_size: ImageSizeOpt = None,
    n_train: NTrainOpt = None,
    n_test: NTestOpt = None,
) -> None:
    """Train the course's models on one dataset and compare them in one report.

    kNN, LinearSVM, Softmax, TwoLayerNet and SimpleCNN; --budget full adds more.
    Each model trains into its own subfolder, with its own report.html.
    compare.html: the course's table, accuracy against time, each model's pictures.
    Ctrl-C keeps the finished models; --resume DIR continues.
    """
    from pix2pred.compare import run_compare
    from pix2pred.compare_report import HTML_FILE, markdown_table
    from pix2pred.runs import create_run_dir, default_run_dir

    if resume is not None:
        given = {"dataset": dataset, "root": root, "out": out_dir, "image_size": image_size}
        given.update(backend=backend, budget=budget, device=device, seed=seed)
        given.update(n_train=n_train, n_test=n_test)
        named = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
        if named:
            raise ValueError(
                f"--resume takes its options from {STATE_FILE}; drop {', '.join(named)}"
            )
        config = _saved_config(resume, "--resume")
        run_dir = resume
    else:
        backend, budget = backend or "numpy", budget or "quick"
        device, seed = device or "auto", 0 if seed is None else seed
        if backend not in BACKENDS:
            raise ValueError(f"--backend must be numpy, torch or both, got {backend!r}")
        if budget not in BUDGETS:
            raise ValueError(f"--budget must be quick or full, got {budget!r}")
        if dataset is None:
            raise ValueError("--dataset is required (synthetic, cifar10 or folder)")
        config = {
            "dataset": dataset,
            "root": str(root) if root else None,
            "seed": seed,
            "image_size": image_size,
            "n_train": n_train,
            "n_test": n_test,
            "device": device,
            "backend": backend,
            "budget": budget,
        }
        run_dir = out_dir or default_run_dir("compare", dataset)
        saved = _saved_config(run_dir, "--out")
        if saved is not None:
            keys = (*_DATA_KEYS, "backend", "budget")
            differ = [k for k in keys if saved.get(k) != config[k]]
            if differ:
                was = ", ".join(f"{k}={saved.get(k)!r}" for k in differ)
                raise ValueError(
                    f"--out {run_dir} holds a compare with other options ({was}); use "
                    f"--resume {run_dir} or another --out"
                )
            config = saved
        else:
            # Load once now: a bad dataset or root fails here, before any folder is made.
            ds = load_data(dataset, root, seed, 0.1, image_size, n_train, n_test)
            config["title"] = ds.title
            config["command"] = _command(config, out_dir)
            create_run_dir(run_dir)
    console.print(
        f"compare on {config.get('title', config['dataset'])}: budget {config['budget']}, "
        f"backend {config['backend']}, folder {run_dir}"
    )
    try:
        state = run_compare(run_dir, config)
    except KeyboardInterrupt:
        console.print(
            f"interrupted; the finished models are kept. Continue with: "
            f"pix2pred compare --resume {run_dir}"
        )
        out.print(f"report so far: {run_dir / HTML_FILE}")
        raise typer.Exit(130) from None
    out.print(markdown_table(state["rows"]))
    out.print(f"report: {run_dir / HTML_FILE}")


def register(app: typer.Typer) -> None:
    """Add ``compare`` to the CLI."""
    app.command("compare")(compare)
