"""Learning-rate schedules: torch.optim.lr_scheduler as the oracle, purity, validation."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pix2pred.schedules import (
    SCHEDULE_NAMES,
    ConstantLR,
    CosineLR,
    ExponentialLR,
    InverseTimeLR,
    StepLR,
    WarmupLR,
    make_schedule,
)

torch = pytest.importorskip("torch")
lr_scheduler = torch.optim.lr_scheduler

LR = 0.1
STEPS = 50


def torch_lrs(make_scheduler, steps: int = STEPS) -> list[float]:
    """The lr torch's scheduler sets for each of ``steps`` optimizer steps, from step 0."""
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    optimizer = torch.optim.SGD([param], lr=LR)
    scheduler = make_scheduler(optimizer) if make_scheduler is not None else None
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return lrs


def assert_matches_torch(schedule, make_scheduler, steps: int = STEPS) -> None:
    ours = [schedule(step) for step in range(steps)]
    np.testing.assert_allclose(ours, torch_lrs(make_scheduler, steps), rtol=1e-12, atol=1e-18)


# (our schedule, the torch scheduler that should give the same rates)
TORCH_PAIRS = {
    "constant": (ConstantLR(LR), None),
    "step": (StepLR(LR, step_size=7, gamma=0.5), lambda o: lr_scheduler.StepLR(o, 7, gamma=0.5)),
    "step_default_gamma": (StepLR(LR, step_size=10), lambda o: lr_scheduler.StepLR(o, 10)),
    "exponential": (ExponentialLR(LR, gamma=0.93), lambda o: lr_scheduler.ExponentialLR(o, 0.93)),
    "inverse_time": (
        InverseTimeLR(LR, decay=0.3),
        lambda o: lr_scheduler.LambdaLR(o, lambda step: 1.0 / (1.0 + 0.3 * step)),
    ),
    "cosine": (
        CosineLR(LR, total_steps=STEPS - 1, min_lr=1e-3),
        lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=STEPS - 1, eta_min=1e-3),
    ),
    "cosine_to_zero": (
        CosineLR(LR, total_steps=STEPS - 1),
        lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=STEPS - 1),
    ),
}


@pytest.mark.parametrize("name", TORCH_PAIRS)
def test_schedule_matches_torch_scheduler(name):
    schedule, make_scheduler = TORCH_PAIRS[name]
    assert_matches_torch(schedule, make_scheduler)


def _torch_inner(name):
    if name == "constant":
        return lambda o: lr_scheduler.LambdaLR(o, lambda step: 1.0)
    return TORCH_PAIRS[name][1]


@pytest.mark.parametrize("name", ["constant", "step", "exponential", "inverse_time", "cosine"])
def test_warmup_matches_torch_linear_then_sequential(name):
    inner, _ = TORCH_PAIRS[name]
    warmup_steps, start_factor = 8, 0.2

    def make_scheduler(optimizer):
        warmup = lr_scheduler.LinearLR(
            optimizer, start_factor=start_factor, total_iters=warmup_steps
        )
        after = _torch_inner(name)(optimizer)
        return lr_scheduler.SequentialLR(optimizer, [warmup, after], milestones=[warmup_steps])

    assert_matches_torch(WarmupLR(inner, warmup_steps, start_factor), make_scheduler)


def test_warmup_default_start_factor_is_linear_lr_default():
    def make_scheduler(optimizer):
        warmup = lr_scheduler.LinearLR(optimizer, total_iters=5)
        after = lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        return lr_scheduler.SequentialLR(optimizer, [warmup, after], milestones=[5])

    assert_matches_torch(WarmupLR(ConstantLR(LR), 5), make_scheduler, steps=10)


def test_cosine_stays_at_floor_after_total_steps():
    schedule = CosineLR(LR, total_steps=20, min_lr=1e-4)
    assert schedule(0) == LR
    assert schedule(10) == pytest.approx((LR + 1e-4) / 2, rel=1e-12)
    assert [schedule(step) for step in (20, 21, 40, 1000)] == [pytest.approx(1e-4, rel=1e-12)] * 4


