"""``pix2pred diagnose MODEL --dataset NAME``: the babysitting checks of a model before training.

The model and its training options resolve exactly as for ``pix2pred train MODEL`` (the
estimator's defaults, a ``--config`` TOML file, then the command line); the checks of
`pix2pred.diagnostics` then run on the freshly initialised model with those options, and a run
folder ``runs/diagnose-<model>-<dataset>-<time>/`` receives ``config.json``,
``diagnostics.json`` and the figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pix2pred.cli_options import (
    BatchOpt,
    ConfigOpt,
    DeviceOpt,
    DropoutOpt,
    DtypeOpt,
    HiddenOpt,
    ImageSizeOpt,
    InitOpt,
    ModelDatasetOpt,
    MomentumOpt,
    NormOpt,
    NTestOpt,
    NTrainOpt,
    OptimizerOpt,
    OutOpt,
    PreOpt,
    RootOpt,
    SpecOpt,
    console,
    out,
)
from pix2pred.cli_train import KINDS, _estimator_class, resolve_config
from pix2pred.cli_train import _report as write_report

STATUS_STYLE = {"pass": "[green]pass[/green]", "warn": "[yellow]warn[/yellow]"}


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"MODEL must be one of {', '.join(KINDS)}; got {kind!r}")


def _checks(text: str | None) -> list[str] | None:
    from pix2pred.diagnostics import CHECKS

    if text is None:
        return None
    keys = [k.strip().replace("-", "_") for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in CHECKS]
    if unknown or not keys:
        raise ValueError(f"--checks must list some of {', '.join(CHECKS)}; got {text!r}")
    return keys


def diagnose_run(
    kind: str,
    cli: dict[str, Any],
    config_file: Path | None,
    out_dir: Path | None,
    diag: dict[str, Any],
    checks: list[str] | None = None,
) -> Path:
    """Resolve the options as ``train`` does, run the checks, fill a new run folder; return it."""
    from pix2pred.diagnostics import (
        DiagnosticSettings,
        estimator_settings,
        prepare_estimator,
        run_diagnostics,
        write_diagnostics,
    )
    from pix2pred.runs import create_run_dir, default_run_dir, write_config

    _check_kind(kind)
    config = resolve_config(kind, cli, config_file)
    d, p = config["data"], config["params"]
    est = _estimator_class(config["estimator"])(**p)
    est._validate()
    settings = {**estimator_settings(est), **{k: v for k, v in diag.items() if v is not None}}
    DiagnosticSettings(**settings)  # a bad value fails before any data is read
    target = out_dir or default_run_dir(f"diagnose-{kind}", d["dataset"])
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        create_run_dir(target)  # raises: pix2pred never writes into an earlier run
    from pix2pred.cli_options import load_data

    ds = load_data(
        d["dataset"],
        Path(d["root"]) if d["root"] else None,
        p["seed"],
        p["val_size"],
        d["image_size"],
        d["n_train"],
        d["n_test"],
    )
    model, X, y = prepare_estimator(est, ds.X_train, ds.y_train, len(ds.classes))
    console.print(
        f"diagnosing {kind} ({est!r}, {model.num_params():,} parameters, {est.backend}) on "
        f"{ds.title}: {len(y)} training images"
    )
    with console.status("running the checks") as status:
        results = run_diagnostics(
            model,
            X,
            y,
            checks=checks,
            progress=lambda key: status.update(f"diagnostics: {key}"),
            **settings,
        )
    run_dir = create_run_dir(target)
    config["classes"] = list(ds.classes)
    write_config(run_dir, {**config, "command": "diagnose", "diagnostics": settings})
    title = f"{kind} on {ds.title}"
    write_diagnostics(results, run_dir, title=title, extra={"model": kind, "dataset": ds.title})

    table = Table(title=f"Diagnostics of {title}", show_lines=True, expand=True)
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("measured", ratio=3)
    table.add_column("expected", ratio=3)
    table.add_column("why it matters", ratio=3, style="dim")
    for r in results:
        table.add_row(r.title, STATUS_STYLE[r.status], r.measured, r.expected, r.why)
    out.print(table)
    warned = [r.title for r in results if not r.passed]
    summary = f"{len(results) - len(warned)} of {len(results)} checks passed"
    out.print(summary + (f"; look at: {', '.join(warned)}" if warned else ""))
    write_report(run_dir)  # a failed report only warns: the checks are already saved
    out.print(f"run folder: {run_dir}")
    return run_dir


def diagnose(
    model: Annotated[str, typer.Argument(help=f"Model kind: {', '.join(KINDS)}.")],
    dataset: ModelDatasetOpt = None,
    root: RootOpt = None,
    batch_size: BatchOpt = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate to check.")] = None,
    weight_decay: Annotated[
        float | None, typer.Option(help="L2 weight decay (update ratio and range test).")
    ] = None,
    optimizer: OptimizerOpt = None,
    momentum: MomentumOpt = None,
    preprocessing: PreOpt = None,
    init: InitOpt = None,
    hidden: HiddenOpt = None,
    normalization: NormOpt = None,
    dropout: DropoutOpt = None,
    spec: SpecOpt = None,
    dtype: DtypeOpt = None,
    backend: Annotated[str | None, typer.Option(help="numpy or torch.")] = None,
    device: DeviceOpt = None,
    seed: Annotated[int | None, typer.Option(help="Seed of initialisation and batches.")] = None,
    image_size: ImageSizeOpt = None,
    n_train: NTrainOpt = None,
    n_test: NTestOpt = None,
    config: ConfigOpt = None,
    out_dir: OutOpt = None,
    checks: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated checks (default all): initial_loss, overfit, gradcheck, "
            "update_ratio, activations, lr_range."
        ),
    ] = None,
    overfit_size: Annotated[int | None, typer.Option(help="Images to overfit (>= 2).")] = None,
    overfit_steps: Annotated[
        int | None, typer.Option(help="Steps allowed to overfit them.")
    ] = None,
    lr_range_steps: Annotated[
        int | None, typer.Option(help="Steps of the learning-rate range test.")
    ] = None,
    lr_min: Annotated[float | None, typer.Option(help="First rate of the range test.")] = None,
    lr_max: Annotated[float | None, typer.Option(help="Last rate of the range test.")] = None,
) -> None:
    """Babysitting checks before training, each with a verdict and why it matters.

    Initial loss, overfitting a few images, gradient check, update/weight ratios,
    activations and dead ReLUs, learning-rate range test.
    """
    values = dict(locals())
    diag_keys = ("overfit_size", "overfit_steps", "lr_range_steps", "lr_min", "lr_max")
    diag = {k: values[k] for k in diag_keys}
    cli = {k: v for k, v in values.items() if k not in ("model", "config", "out_dir", "checks")}
    cli = {k: v for k, v in cli.items() if k not in diag_keys}
    _check_kind(model)
    diagnose_run(model, cli, config, out_dir, diag, _checks(checks))


def register(app: typer.Typer) -> None:
    """Add ``pix2pred diagnose`` to the CLI."""
    app.command("diagnose")(diagnose)
