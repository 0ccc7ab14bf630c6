"""The ``pix2pred`` command line: data, training, evaluation and checks.

Every command has ``--help``. A bad argument or input gets a one-line error naming the value at
fault and exit code 2; set ``PIX2PRED_DEBUG=1`` for the full traceback.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from pix2pred import cli_compare, cli_diagnose, cli_experiment, cli_explain, cli_resnet, cli_train
from pix2pred.cli_options import (
    DatasetOpt,
    ImageSizeOpt,
    NTestOpt,
    NTrainOpt,
    OutOpt,
    RootOpt,
    SeedOpt,
    ValSizeOpt,
    console,
    load_data,
    out,
    parse_ints,
)

app = typer.Typer(
    name="pix2pred",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect, preview and download datasets.", no_args_is_help=True)
train_app = typer.Typer(help="Train a model and write a run folder.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")


def _version(value: bool) -> None:
    if value:
        from importlib.util import find_spec

        from pix2pred import __version__

        torch = "not installed"
        if find_spec("torch") is not None:
            import torch as _torch

            torch = _torch.__version__
        out.print(f"pix2pred {__version__} (numpy {np.__version__}, torch {torch})")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the versions and exit."
        ),
    ] = False,
) -> None:
    """Image classification from pixels to predictions: kNN, linear, MLP and CNN models."""


# ---------------------------------------------------------------------------------------------
# pix2pred data ...


@data_app.command("info")
def data_info(
    name: Annotated[str, typer.Argument(help="synthetic, cifar10 or folder.")],
    root: RootOpt = None,
    seed: SeedOpt = 0,
    val_size: ValSizeOpt = 0.1,
    image_size: ImageSizeOpt = None,
    n_train: NTrainOpt = None,
    n_test: NTestOpt = None,
) -> None:
    """Print split sizes, image shape and the number of images per class."""
    ds = load_data(name, root, seed, val_size, image_size, n_train, n_test)
    table = Table(title=f"{ds.title}: {len(ds.classes)} classes, images {ds.X_train.shape[1:]}")
    table.add_column("class")
    splits = [("train", ds.y_train), ("val", ds.y_val), ("test", ds.y_test)]
    for split, _ in splits:
        table.add_column(split, justify="right")
    for c, cls in enumerate(ds.classes):
        table.add_row(cls, *(str(int(np.sum(y == c))) for _, y in splits))
    table.add_row("total", *(str(len(y)) for _, y in splits), style="bold")
    out.print(table)


@data_app.command("preview")
def data_preview(
    name: Annotated[str, typer.Argument(help="synthetic, cifar10 or folder.")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")] = Path(
        "preview.png"
    ),
    per_class: Annotated[int, typer.Option(min=1, max=50, help="Images per class.")] = 8,
    split: Annotated[str, typer.Option(help="train, val or test.")] = "train",
    root: RootOpt = None,
    seed: SeedOpt = 0,
    image_size: ImageSizeOpt = None,
    n_train: NTrainOpt = None,
    n_test: NTestOpt = None,
) -> None:
    """Write a labelled grid of sample images, one row per class."""
    from pix2pred.plots import image_grid

    if split not in ("train", "val", "test"):
        raise ValueError(f"--split must be train, val or test, got {split!r}")
    if out_path.suffix.lower() != ".png":
        raise ValueError(f"--out must name a .png file, got {str(out_path)!r}")
    ds = load_data(name, root, seed, 0.1, image_size, n_train, n_test)
    X, y = getattr(ds, f"X_{split}"), getattr(ds, f"y_{split}")
    image_grid(X, y, ds.classes, out_path, per_class=per_class, seed=seed)
    out.print(f"wrote {out_path}")


@data_app.command("download")
def data_download(
    name: Annotated[str, typer.Argument(help="Dataset to download: cifar10.")],
    root: Annotated[Path, typer.Option(help="Folder to download into.")] = Path("data"),
) -> None:
    """Download an official dataset archive and verify its checksum."""
    if name != "cifar10":
        raise ValueError(f"can only download 'cifar10', got {name!r}")
    from pix2pred.data.cifar10 import download_cifar10

    path = download_cifar10(root, progress=True)
    out.print(f"CIFAR-10 ready at {path}")


# ---------------------------------------------------------------------------------------------
# pix2pred train ...


@train_app.command("knn")
def train_knn(
    dataset: DatasetOpt,
    root: RootOpt = None,
    k: Annotated[
        int | None, typer.Option(min=1, help="Use this k (default: chosen by cross-validation).")
    ] = None,
    ks: Annotated[str, typer.Option(help="Values of k to cross-validate.")] = "1,3,5,8,10,12,15,20",
    metric: Annotated[str, typer.Option(help="Distance: l1 or l2.")] = "l2",
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds.")] = 5,
    backend: Annotated[str, typer.Option(help="numpy or torch (cdist + topk).")] = "numpy",
    device: Annotated[str, typer.Option(help="torch backend: auto, cpu, cuda, mps.")] = "auto",
    seed: SeedOpt = 0,
    image_size: ImageSizeOpt = None,
    n_train: NTrainOpt = None,
    n_test: NTestOpt = None,
    out_dir: OutOpt = None,
) -> None:
    """k-nearest neighbours: cross-validate k on train, then score on test."""
    from pix2pred.knn import KNearestNeighbors, cross_validate_k
    from pix2pred.metrics import accuracy, confusion_matrix, per_class_accuracy
    from pix2pred.plots import confusion_matrix_plot, k_sweep_plot
    from pix2pred.runs import create_run_dir, default_run_dir, write_config, write_metrics

    if metric not in ("l1", "l2"):
        raise ValueError(f"--metric must be l1 or l2, got {metric!r}")
    if backend not in ("numpy", "torch"):
        raise ValueError(f"--backend must be numpy or torch, got {backend!r}")
    k_values = parse_ints(ks, "--ks")
    run_dir = create_run_dir(out_dir or default_run_dir("knn", dataset))
    ds = load_data(dataset, root, seed, 0, image_size, n_train, n_test)
    config = {
        "model": "knn",
        "dataset": dataset,
        "root": str(root) if root else None,
        "k": k,
        "ks": k_values,
        "metric": metric,
        "folds": folds,
        "backend": backend,
        "device": device,
        "seed": seed,
        "image_size": image_size,
        "n_train": len(ds.y_train),
        "n_test": len(ds.y_test),
        "classes": ds.classes,
    }
    write_config(run_dir, config)

    metrics: dict = {"model": "knn", "dataset": ds.title, "metric": metric}
    with console.status(f"cross-validating k over {k_values} ({folds} folds)"):
        t0 = time.perf_counter()
        cv = cross_validate_k(
            ds.X_train,
            ds.y_train,
            k_values,
            n_folds=folds,
            metric=metric,
            seed=seed,
            backend=backend,
            device=device,
        )
        metrics["cv_seconds"] = time.perf_counter() - t0
    cv_mean = np.asarray(cv.mean)
    best_k = int(cv.ks[int(np.argmax(cv_mean))])
    metrics["cv"] = {
        "ks": list(map(int, cv.ks)),
        "mean": cv_mean.tolist(),
        "std": np.asarray(cv.std).tolist(),
        "fold_accuracies": np.asarray(cv.fold_accuracies).tolist(),
        "best_k": best_k,
    }
    k_used = k or best_k
    k_sweep_plot(
        cv.ks,
        cv.fold_accuracies,
        run_dir / "knn_k_sweep.png",
        title=f"kNN ({metric}) cross-validation on {ds.title}",
    )

    model = KNearestNeighbors(k=k_used, metric=metric, backend=backend, device=device)
    model.fit(ds.X_train, ds.y_train)
    with console.status(f"predicting {len(ds.y_test)} test images with k={k_used}"):
        t0 = time.perf_counter()
        votes = model.predict_proba(ds.X_test)  # (N, n_classes); argmax = predict's vote
        y_pred = model.classes_[np.argmax(votes, axis=1)]
        metrics["predict_seconds"] = time.perf_counter() - t0
    cm = confusion_matrix(ds.y_test, y_pred, len(ds.classes))
    metrics.update(
        k=k_used,
        test_accuracy=accuracy(ds.y_test, y_pred),
        per_class_accuracy=dict(zip(ds.classes, per_class_accuracy(cm).tolist(), strict=True)),
        confusion_matrix=cm.tolist(),
    )
    confusion_matrix_plot(
        cm,
        ds.classes,
        run_dir / "confusion_matrix.png",
        title=f"kNN k={k_used} ({metric}), test accuracy {metrics['test_accuracy']:.1%}",
    )
    write_metrics(run_dir, metrics)
    out.print(
        f"kNN k={k_used} ({metric}) on {ds.title}: test accuracy {metrics['test_accuracy']:.2%} "
        f"(cv best k={best_k}, {metrics['cv']['mean'][k_values.index(best_k)]:.2%})"
    )
    cli_train._report(run_dir, dataset=ds, model=model, scores=votes)
    out.print(f"run folder: {run_dir}")


# ---------------------------------------------------------------------------------------------
# pix2pred report


@app.command("report")
def report(
    run: Annotated[Path, typer.Argument(help="A run folder written by pix2pred train.")],
) -> None:
    """Build (again) the run folder's report.html: one self-contained page of its results."""
    from pix2pred.report import write_run_report

    console.print(f"building the report of {run} (loading its model and test images)")
    out.print(f"wrote {write_run_report(run, progress=True)}")


