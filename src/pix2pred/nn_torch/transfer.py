"""Weights both ways between the backends, through one plain format.

The shared format is a state dict of numpy arrays: ``{name: ndarray}`` holding every parameter
(``W1``, ``b1``, ``gamma1``, ...) and every buffer (``running_mean1``, ...) under the numpy
names, which are also the torch ``state_dict()`` keys. `state_dict_numpy` and
`load_state_dict_numpy` read and write it on a model of either backend; `to_torch` and
`from_torch` build the twin of a model with its architecture, dtype and weights. The affine
weights keep the course's ``(D, M)`` layout on both sides, so nothing is transposed. What is
not moved: the random generators (numpy's ``Generator``, torch's ``torch.Generator``; dropout
masks differ between the backends anyway) and the torch module's train/eval mode.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from pix2pred.nn_numpy import models as numpy_models
from pix2pred.nn_torch import models as torch_models

__all__ = ["from_torch", "load_state_dict_numpy", "state_dict_numpy", "to_torch"]

AnyModel = numpy_models.Model | torch_models.Model


def _check_model(model: object) -> None:
    if not isinstance(model, numpy_models.Model | torch_models.Model):
        raise TypeError(f"expected a pix2pred numpy or torch model, got {type(model).__name__}")


def state_dict_numpy(model: AnyModel) -> dict[str, np.ndarray]:
    """Copies of a model's parameters and buffers as numpy arrays, in the model's dtype.

    Parameters
    ----------
    model : a `pix2pred.nn_numpy.models` or `pix2pred.nn_torch.models` model

    Returns
    -------
    dict of str to ndarray
        Parameters then buffers, by name; shapes as in ``model.params`` (numpy layout).
    """
    _check_model(model)
    if isinstance(model, numpy_models.Model):
        return {k: v.copy() for k, v in {**model.params, **model.buffers}.items()}
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_state_dict_numpy(model: AnyModel, state: Mapping[str, np.ndarray]) -> None:
    """Overwrite a model's parameters and buffers with the arrays of ``state``.

    Parameters
    ----------
    model : a `pix2pred.nn_numpy.models` or `pix2pred.nn_torch.models` model
    state : mapping of every parameter and buffer name of ``model`` to an array of its shape;
        the values are copied and cast to the model's dtype

    Raises
    ------
    ValueError
        Naming the missing or unexpected keys, or the first array whose shape differs; the
        model is left untouched then.
    """
    _check_model(model)
    expected = state_dict_numpy(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"state does not match {type(model).__name__}: missing {missing}, "
            f"unexpected {unexpected}"
        )
    arrays = {k: np.asarray(state[k]) for k in expected}
    for k, value in arrays.items():
        if value.shape != expected[k].shape:
            raise ValueError(
                f"state[{k!r}] has shape {value.shape}, {type(model).__name__} expects "
                f"{expected[k].shape}"
            )
    if isinstance(model, numpy_models.Model):
        # In place, as torch's copy_: the arrays keep their identity (and their dtype).
        for k, value in arrays.items():
            np.copyto(model.params[k] if k in model.params else model.buffers[k], value)
        return
    tensors = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for k, value in arrays.items():
            tensors[k].copy_(torch.tensor(value))


def to_torch(model: numpy_models.Model) -> torch_models.Model:
    """The torch twin of a numpy model: same architecture, dtype, parameters and buffers.

    Parameters
    ----------
    model : a `pix2pred.nn_numpy.models` model

    Returns
    -------
    `pix2pred.nn_torch.models` model of the same class name, on the CPU, in train mode
    """
    if not isinstance(model, numpy_models.Model):
        raise TypeError(f"to_torch expects a numpy model, got {type(model).__name__}")
    twin = torch_models.build_model(model.name, **model.config())
    load_state_dict_numpy(twin, state_dict_numpy(model))
    return twin


def from_torch(model: torch_models.Model) -> numpy_models.Model:
    """The numpy twin of a torch model: same architecture, dtype, parameters and buffers.

    Parameters
    ----------
    model : a `pix2pred.nn_torch.models` model, on any device

    Returns
    -------
    `pix2pred.nn_numpy.models` model of the same class name
    """
    if not isinstance(model, torch_models.Model):
        raise TypeError(f"from_torch expects a torch model, got {type(model).__name__}")
    twin = numpy_models.build_model(model.name, **model.config())
    load_state_dict_numpy(twin, state_dict_numpy(model))
    return twin
