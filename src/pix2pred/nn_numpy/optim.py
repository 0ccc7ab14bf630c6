"""Update rules of the numpy backend: ``next_w, config = rule(w, dw, config)``.

The CS231n convention: ``config`` is a dict holding the rule's hyperparameters and its state
(momentum buffers, moment estimates, step count). Pass ``None`` (or a dict of the
hyperparameters to change) on the first call; missing hyperparameters get PyTorch's defaults;
keep passing the returned dict, one per parameter array. A schedule sets ``config["lr"]`` before
each call.

The maths is ``torch.optim``'s (its single-tensor path), step for step, so that the numpy and
torch backends given the same gradients end at the same weights; each docstring says where that
differs from the course's ``optim.py``. Hyperparameters use PyTorch's names: ``lr``,
``momentum``, ``dampening``, ``weight_decay``, ``betas``, ``eps``, ``alpha``, ``centered``.
``weight_decay`` is PyTorch's L2 coefficient: it adds ``weight_decay * w`` to the gradient (the
gradient of ``weight_decay / 2 * ||w||^2``, so the course's ``reg`` is ``weight_decay / 2``),
except in `adamw`, which decays the weights directly.

The rules never write into ``w`` or ``dw``; the state arrays in ``config`` are updated in place,
in ``w``'s dtype.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "UPDATE_RULES",
    "Config",
    "UpdateRule",
    "adam",
    "adamw",
    "get_update_rule",
    "nesterov",
    "rmsprop",
    "sgd",
    "sgd_momentum",
]

Config = dict[str, Any]
UpdateRule = Callable[[np.ndarray, np.ndarray, Config | None], tuple[np.ndarray, Config]]


def _prepare(
    rule: str,
    w: np.ndarray,
    dw: np.ndarray,
    config: Config | None,
    defaults: Config,
    state_keys: tuple[str, ...],
) -> tuple[np.ndarray, Config]:
    """Check ``w`` and ``dw``, fill ``config`` with defaults; return ``dw`` in ``w``'s dtype."""
    if not isinstance(w, np.ndarray) or not np.issubdtype(w.dtype, np.floating):
        raise TypeError(f"{rule}: w must be a floating-point ndarray, got {_describe(w)}")
    dw = np.asarray(dw)
    if dw.shape != w.shape:
        raise ValueError(f"{rule}: dw has shape {dw.shape}, w has shape {w.shape}")
    if not np.issubdtype(dw.dtype, np.floating):
        raise TypeError(f"{rule}: dw must be floating-point, got dtype {dw.dtype}")
    if config is None:
        config = {}
    elif not isinstance(config, dict):
        raise TypeError(f"{rule}: config must be a dict or None, got {type(config).__name__}")
    unknown = sorted(set(config) - set(defaults) - set(state_keys))
    if unknown:
        raise ValueError(
            f"{rule}: unknown config key(s) {', '.join(map(repr, unknown))}; "
            f"expected hyperparameters {', '.join(defaults)}"
        )
    for key, value in defaults.items():
        config.setdefault(key, value)
    for key in state_keys:
        state = config.get(key)
        if isinstance(state, np.ndarray) and (state.shape != w.shape or state.dtype != w.dtype):
            raise ValueError(
                f"{rule}: config[{key!r}] is {state.dtype} {state.shape} but w is "
                f"{w.dtype} {w.shape}; use one config per parameter array"
            )
    return dw.astype(w.dtype, copy=False), config


def _describe(x: object) -> str:
    if isinstance(x, np.ndarray):
        return f"ndarray of dtype {x.dtype}"
    return type(x).__name__


def _real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_lr(lr: object) -> float:
    if not (_real(lr) and lr >= 0.0):
        raise ValueError(f"Invalid learning rate: {lr}")
    return float(lr)


def _check_momentum(momentum: object) -> float:
    if not (_real(momentum) and 0.0 <= momentum < 1.0):
        raise ValueError(f"Invalid momentum value: {momentum} (expected 0 <= momentum < 1)")
    return float(momentum)


def _check_weight_decay(weight_decay: object) -> float:
    if not (_real(weight_decay) and weight_decay >= 0.0):
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")
    return float(weight_decay)


def _check_eps(eps: object) -> float:
    if not (_real(eps) and eps >= 0.0):
        raise ValueError(f"Invalid epsilon value: {eps}")
    return float(eps)


