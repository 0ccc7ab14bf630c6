"""``pix2pred experiment optimizers`` and ``pix2pred experiment ablate``: the course's experiments.

Both load a dataset once, check every option and value before the first run, then call
`pix2pred.experiments` and print its summary, its table and the run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from pix2pred.cli_options import (
    AugmentOpt,
    BatchOpt,
    DatasetOpt,
    DeviceOpt,
    DropoutOpt,
    EpochsOpt,
    HiddenOpt,
    ImageSizeOpt,
    InitOpt,
    MomentumOpt,
    NormOpt,
    NTestOpt,
    NTrainOpt,
    OptimizerOpt,
    PreOpt,
    RootOpt,
    SpecOpt,
    WarmupOpt,
    WeightDecayOpt,
    console,
    load_data,
    out,
)

experiment_app = typer.Typer(
    help="The course's experiments: update rules compared, hyperparameters ablated.",
    no_args_is_help=True,
)

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model", "-m", help="softmax, svm, mlp, fcnet, cnn or convnet.", show_default=False
    ),
]
OutDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--out", "-o", help="Run folder to create (default runs/experiment-<kind>-...-<time>)."
    ),
]
ScheduleOpt = Annotated[
    str | None,
    typer.Option(help="constant (default here), step, exponential, inverse_time, cosine."),
]
ValSizeOpt = Annotated[
    float, typer.Option(help="Validation share of train (fraction, or a count if >= 1).")
]
BackendOpt = Annotated[str, typer.Option(help="numpy or torch.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of splits, initialisation and batches.")]


def _overrides(options: dict[str, Any]) -> dict[str, Any]:
    """The estimator keywords given on the command line, as the estimator's types."""
    params = {}
    for key, value in options.items():
        if value is None:
            continue
        if key in ("augment", "normalization", "spec") and value.lower() in ("none", ""):
            value = None
        elif key == "hidden":
            try:
                value = [int(v) for v in value.split(",") if v.strip()]
            except ValueError:
                raise ValueError(
                    f"--hidden must be comma-separated integers, got {value!r}"
                ) from None
        params[key] = value
    return params


def _parse_lrs(text: str | None) -> dict[str, float]:
    if not text:
        return {}
    lrs = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            lrs[name.strip()] = float(value)
        except ValueError:
            raise ValueError(
                f"--lrs must look like sgd=1e-2,adam=1e-3; {item.strip()!r} is not name=number"
            ) from None
    return lrs


def _load(dataset: str, root: Path | None, seed: int, val_size: float, size, n_train, n_test):
    if val_size <= 0:
        raise ValueError(
            f"--val-size must be > 0 (the experiments compare validation accuracy), got {val_size}"
        )
    return load_data(dataset, root, seed, val_size, size, n_train, n_test)


def _report(result: Any) -> None:
    from pix2pred.experiments_summary import signed_percent

    ablation = result.experiment == "ablation"
    first = result.runs[0].name.split("=", 1)[0] if ablation else "optimizer"
    table = Table(title=f"{result.experiment}: final accuracies", box=box.SIMPLE_HEAD)
    columns = [first, *(() if ablation else ("lr",)), "train", "val", "best val", "test"]
    for column in (*columns, "loss Δ", "status"):
        left = column in (first, "status")
        table.add_column(column, justify="left" if left else "right", no_wrap=True)
    for r in result.runs:

        def acc(x: float | None) -> str:
            return "-" if x is None else f"{x:.1%}"

        change = r.loss_change
        name = r.name.split("=", 1)[1] if ablation else r.name
        table.add_row(
            name,
            *(() if ablation else (f"{r.params['lr']:g}",)),
            acc(r.final_train_acc),
            acc(r.final_val_acc),
            acc(r.best_val_acc),
            acc(r.test_acc),
            "-" if change is None or r.diverged else signed_percent(change),
            "[red]diverged[/red]" if r.diverged else "ok",
        )
    out.print(table)
    for line in result.summary:
        out.print(f"- {line}")
    from pix2pred.cli_train import _report as write_report

    write_report(result.run_dir)  # a failed report only warns: the results are already saved
    out.print(f"run folder: {result.run_dir}")


