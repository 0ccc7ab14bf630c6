"""``pix2pred train <model>``, ``pix2pred evaluate`` and ``pix2pred predict``.

Training options resolve in three layers: the estimator's defaults, then a ``--config`` TOML
file, then the options given on the command line. The resolved set is written to the run's
``config.json``, which is also what ``--resume`` reads back.
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from pix2pred.cli_options import (
    AmpOpt,
    AugmentOpt,
    BatchOpt,
    ConfigOpt,
    DeviceOpt,
    DropoutOpt,
    DtypeOpt,
    EpochsOpt,
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
    WarmupOpt,
    WeightDecayOpt,
    console,
    load_data,
    out,
)

# model kind → (estimator class name, defaults that differ from the estimator's own, summary)
KINDS: dict[str, tuple[str, dict[str, Any], str]] = {
    "softmax": ("Softmax", {}, "Linear classifier with the softmax loss (one template per class)."),
    "svm": ("LinearSVM", {}, "Linear classifier with the multiclass SVM (hinge) loss."),
    "mlp": ("MLP", {}, "Two-layer net: affine-relu-affine."),
    "fcnet": (
        "MLP",
        {"hidden": [512, 256], "normalization": "batchnorm", "dropout": 0.2, "epochs": 30},
        "Fully-connected net of any depth with batch/layer norm and dropout.",
    ),
    "cnn": ("CNN", {}, "The course's SimpleCNN: conv5-pool-conv3-pool-fc256-fc."),
    "convnet": (
        "CNN",
        {"spec": "64,64,M,128,128,M,256,M|256", "epochs": 30},
        "A configurable VGG-style ConvNet from a spec such as 64,64,M,128,128,M,256,M|256.",
    ),
}
DATA_KEYS = ("dataset", "root", "image_size", "n_train", "n_test")


def _estimator_class(name: str) -> type:
    from pix2pred import estimators

    return getattr(estimators, name)


def _coerce(key: str, value: Any) -> Any:
    """Turn option strings into the estimator's types (lists, None)."""
    if isinstance(value, str) and key in ("augment", "normalization", "spec", "early_stopping"):
        if value.lower() in ("none", ""):
            return None
    if key == "hidden" and isinstance(value, str):
        try:
            return [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--hidden must be comma-separated integers, got {value!r}") from None
    return value


def resolve_config(kind: str, cli: dict[str, Any], config_file: Path | None) -> dict[str, Any]:
    """Defaults, then the TOML file, then explicit options; unknown keys are errors."""
    est_name, kind_defaults, _ = KINDS[kind]
    cls = _estimator_class(est_name)
    params = {**cls().get_params(), **kind_defaults}
    params.pop("checkpoint_dir")
    params.pop("progress")
    data: dict[str, Any] = dict.fromkeys(DATA_KEYS)
    layers: list[dict[str, Any]] = []
    if config_file is not None:
        try:
            layers.append(tomllib.loads(config_file.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise FileNotFoundError(f"--config {config_file}: no such file") from None
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"--config {config_file}: not valid TOML ({e})") from None
    layers.append({k: v for k, v in cli.items() if v is not None})
    for layer in layers:
        for key, value in layer.items():
            key = key.replace("-", "_")
            if key in data:
                data[key] = str(value) if key == "root" else value
            elif key in params:
                params[key] = _coerce(key, value)
            else:
                valid = ", ".join(sorted([*params, *DATA_KEYS]))
                raise ValueError(f"unknown option {key!r} for 'train {kind}'; valid: {valid}")
    if not data["dataset"]:
        raise ValueError("--dataset is required (synthetic, cifar10 or folder)")
    return {"model": kind, "estimator": est_name, "data": data, "params": params}


def train_run(
    kind: str,
    cli: dict[str, Any],
    config_file: Path | None,
    out_dir: Path | None,
    resume: Path | None,
) -> Path:
    """Train one model as the CLI does and fill its run folder; returns the folder."""
    from pix2pred import plots
    from pix2pred.metrics import accuracy, confusion_matrix, per_class_accuracy
    from pix2pred.runs import create_run_dir, default_run_dir, read_run, write_config, write_metrics
    from pix2pred.solver import TrainingDivergedError

    if resume is not None:
        config, _ = read_run(resume)
        if config.get("model") != kind:
            raise ValueError(
                f"--resume {resume}: that run trained {config.get('model')!r}, not {kind!r}"
            )
        run_dir = resume
    else:
        config = resolve_config(kind, cli, config_file)
        cls = _estimator_class(config["estimator"])
        cls(**config["params"])._validate()
        run_dir = create_run_dir(out_dir or default_run_dir(kind, config["data"]["dataset"]))
    d, p = config["data"], config["params"]
    ds = load_data(
        d["dataset"],
        Path(d["root"]) if d["root"] else None,
        p["seed"],
        p["val_size"],
        d["image_size"],
        d["n_train"],
        d["n_test"],
    )
    if resume is None:
        config["classes"] = list(ds.classes)
        write_config(run_dir, config)
    est = _estimator_class(config["estimator"])(
        **p, checkpoint_dir=str(run_dir / "checkpoint"), progress=True
    )
    console.print(
        f"training {kind} ({est!r}) on {ds.title}: {len(ds.y_train)} train, "
        f"{len(ds.y_val)} val, {len(ds.y_test)} test images"
    )
    t0 = time.perf_counter()
    try:
        est.fit(
            ds.X_train,
            ds.y_train,
            ds.X_val if len(ds.y_val) else None,
            ds.y_val if len(ds.y_val) else None,
            resume=resume is not None,
        )
    except KeyboardInterrupt:
        console.print(f"interrupted; continue with: pix2pred train {kind} --resume {run_dir}")
        raise typer.Exit(130) from None
    except TrainingDivergedError as e:
        console.print(f"[red]training diverged:[/red] {e}")
        console.print(f"the last good checkpoint is in {run_dir / 'checkpoint'}")
        raise typer.Exit(1) from None
    train_seconds = time.perf_counter() - t0
    est.save(run_dir / "model")

    t0 = time.perf_counter()
    scores = est.decision_function(ds.X_test)
    y_pred = est.classes_[np.argmax(scores, axis=1)]
    predict_seconds = time.perf_counter() - t0
    cm = confusion_matrix(ds.y_test, y_pred, len(ds.classes))
    test_acc = accuracy(ds.y_test, y_pred)
    history = est.history_
    metrics = {
        "model": kind,
        "dataset": ds.title,
        "test_accuracy": test_acc,
        "best_val_accuracy": history.get("best_val_acc"),
        "best_epoch": history.get("best_epoch"),
        "epochs_run": len(history.get("train_acc", [])),
        "num_params": est.model_.num_params(),
        "backend": est.backend,
        "device": est.device_,
        "train_seconds": train_seconds,
        "predict_seconds": predict_seconds,
        "per_class_accuracy": dict(zip(ds.classes, per_class_accuracy(cm).tolist(), strict=True)),
        "confusion_matrix": cm.tolist(),
        "history": history,
    }
    write_metrics(run_dir, metrics)
    plots.training_curves(history, run_dir / "training_curves.png")
    plots.confusion_matrix_plot(
        cm,
        ds.classes,
        run_dir / "confusion_matrix.png",
        title=f"{kind} on {ds.title}: test accuracy {test_acc:.1%}",
    )
    params = est.state_dict()
    H, W, C = est.image_shape_
    if kind in ("softmax", "svm"):
        plots.weight_templates(params["W"], (C, H, W), ds.classes, run_dir / "weight_templates.png")
    elif kind in ("cnn", "convnet"):
        plots.filter_grid(
            params["W1"],
            run_dir / "first_layer_filters.png",
            title=f"first-layer filters of {kind}",
        )
    out.print(
        f"{kind} on {ds.title}: test accuracy {test_acc:.2%} "
        f"({metrics['num_params']:,} parameters, trained in {train_seconds:.1f} s)"
    )
    _report(run_dir, dataset=ds, model=est, scores=scores)
    out.print(f"run folder: {run_dir}")
    return run_dir


def _report(run_dir: Path, **inputs: Any) -> None:
    """Write the run's report.html; a failure is only a warning (the run is already saved)."""
    from pix2pred.report import try_write_run_report

    def warn(msg: str) -> None:
        console.print(msg, style="yellow", markup=False)

    if try_write_run_report(run_dir, warn=warn, **inputs) is not None:
        out.print(f"report: {run_dir / 'report.html'}")


def make_train_command(kind: str):
    """The ``pix2pred train <kind>`` command; every kind takes the same options."""

    def command(
        dataset: ModelDatasetOpt = None,
        root: RootOpt = None,
        epochs: EpochsOpt = None,
        batch_size: BatchOpt = None,
        lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
        weight_decay: WeightDecayOpt = None,
        optimizer: OptimizerOpt = None,
        momentum: MomentumOpt = None,
        schedule: Annotated[
            str | None, typer.Option(help="constant, step, exponential, inverse_time, cosine.")
        ] = None,
        warmup_epochs: WarmupOpt = None,
        augment: AugmentOpt = None,
        preprocessing: PreOpt = None,
        val_size: Annotated[
            float | None, typer.Option(help="Validation share of train (fraction or count).")
        ] = None,
        early_stopping: Annotated[
            int | None, typer.Option(min=1, help="Stop after this many epochs without improvement.")
        ] = None,
        init: InitOpt = None,
        hidden: HiddenOpt = None,
        normalization: NormOpt = None,
        dropout: DropoutOpt = None,
        spec: SpecOpt = None,
        dtype: DtypeOpt = None,
        backend: Annotated[str | None, typer.Option(help="numpy or torch.")] = None,
        device: DeviceOpt = None,
        amp: AmpOpt = None,
        deterministic: Annotated[
            bool | None,
            typer.Option(
                "--deterministic/--no-deterministic",
                help="torch: deterministic algorithms only (reproducible on GPU, slower).",
            ),
        ] = None,
        seed: Annotated[
            int | None, typer.Option(help="Seed of splits, initialisation and batches.")
        ] = None,
        image_size: ImageSizeOpt = None,
        n_train: NTrainOpt = None,
        n_test: NTestOpt = None,
        config: ConfigOpt = None,
        out_dir: OutOpt = None,
        resume: Annotated[
            Path | None, typer.Option(help="Continue an interrupted run folder.")
        ] = None,
    ) -> None:
        cli = {
            k: v for k, v in locals().items() if k not in ("kind", "config", "out_dir", "resume")
        }
        if resume is not None:
            given = [k for k, v in cli.items() if v is not None]
            if given or out_dir is not None or config is not None:
                raise ValueError("--resume takes no other options: the run's config.json is used")
        train_run(kind, cli, config, out_dir, resume)

    command.__doc__ = KINDS[kind][2]
    command.__name__ = f"train_{kind}"
    return command


def evaluate(
    run: Annotated[Path, typer.Argument(help="A run folder written by pix2pred train.")],
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Default: the run's dataset.")
    ] = None,
    root: RootOpt = None,
    split: Annotated[str, typer.Option(help="test or val.")] = "test",
    out_png: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the confusion matrix here.")
    ] = None,
    device: DeviceOpt = None,
) -> None:
    """Accuracy, per-class accuracy and the confusion matrix of a trained run."""
    from pix2pred.metrics import accuracy, confusion_matrix, per_class_accuracy
    from pix2pred.plots import confusion_matrix_plot
    from pix2pred.run_model import load_run_model
    from pix2pred.runs import read_run

    if split not in ("test", "val"):
        raise ValueError(f"--split must be test or val, got {split!r}")
    config, _ = read_run(run)
    est = load_run_model(run, device=device)
    d = config["data"]
    # A `train resnet` run keeps its split seed with the architecture.
    p = config.get("params") or {"seed": config["architecture"]["seed"], "val_size": d["val_size"]}
    if dataset is not None:
        d = {**d, "dataset": dataset, "root": str(root) if root else None}
    elif root is not None:
        d = {**d, "root": str(root)}
    H, W, _ = est.image_shape_
    ds = load_data(
        d["dataset"],
        Path(d["root"]) if d["root"] else None,
        p["seed"],
        p["val_size"],
        d["image_size"] or (H if H == W else None),
        d["n_train"],
        d["n_test"],
    )
    if list(ds.classes) != [str(c) for c in config.get("classes", ds.classes)]:
        raise ValueError(
            f"{d['dataset']} has classes {ds.classes}, the run was trained on {config['classes']}"
        )
    X, y = getattr(ds, f"X_{split}"), getattr(ds, f"y_{split}")
    y_pred = est.predict(X)
    cm = confusion_matrix(y, y_pred, len(ds.classes))
    table = Table(title=f"{run} on {ds.title} ({split}): accuracy {accuracy(y, y_pred):.2%}")
    table.add_column("class")
    table.add_column("accuracy", justify="right")
    table.add_column("images", justify="right")
    for c, acc in zip(ds.classes, per_class_accuracy(cm), strict=True):
        table.add_row(c, f"{acc:.1%}", str(int(cm[ds.classes.index(c)].sum())))
    out.print(table)
    if out_png is not None:
        confusion_matrix_plot(cm, ds.classes, out_png, title=f"{ds.title} {split}")
        out.print(f"wrote {out_png}")