def _check_betas(betas: object) -> tuple[float, float]:
    if not isinstance(betas, tuple | list) or len(betas) != 2:
        raise ValueError(f"Invalid betas: {betas!r} (expected a pair (beta1, beta2))")
    for index, beta in enumerate(betas):
        if not (_real(beta) and 0.0 <= beta < 1.0):
            raise ValueError(f"Invalid beta parameter at index {index}: {beta}")
    return float(betas[0]), float(betas[1])


def _sgd(rule: str, w: np.ndarray, dw: np.ndarray, config: Config | None, *, momentum: float):
    defaults = {
        "lr": 1e-3,
        "momentum": momentum,
        "dampening": 0.0,
        "weight_decay": 0.0,
        "nesterov": rule == "nesterov",
    }
    dw, config = _prepare(rule, w, dw, config, defaults, ("velocity",))
    lr = _check_lr(config["lr"])
    mu = _check_momentum(config["momentum"])
    weight_decay = _check_weight_decay(config["weight_decay"])
    dampening = config["dampening"]
    if not (_real(dampening) and 0.0 <= dampening <= 1.0):
        raise ValueError(f"Invalid dampening value: {dampening} (expected 0 <= dampening <= 1)")
    use_nesterov = bool(config["nesterov"])
    if use_nesterov and (mu <= 0.0 or dampening != 0.0):
        raise ValueError(
            "Nesterov momentum requires a momentum and zero dampening, "
            f"got momentum={mu}, dampening={dampening}"
        )

    g = dw + weight_decay * w if weight_decay != 0.0 else dw
    if mu != 0.0:
        v = config.get("velocity")
        if v is None:
            # NOTE: torch starts the buffer at the first gradient, undampened.
            v = config["velocity"] = g.copy()
        else:
            v *= mu
            v += (1.0 - float(dampening)) * g
        g = g + mu * v if use_nesterov else v
    next_w = g * -lr
    next_w += w
    return next_w, config


def sgd(w: np.ndarray, dw: np.ndarray, config: Config | None = None) -> tuple[np.ndarray, Config]:
    """Vanilla stochastic gradient descent, ``torch.optim.SGD``: ``w -= lr * (dw + wd * w)``.

    Parameters
    ----------
    w : ndarray of any shape, floating dtype
        Current weights (not modified).
    dw : ndarray of the same shape
        Gradient of the loss with respect to ``w``.
    config : dict or None
        ``lr`` (1e-3, PyTorch's default; the course's is 1e-2), ``weight_decay`` (0), and
        ``momentum`` (0), ``dampening`` (0), ``nesterov`` (False) which make this `sgd_momentum`
        or `nesterov`.

    Returns
    -------
    next_w : ndarray of the shape and dtype of ``w``
    config : dict
        ``config``, filled in, with the state ``velocity`` when momentum is used.
    """
    return _sgd("sgd", w, dw, config, momentum=0.0)


def sgd_momentum(
    w: np.ndarray, dw: np.ndarray, config: Config | None = None
) -> tuple[np.ndarray, Config]:
    """SGD with momentum, ``torch.optim.SGD(momentum=0.9)``.

    PyTorch's form: ``g = dw + wd * w``; ``v = momentum * v + (1 - dampening) * g`` (``v = g``
    on the first step); ``w -= lr * v``. The course writes ``v = mu * v - lr * dw; w += v``:
    the same trajectory while ``lr`` is constant, but when a schedule changes ``lr`` PyTorch's
    form applies the new rate to the whole velocity at once. ``momentum`` defaults to 0.9 (the
    course's value; PyTorch has no default besides 0) and must lie in [0, 1).

    Parameters
    ----------
    w : ndarray of any shape, floating dtype
        Current weights (not modified).
    dw : ndarray of the same shape
        Gradient of the loss with respect to ``w``.
    config : dict or None
        ``lr`` (1e-3), ``momentum`` (0.9), ``dampening`` (0), ``weight_decay`` (0),
        ``nesterov`` (False).

    Returns
    -------
    next_w : ndarray of the shape and dtype of ``w``
    config : dict
        ``config``, filled in, with the state ``velocity`` (ndarray like ``w``).
    """
    return _sgd("sgd_momentum", w, dw, config, momentum=0.9)


