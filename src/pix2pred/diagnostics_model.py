"""What the diagnostics need from a model, for either backend: copies, losses, gradients, steps.

The checks of `pix2pred.diagnostics` never touch the model they are given: each works on a
`clone` (same architecture and weights, optionally another dtype or without dropout). Training
steps go through the project's own Solver (`pix2pred.solver.Solver`, or
`pix2pred.nn_torch.train.TorchSolver` for a torch model), so that the update rules, the weight
decay groups and the divergence checks are exactly those of ``pix2pred train``. Torch is
imported only when a torch model is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pix2pred.solver import Solver, TrainingDivergedError

__all__ = [
    "LRSequence",
    "StopTraining",
    "central_difference",
    "clone",
    "is_torch",
    "loss_and_grads",
    "loss_value",
    "make_solver",
    "param_arrays",
    "params_numpy",
    "rng_state",
    "set_rng_state",
]


def is_torch(model: Any) -> bool:
    """Whether ``model`` is a `pix2pred.nn_torch` module (it has ``named_parameters``)."""
    return hasattr(model, "named_parameters")


def clone(
    model: Any, *, dtype: str | None = None, device: str | None = None, **overrides: Any
) -> Any:
    """A new model of the same architecture and weights (and generator state).

    Parameters
    ----------
    model : a `pix2pred.nn_numpy.models` or `pix2pred.nn_torch.models` model
    dtype : "float32" or "float64", optional; default: the model's
    device : torch only: where the copy lives (default: the model's device)
    **overrides : constructor keywords to change (e.g. ``dropout=0.0``); the parameters and
        buffers must keep their names and shapes
    """
    config = {**model.config(), **overrides}
    if dtype is not None:
        config["dtype"] = dtype
    if is_torch(model):
        from pix2pred.nn_torch.models import build_model
        from pix2pred.nn_torch.transfer import load_state_dict_numpy, state_dict_numpy

        target = device or next(model.parameters()).device
        new = build_model(model.name, **config)
        load_state_dict_numpy(new, state_dict_numpy(model))
        new.rng.set_state(model.rng.get_state())
        return new.to(target)
    from pix2pred.nn_numpy.models import build_model

    new = build_model(model.name, **config)
    for store, source in ((new.params, model.params), (new.buffers, model.buffers)):
        for name, value in source.items():
            np.copyto(store[name], value, casting="unsafe")  # in place, cast to the new dtype
    new.rng.bit_generator.state = model.rng.bit_generator.state
    return new


def params_numpy(model: Any, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Copies of the trainable parameters (all, or those in ``names``) as numpy arrays."""
    if is_torch(model):
        items = model.named_parameters()
        return {k: v.detach().cpu().numpy().copy() for k, v in items if names is None or k in names}
    return {k: v.copy() for k, v in model.params.items() if names is None or k in names}


def rng_state(model: Any) -> Any:
    """The state of the model's generator (dropout masks), to replay the same masks."""
    return model.rng.get_state() if is_torch(model) else model.rng.bit_generator.state


def set_rng_state(model: Any, state: Any) -> None:
    if is_torch(model):
        model.rng.set_state(state)
    else:
        model.rng.bit_generator.state = state


def loss_and_grads(model: Any, X: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    """Train-mode data loss and the gradient of every parameter, as numpy arrays."""
    if not is_torch(model):
        loss, grads = model.loss(X, y)
        return float(loss), grads
    import torch

    model.zero_grad(set_to_none=True)
    loss = model.loss(torch.as_tensor(X), torch.as_tensor(y))
    loss.backward()
    grads = {
        k: np.zeros(tuple(p.shape)) if p.grad is None else p.grad.detach().cpu().numpy().copy()
        for k, p in model.named_parameters()
    }
    model.zero_grad(set_to_none=True)
    return float(loss.detach()), grads


def loss_value(model: Any, X: np.ndarray, y: np.ndarray) -> float:
    """Train-mode data loss only."""
    if not is_torch(model):
        return float(model.loss(X, y)[0])
    import torch

    with torch.no_grad():
        return float(model.loss(torch.as_tensor(X), torch.as_tensor(y)))


class StopTraining(Exception):
    """Raised by a callback to end a diagnostic run of the Solver early."""


class LRSequence:
    """A Solver schedule that reads the rate of step ``t`` from a list (the last one after it)."""

    def __init__(self, lrs: Sequence[float]) -> None:
        if not len(lrs):
            raise ValueError("lrs is empty")
        self.lrs = [float(v) for v in lrs]
        self.lr = max(self.lrs)

    def __call__(self, step: int) -> float:
        return self.lrs[min(step, len(self.lrs) - 1)]


def make_solver(
    model: Any,
    X: np.ndarray,
    y: np.ndarray,
    *,
    lrs: Sequence[float],
    optimizer: str,
    momentum: float | None,
    weight_decay: float,
    batch_size: int,
    seed: int,
    num_train_samples: int | None,
    callback: Callable[[Solver], None] | None = None,
    epoch_callback: Callable[[Solver], None] | None = None,
) -> Solver:
    """A Solver (or TorchSolver) that trains ``model`` on ``X``, ``y`` for ``len(lrs)`` steps.

    The rate of step ``t`` is ``lrs[t]``; no augmentation, no validation, no checkpoints, no
    output, torch in full precision on the model's device.
    """
    batch_size = min(batch_size, len(X))
    epochs = max(1, math.ceil(len(lrs) / math.ceil(len(X) / batch_size)))
    kwargs: dict[str, Any] = {
        "optimizer": optimizer,
        "lr": max(float(v) for v in lrs),
        "momentum": momentum,
        "weight_decay": weight_decay,
        "schedule": LRSequence(lrs),
        "batch_size": batch_size,
        "epochs": epochs,
        "seed": seed,
        "restore_best": False,
        "num_train_samples": num_train_samples,
        "progress": False,
        "verbose": False,
        "callback": callback,
        "epoch_callback": epoch_callback,
    }
    data = {"X_train": X, "y_train": y}
    if is_torch(model):
        from pix2pred.nn_torch.train import TorchSolver

        return TorchSolver(model, data, device=None, amp="none", **kwargs)
    return Solver(model, data, **kwargs)


def run_solver(solver: Solver) -> str | None:
    """Train until done, a `StopTraining` or divergence; return the divergence message or None."""
    try:
        solver.train()
    except StopTraining:
        pass
    except TrainingDivergedError as e:
        return str(e)
    return None


def param_arrays(model: Any) -> dict[str, Any]:
    """The parameters as numpy arrays that write through to the model (torch: on the CPU)."""
    if is_torch(model):
        return {k: p.detach().numpy() for k, p in model.named_parameters()}
    return model.params


def central_difference(
    f: Callable[[], float], w: np.ndarray, ix: tuple[int, ...], h: float
) -> float:
    """``(f(w + h e_ix) - f(w - h e_ix)) / (2 h)``, perturbing ``w[ix]`` in place (restored)."""
    old = float(w[ix])
    try:
        w[ix] = old + h
        plus = f()
        w[ix] = old - h
        minus = f()
    finally:
        w[ix] = old
    return (plus - minus) / (2 * h)
