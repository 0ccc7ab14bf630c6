"""The course's "babysitting" checks of a model before a long training run.

`run_diagnostics(model, X, y, ...)` runs each check on a copy of a freshly initialised model of
either backend and returns one `CheckResult` per check: ``pass`` or ``warn``, the measured
number, the expected value and why it matters. The checks (keys of `CHECKS`):

1. ``initial_loss``: the data loss before training against ln(C) (softmax) or C - 1 (the
   multiclass SVM with margin 1), within 10 %. Weight decay plays no part: the models' loss is
   the data loss alone.
2. ``overfit``: full-batch training on a few images (no weight decay, no dropout) must reach
   100 % training accuracy, and the loss a tenth of its start, within a bounded number of
   steps.
3. ``gradcheck``: the gradient of every parameter against central differences in float64 on a
   few images (a few entries per parameter: the largest and some random ones).
4. ``update_ratio``: ``||lr-sized update|| / ||W||`` per weight over a few real steps of the
   chosen optimizer, learning rate and weight decay; about 1e-3 is healthy.
5. ``activations``: mean and standard deviation of every layer's output on a batch (train
   mode), and the fraction of dead ReLU units (never active on the batch: a neuron of an fc
   layer, a whole feature map of a conv layer).
6. ``lr_range``: the learning-rate range test of `pix2pred.lr_range`.

`write_diagnostics` writes ``diagnostics.json`` and the figures into a run folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pix2pred.diagnostics_checks import (
    DEAD_RELU_LIMIT,
    GRADCHECK_TOLERANCE,
    INITIAL_LOSS_TOLERANCE,
    RATIO_BAND,
    CheckResult,
    DiagnosticSettings,
    check_activations,
    check_gradients,
    check_initial_loss,
    check_lr_range,
    check_overfit,
    check_update_ratio,
)

__all__ = [
    "CHECKS",
    "DEAD_RELU_LIMIT",
    "GRADCHECK_TOLERANCE",
    "INITIAL_LOSS_TOLERANCE",
    "RATIO_BAND",
    "CheckResult",
    "DiagnosticSettings",
    "check_activations",
    "check_gradients",
    "check_initial_loss",
    "check_lr_range",
    "check_overfit",
    "check_update_ratio",
    "diagnose_estimator",
    "estimator_settings",
    "prepare_estimator",
    "run_diagnostics",
    "write_diagnostics",
]

CHECKS: dict[str, Callable[..., CheckResult]] = {
    "initial_loss": check_initial_loss,
    "overfit": check_overfit,
    "gradcheck": check_gradients,
    "update_ratio": check_update_ratio,
    "activations": check_activations,
    "lr_range": check_lr_range,
}


def run_diagnostics(
    model: Any,
    X: np.ndarray,
    y: np.ndarray,
    *,
    checks: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    **settings: Any,
) -> list[CheckResult]:
    """Run the babysitting checks on an initialised model; the model itself is not changed.

    Parameters
    ----------
    model : a `pix2pred.nn_numpy.models` or `pix2pred.nn_torch.models` model, as initialised
    X : float ndarray of shape (N, ...), preprocessed training inputs (N >= 2)
    y : int ndarray of shape (N,)
    checks : keys of `CHECKS` to run, in order (default: all)
    progress : called with each check's key before it runs
    **settings : fields of `DiagnosticSettings` (optimizer, lr, momentum, weight_decay, ...)
    """
    s = DiagnosticSettings(**settings)
    keys = list(CHECKS) if checks is None else list(checks)
    unknown = [k for k in keys if k not in CHECKS]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; choose from {', '.join(CHECKS)}")
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim < 2 or len(X) < 2 or y.shape != (len(X),):
        raise ValueError(f"X must be (N, ...) with N >= 2 and y (N,), got {X.shape}, {y.shape}")
    results = []
    for key in keys:
        if progress is not None:
            progress(key)
        results.append(CHECKS[key](model, X, y, s))
    return results


def diagnose_estimator(
    estimator: Any,
    X: np.ndarray,
    y: np.ndarray,
    *,
    checks: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    **settings: Any,
) -> list[CheckResult]:
    """`run_diagnostics` on the model an estimator would train, with its training options.

    Parameters
    ----------
    estimator : an unfitted (or fitted: only its keywords are read) `pix2pred.estimators`
        classifier; its backend, architecture, init, dtype, seed and preprocessing build the
        model, its optimizer, lr, momentum, weight_decay and batch_size drive the checks
    X : uint8 images of shape (N, H, W, C), the training images
    y : labels of shape (N,), integers in ``[0, num_classes)``
    checks, progress : as for `run_diagnostics`
    **settings : override `DiagnosticSettings` fields (``overfit_size``, ``lr_range_steps``...)
    """
    model, X_model, y = prepare_estimator(estimator, X, y)
    options = {**estimator_settings(estimator), **settings}
    return run_diagnostics(model, X_model, y, checks=checks, progress=progress, **options)


def estimator_settings(estimator: Any) -> dict[str, Any]:
    """The `DiagnosticSettings` fields an estimator's keywords set."""
    keys = ("optimizer", "lr", "momentum", "weight_decay", "batch_size", "seed")
    return {k: getattr(estimator, k) for k in keys}