def nesterov(
    w: np.ndarray, dw: np.ndarray, config: Config | None = None
) -> tuple[np.ndarray, Config]:
    """Nesterov momentum, ``torch.optim.SGD(momentum=0.9, nesterov=True)``.

    PyTorch's form: ``v = momentum * v + g`` (``v = g`` on the first step);
    ``w -= lr * (g + momentum * v)``. The course's ``v_prev = v; v = mu * v - lr * dw;
    w += -mu * v_prev + (1 + mu) * v`` gives the same weights while ``lr`` is constant.
    Requires ``momentum > 0`` and ``dampening == 0``, as torch does.

    Parameters
    ----------
    w : ndarray of any shape, floating dtype
        Current weights (not modified).
    dw : ndarray of the same shape
        Gradient of the loss with respect to ``w``.
    config : dict or None
        ``lr`` (1e-3), ``momentum`` (0.9), ``dampening`` (0), ``weight_decay`` (0),
        ``nesterov`` (True).

    Returns
    -------
    next_w : ndarray of the shape and dtype of ``w``
    config : dict
        ``config``, filled in, with the state ``velocity`` (ndarray like ``w``).
    """
    return _sgd("nesterov", w, dw, config, momentum=0.9)


def rmsprop(
    w: np.ndarray, dw: np.ndarray, config: Config | None = None
) -> tuple[np.ndarray, Config]:
    """RMSProp, ``torch.optim.RMSprop``.

    ``g = dw + wd * w``; ``square_avg = alpha * square_avg + (1 - alpha) * g**2``;
    ``w -= lr * g / (sqrt(square_avg) + eps)``. As in the course, ``eps`` is added outside the
    square root (TensorFlow adds it inside) and ``alpha`` (the course's ``decay_rate``) defaults
    to 0.99. PyTorch's options beyond the course: ``centered`` divides by an estimate of the
    standard deviation, ``sqrt(square_avg - grad_avg**2)``, instead, and ``momentum > 0`` keeps
    ``velocity = momentum * velocity + g / (sqrt(...) + eps)`` and steps ``w -= lr * velocity``.

    Parameters
    ----------
    w : ndarray of any shape, floating dtype
        Current weights (not modified).
    dw : ndarray of the same shape
        Gradient of the loss with respect to ``w``.
    config : dict or None
        ``lr`` (1e-2), ``alpha`` (0.99), ``eps`` (1e-8), ``weight_decay`` (0), ``momentum`` (0),
        ``centered`` (False).

    Returns
    -------
    next_w : ndarray of the shape and dtype of ``w``
    config : dict
        ``config``, filled in, with the state ``square_avg``, and ``grad_avg`` when centered,
        ``velocity`` when ``momentum > 0`` (ndarrays like ``w``).
    """
    defaults = {
        "lr": 1e-2,
        "alpha": 0.99,
        "eps": 1e-8,
        "weight_decay": 0.0,
        "momentum": 0.0,
        "centered": False,
    }
    state_keys = ("square_avg", "grad_avg", "velocity")
    dw, config = _prepare("rmsprop", w, dw, config, defaults, state_keys)
    lr = _check_lr(config["lr"])
    alpha = config["alpha"]
    if not (_real(alpha) and 0.0 <= alpha < 1.0):
        raise ValueError(f"Invalid alpha value: {alpha} (expected 0 <= alpha < 1)")
    alpha = float(alpha)
    eps = _check_eps(config["eps"])
    weight_decay = _check_weight_decay(config["weight_decay"])
    mu = _check_momentum(config["momentum"])

    g = dw + weight_decay * w if weight_decay != 0.0 else dw
    square_avg = config.setdefault("square_avg", np.zeros_like(w))
    square_avg *= alpha
    square_avg += (1.0 - alpha) * np.square(g)
    if config["centered"]:
        grad_avg = config.setdefault("grad_avg", np.zeros_like(w))
        grad_avg *= alpha
        grad_avg += (1.0 - alpha) * g
        denom = np.sqrt(square_avg - np.square(grad_avg))
    else:
        denom = np.sqrt(square_avg)
    denom += eps
    step = np.divide(g, denom, out=denom)
    if mu > 0.0:
        v = config.setdefault("velocity", np.zeros_like(w))
        v *= mu
        v += step
        step = v
    next_w = step * -lr
    next_w += w
    return next_w, config


