"""Update rules of the torch backend: ``torch.optim`` optimizers configured as the numpy rules.

Each rule of `pix2pred.nn_numpy.optim` has a twin here by the same name that builds the
``torch.optim`` optimizer computing the same update: same hyperparameter names and defaults
(``lr``, ``momentum``, ``dampening``, ``weight_decay``, ``betas``, ``eps``, ``alpha``,
``centered``, ``nesterov``), the same validation, and the same weight-decay groups: the decay
applies only to parameters whose name starts with ``"W"`` (weights), never to biases or to
batch-norm ``gamma``/``beta``. Both backends then follow the same trajectory given the same
gradients (the numpy rules reproduce ``torch.optim``'s single-tensor arithmetic).

A schedule sets the rate before each step with `set_lr`, the twin of setting ``config["lr"]``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

__all__ = [
    "UPDATE_RULES",
    "NamedParams",
    "adam",
    "adamw",
    "decay_groups",
    "get_update_rule",
    "make_optimizer",
    "nesterov",
    "rmsprop",
    "set_lr",
    "sgd",
    "sgd_momentum",
]

NamedParams = nn.Module | Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]
OptimizerFactory = Callable[..., torch.optim.Optimizer]


def _named(params: NamedParams) -> list[tuple[str, torch.Tensor]]:
    """Read ``(name, tensor)`` pairs from a module, a mapping or an iterable of pairs."""
    if isinstance(params, nn.Module):
        pairs = list(params.named_parameters())
    elif isinstance(params, Mapping):
        pairs = list(params.items())
    else:
        pairs = list(params)
        for pair in pairs:
            if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
                raise TypeError(
                    "params must be an nn.Module, a mapping of names to tensors or an iterable "
                    f"of (name, tensor) pairs, got an element {type(pair).__name__}"
                )
    if not pairs:
        raise ValueError("params is empty: there is nothing to optimize")
    for name, tensor in pairs:
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"parameter {name!r} is a {type(tensor).__name__}, not a tensor")
    return pairs


def decay_groups(params: NamedParams, weight_decay: float) -> list[dict[str, Any]]:
    """Split named parameters into the two weight-decay groups both backends use.

    Parameters
    ----------
    params : nn.Module, mapping of name to tensor, or iterable of (name, tensor)
    weight_decay : float
        Decay of the parameters whose name starts with ``"W"``; the others get 0.

    Returns
    -------
    list of dict
        ``torch.optim`` parameter groups holding ``(name, tensor)`` pairs (so the optimizer's
        ``state_dict`` records ``param_names``); an empty group is left out.
    """
    pairs = _named(params)
    decayed = [(name, p) for name, p in pairs if name.startswith("W")]
    others = [(name, p) for name, p in pairs if not name.startswith("W")]
    groups = [{"params": decayed, "weight_decay": weight_decay}]
    groups.append({"params": others, "weight_decay": 0.0})
    return [group for group in groups if group["params"]]


def _real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _options(rule: str, config: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Fill ``config`` with the rule's defaults, rejecting unknown keys as the numpy rules do."""
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ValueError(
            f"{rule}: unknown config key(s) {', '.join(map(repr, unknown))}; "
            f"expected hyperparameters {', '.join(defaults)}"
        )
    options = {**defaults, **config}
    # torch.optim checks some of these, not all (momentum < 1, alpha < 1, a group's decay).
    lr = options["lr"]
    if not (_real(lr) and lr >= 0.0):
        raise ValueError(f"Invalid learning rate: {lr}")
    weight_decay = options["weight_decay"]
    if not (_real(weight_decay) and weight_decay >= 0.0):
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")
    if "momentum" in options:
        momentum = options["momentum"]
        if not (_real(momentum) and 0.0 <= momentum < 1.0):
            raise ValueError(f"Invalid momentum value: {momentum} (expected 0 <= momentum < 1)")
    if "dampening" in options:
        dampening = options["dampening"]
        if not (_real(dampening) and 0.0 <= dampening <= 1.0):
            raise ValueError(f"Invalid dampening value: {dampening} (expected 0 <= dampening <= 1)")
    if "alpha" in options:
        alpha = options["alpha"]
        if not (_real(alpha) and 0.0 <= alpha < 1.0):
            raise ValueError(f"Invalid alpha value: {alpha} (expected 0 <= alpha < 1)")
    if "eps" in options:
        eps = options["eps"]
        if not (_real(eps) and eps >= 0.0):
            raise ValueError(f"Invalid epsilon value: {eps}")
    if "betas" in options:
        betas = options["betas"]
        if not isinstance(betas, tuple | list) or len(betas) != 2:
            raise ValueError(f"Invalid betas: {betas!r} (expected a pair (beta1, beta2))")
        for index, beta in enumerate(betas):
            if not (_real(beta) and 0.0 <= beta < 1.0):
                raise ValueError(f"Invalid beta parameter at index {index}: {beta}")
        options["betas"] = (float(betas[0]), float(betas[1]))
    return options


def _sgd(rule: str, params: NamedParams, config: Mapping[str, Any], *, momentum: float):
    defaults = {
        "lr": 1e-3,
        "momentum": momentum,
        "dampening": 0.0,
        "weight_decay": 0.0,
        "nesterov": rule == "nesterov",
    }
    options = _options(rule, config, defaults)
    if options["nesterov"] and (options["momentum"] <= 0.0 or options["dampening"] != 0.0):
        raise ValueError(
            "Nesterov momentum requires a momentum and zero dampening, "
            f"got momentum={options['momentum']}, dampening={options['dampening']}"
        )
    options["nesterov"] = bool(options["nesterov"])
    groups = decay_groups(params, options.pop("weight_decay"))
    return torch.optim.SGD(groups, **options)


