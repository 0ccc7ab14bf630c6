"""Weight initialisation and constructor-argument checks shared by the numpy models.

Three schemes, by name:

- ``"he"``: N(0, 2 / fan_in), for layers followed by a ReLU (He et al., 2015);
- ``"xavier"``: Glorot normal, N(0, 2 / (fan_in + fan_out));
- ``"normal"``: ``weight_scale`` * N(0, 1), the course's small random numbers.

Fans follow PyTorch: an affine weight ``(D, M)`` (the course's layout) has fan_in ``D`` and fan_out
``M``; a conv weight ``(F, C, HH, WW)`` has fan_in ``C * HH * WW`` and fan_out ``F * HH * WW``.
Weights are drawn in float64 and then cast, so a float32 and a float64 model built with the same
seed hold the same weights up to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "INITS",
    "check_dropout",
    "check_init",
    "check_input_shape",
    "check_positive_int",
    "check_seed",
    "fans",
    "init_weight",
    "resolve_dtype",
]

INITS = ("he", "xavier", "normal")
_DTYPES = ("float32", "float64")


def resolve_dtype(dtype: Any) -> np.dtype:
    """Return ``dtype`` as a ``numpy.dtype``; only float32 and float64 are accepted."""
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if resolved.name not in _DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return resolved


def check_positive_int(value: Any, name: str) -> int:
    """Return ``value`` as an int, or raise a ValueError naming ``name`` unless it is >= 1."""
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_input_shape(value: Any) -> tuple[int, int, int]:
    """Return ``value`` as a ``(C, H, W)`` tuple of positive ints."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {value!r}")
    C, H, W = (check_positive_int(v, f"input_shape {tuple(value)!r} entry") for v in value)
    return C, H, W


def check_dropout(p: Any) -> float:
    """Return a dropout probability (of dropping, as torch) in [0, 1) as a float."""
    if not isinstance(p, int | float) or isinstance(p, bool) or not 0 <= p < 1:
        raise ValueError(f"dropout must be a probability in [0, 1), got {p!r}")
    return float(p)


def check_seed(seed: Any) -> int:
    """Return ``seed`` as an int; only ints seed a model (a Generator lives in ``model.rng``)."""
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return int(seed)


def check_init(init: str, weight_scale: float) -> None:
    """Validate an initialisation name and the ``weight_scale`` used by ``"normal"``."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if not isinstance(weight_scale, int | float) or isinstance(weight_scale, bool):
        raise ValueError(f"weight_scale must be a positive number, got {weight_scale!r}")
    if not (math.isfinite(weight_scale) and weight_scale > 0):
        raise ValueError(f"weight_scale must be a positive number, got {weight_scale!r}")


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of an affine ``(D, M)`` or conv ``(F, C, HH, WW)`` weight."""
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 4:
        F, C, HH, WW = shape
        return C * HH * WW, F * HH * WW
    raise ValueError(f"weight shape must be (D, M) or (F, C, HH, WW), got {shape}")


def init_weight(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    init: str,
    weight_scale: float,
    dtype: np.dtype,
) -> np.ndarray:
    """Draw one weight array.

    Parameters
    ----------
    rng : numpy.random.Generator, advanced by ``prod(shape)`` normal draws
    shape : (D, M) for an affine weight or (F, C, HH, WW) for a conv weight
    init : "he", "xavier" or "normal"
    weight_scale : standard deviation for "normal" (ignored otherwise)
    dtype : float32 or float64

    Returns
    -------
    ndarray of the given shape and dtype
    """
    check_init(init, weight_scale)
    fan_in, fan_out = fans(shape)
    if init == "he":
        std = math.sqrt(2.0 / fan_in)
    elif init == "xavier":
        std = math.sqrt(2.0 / (fan_in + fan_out))
    else:
        std = float(weight_scale)
    return (std * rng.standard_normal(shape)).astype(dtype)