def _adam(rule: str, w: np.ndarray, dw: np.ndarray, config: Config | None, *, decoupled: bool):
    defaults = {
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 1e-2 if decoupled else 0.0,
    }
    dw, config = _prepare(rule, w, dw, config, defaults, ("m", "v", "t"))
    lr = _check_lr(config["lr"])
    beta1, beta2 = _check_betas(config["betas"])
    eps = _check_eps(config["eps"])
    weight_decay = _check_weight_decay(config["weight_decay"])

    t = config["t"] = int(config.get("t", 0)) + 1
    g = dw
    next_w = w
    if weight_decay != 0.0:
        if decoupled:
            next_w = w * (1.0 - lr * weight_decay)
        else:
            g = dw + weight_decay * w
    m = config.setdefault("m", np.zeros_like(w))
    v = config.setdefault("v", np.zeros_like(w))
    m *= beta1
    m += (1.0 - beta1) * g
    v *= beta2
    v += (1.0 - beta2) * np.square(g)
    bias_correction1 = 1.0 - beta1**t
    bias_correction2 = 1.0 - beta2**t
    denom = np.sqrt(v)
    denom /= math.sqrt(bias_correction2)
    denom += eps
    step = np.divide(m, denom, out=denom)
    step *= -lr / bias_correction1
    if next_w is w:
        step += w
        return step, config
    next_w += step
    return next_w, config


def adam(w: np.ndarray, dw: np.ndarray, config: Config | None = None) -> tuple[np.ndarray, Config]:
    """Adam with bias correction, ``torch.optim.Adam``.

    ``t += 1``; ``g = dw + wd * w``; ``m = beta1 * m + (1 - beta1) * g``;
    ``v = beta2 * v + (1 - beta2) * g**2``;
    ``w -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)``. This is the
    course's bias-corrected Adam (``eps`` added after the corrected square root) with the
    arithmetic ordered as PyTorch orders it; ``weight_decay`` is coupled (added to the gradient,
    so it is rescaled by ``v`` like the loss gradient; see `adamw` for the decoupled kind).

    Parameters
    ----------
    w : ndarray of any shape, floating dtype
        Current weights (not modified).
    dw : ndarray of the same shape
        Gradient of the loss with respect to ``w``.
    config : dict or None
        ``lr`` (1e-3), ``betas`` ((0.9, 0.999), the course's ``beta1, beta2``), ``eps`` (1e-8),
        ``weight_decay`` (0).

    Returns
    -------
    next_w : ndarray of the shape and dtype of ``w``
    config : dict
        ``config``, filled in, with the state ``m``, ``v`` (ndarrays like ``w``) and ``t`` (int,
        steps taken).
    """
    return _adam("adam", w, dw, config, decoupled=False)


def adamw(w: np.ndarray, dw: np.ndarray, config: Config | None = None) -> tuple[np.ndarray, Config]:
    """Adam with decoupled weight decay, ``torch.optim.AdamW`` (not in the course).

    First ``w *= 1 - lr * weight_decay``, then the `adam` step on ``dw`` alone. NOTE: as in
    PyTorch the decay is scaled by ``lr``, so a schedule also schedules the decay; the paper
    (Loshchilov & Hutter) scales it by the schedule's multiplier only. ``weight_decay`` defaults
    to 1e-2, PyTorch's default for AdamW.

    Parameters
    ----------
    w : ndarray of any shape, floating dtype
        Current weights (not modified).
    dw : ndarray of the same shape
        Gradient of the loss with respect to ``w``.
    config : dict or None
        ``lr`` (1e-3), ``betas`` ((0.9, 0.999)), ``eps`` (1e-8), ``weight_decay`` (1e-2).

    Returns
    -------
    next_w : ndarray of the shape and dtype of ``w``
    config : dict
        ``config``, filled in, with the state ``m``, ``v`` (ndarrays like ``w``) and ``t`` (int).
    """
    return _adam("adamw", w, dw, config, decoupled=True)


UPDATE_RULES: dict[str, UpdateRule] = {
    "sgd": sgd,
    "sgd_momentum": sgd_momentum,
    "nesterov": nesterov,
    "rmsprop": rmsprop,
    "adam": adam,
    "adamw": adamw,
}


def get_update_rule(name: str) -> UpdateRule:
    """Return the update rule called ``name``, one of the keys of `UPDATE_RULES`."""
    try:
        return UPDATE_RULES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown update rule {name!r}; expected one of {', '.join(UPDATE_RULES)}"
        ) from None
