"""The course's experiments: one model trained under several update rules or hyperparameter values.

`run_optimizer_comparison` trains the same model from the same initialisation (same seed, same
batches) with SGD, momentum, Nesterov, RMSProp and Adam; `run_ablation` trains it once per value
of one hyperparameter (``lr``, ``weight_decay``, ``hidden``, ``dropout``, ...). Both fill a run
folder (``config.json``, ``results.json``, figures, ``summary.txt``) and return an
`ExperimentResult`. A run whose loss or update stops being finite is recorded as diverged, with
the history it had, and the experiment goes on with the next one.

The models are the estimators of `pix2pred.estimators` with their own preprocessing, model
builder and Solver settings; the run is driven here rather than by ``fit`` so that the history of
a diverged run survives (``fit`` raises and loses it) and each update rule gets its own momentum.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pix2pred import experiments_summary as summary_text
from pix2pred.checkpoint import write_bytes, write_json
from pix2pred.data import Dataset
from pix2pred.experiments_config import (
    DEFAULT_LRS,
    OPTIMIZER_ALIASES,
    OPTIMIZERS,
    RULE_MOMENTUM,
    check_params,
    estimator_class,
    format_value,
    is_log_scale,
    parse_values,
    resolve_params,
)

__all__ = [
    "DEFAULT_LRS",
    "OPTIMIZERS",
    "ExperimentResult",
    "RunResult",
    "parse_values",
    "resolve_optimizers",
    "resolve_params",
    "run_ablation",
    "run_optimizer_comparison",
]


@dataclass
class RunResult:
    """One training run of an experiment: what it was given and what it reached.

    ``history`` is the Solver's (per-iteration loss, per-epoch accuracies); ``lr_schedule`` the
    rate of every iteration. ``final_train_acc`` and ``final_val_acc`` are the last epoch's,
    ``test_acc`` that of the best validation epoch's parameters (the ones the estimator keeps).
    A diverged run has no accuracies; ``diverged_epoch`` and ``diverged_step`` (1-based) say
    where its loss or an update stopped being finite, and ``error`` the Solver's message.
    """

    name: str
    params: dict[str, Any]
    history: dict[str, Any]
    lr_schedule: list[float]
    seconds: float
    diverged: bool = False
    diverged_epoch: int | None = None
    diverged_step: int | None = None
    error: str | None = None
    final_train_acc: float | None = None
    final_val_acc: float | None = None
    best_val_acc: float | None = None
    test_acc: float | None = None
    value: Any = None

    @property
    def loss(self) -> list[float]:
        return self.history.get("loss", [])

    @property
    def loss_change(self) -> float | None:
        """Relative change of the loss from the first batch to the mean of the last epoch."""
        loss, per_epoch = self.loss, max(1, int(self.history.get("iterations_per_epoch", 1)))
        if len(loss) < 2 or loss[0] == 0:
            return None
        return float(np.mean(loss[-per_epoch:]) / loss[0] - 1.0)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "loss_change": self.loss_change}


@dataclass
class ExperimentResult:
    """What an experiment wrote: its folder, its runs, its figures and its summary lines."""

    experiment: str
    run_dir: Path
    runs: list[RunResult]
    figures: dict[str, Path] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)
    table: str = ""


# ------------------------------------------------------------------------------ training


def _train(
    model: str,
    params: Mapping[str, Any],
    data: Dataset,
    name: str,
    *,
    momentum: float | None = None,
    progress: bool = True,
) -> RunResult:
    """Train one estimator as ``fit`` does, keeping the history even when training diverges."""
    from pix2pred.solver import TrainingDivergedError

    est = estimator_class(model)(**params)
    est._validate()
    est.classes_ = np.arange(data.num_classes)
    arrays = est._prepare(data.X_train, data.y_train, data.X_val, data.y_val, data.num_classes)
    used_momentum = est.momentum if momentum is None else momentum
    if used_momentum is None:  # the rule's own, recorded as a number
        used_momentum = RULE_MOMENTUM.get(est.optimizer)
    solver = est._solver(
        arrays, momentum=used_momentum, progress=progress, verbose=False, checkpoint_dir=None
    )
    t0 = time.perf_counter()
    run_params = {**params, "momentum": used_momentum}
    result = RunResult(name=name, params=run_params, history={}, lr_schedule=[], seconds=0.0)
    try:
        # NOTE: an exploding run overflows on its way to NaN; the Solver reports that as a
        # divergence, so numpy's warnings about it would only repeat the news.
        with np.errstate(over="ignore", invalid="ignore"):
            solver.train()
    except TrainingDivergedError as e:
        result.diverged, result.error = True, str(e)
        result.diverged_epoch, result.diverged_step = solver.epoch + 1, solver.step + 1
    result.seconds = time.perf_counter() - t0
    result.history = solver.history()
    total = solver.epochs * solver.iterations_per_epoch
    result.lr_schedule = [float(solver.schedule(step)) for step in range(total)]
    if not result.diverged:
        history = result.history
        result.final_train_acc = history["train_acc"][-1]
        result.final_val_acc = history["val_acc"][-1]
        result.best_val_acc = history["best_val_acc"]
        result.test_acc = est.score(data.X_test, data.y_test)
    return result


def _check_data(data: Dataset) -> None:
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a pix2pred.data.Dataset, got {type(data).__name__}")
    if len(data.y_val) == 0:
        raise ValueError("an experiment needs validation images: load the data with val_size > 0")


def _announce(console: Any, i: int, n: int, text: str) -> None:
    if console is not None:
        console.print(f"[bold][{i}/{n}][/bold] {text}")


def resolve_optimizers(
    optimizers: Sequence[str], lrs: Mapping[str, float] | None = None
) -> tuple[list[str], dict[str, float]]:
    """The chosen names of `OPTIMIZERS` and every rule's rate; refuses unknown names and rates.

    Needs no data, so a command can check its options before it loads any.
    """
    chosen = [OPTIMIZER_ALIASES.get(o, o) for o in optimizers]
    unknown = [o for o in chosen if o not in OPTIMIZERS]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(
            f"optimizers must be distinct names from {', '.join(OPTIMIZERS)}, "
            f"got {list(optimizers)}"
        )
    rates = {**DEFAULT_LRS}
    for key, lr in (lrs or {}).items():
        key = OPTIMIZER_ALIASES.get(key, key)
        if key not in OPTIMIZERS:
            raise ValueError(f"--lrs: unknown optimizer {key!r}; expected {', '.join(OPTIMIZERS)}")
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"--lrs: the learning rate of {key} must be > 0, got {lr!r}")
        rates[key] = float(lr)
    return chosen, rates


def run_optimizer_comparison(
    model: str,
    data: Dataset,
    *,
    params: Mapping[str, Any] | None = None,
    optimizers: Sequence[str] = tuple(OPTIMIZERS),
    lrs: Mapping[str, float] | None = None,
    run_dir: str | Path | None = None,
    progress: bool = True,
    console: Any = None,
) -> ExperimentResult:
    """Train ``model`` from the same initialisation with each update rule of ``optimizers``.

    Parameters
    ----------
    model : a kind of ``pix2pred train``: softmax, svm, mlp, fcnet, cnn, convnet
    data : Dataset with validation images
    params : estimator keywords (``epochs``, ``batch_size``, ``schedule``, ``backend``, ...)
    optimizers : names from `OPTIMIZERS` (``sgd_momentum`` is accepted for ``momentum``)
    lrs : learning rate per optimizer name; the others keep `DEFAULT_LRS`
    run_dir : the folder to create (default ``runs/experiment-optimizers-<model>-<dataset>-<time>``)
    console : a rich console for one line per run (None: quiet apart from the progress bars)
    """
    _check_data(data)
    chosen, rates = resolve_optimizers(optimizers, lrs)
    base = resolve_params(model, params)
    for name in chosen:
        check_params(model, {**base, "optimizer": OPTIMIZERS[name][0], "lr": rates[name]}, data)
    run_dir = _create(run_dir, f"experiment-optimizers-{model}", data)
    config = {
        "experiment": "optimizers",
        "model": model,
        "dataset": _data_config(data),
        "params": base,
        "optimizers": {n: {"rule": OPTIMIZERS[n][0], "lr": rates[n]} for n in chosen},
    }
    _write_config(run_dir, config)
    runs = []
    for i, name in enumerate(chosen, 1):
        rule, momentum = OPTIMIZERS[name]
        _announce(console, i, len(chosen), f"{model} with {name} (lr {rates[name]:g})")
        run_params = {**base, "optimizer": rule, "lr": rates[name]}
        result = _train(model, run_params, data, name, momentum=momentum, progress=progress)
        result.value = name
        runs.append(result)
    figures = _optimizer_figures(runs, run_dir, model, data)
    return _finish(run_dir, config, runs, figures, summary_text.optimizer_summary(runs))


def run_ablation(
    model: str,
    data: Dataset,
    param: str,
    values: str | Sequence[Any],
    *,
    params: Mapping[str, Any] | None = None,
    run_dir: str | Path | None = None,
    progress: bool = True,
    console: Any = None,
) -> ExperimentResult:
    """Train ``model`` once per value of the hyperparameter ``param``, all else equal.

    ``values`` is a comma-separated string or a sequence (see `parse_values`); every value is
    checked against the estimator before the first run starts. Other arguments as in
    `run_optimizer_comparison`.
    """
    _check_data(data)
    values = parse_values(model, param, values)
    base = resolve_params(model, params)
    for value in values:
        try:
            check_params(model, {**base, param: value}, data)
        except (ValueError, TypeError) as e:
            raise ValueError(f"--values: {param}={format_value(value)} is refused: {e}") from None
    run_dir = _create(run_dir, f"experiment-ablate-{param}-{model}", data)
    config = {
        "experiment": "ablation",
        "model": model,
        "dataset": _data_config(data),
        "param": param,
        "values": values,
        "params": base,
    }
    _write_config(run_dir, config)
    runs = []
    for i, value in enumerate(values, 1):
        label = f"{param}={format_value(value)}"
        _announce(console, i, len(values), f"{model} with {label}")
        run_params = {**base, param: value}
        result = _train(model, run_params, data, label, progress=progress)
        result.value = value
        runs.append(result)
    figures = _ablation_figures(runs, run_dir, model, param, data)
    lines = summary_text.ablation_summary(runs, param, _ordered(values))
    return _finish(run_dir, config, runs, figures, lines)


def _ordered(values: Sequence[Any]) -> bool:
    """Whether the values run from low to high: all numbers, or all one-layer hidden sizes."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return True
    return all(isinstance(v, list | tuple) and len(v) == 1 for v in values)