def predict(
    run: Annotated[Path, typer.Argument(help="A run folder written by pix2pred train.")],
    images: Annotated[list[Path], typer.Argument(help="Image files (any format Pillow reads).")],
    top: Annotated[int, typer.Option(min=1, help="How many classes to show per image.")] = 3,
    device: DeviceOpt = None,
) -> None:
    """Top classes with probabilities for each image, converted and resized as in training."""
    from pix2pred.data.image_file import read_image
    from pix2pred.run_model import load_run_model
    from pix2pred.runs import read_run

    config, _ = read_run(run)
    est = load_run_model(run, device=device)
    H, W, C = est.image_shape_
    X = np.stack([read_image(path, (H, W), C) for path in images])
    scores = est.decision_function(X)
    probs = est.predict_proba(X) if est._has_proba else None
    names = config.get("classes") or [str(c) for c in est.classes_]
    for path, row in zip(images, range(len(images)), strict=True):
        order = np.argsort(-scores[row])[:top]
        if probs is not None:
            guesses = ", ".join(f"{names[j]} {probs[row, j]:.1%}" for j in order)
        else:
            guesses = ", ".join(f"{names[j]} (score {scores[row, j]:.2f})" for j in order)
        out.print(f"{path}: {guesses}")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add the training, evaluation and prediction commands to the CLI."""
    for kind in KINDS:
        train_app.command(kind)(make_train_command(kind))
    app.command("evaluate")(evaluate)
    app.command("predict")(predict)
