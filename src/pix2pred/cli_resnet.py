"""``pix2pred train resnet``: the fast residual network (torch only), alone or under torchrun.

The run folder holds ``config.json``, ``metrics.json`` (test accuracy at each TTA level,
times, parameter count, history), ``training_curves.png``, ``confusion_matrix.png``, the
weights as ``model.safetensors`` + ``model.json`` and, with ``--checkpoint`` (the default),
the weights and the whole training state after each epoch in ``checkpoint/``, from which
``--resume RUN`` goes on. Under ``torchrun`` every process trains on its share of each batch
and rank 0 alone writes the folder and prints.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from pix2pred.cli_options import (
    ImageSizeOpt,
    NTestOpt,
    NTrainOpt,
    OutOpt,
    RootOpt,
    console,
    load_data,
    out,
)

__all__ = ["register", "train_resnet"]


def _widths(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise ValueError(
            f"--widths must be three positive integers such as 64,256,256, got {text!r}"
        )
    return values  # type: ignore[return-value]


def train_resnet(
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", "-d", help="synthetic, cifar10 or folder.", show_default=False),
    ] = None,
    root: RootOpt = None,
    epochs: Annotated[
        float, typer.Option(help="Passes over the training set (fractions allowed).")
    ] = 8.0,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Global batch size (all processes).")
    ] = 2000,
    lr: Annotated[float, typer.Option(help="Learning rate of the conv filters (Muon).")] = 0.24,
    head_lr: Annotated[float, typer.Option(help="Learning rate of the linear head (SGD).")] = 0.67,
    bias_lr: Annotated[float, typer.Option(help="Learning rate of the norm shifts (SGD).")] = 0.053,
    weight_decay: Annotated[
        float,
        typer.Option(help="Decay per example of head and shifts (x batch size per step)."),
    ] = 2e-6,
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing.")] = 0.2,
    warmup: Annotated[float, typer.Option(help="Fraction of training with linear warm-up.")] = 0.0,
    widths: Annotated[str, typer.Option(help="Channels of the three conv groups.")] = "64,256,256",
    depth: Annotated[int, typer.Option(min=1, help="Convs per group (>= 3 adds skips).")] = 2,
    translate: Annotated[int, typer.Option(min=0, help="Random translation in pixels.")] = 2,
    cutout: Annotated[
        int,
        typer.Option(min=0, help="Side of a random square painted in the mean colour."),
    ] = 0,
    flip: Annotated[str, typer.Option(help="alternating, random or none.")] = "alternating",
    tta: Annotated[
        int,
        typer.Option(min=0, max=2, help="Test-time augmentation: 0 none, 1 flip, 2 flip+shift."),
    ] = 2,
    ema: Annotated[
        float | None,
        typer.Option(help="Average the weights with this final decay, e.g. 0.9."),
    ] = None,
    whiten_bias_until: Annotated[
        float,
        typer.Option(help="Fraction of training after which the whitening bias is frozen."),
    ] = 0.375,
    time_budget: Annotated[
        float | None,
        typer.Option(help="Stop training after this many minutes (schedule follows)."),
    ] = None,
    amp: Annotated[str, typer.Option(help="auto (bf16 where native), bf16 or none.")] = "auto",
    sync_bn: Annotated[
        bool,
        typer.Option(help="Under torchrun on GPUs: batch norm over the global batch."),
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    checkpoint: Annotated[
        bool, typer.Option(help="Write weights and training state after every epoch.")
    ] = True,
    seed: Annotated[
        int, typer.Option(help="Seed of splits, initialisation, order, augmentation.")
    ] = 0,
    val_size: Annotated[
        float,
        typer.Option(help="Validation share of train (fraction or count), scored per epoch."),
    ] = 0.0,
    image_size: ImageSizeOpt = None,
    n_train: NTrainOpt = None,
    n_test: NTestOpt = None,
    out_dir: OutOpt = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue an interrupted run folder; its config.json sets every option."),
    ] = None,
) -> None:
    """Fast residual network (torch): whitening, BN, Muon+SGD, label smoothing, flip TTA."""
    from pix2pred.nn_torch import distributed as D
    from pix2pred.nn_torch.fast_train import FastTrainConfig
    from pix2pred.runs import create_run_dir, default_run_dir, read_run

    if resume is not None:
        saved, _ = read_run(resume)
        if saved.get("model") != "resnet":
            raise ValueError(f"--resume {resume}: that run trained {saved.get('model')!r}")
        data, arch = saved["data"], saved["architecture"]
        cfg = FastTrainConfig(**saved["train"])
        run = {**data, "widths": tuple(arch["widths"]), "depth": arch["depth"]}
        run.update(seed=arch["seed"], tta=saved["tta"])
    else:
        if dataset is None:
            raise ValueError("--dataset is required (synthetic, cifar10 or folder)")
        cfg = FastTrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            head_lr=head_lr,
            bias_lr=bias_lr,
            weight_decay=weight_decay,
            label_smoothing=label_smoothing,
            warmup=warmup,
            translate=translate,
            cutout=cutout,
            flip=flip,
            ema=ema,
            whiten_bias_until=whiten_bias_until,
            amp=amp,
            sync_bn=sync_bn,
            time_budget=None if time_budget is None else time_budget * 60.0,
            seed=seed,
        )
        run = {
            "dataset": dataset,
            "root": str(root) if root else None,
            "val_size": val_size,
            "image_size": image_size,
            "n_train": n_train,
            "n_test": n_test,
            "widths": _widths(widths),
            "depth": depth,
            "seed": seed,
            "tta": tta,
        }
    ctx = D.init_from_env(device)
    try:
        if resume is not None:
            run_dir = resume if ctx.is_main else None
            checkpoint_dir: Path | None = resume / "checkpoint"
        else:
            run_dir = None
            if ctx.is_main:
                run_dir = create_run_dir(out_dir or default_run_dir("resnet", run["dataset"]))
            checkpoint_dir = run_dir / "checkpoint" if run_dir is not None and checkpoint else None
        _train_and_report(ctx, cfg, run, run_dir, checkpoint_dir, resume is not None)
    finally:
        D.shutdown()


def _train_and_report(
    ctx: Any,
    cfg: Any,
    run: dict[str, Any],
    run_dir: Path | None,
    checkpoint_dir: Path | None,
    resume: bool,
) -> None:
    """Load the data, train (or go on training), and on rank 0 fill the run folder."""
    import numpy as np

    from pix2pred import plots
    from pix2pred.metrics import accuracy, confusion_matrix, per_class_accuracy
    from pix2pred.nn_torch.fast_train import predict_tta, train_fast
    from pix2pred.nn_torch.resnet import FastResNet, save_model
    from pix2pred.runs import write_config, write_metrics

    root = Path(run["root"]) if run["root"] else None
    ds = load_data(
        run["dataset"], root, run["seed"], run["val_size"], run["image_size"], run["n_train"],
        run["n_test"],
    )  # fmt: skip
    H, W, C = ds.X_train.shape[1:]
    model = FastResNet(len(ds.classes), C, run["widths"], run["depth"], seed=run["seed"])
    tta = run["tta"]
    config: dict[str, Any] = {
        "model": "resnet",
        "data": {
            k: run[k] for k in ("dataset", "root", "val_size", "image_size", "n_train", "n_test")
        },
        "architecture": model.config(),
        "train": cfg.to_dict(),
        "tta": tta,
        "device": str(ctx.device),
        "world_size": ctx.world_size,
        "classes": list(ds.classes),
    }
    if run_dir is not None:
        if not resume:
            write_config(run_dir, config)
        console.print(
            f"{'resuming' if resume else 'training'} resnet {tuple(run['widths'])} "
            f"({model.num_params():,} parameters) on {ds.name}: {len(ds.y_train)} train, "
            f"{len(ds.y_val)} val, {len(ds.y_test)} test images, {ctx.world_size} process(es) "
            f"on {ctx.device}"
        )

    def report(r: dict[str, Any]) -> None:
        val = f", val {r['val_acc']:.2%}" if "val_acc" in r else ""
        console.print(
            f"epoch {r['epoch']} ({r['epochs_done']:.2f} done): loss {r['train_loss']:.4f}, "
            f"train {r['train_acc']:.2%}{val}, {r['train_seconds']:.0f} s"
        )

    has_val = len(ds.y_val) > 0
    try:
        result = train_fast(
            model,
            ds.X_train,
            ds.y_train,
            cfg,
            X_val=ds.X_val if has_val else None,
            y_val=ds.y_val if has_val else None,
            device=ctx.device,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            progress=report,
        )
    except KeyboardInterrupt:
        if run_dir is not None and checkpoint_dir is not None:
            console.print(f"interrupted; continue with: pix2pred train resnet --resume {run_dir}")
        raise typer.Exit(130) from None
    if run_dir is None:
        return
    for note in result.notes:
        console.print(f"note: {note}")
    t0 = time.perf_counter()
    levels = predict_tta(model, ds.X_test, max_tta=tta, batch_size=cfg.eval_batch_size, amp=cfg.amp)
    predict_seconds = time.perf_counter() - t0
    acc = {k: accuracy(ds.y_test, v.argmax(1)) for k, v in levels.items()}
    y_pred = levels[tta].argmax(1)
    cm = confusion_matrix(ds.y_test, y_pred, len(ds.classes))
    metrics = {
        "model": "resnet",
        "dataset": ds.name,
        "test_accuracy": acc[tta],
        "tta": tta,
        "test_accuracy_by_tta": {str(k): v for k, v in acc.items()},
        "num_params": model.num_params(),
        "epochs_run": result.epochs,
        "steps": result.steps,
        "batch_size": result.batch_size,
        "train_seconds": result.train_seconds,
        "predict_seconds": predict_seconds,
        "world_size": ctx.world_size,
        "backend": "torch",
        "device": str(ctx.device),
        "per_class_accuracy": dict(
            zip(ds.classes, np.nan_to_num(per_class_accuracy(cm)).tolist(), strict=True)
        ),
        "confusion_matrix": cm.tolist(),
        "notes": result.notes,
        "history": result.history,
    }
    write_metrics(run_dir, metrics)
    save_model(
        model,
        run_dir / "model",
        {
            "classes": list(ds.classes),
            "image_shape": [int(H), int(W), int(C)],
            "tta": tta,
            "test_accuracy": acc[tta],
            "train": cfg.to_dict(),
        },
    )
    plots.training_curves(result.history, run_dir / "training_curves.png")
    plots.confusion_matrix_plot(
        cm,
        ds.classes,
        run_dir / "confusion_matrix.png",
        title=f"resnet on {ds.name}: test accuracy {acc[tta]:.1%} (TTA {tta})",
    )
    by_level = ", ".join(f"TTA {k}: {v:.2%}" for k, v in acc.items())
    out.print(
        f"resnet on {ds.name}: test accuracy {acc[tta]:.2%} ({by_level}); "
        f"{result.epochs:.2f} epochs in {result.train_seconds / 60:.1f} min"
    )
    from pix2pred.nn_torch.resnet_classifier import ResNetClassifier
    from pix2pred.report import try_write_run_report

    est = ResNetClassifier(model.eval(), {"classes": ds.classes, "image_shape": (H, W, C)}, tta)
    report = try_write_run_report(
        run_dir,
        warn=lambda msg: console.print(msg, style="yellow", markup=False),
        dataset=ds,
        model=est,
        scores=levels[tta],
    )
    if report is not None:
        out.print(f"report: {report}")
    out.print(f"run folder: {run_dir}")


def register(train_app: typer.Typer) -> None:
    """Add ``resnet`` to the ``pix2pred train`` commands."""
    train_app.command("resnet")(train_resnet)
