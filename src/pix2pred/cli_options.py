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


# The estimators' options, shared by train, diagnose and the experiments (DeviceOpt also by the
# commands that load a run); None means unset.
ModelDatasetOpt = Annotated[
    str | None, typer.Option("--dataset", "-d", help="synthetic, cifar10 or folder.")
]
EpochsOpt = Annotated[int | None, typer.Option(min=1, help="Passes over the training set.")]
BatchOpt = Annotated[int | None, typer.Option(min=1, help="Images per update.")]
OptimizerOpt = Annotated[
    str | None, typer.Option(help="sgd, sgd_momentum, nesterov, rmsprop, adam, adamw.")
]
WeightDecayOpt = Annotated[
    float | None, typer.Option(help="L2 weight decay on weights (PyTorch meaning).")
]
MomentumOpt = Annotated[
    float | None,
    typer.Option(
        help="Momentum of sgd, sgd_momentum, nesterov, rmsprop "
        "(default: 0.9 for sgd_momentum and nesterov, none for sgd and rmsprop)."
    ),
]
WarmupOpt = Annotated[int | None, typer.Option(min=0, help="Linear warm-up epochs.")]
AugmentOpt = Annotated[str | None, typer.Option(help="e.g. flip,crop or none.")]
PreOpt = Annotated[str | None, typer.Option(help="none, mean_image, channel, pca, zca.")]
InitOpt = Annotated[str | None, typer.Option(help="he, xavier or normal.")]
HiddenOpt = Annotated[str | None, typer.Option(help="Hidden sizes for mlp/fcnet, e.g. 512,256.")]
NormOpt = Annotated[str | None, typer.Option(help="fcnet: batchnorm, layernorm or none.")]
DropoutOpt = Annotated[float | None, typer.Option(help="Drop probability (fcnet, convnet).")]
SpecOpt = Annotated[
    str | None, typer.Option(help="convnet layers, e.g. 64,64,M,128,128,M,256,M|256.")
]
DtypeOpt = Annotated[str | None, typer.Option(help="float32 or float64.")]
DeviceOpt = Annotated[
    str | None, typer.Option(help="torch: auto (cuda, mps, cpu), cpu, cuda, cuda:N, mps.")
]
AmpOpt = Annotated[
    str | None, typer.Option(help="torch on CUDA: mixed precision auto, bf16, fp16, none.")
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML file of options.")]


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
