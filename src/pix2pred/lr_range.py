"""The learning-rate range test: train with an exponentially growing rate and watch the loss.

Starting from a copy of the initial weights, the rate goes from ``lr_min`` to ``lr_max`` over
``steps`` minibatch steps (``lr_t = lr_min * (lr_max / lr_min) ** (t / (steps - 1))``) with
the chosen update rule. While the rate is too small the loss barely moves; then it falls, and
past a point it climbs and diverges. The test stops once the (causally smoothed) loss exceeds
``diverge_factor`` times its best value, or the loss is no longer finite.

The curve is read after smoothing it with a centred moving average, which does not shift it
towards larger rates as an exponential moving average would:

- ``start_lr``: where the smoothed loss has made a tenth of its whole fall (below this the
  rate is too small to matter);
- ``suggested_lr``: where, between ``start_lr`` and ``min_loss_lr``, the smoothed loss falls
  fastest against ``log(lr)``;
- ``min_loss_lr``: where it is lowest (above this a rate makes the loss climb);
- ``diverged_lr``: where the test stopped on divergence (None if it never diverged).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from pix2pred import diagnostics_model as dm

__all__ = ["LRRangeResult", "analyse_lr_curve", "lr_range_test", "smooth"]


@dataclasses.dataclass
class LRRangeResult:
    """The rates tried, the losses seen and what they suggest (see the module docstring)."""

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggested_lr: float | None
    start_lr: float | None
    min_loss_lr: float | None
    diverged_lr: float | None
    lr_min: float
    lr_max: float

    @property
    def found_range(self) -> bool:
        """Whether the loss fell at some rate before it climbed (a usable range exists)."""
        return self.suggested_lr is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "lrs": self.lrs.tolist(),
            "losses": [v if math.isfinite(v) else None for v in self.losses.tolist()],
            "smoothed": self.smoothed.tolist(),
            "suggested_lr": self.suggested_lr,
            "start_lr": self.start_lr,
            "min_loss_lr": self.min_loss_lr,
            "diverged_lr": self.diverged_lr,
            "lr_min": self.lr_min,
            "lr_max": self.lr_max,
        }


def smooth(values: np.ndarray, half_width: int = 5) -> np.ndarray:
    """A centred moving average of ``values`` ``(T,)`` over ``2 * half_width + 1`` steps.

    Near the ends the window shrinks symmetrically (to one point at each end), so a trend is
    never shifted: the smoothed curve has no lag, unlike an exponential moving average.
    """
    v = np.asarray(values, dtype=np.float64)
    T = v.size
    csum = np.concatenate([[0.0], np.cumsum(v)])
    t = np.arange(T)
    k = np.minimum(half_width, np.minimum(t, T - 1 - t))
    return (csum[t + k + 1] - csum[t - k]) / (2 * k + 1)


def analyse_lr_curve(
    lrs: np.ndarray, losses: np.ndarray, half_width: int | None = None, min_fall: float = 0.02
) -> dict[str, Any]:
    """Smooth the losses ``(T,)`` seen at rates ``lrs`` ``(T,)`` and read the range off them.

    ``half_width`` of the smoothing (see `smooth`) defaults to 1/40 of the steps (at least 2).

    Returns a dict with ``smoothed`` ``(T',)`` (the finite prefix) and the rates
    ``suggested_lr``, ``start_lr``, ``min_loss_lr``; these are None when the smoothed loss
    never fell by ``min_fall`` (relative) below its start: no rate in the range helped.
    """
    lrs, losses = np.asarray(lrs, np.float64), np.asarray(losses, np.float64)
    finite = np.isfinite(losses)
    end = int(np.argmin(finite)) if not finite.all() else len(losses)
    if half_width is None:
        half_width = max(2, len(losses) // 40)
    s = smooth(losses[:end], half_width)
    none = {"smoothed": s, "suggested_lr": None, "start_lr": None, "min_loss_lr": None}
    if end < 5:
        return none
    i_min = int(np.argmin(s))
    # The first window (of the finite part), less noisy than s[0]; the minimum must lie past it.
    window = min(end, 2 * half_width + 1)
    first = float(np.mean(losses[:window]))
    if i_min < window or s[i_min] > (1 - min_fall) * first:
        return none
    log_lr = np.log10(lrs[:end])
    slope = np.gradient(s, log_lr)  # d loss / d log10(lr)
    fallen = first - s[: i_min + 1]
    i_start = int(np.argmax(fallen >= 0.1 * (first - s[i_min])))
    i_steep = i_start + int(np.argmin(slope[i_start : i_min + 1]))
    return {
        "smoothed": s,
        "suggested_lr": float(lrs[i_steep]),
        "start_lr": float(lrs[i_start]),
        "min_loss_lr": float(lrs[i_min]),
    }


def lr_range_test(
    model: Any,
    X: np.ndarray,
    y: np.ndarray,
    *,
    optimizer: str = "sgd_momentum",
    momentum: float | None = None,
    weight_decay: float = 0.0,
    lr_min: float = 1e-7,
    lr_max: float = 10.0,
    steps: int = 200,
    batch_size: int = 64,
    seed: int = 0,
    beta: float = 0.9,
    diverge_factor: float = 4.0,
) -> LRRangeResult:
    """Run the range test on a copy of ``model`` (left untouched) with batches of ``X``, ``y``.

    Parameters
    ----------
    model : a `pix2pred.nn_numpy.models` or `pix2pred.nn_torch.models` model
    X : float ndarray of shape (N, ...), preprocessed model inputs
    y : int ndarray of shape (N,)
    optimizer, momentum, weight_decay : the update rule, as for the Solver
    lr_min, lr_max : the first and last rate, 0 < lr_min < lr_max
    steps : minibatch steps from lr_min to lr_max (at least 10)
    batch_size : images per step (at most N)
    seed : shuffles the batches
    beta : weight of the exponential moving average of the loss that detects divergence
    diverge_factor : stop once the smoothed loss exceeds this multiple of its best value
    """
    if not (0 < lr_min < lr_max):
        raise ValueError(f"need 0 < lr_min < lr_max, got lr_min={lr_min}, lr_max={lr_max}")
    if not (isinstance(steps, int) and steps >= 10):
        raise ValueError(f"steps must be an integer >= 10, got {steps!r}")
    if diverge_factor <= 1:
        raise ValueError(f"diverge_factor must be > 1, got {diverge_factor}")
    lrs = lr_min * (lr_max / lr_min) ** (np.arange(steps) / (steps - 1))
    work = dm.clone(model)
    losses: list[float] = []
    running = {"avg": 0.0, "best": math.inf}

    def watch(solver: Any) -> None:
        loss = solver.loss_history[-1]
        losses.append(loss)
        t = len(losses)
        running["avg"] = beta * running["avg"] + (1 - beta) * loss
        causal = running["avg"] / (1 - beta**t)
        running["best"] = min(running["best"], causal)
        if t >= steps or (t > 10 and causal > diverge_factor * running["best"]):
            raise dm.StopTraining

    solver = dm.make_solver(
        work,
        X,
        y,
        lrs=lrs,
        optimizer=optimizer,
        momentum=momentum,
        weight_decay=weight_decay,
        batch_size=batch_size,
        seed=seed,
        num_train_samples=1,  # the epoch-end accuracy is not used here
        callback=watch,
    )
    failure = dm.run_solver(solver)
    diverged_at = None
    if failure is not None:  # a non-finite loss or update at the step after the last recorded
        losses.append(math.inf)
        diverged_at = len(losses) - 1
    elif len(losses) < steps:
        diverged_at = len(losses) - 1
    losses_arr = np.asarray(losses, dtype=np.float64)
    tried = lrs[: len(losses_arr)]
    reading = analyse_lr_curve(tried, losses_arr)
    return LRRangeResult(
        lrs=tried,
        losses=losses_arr,
        smoothed=reading["smoothed"],
        suggested_lr=reading["suggested_lr"],
        start_lr=reading["start_lr"],
        min_loss_lr=reading["min_loss_lr"],
        diverged_lr=None if diverged_at is None else float(lrs[diverged_at]),
        lr_min=float(lr_min),
        lr_max=float(lr_max),
    )