def sgd(params: NamedParams, **config: Any) -> torch.optim.SGD:
    """``torch.optim.SGD``, the twin of numpy's `sgd`: ``w -= lr * (dw + wd * w)``.

    Parameters
    ----------
    params : nn.Module, mapping of name to parameter, or iterable of (name, parameter)
    **config
        ``lr`` (1e-3), ``weight_decay`` (0, on ``W*`` parameters only), ``momentum`` (0),
        ``dampening`` (0), ``nesterov`` (False).
    """
    return _sgd("sgd", params, config, momentum=0.0)


def sgd_momentum(params: NamedParams, **config: Any) -> torch.optim.SGD:
    """``torch.optim.SGD(momentum=0.9)``, the twin of numpy's `sgd_momentum`.

    Parameters
    ----------
    params : nn.Module, mapping of name to parameter, or iterable of (name, parameter)
    **config
        ``lr`` (1e-3), ``momentum`` (0.9), ``dampening`` (0), ``weight_decay`` (0),
        ``nesterov`` (False).
    """
    return _sgd("sgd_momentum", params, config, momentum=0.9)


def nesterov(params: NamedParams, **config: Any) -> torch.optim.SGD:
    """``torch.optim.SGD(momentum=0.9, nesterov=True)``, the twin of numpy's `nesterov`.

    Parameters
    ----------
    params : nn.Module, mapping of name to parameter, or iterable of (name, parameter)
    **config
        ``lr`` (1e-3), ``momentum`` (0.9), ``dampening`` (0), ``weight_decay`` (0),
        ``nesterov`` (True).
    """
    return _sgd("nesterov", params, config, momentum=0.9)


def rmsprop(params: NamedParams, **config: Any) -> torch.optim.RMSprop:
    """``torch.optim.RMSprop``, the twin of numpy's `rmsprop`.

    Parameters
    ----------
    params : nn.Module, mapping of name to parameter, or iterable of (name, parameter)
    **config
        ``lr`` (1e-2), ``alpha`` (0.99), ``eps`` (1e-8), ``weight_decay`` (0), ``momentum`` (0),
        ``centered`` (False).
    """
    defaults = {
        "lr": 1e-2,
        "alpha": 0.99,
        "eps": 1e-8,
        "weight_decay": 0.0,
        "momentum": 0.0,
        "centered": False,
    }
    options = _options("rmsprop", config, defaults)
    options["centered"] = bool(options["centered"])
    groups = decay_groups(params, options.pop("weight_decay"))
    return torch.optim.RMSprop(groups, **options)


def adam(params: NamedParams, **config: Any) -> torch.optim.Adam:
    """``torch.optim.Adam`` (coupled L2 decay), the twin of numpy's `adam`.

    Parameters
    ----------
    params : nn.Module, mapping of name to parameter, or iterable of (name, parameter)
    **config
        ``lr`` (1e-3), ``betas`` ((0.9, 0.999)), ``eps`` (1e-8), ``weight_decay`` (0).
    """
    defaults = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
    options = _options("adam", config, defaults)
    groups = decay_groups(params, options.pop("weight_decay"))
    return torch.optim.Adam(groups, **options)


def adamw(params: NamedParams, **config: Any) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` (decoupled decay), the twin of numpy's `adamw`.

    Parameters
    ----------
    params : nn.Module, mapping of name to parameter, or iterable of (name, parameter)
    **config
        ``lr`` (1e-3), ``betas`` ((0.9, 0.999)), ``eps`` (1e-8), ``weight_decay`` (1e-2, on
        ``W*`` parameters only).
    """
    defaults = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}
    options = _options("adamw", config, defaults)
    groups = decay_groups(params, options.pop("weight_decay"))
    return torch.optim.AdamW(groups, **options)


UPDATE_RULES: dict[str, OptimizerFactory] = {
    "sgd": sgd,
    "sgd_momentum": sgd_momentum,
    "nesterov": nesterov,
    "rmsprop": rmsprop,
    "adam": adam,
    "adamw": adamw,
}


def get_update_rule(name: str) -> OptimizerFactory:
    """Return the optimizer factory called ``name``, one of the keys of `UPDATE_RULES`."""
    try:
        return UPDATE_RULES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown update rule {name!r}; expected one of {', '.join(UPDATE_RULES)}"
        ) from None


def make_optimizer(name: str, params: NamedParams, **config: Any) -> torch.optim.Optimizer:
    """Build the optimizer of the update rule ``name`` over named parameters.

    Parameters
    ----------
    name : {"sgd", "sgd_momentum", "nesterov", "rmsprop", "adam", "adamw"}
    params : nn.Module, mapping of name to parameter, or iterable of (name, parameter)
        Names decide the decay groups: ``weight_decay`` applies to names starting with "W".
    **config
        The rule's hyperparameters, as for the numpy rule of that name.

    Returns
    -------
    torch.optim.Optimizer
    """
    return get_update_rule(name)(params, **config)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every group of ``optimizer`` (a schedule's step)."""
    if not (_real(lr) and lr >= 0.0):
        raise ValueError(f"Invalid learning rate: {lr}")
    for group in optimizer.param_groups:
        group["lr"] = float(lr)