def test_make_schedule_cosine_with_warmup_ends_at_total_steps():
    schedule = make_schedule("cosine", LR, 100, warmup_steps=10, min_lr=1e-3)
    assert schedule == WarmupLR(CosineLR(LR, 90, 1e-3), 10)
    assert schedule.lr == LR
    assert schedule(0) == pytest.approx(LR / 3, rel=1e-12)
    assert schedule(10) == LR
    assert schedule(100) == pytest.approx(1e-3, rel=1e-12)


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("constant", {}, ConstantLR(LR)),
        ("step", {"step_size": 5}, StepLR(LR, 5, 0.1)),
        ("step", {"step_size": 5, "gamma": 0.5}, StepLR(LR, 5, 0.5)),
        ("exponential", {"gamma": 0.9}, ExponentialLR(LR, 0.9)),
        ("inverse_time", {"decay": 0.01}, InverseTimeLR(LR, 0.01)),
        ("cosine", {}, CosineLR(LR, 40, 0.0)),
    ],
)
def test_make_schedule_builds_named_schedule(name, kwargs, expected):
    assert make_schedule(name, LR, 40, **kwargs) == expected
    warm = make_schedule(name, LR, 50, warmup_steps=10, warmup_start_factor=0.5, **kwargs)
    assert isinstance(warm, WarmupLR)
    assert (warm.warmup_steps, warm.start_factor) == (10, 0.5)
    assert warm.schedule == expected


def test_schedule_names_are_make_schedule_choices():
    assert SCHEDULE_NAMES == ("constant", "step", "exponential", "inverse_time", "cosine")


@settings(max_examples=50, deadline=None)
@given(
    name=st.sampled_from(SCHEDULE_NAMES),
    warmup_steps=st.integers(0, 20),
    steps=st.lists(st.integers(0, 300), min_size=1, max_size=20),
)
def test_schedules_are_pure_bounded_and_nonincreasing_after_warmup(name, warmup_steps, steps):
    kwargs = {"step": {"step_size": 7}, "exponential": {"gamma": 0.97}}.get(name, {})
    kwargs |= {"inverse_time": {"decay": 0.05}, "cosine": {"min_lr": 1e-4}}.get(name, {})
    schedule = make_schedule(name, LR, 200, warmup_steps=warmup_steps, **kwargs)
    forward = [schedule(step) for step in range(301)]
    # Same values in any order of calls: nothing is carried between them.
    assert [schedule(step) for step in steps] == [forward[step] for step in steps]
    assert all(isinstance(value, float) and 0.0 <= value <= LR for value in forward)
    after = forward[warmup_steps:]
    assert after[0] == LR
    assert all(b <= a for a, b in itertools.pairwise(after))
    warm = forward[: warmup_steps + 1]
    assert all(b > a for a, b in itertools.pairwise(warm))


def test_schedules_are_frozen():
    schedule = StepLR(LR, 5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.lr = 1.0


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: make_schedule("linear", LR, 10), ValueError, "Unknown schedule 'linear'.*cosine"),
        (lambda: make_schedule("step", LR, 10), ValueError, "'step' needs step_size"),
        (
            lambda: make_schedule("cosine", LR, 10, gamma=0.5),
            ValueError,
            "Unknown argument.*gamma.*'cosine'; expected min_lr",
        ),
        (lambda: make_schedule("constant", LR, 0), ValueError, "total_steps .* got 0"),
        (
            lambda: make_schedule("constant", LR, 10, warmup_steps=10),
            ValueError,
            r"warmup_steps \(10\) must be smaller than total_steps \(10\)",
        ),
        (
            lambda: make_schedule("constant", LR, 10, warmup_steps=-1),
            ValueError,
            "warmup_steps .* got -1",
        ),
        (lambda: ConstantLR(-1.0), ValueError, "Invalid learning rate: -1.0"),
        (lambda: ExponentialLR(math.nan, 0.9), ValueError, "Invalid learning rate: nan"),
        (lambda: StepLR(LR, 0), ValueError, "step_size must be a positive integer, got 0"),
        (lambda: StepLR(LR, 2.5), ValueError, "step_size .* got 2.5"),
        (lambda: StepLR(LR, 5, gamma=0.0), ValueError, "gamma must be > 0, got 0.0"),
        (lambda: ExponentialLR(LR, -0.5), ValueError, "gamma must be > 0, got -0.5"),
        (lambda: InverseTimeLR(LR, -1.0), ValueError, "decay must be >= 0, got -1.0"),
        (lambda: CosineLR(LR, 10, min_lr=0.5), ValueError, r"min_lr must be in \[0, lr=0.1\]"),
        (lambda: WarmupLR(ConstantLR(LR), 0), ValueError, "warmup_steps .* got 0"),
        (
            lambda: WarmupLR(ConstantLR(LR), 5, start_factor=0.0),
            ValueError,
            r"start_factor must be in \(0, 1\], got 0.0",
        ),
        (lambda: ConstantLR(LR)(-1), ValueError, "step must be >= 0, got -1"),
        (lambda: CosineLR(LR, 10)(1.5), TypeError, "step must be an integer, got 1.5"),
    ],
)
def test_invalid_arguments_raise_with_the_value(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_numpy_integer_steps_are_accepted():
    assert StepLR(LR, 2)(np.int64(4)) == pytest.approx(LR * 0.01, rel=1e-12)