# ------------------------------------------------------------------------------ outputs


def _create(run_dir: str | Path | None, kind: str, data: Dataset) -> Path:
    from pix2pred.runs import create_run_dir, default_run_dir

    return create_run_dir(run_dir or default_run_dir(kind, data.name))


def _data_config(data: Dataset) -> dict[str, Any]:
    return {
        "name": data.name,
        "title": data.title,
        "classes": list(data.classes),
        "n_train": len(data.y_train),
        "n_val": len(data.y_val),
        "n_test": len(data.y_test),
        "info": data.info,
    }


def _write_config(run_dir: Path, config: dict[str, Any]) -> None:
    from pix2pred.runs import write_config

    write_config(run_dir, config)


def _steps_per_epoch(runs: list[RunResult]) -> dict[str, int]:
    """Each run's own steps per epoch (an ablation of batch_size changes them)."""
    return {r.name: int(r.history.get("iterations_per_epoch", 1)) for r in runs}


def _curve_figures(runs: list[RunResult], run_dir: Path, prefix: str, by: str, where: str):
    """The loss and accuracy curves of every run, one line each, as ``{"loss", "accuracy"}``."""
    from pix2pred import plots

    diverged = [r.name for r in runs if r.diverged]
    return {
        "loss": plots.loss_curves_plot(
            {r.name: r.loss for r in runs},
            run_dir / f"{prefix}_loss.png",
            iterations_per_epoch=_steps_per_epoch(runs),
            diverged=diverged,
            title=f"Training loss {by}: {where}",
        ),
        "accuracy": plots.accuracy_curves_plot(
            {r.name: r.history["train_acc"] for r in runs},
            {r.name: r.history["val_acc"] for r in runs},
            run_dir / f"{prefix}_accuracy.png",
            diverged=diverged,
            title=f"Accuracy {by}: {where}",
        ),
    }


