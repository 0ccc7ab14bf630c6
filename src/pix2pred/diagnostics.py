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
