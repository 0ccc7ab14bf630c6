"""The Solver's checkpoints: what is saved, in which files, and how it comes back.

A checkpoint is a folder holding ``solver_state.json`` (settings, counters, histories, the
generators' states, the optimizer's scalars) and one of two ``.safetensors`` files of arrays
(parameters, buffers, best parameters, the epoch's permutation, the optimizer's arrays), the
format both backends read. Saves alternate between the two array files and the JSON, written
last, names the current one, so an interrupted save leaves the previous checkpoint whole. Every
write is atomic and nothing is pickled.

The solver reaches its model and optimizer only through its backend hooks (``_params_copy``,
``_buffers_copy``, ``_model_rng_state``, ``_optimizer_state`` and their setters), so the same
two functions, `capture` and `restore`, serve the numpy and the torch backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pix2pred.checkpoint import load_safetensors, read_json, save_safetensors, write_json

if TYPE_CHECKING:
    from pix2pred.solver import Solver

__all__ = ["ARRAY_FILES", "STATE_FILE", "capture", "read_checkpoint", "restore", "write_checkpoint"]

STATE_FILE = "solver_state.json"
ARRAY_FILES = ("solver_arrays_a.safetensors", "solver_arrays_b.safetensors")
FORMAT = "pix2pred.solver"
VERSION = 2
_ARRAY_MARK = "array"  # JSON stand-in for a generator state saved with the arrays


def pack_configs(
    configs: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Split per-parameter optimizer states into JSON-able values and arrays.

    NumPy scalars go to the arrays too, so that a ``float32`` step count comes back as one.
    """
    meta: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for name, config in configs.items():
        entry: dict[str, Any] = {"scalars": {}, "tuples": [], "arrays": [], "numpy_scalars": []}
        for key, value in config.items():
            if isinstance(value, np.ndarray | np.generic):
                arrays[f"optim/{name}/{key}"] = np.asarray(value)
                entry["numpy_scalars" if isinstance(value, np.generic) else "arrays"].append(key)
            elif value is None or isinstance(value, bool | int | float | str):
                entry["scalars"][key] = value
            elif isinstance(value, tuple | list) and all(
                isinstance(v, bool | int | float | str) for v in value
            ):
                entry["scalars"][key] = list(value)
                if isinstance(value, tuple):
                    entry["tuples"].append(key)
            else:
                raise TypeError(
                    f"optimizer state {key!r} of {name!r} is a {type(value).__name__}, "
                    "which a checkpoint cannot hold"
                )
        meta[name] = entry
    return meta, arrays