def _optimizer_figures(
    runs: list[RunResult], run_dir: Path, model: str, data: Dataset
) -> dict[str, Path]:
    from pix2pred import plots

    figures = _curve_figures(
        runs, run_dir, "optimizers", "by update rule", f"{model} on {data.title}"
    )
    figures["lr"] = plots.lr_schedules_plot(
        {r.name: r.lr_schedule for r in runs},
        run_dir / "optimizers_lr.png",
        iterations_per_epoch=_steps_per_epoch(runs),
        title=f"Learning rate of each update rule (schedule: {runs[0].params['schedule']})",
    )
    return figures


def _ablation_figures(
    runs: list[RunResult], run_dir: Path, model: str, param: str, data: Dataset
) -> dict[str, Path]:
    from pix2pred import plots

    where = f"{model} on {data.title}"
    figures = _curve_figures(runs, run_dir, "ablation", f"for each {param}", where)
    figures["sweep"] = plots.value_sweep_plot(
        [r.value if not isinstance(r.value, list) else format_value(r.value) for r in runs],
        [r.final_train_acc for r in runs],
        [r.final_val_acc for r in runs],
        run_dir / "ablation_sweep.png",
        param=param,
        logx=is_log_scale(param, [r.value for r in runs]),
        chance=1.0 / data.num_classes,
        title=f"Final accuracy against {param}: {where}",
    )
    return figures


def _finish(
    run_dir: Path,
    config: dict[str, Any],
    runs: list[RunResult],
    figures: dict[str, Path],
    lines: list[str],
) -> ExperimentResult:
    table = summary_text.results_table(runs)
    write_json(
        run_dir / "results.json",
        {
            "experiment": config["experiment"],
            "model": config["model"],
            "runs": [r.to_json() for r in runs],
            "figures": {k: p.name for k, p in figures.items()},
            "summary": lines,
        },
    )
    text = "\n".join(lines) + "\n\n" + table + "\n"
    write_bytes(run_dir / "summary.txt", text.encode("utf-8"))
    return ExperimentResult(config["experiment"], run_dir, runs, figures, lines, table)