# ---------------------------------------------------------------------------------------------
# pix2pred gradcheck


@app.command("gradcheck")
def gradcheck(
    seed: SeedOpt = 0,
) -> None:
    """Check every numpy layer's and loss's backward numerically (float64); exit 1 on a failure."""
    from pix2pred.gradcheck import run_layer_checks

    with console.status("checking gradients"):
        results = run_layer_checks(seed=seed)
    table = Table(title="Numerical gradient check (float64, central differences)")
    table.add_column("layer")
    table.add_column("max relative error", justify="right")
    table.add_column("tolerance", justify="right")
    table.add_column("result")
    for r in results:
        verdict = "[green]pass[/green]" if r.passed else "[red]FAIL[/red]"
        table.add_row(r.name, f"{r.max_rel_error:.2e}", f"{r.tolerance:.0e}", verdict)
    out.print(table)
    failed = [r.name for r in results if not r.passed]
    if failed:
        out.print(f"{len(failed)} of {len(results)} checks failed: {', '.join(failed)}")
        raise typer.Exit(1)
    out.print(f"all {len(results)} checks passed")


# ---------------------------------------------------------------------------------------------

cli_train.register(app, train_app)
cli_resnet.register(train_app)
cli_explain.register(app)
cli_diagnose.register(app)
cli_compare.register(app)
cli_experiment.register(app)

_USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``pix2pred`` console script."""
    try:
        rv = app(args=argv, prog_name="pix2pred", standalone_mode=False)
    except Exception as e:
        if hasattr(e, "format_message") and hasattr(e, "exit_code"):  # a usage error
            ctx = getattr(e, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            print(f"Error: {e.format_message()}{hint}", file=sys.stderr)
            sys.exit(e.exit_code)
        if isinstance(e, _USER_ERRORS) and not os.environ.get("PIX2PRED_DEBUG"):
            print(f"Error: {e}", file=sys.stderr)
            sys.exit(2)
        raise
    sys.exit(rv if isinstance(rv, int) else 0)
