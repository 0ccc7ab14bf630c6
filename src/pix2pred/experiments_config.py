"""What an experiment may vary, checked before it runs: models, update rules, hyperparameters.

`resolve_params` gives the estimator keywords of a model as an experiment uses them (a constant
learning rate unless a schedule is asked for); `parse_values` types the values of an ablation
like the estimator's keyword and names the one that does not fit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pix2pred.cli_train import KINDS
from pix2pred.data import Dataset

__all__ = [
    "DEFAULT_LRS",
    "EXPERIMENT_DEFAULTS",
    "OPTIMIZERS",
    "OPTIMIZER_ALIASES",
    "RULE_MOMENTUM",
    "check_params",
    "format_value",
    "is_log_scale",
    "parse_values",
    "resolve_params",
]

# Comparison name → (update rule of pix2pred.nn_numpy.optim, its momentum: None = the estimator's).
OPTIMIZERS: dict[str, tuple[str, float | None]] = {
    "sgd": ("sgd", 0.0),
    "momentum": ("sgd_momentum", None),
    "nesterov": ("nesterov", None),
    "rmsprop": ("rmsprop", 0.0),
    "adam": ("adam", None),
}
# The course's starting points for inputs scaled to [0, 1]: the adaptive rules take smaller steps.
DEFAULT_LRS: dict[str, float] = {
    "sgd": 1e-2,
    "momentum": 1e-2,
    "nesterov": 1e-2,
    "rmsprop": 1e-4,
    "adam": 1e-3,
}
OPTIMIZER_ALIASES = {"sgd_momentum": "momentum"}
# The momentum each update rule runs with when none is given (Adam's lives in its betas).
RULE_MOMENTUM: dict[str, float] = {"sgd": 0.0, "sgd_momentum": 0.9, "nesterov": 0.9, "rmsprop": 0.0}
# Estimator keywords that are not hyperparameters of the model or its training.
_NOT_HYPERPARAMETERS = ("backend", "device", "amp", "deterministic", "progress", "checkpoint_dir")
# Keywords whose default is None, with the type of their other values.
_OPTIONAL_TYPES: dict[str, type] = {
    "early_stopping": int,
    "augment": str,
    "normalization": str,
    "spec": str,
    "momentum": float,
}
# Experiments show the rule itself, so the rate stays constant unless a schedule is asked for.
EXPERIMENT_DEFAULTS: dict[str, Any] = {"schedule": "constant"}


def resolve_params(model: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The estimator keywords of ``model`` (a kind of ``pix2pred train``) with ``overrides``.

    The estimator's defaults, then the kind's (as ``pix2pred train`` uses them), then a constant
    learning rate, then ``overrides``; an unknown keyword is an error naming it.
    """
    if model not in KINDS:
        raise ValueError(f"unknown model {model!r}; expected one of {', '.join(KINDS)}")
    est_name, kind_defaults, _ = KINDS[model]
    params = {**estimator_class(model)().get_params(), **kind_defaults, **EXPERIMENT_DEFAULTS}
    for key in ("checkpoint_dir", "progress"):
        params.pop(key)
    for key, value in (overrides or {}).items():
        if key not in params:
            raise ValueError(
                f"{est_name} ({model}) has no option {key!r}; valid: {', '.join(sorted(params))}"
            )
        params[key] = value
    return params


def estimator_class(model: str) -> type:
    from pix2pred import estimators

    return getattr(estimators, KINDS[model][0])


def check_params(model: str, params: Mapping[str, Any], data: Dataset) -> None:
    """Refuse, before any training, what the estimator, the Solver or the model would refuse."""
    from pix2pred.data.augment import make_augment
    from pix2pred.data.preprocess import make_preprocessor
    from pix2pred.nn_numpy.optim import get_update_rule
    from pix2pred.schedules import make_schedule

    est = estimator_class(model)(**params)
    est._validate()
    get_update_rule(est.optimizer)
    make_schedule(est.schedule, 1.0, 10)
    make_augment(est.augment)
    make_preprocessor(est.preprocessing)
    H, W, C = data.image_shape
    est._build_model((C, H, W), data.num_classes)


def parse_values(model: str, param: str, text: str | Sequence[Any]) -> list[Any]:
    """The values of an ablation of ``param``, typed like the estimator's keyword.

    ``text`` is comma-separated (``"1,1e-1,1e-2"``) or a sequence. Hidden sizes of several layers
    join with ``-`` or ``x`` (``"512-256"``); ``none`` is None where the keyword allows it.
    Raises ``ValueError`` naming a parameter the estimator lacks or a value of the wrong type.
    """
    params = resolve_params(model)
    if param not in params or param in _NOT_HYPERPARAMETERS or param == "val_size":
        valid = sorted(k for k in params if k not in (*_NOT_HYPERPARAMETERS, "val_size"))
        raise ValueError(
            f"--param {param!r} is not a hyperparameter of {KINDS[model][0]} ({model}); "
            f"valid: {', '.join(valid)}"
        )
    items = [v.strip() for v in text.split(",")] if isinstance(text, str) else list(text)
    if not items or any(isinstance(v, str) and not v for v in items):
        raise ValueError(f"--values must be a comma-separated list without blanks, got {text!r}")
    values = [_typed(param, params[param], v) for v in items]
    labels = [format_value(v) for v in values]
    duplicates = sorted({lab for lab in labels if labels.count(lab) > 1})
    if duplicates:
        raise ValueError(f"--values lists {param}={duplicates[0]} more than once")
    return values


def _typed(param: str, default: Any, value: Any) -> Any:
    """``value`` (a string from the command line, or a Python value) as ``param``'s type."""
    bad = f"--values: {value!r} is not a valid {param}"
    if value is None and (default is None or param in _OPTIONAL_TYPES):
        return None
    if not isinstance(value, str):
        text = None
    else:
        text = value.strip()
        if text.lower() == "none" and (default is None or param in _OPTIONAL_TYPES):
            return None
    kind = _OPTIONAL_TYPES.get(param, type(default)) if default is None else type(default)
    try:
        if kind is bool:
            if text is None:
                if not isinstance(value, bool):
                    raise ValueError
                return value
            flags = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
            return flags[text.lower()]
        if kind is int:
            number = int(text) if text is not None else value
            if isinstance(number, bool) or not isinstance(number, int | np.integer):
                raise ValueError
            return int(number)
        if kind is float:
            number = float(text) if text is not None else float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
        if kind in (tuple, list):
            if text is None:
                sizes = [int(v) for v in np.atleast_1d(value)]
            else:
                sizes = [int(v) for v in text.replace("x", "-").split("-")]
            if not sizes or min(sizes) < 1:
                raise ValueError
            return sizes
        if text is None:
            raise ValueError
        return text
    except (ValueError, KeyError, TypeError):
        expected = {bool: "true or false", int: "an integer", float: "a number"}.get(kind)
        if kind in (tuple, list):
            expected = "hidden sizes such as 100 or 512-256"
        raise ValueError(f"{bad} ({expected or 'a name'} expected)") from None


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "-".join(str(v) for v in value)
    return str(value)


def is_log_scale(param: str, values: Sequence[Any]) -> bool:
    """Log-x for rates and decays, and for any positive numbers spanning 100x or more."""
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) != len(values) or not numbers:
        return False
    if param in ("lr", "weight_decay"):
        return True
    positive = [v for v in numbers if v > 0]
    return len(positive) == len(numbers) and max(positive) / min(positive) >= 100
