"""Learning-rate schedules shared by both backends: pure functions of the step.

A schedule is a small frozen dataclass called as ``schedule(step) -> float``. ``step`` counts the
scheduler steps taken so far (iterations or epochs: the caller decides), so ``schedule(0)`` is the
rate of the first update. Nothing is stored between calls, which lets a run resume at any step and
lets the torch backend reproduce a schedule by setting ``param_group["lr"] = schedule(step)``.

Where ``torch.optim.lr_scheduler`` has the same schedule, ``schedule(step)`` is the ``lr`` that
scheduler holds after ``step`` calls to ``scheduler.step()``: `StepLR`, `ExponentialLR`,
`CosineLR` (``CosineAnnealingLR``'s closed form, up to ``T_max``) and `WarmupLR` (``LinearLR``
followed by the wrapped schedule, as ``SequentialLR`` chains them).
"""

from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "SCHEDULE_NAMES",
    "ConstantLR",
    "CosineLR",
    "ExponentialLR",
    "InverseTimeLR",
    "Schedule",
    "StepLR",
    "WarmupLR",
    "make_schedule",
]


class Schedule(Protocol):
    """A learning rate as a function of the step; ``lr`` is the base (peak) rate."""

    @property
    def lr(self) -> float: ...

    def __call__(self, step: int) -> float: ...


def _check_step(step: int) -> int:
    try:
        step = operator.index(step)
    except TypeError:
        raise TypeError(f"step must be an integer, got {step!r}") from None
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return step


def _check_lr(lr: float) -> None:
    if not (isinstance(lr, numbers.Real) and lr >= 0.0):
        raise ValueError(f"Invalid learning rate: {lr}")


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class ConstantLR:
    """The same rate at every step.

    NOTE: not torch's ``ConstantLR``, which scales the rate by a factor for a number of steps;
    this one is the absence of a schedule (torch: no scheduler at all).
    """

    lr: float

    def __post_init__(self) -> None:
        _check_lr(self.lr)

    def __call__(self, step: int) -> float:
        _check_step(step)
        return float(self.lr)