def prepare_estimator(
    estimator: Any, X: np.ndarray, y: np.ndarray, num_classes: int | None = None
) -> tuple[Any, np.ndarray, np.ndarray]:
    """``(initialised model, preprocessed inputs (N, C, H, W), labels)`` as ``fit`` makes them.

    The preprocessing is fitted on ``X``; ``y`` must hold integer labels ``0..num_classes-1``
    (``num_classes`` defaults to ``max(y) + 1``).
    """
    from pix2pred.data.preprocess import make_preprocessor

    estimator._validate()
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 4 or X.dtype != np.uint8:
        raise ValueError(f"X must be uint8 images (N, H, W, C), got {X.dtype} {X.shape}")
    if y.shape != (len(X),) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ValueError(f"y must be integer labels >= 0 of shape ({len(X)},), got {y.shape}")
    pre = make_preprocessor(estimator.preprocessing).fit(X)
    X_model = np.ascontiguousarray(pre.transform(X), dtype=estimator.dtype)
    H, W, C = X.shape[1:]
    num_classes = num_classes or max(int(y.max()) + 1, 2)
    if y.max() >= num_classes:
        raise ValueError(f"y holds label {y.max()}, beyond num_classes={num_classes}")
    model = estimator._build_model((C, H, W), num_classes)
    return model, X_model, y.astype(np.int64)


def write_diagnostics(
    results: Sequence[CheckResult],
    run_dir: str | os.PathLike[str],
    title: str = "",
    extra: dict[str, Any] | None = None,
) -> list[Path]:
    """Write ``diagnostics.json`` and the figures of the checks that have one; return paths."""
    from pix2pred import plots_diagnostics
    from pix2pred.checkpoint import write_json

    run_dir = Path(run_dir)
    by_key = {r.key: r for r in results}
    written = [run_dir / "diagnostics.json"]
    write_json(written[0], {**(extra or {}), "checks": [r.to_json() for r in results]})
    if "lr_range" in by_key:
        d = by_key["lr_range"].details
        written.append(plots_diagnostics.lr_range_plot(d, run_dir / "lr_range.png", title=title))
    if "overfit" in by_key:
        d = by_key["overfit"].details
        written.append(plots_diagnostics.overfit_plot(d, run_dir / "overfit.png", title=title))
    if "update_ratio" in by_key:
        d = by_key["update_ratio"].details
        written.append(
            plots_diagnostics.update_ratio_plot(d, run_dir / "update_ratios.png", title=title)
        )
    if "activations" in by_key:
        d = by_key["activations"].details
        written.append(
            plots_diagnostics.activation_histograms(d, run_dir / "activations.png", title=title)
        )
    return written