def unpack_configs(
    meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> dict[str, dict[str, Any]]:
    """The inverse of `pack_configs`."""
    configs: dict[str, dict[str, Any]] = {}
    for name, entry in meta.items():
        config: dict[str, Any] = dict(entry["scalars"])
        for key in entry["tuples"]:
            config[key] = tuple(config[key])
        for key in entry["arrays"]:
            config[key] = arrays[f"optim/{name}/{key}"].copy()
        for key in entry["numpy_scalars"]:
            config[key] = arrays[f"optim/{name}/{key}"][()]
        configs[name] = config
    return configs


def write_checkpoint(directory: Path, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` to the array file not in use, then ``state`` naming it; return the JSON."""
    state_path = directory / STATE_FILE
    previous = read_json(state_path).get("arrays") if state_path.exists() else None
    arrays_file = ARRAY_FILES[1] if previous == ARRAY_FILES[0] else ARRAY_FILES[0]
    save_safetensors(directory / arrays_file, arrays, metadata={"format": FORMAT})
    write_json(state_path, {"format": FORMAT, "version": VERSION, "arrays": arrays_file, **state})
    return state_path


def read_checkpoint(directory: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON state and the arrays of the checkpoint in ``directory``."""
    state_path = directory / STATE_FILE
    state = read_json(state_path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{state_path}: not a pix2pred solver checkpoint")
    if state.get("version") != VERSION:
        raise ValueError(
            f"{state_path}: solver checkpoint version {state.get('version')!r} is not "
            f"supported (expected {VERSION})"
        )
    return state, load_safetensors(directory / state["arrays"])


def settings_of(state: Mapping[str, Any]) -> dict[str, Any]:
    """The Solver keywords saved in a checkpoint's state, with JSON's lists back to tuples."""
    settings = dict(state["settings"])
    settings["optim_config"] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in settings["optim_config"].items()
    }
    return settings


def _prefixed(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def capture(
    solver: Solver, params: dict[str, np.ndarray]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON state and the arrays that `restore` needs to continue ``solver`` bit for bit.

    ``params`` are the model's current parameters as numpy arrays (already checked finite).
    """
    optim_meta, arrays = pack_configs(solver._optimizer_state())
    arrays.update({f"params/{k}": v for k, v in params.items()})
    arrays.update({f"buffers/{k}": v for k, v in solver._buffers_copy().items()})
    arrays.update({f"best_params/{k}": v for k, v in (solver.best_params or {}).items()})
    arrays.update({f"best_buffers/{k}": v for k, v in (solver.best_buffers or {}).items()})
    if solver._perm is not None:
        arrays["perm"] = solver._perm
    model_rng = solver._model_rng_state()
    if isinstance(model_rng, np.ndarray):
        arrays["model_rng"] = model_rng
        model_rng = _ARRAY_MARK
    config = getattr(solver.model, "config", None)
    state = {
        "backend": solver.backend,
        "model_class": type(solver.model).__name__,
        "model_config": config() if callable(config) else None,
        "settings": solver._settings(),
        "num_train": len(solver.X_train),
        "iterations_per_epoch": solver.iterations_per_epoch,
        "epoch": solver.epoch,
        "batch": solver.batch,
        "step": solver.step,
        "last_lr": solver._last_lr,
        "best_val_acc": solver.best_val_acc,
        "best_epoch": solver.best_epoch,
        "stopped_early": solver.stopped_early,
        "history": {
            "loss": solver.loss_history,
            "train_acc": solver.train_acc_history,
            "val_acc": solver.val_acc_history,
            "lr": solver.lr_history,
        },
        "rng": solver.rng.bit_generator.state,
        "model_rng": model_rng,
        "optimizer_state": optim_meta,
        **solver._extra_state(),
    }
    return state, arrays


def restore(solver: Solver, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Put a checkpoint's state into ``solver`` and its model, after checking they fit.

    Raises
    ------
    ValueError
        Naming the checkpoint and what differs: the backend, a parameter's dtype or shape, the
        optimizer, the number of training samples, or the batches of a mid-epoch checkpoint.
    """
    state_path = solver.checkpoint_dir / STATE_FILE
    if state["backend"] != solver.backend:
        raise ValueError(
            f"{state_path}: written by the {state['backend']} backend; resume it with "
            f"backend={state['backend']!r}, not {solver.backend!r}"
        )
    params, current = _prefixed(arrays, "params/"), solver._params_copy()
    for name, w in current.items():
        saved = params.get(name)
        if saved is None or saved.shape != w.shape or saved.dtype != w.dtype:
            found = "missing" if saved is None else f"{saved.dtype} {saved.shape}"
            raise ValueError(
                f"{state_path}: parameter {name!r} is {found} in the checkpoint but "
                f"{w.dtype} {w.shape} in the model ({state['model_class']} saved it)"
            )
    if extra := sorted(set(params) - set(current)):
        raise ValueError(f"{state_path}: the model has no parameter(s) {', '.join(extra)}")
    if state["settings"]["optimizer"] != solver.optimizer:
        raise ValueError(
            f"{state_path}: the run used optimizer {state['settings']['optimizer']!r}, "
            f"not {solver.optimizer!r}"
        )
    if state["num_train"] != len(solver.X_train):
        raise ValueError(
            f"{state_path}: saved for {state['num_train']} training samples, got "
            f"{len(solver.X_train)}"
        )
    if state["batch"] and state["iterations_per_epoch"] != solver.iterations_per_epoch:
        raise ValueError(
            f"{state_path}: saved mid-epoch with {state['iterations_per_epoch']} iterations "
            f"per epoch; batch_size {solver.batch_size} gives {solver.iterations_per_epoch}"
        )
    solver._set_params(params)
    solver._set_buffers(_prefixed(arrays, "buffers/"))
    solver.best_params = _prefixed(arrays, "best_params/") or None
    solver.best_buffers = _prefixed(arrays, "best_buffers/")
    solver._perm = arrays.get("perm")
    solver._load_optimizer_state(unpack_configs(state["optimizer_state"], arrays))
    solver.epoch, solver.batch, solver.step = state["epoch"], state["batch"], state["step"]
    solver._last_lr = state["last_lr"]
    solver.best_val_acc, solver.best_epoch = state["best_val_acc"], state["best_epoch"]
    solver.stopped_early = state["stopped_early"]
    history = state["history"]
    solver.loss_history = history["loss"]
    solver.train_acc_history = history["train_acc"]
    solver.val_acc_history = history["val_acc"]
    solver.lr_history = history["lr"]
    solver.rng.bit_generator.state = state["rng"]
    model_rng = state["model_rng"]
    solver._set_model_rng_state(arrays["model_rng"] if model_rng == _ARRAY_MARK else model_rng)
    solver._load_extra_state(state)