@dataclass(frozen=True)
class StepLR:
    """Step decay: ``lr * gamma ** (step // step_size)``, as ``torch.optim.lr_scheduler.StepLR``."""

    lr: float
    step_size: int
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _check_lr(self.lr)
        _check_positive_int("step_size", self.step_size)
        if not self.gamma > 0.0:
            raise ValueError(f"gamma must be > 0, got {self.gamma}")

    def __call__(self, step: int) -> float:
        return float(self.lr * self.gamma ** (_check_step(step) // self.step_size))


@dataclass(frozen=True)
class ExponentialLR:
    """Exponential decay: ``lr * gamma ** step``, as ``torch.optim.lr_scheduler.ExponentialLR``.

    The course writes the same schedule as ``lr * exp(-k * step)``, that is ``gamma = exp(-k)``.
    """

    lr: float
    gamma: float

    def __post_init__(self) -> None:
        _check_lr(self.lr)
        if not self.gamma > 0.0:
            raise ValueError(f"gamma must be > 0, got {self.gamma}")

    def __call__(self, step: int) -> float:
        return float(self.lr * self.gamma ** _check_step(step))


@dataclass(frozen=True)
class InverseTimeLR:
    """1/t decay: ``lr / (1 + decay * step)``, the course's ``a0 / (1 + k t)``.

    torch has no class for it; ``LambdaLR(optimizer, lambda step: 1 / (1 + decay * step))``
    gives the same rates.
    """

    lr: float
    decay: float

    def __post_init__(self) -> None:
        _check_lr(self.lr)
        if not self.decay >= 0.0:
            raise ValueError(f"decay must be >= 0, got {self.decay}")

    def __call__(self, step: int) -> float:
        return float(self.lr / (1.0 + self.decay * _check_step(step)))


@dataclass(frozen=True)
class CosineLR:
    """Cosine annealing from ``lr`` at step 0 to ``min_lr`` at ``total_steps``, then ``min_lr``.

    ``min_lr + (lr - min_lr) * (1 + cos(pi * step / total_steps)) / 2``: the closed form of
    ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=total_steps, eta_min=min_lr)``. NOTE:
    past ``total_steps`` torch's rate climbs back up the cosine; this one stays at the floor.
    """

    lr: float
    total_steps: int
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        _check_lr(self.lr)
        _check_positive_int("total_steps", self.total_steps)
        if not 0.0 <= self.min_lr <= self.lr:
            raise ValueError(f"min_lr must be in [0, lr={self.lr}], got {self.min_lr}")

    def __call__(self, step: int) -> float:
        step = min(_check_step(step), self.total_steps)
        cosine = 1.0 + math.cos(math.pi * step / self.total_steps)
        return float(self.min_lr + (self.lr - self.min_lr) * cosine / 2.0)


@dataclass(frozen=True)
class WarmupLR:
    """Linear warm-up for ``warmup_steps`` steps, then ``schedule`` started from its step 0.

    During warm-up the rate is ``schedule.lr * (start_factor + (1 - start_factor) * step /
    warmup_steps)``, rising linearly from ``start_factor * lr`` towards ``lr``; from
    ``warmup_steps`` on it is ``schedule(step - warmup_steps)``. This is torch's
    ``SequentialLR([LinearLR(start_factor=start_factor, total_iters=warmup_steps), other],
    milestones=[warmup_steps])``, including ``LinearLR``'s default ``start_factor`` of 1/3.
    """

    schedule: Schedule
    warmup_steps: int
    start_factor: float = 1.0 / 3.0

    def __post_init__(self) -> None:
        _check_positive_int("warmup_steps", self.warmup_steps)
        if not 0.0 < self.start_factor <= 1.0:
            raise ValueError(f"start_factor must be in (0, 1], got {self.start_factor}")

    @property
    def lr(self) -> float:
        return self.schedule.lr

    def __call__(self, step: int) -> float:
        step = _check_step(step)
        if step >= self.warmup_steps:
            return self.schedule(step - self.warmup_steps)
        factor = self.start_factor + (1.0 - self.start_factor) * step / self.warmup_steps
        return float(self.schedule.lr * factor)


# Keyword arguments each named schedule takes, with their defaults (None: required).
_SCHEDULE_KWARGS: dict[str, dict[str, float | int | None]] = {
    "constant": {},
    "step": {"step_size": None, "gamma": 0.1},
    "exponential": {"gamma": None},
    "inverse_time": {"decay": None},
    "cosine": {"min_lr": 0.0},
}

SCHEDULE_NAMES: tuple[str, ...] = tuple(_SCHEDULE_KWARGS)


def make_schedule(
    name: str,
    lr: float,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    warmup_start_factor: float = 1.0 / 3.0,
    **kwargs: Any,
) -> Schedule:
    """Build a schedule by name, optionally after a linear warm-up.

    Parameters
    ----------
    name : {"constant", "step", "exponential", "inverse_time", "cosine"}
    lr : float
        Base (peak) learning rate.
    total_steps : int
        Length of the run in steps, warm-up included; a cosine schedule reaches ``min_lr`` there.
    warmup_steps : int
        Steps of linear warm-up before the schedule starts (0: none). The schedule then counts
        its steps from the end of the warm-up, as torch's ``SequentialLR`` does.
    warmup_start_factor : float
        Fraction of ``lr`` at step 0 of the warm-up, in (0, 1].
    **kwargs
        The schedule's own arguments: ``step_size`` (required) and ``gamma`` (0.1) for "step",
        ``gamma`` for "exponential", ``decay`` for "inverse_time", ``min_lr`` (0) for "cosine".

    Returns
    -------
    Schedule
        A callable ``schedule(step) -> float``.
    """
    if name not in _SCHEDULE_KWARGS:
        raise ValueError(f"Unknown schedule {name!r}; expected one of {', '.join(SCHEDULE_NAMES)}")
    _check_positive_int("total_steps", total_steps)
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
    if warmup_steps >= total_steps:
        raise ValueError(
            f"warmup_steps ({warmup_steps}) must be smaller than total_steps ({total_steps})"
        )
    accepted = _SCHEDULE_KWARGS[name]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"Unknown argument(s) {', '.join(unknown)} for schedule {name!r}; "
            f"expected {', '.join(accepted) or 'none'}"
        )
    options = {**accepted, **kwargs}
    missing = [key for key, value in options.items() if value is None]
    if missing:
        raise ValueError(f"Schedule {name!r} needs {', '.join(missing)}")

    decay_steps = total_steps - warmup_steps
    schedule: Schedule
    if name == "constant":
        schedule = ConstantLR(lr)
    elif name == "step":
        schedule = StepLR(lr, **options)
    elif name == "exponential":
        schedule = ExponentialLR(lr, **options)
    elif name == "inverse_time":
        schedule = InverseTimeLR(lr, **options)
    else:
        schedule = CosineLR(lr, decay_steps, **options)
    if warmup_steps == 0:
        return schedule
    return WarmupLR(schedule, warmup_steps, warmup_start_factor)
