"""Options and helpers shared by the command-line modules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)
out = Console()

DatasetOpt = Annotated[
    str, typer.Option("--dataset", "-d", help="synthetic, cifar10 or folder.", show_default=False)
]
RootOpt = Annotated[
    Path | None,
    typer.Option(help="Data location: CIFAR-10 folder/tarball, or an image folder/.zip/.tar.gz."),
]
SeedOpt = Annotated[int, typer.Option(help="Seed for splits, sampling and initialisation.")]
ValSizeOpt = Annotated[
    float, typer.Option(help="Validation split carved from train: a fraction, or a count if >= 1.")
]
ImageSizeOpt = Annotated[
    int | None, typer.Option(help="Resize images to this size (folder datasets, synthetic).")
]
NTrainOpt = Annotated[int | None, typer.Option(help="Use (or generate) this many train images.")]
NTestOpt = Annotated[int | None, typer.Option(help="Use (or generate) this many test images.")]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out", "-o", help="Run folder to create (default runs/<model>-<dataset>-<time>)."
    ),
]


def _val_size(value: float) -> float | int:
    if value < 0:
        raise ValueError(f"--val-size must be >= 0, got {value}")
    return int(value) if value >= 1 else value


def load_data(
    dataset: str,
    root: Path | None,
    seed: int,
    val_size: float,
    image_size: int | None,
    n_train: int | None,
    n_test: int | None,
):
    """Load a dataset for a command, with the loader's own progress bar."""
    from pix2pred.data import load_dataset

    kwargs = {}
    if n_train is not None:
        kwargs["n_train"] = n_train
    if n_test is not None:
        kwargs["n_test"] = n_test
    return load_dataset(
        dataset,
        root=root,
        seed=seed,
        val_size=_val_size(val_size),
        image_size=image_size,
        progress=True,
        **kwargs,
    )


def parse_ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(
            f"{option} must be a comma-separated list of integers, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise ValueError(f"{option} must list integers >= 1, got {text!r}")
    return sorted(set(values))