@experiment_app.command("optimizers")
def optimizers(
    model: ModelOpt,
    dataset: DatasetOpt,
    root: RootOpt = None,
    backend: BackendOpt = "numpy",
    optimizers: Annotated[
        str, typer.Option(help="Update rules to compare, from sgd,momentum,nesterov,rmsprop,adam.")
    ] = "sgd,momentum,nesterov,rmsprop,adam",
    lrs: Annotated[
        str | None,
        typer.Option(
            help="Learning rates that replace the defaults (sgd, momentum, nesterov 1e-2; "
            "rmsprop 1e-4; adam 1e-3), e.g. sgd=5e-2,adam=1e-3."
        ),
    ] = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    weight_decay: WeightDecayOpt = None,
    momentum: Annotated[
        float | None, typer.Option(help="Momentum of the momentum and Nesterov rules.")
    ] = None,
    schedule: ScheduleOpt = None,
    warmup_epochs: WarmupOpt = None,
    augment: AugmentOpt = None,
    preprocessing: PreOpt = None,
    init: InitOpt = None,
    hidden: HiddenOpt = None,
    normalization: NormOpt = None,
    dropout: DropoutOpt = None,
    spec: SpecOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = 0,
    val_size: ValSizeOpt = 0.1,
    image_size: ImageSizeOpt = None,
    n_train: NTrainOpt = None,
    n_test: NTestOpt = None,
    out_dir: OutDirOpt = None,
) -> None:
    """Train one model from the same initialisation with SGD, momentum, Nesterov, RMSProp, Adam."""
    options = {k: v for k, v in locals().items() if k not in _NOT_ESTIMATOR}
    from pix2pred.experiments import resolve_optimizers, resolve_params, run_optimizer_comparison

    names = [o.strip() for o in optimizers.split(",") if o.strip()]
    rates, params = _parse_lrs(lrs), _overrides(options)
    # before the data loads: a typo in --model, --optimizers or --lrs fails at once
    resolve_params(model, params)
    resolve_optimizers(names, rates)
    ds = _load(dataset, root, seed, val_size, image_size, n_train, n_test)
    result = run_optimizer_comparison(
        model,
        ds,
        params=params,
        optimizers=names,
        lrs=rates,
        run_dir=out_dir,
        console=console,
    )
    _report(result)


@experiment_app.command("ablate")
def ablate(
    model: ModelOpt,
    param: Annotated[
        str,
        typer.Option(help="The estimator keyword to vary: lr, weight_decay, hidden, dropout, ..."),
    ],
    values: Annotated[
        str,
        typer.Option(
            help="Its values, comma-separated, e.g. 1,1e-1,1e-2,1e-3,1e-5 (hidden: 512-256)."
        ),
    ],
    dataset: DatasetOpt,
    root: RootOpt = None,
    backend: BackendOpt = "numpy",
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (when not ablated).")] = None,
    optimizer: OptimizerOpt = None,
    weight_decay: WeightDecayOpt = None,
    momentum: MomentumOpt = None,
    schedule: ScheduleOpt = None,
    warmup_epochs: WarmupOpt = None,
    augment: AugmentOpt = None,
    preprocessing: PreOpt = None,
    init: InitOpt = None,
    hidden: HiddenOpt = None,
    normalization: NormOpt = None,
    dropout: DropoutOpt = None,
    spec: SpecOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = 0,
    val_size: ValSizeOpt = 0.1,
    image_size: ImageSizeOpt = None,
    n_train: NTrainOpt = None,
    n_test: NTestOpt = None,
    out_dir: OutDirOpt = None,
) -> None:
    """Train one model once per value of a hyperparameter; diverged values are shown, not fatal."""
    options = {k: v for k, v in locals().items() if k not in (*_NOT_ESTIMATOR, "param", "values")}
    from pix2pred.experiments import parse_values, run_ablation

    parsed = parse_values(model, param, values)  # before the data loads: a typo fails at once
    if param in options and options[param] is not None:
        raise ValueError(
            f"--{param.replace('_', '-')} is the ablated parameter: give it in --values"
        )
    ds = _load(dataset, root, seed, val_size, image_size, n_train, n_test)
    result = run_ablation(
        model,
        ds,
        param,
        parsed,
        params=_overrides(options),
        run_dir=out_dir,
        console=console,
    )
    _report(result)


# Command-line options that are not estimator keywords.
_NOT_ESTIMATOR = (
    "model",
    "dataset",
    "root",
    "optimizers",
    "lrs",
    "image_size",
    "n_train",
    "n_test",
    "out_dir",
    "val_size",
)


def register(app: typer.Typer) -> None:
    """Add ``pix2pred experiment ...`` to the CLI."""
    app.add_typer(experiment_app, name="experiment")
