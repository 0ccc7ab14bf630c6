"""Look inside a model of either backend: every layer's output, and gradients back to the input.

Explanations (saliency, Grad-CAM, class visualisation) and diagnostics (activation statistics,
dead ReLUs) need more than the scores. This module gives them, the same way for a
`pix2pred.nn_numpy.models` model, a `pix2pred.nn_torch.models` model or a fitted estimator
(its ``model_``):

- `scores(model, X)`: eval-mode scores, as numpy, for either backend.
- `input_gradient(model, X, dscores)`: eval-mode scores and ``d sum(scores * dscores) / dX``;
  numpy by the layers' own backward passes (``Model.backward_to_input``), torch by autograd.
- `layer_outputs(model, X)`: the output of every layer, in order, under names shared by both
  backends: ``conv{i}``, ``bn{i}``, ``ln{i}``, ``relu{i}``, ``pool{i}``, ``dropout{i}`` and
  ``fc{i}``, where ``i`` numbers the parameters the layer belongs to (``W{i}``; the relu after
  ``conv2`` is ``relu2``, a pool after it ``pool2``). The last entry is the scores.
- `layer_gradient(model, X, dscores, layer)`: one layer's output and the gradient of
  ``sum(scores * dscores)`` with respect to it (Grad-CAM).

Both backends run the same `layer_plan`, a list of primitive steps read from the model's
architecture; the tests check that its last output equals the model's own scores. The
torch-only FastResNet has no plan: its ``feature_modules`` (``group1``..``group3``) are read
by forward hooks, eval mode only, and its last output is ``scores``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pix2pred.nn_numpy import fast_layers
from pix2pred.nn_numpy import layers as npl
from pix2pred.nn_numpy.convnet_spec import POOL
from pix2pred.nn_numpy.models import BN_EPS, LN_EPS

__all__ = [
    "Step",
    "conv_layer_names",
    "input_gradient",
    "is_torch",
    "layer_gradient",
    "layer_names",
    "layer_outputs",
    "layer_plan",
    "scores",
    "unwrap",
]


@dataclass(frozen=True)
class Step:
    """One primitive layer: its output's ``name``, its ``kind`` and what it reads.

    ``kind`` is conv, relu, pool, fc, bn (batch norm of (N, D)), sbn (spatial batch norm), ln
    (layer norm) or dropout; ``key`` is the suffix of its parameters (``W{key}``, ``gamma{key}``,
    ``running_mean{key}``); ``pad`` a conv's padding, ``p`` a dropout's drop probability.
    """

    name: str
    kind: str
    key: str = ""
    pad: int = 0
    p: float = 0.0


def unwrap(model: Any) -> Any:
    """The backend model of a fitted estimator (its ``model_``), or ``model`` itself."""
    inner = getattr(model, "model_", None)
    if inner is not None:
        return inner
    if not hasattr(model, "name") or not (
        hasattr(model, "params") or hasattr(model, "feature_modules")
    ):
        raise TypeError(
            f"expected a pix2pred numpy or torch model or a fitted estimator, got "
            f"{type(model).__name__}"
        )
    return model


def is_torch(model: Any) -> bool:
    """Whether ``model`` (or the estimator's model) is a torch ``nn.Module``."""
    return hasattr(unwrap(model), "named_parameters")


def layer_plan(model: Any) -> list[Step]:
    """The primitive layers of ``model`` in order; the last one's output is the scores."""
    model = unwrap(model)
    name = model.name
    if name == "linear":
        return [Step("fc1", "fc", "")]
    if name == "twolayer":
        return [Step("fc1", "fc", "1"), Step("relu1", "relu", "1"), Step("fc2", "fc", "2")]
    if name == "fcnet":
        return _fcnet_plan(model)
    if name == "simplecnn":
        steps = []
        for i, pad in ((1, 2), (2, 1)):
            k = str(i)
            steps += [Step(f"conv{i}", "conv", k, pad), Step(f"relu{i}", "relu", k)]
            steps.append(Step(f"pool{i}", "pool", k))
        return [*steps, Step("fc3", "fc", "3"), Step("relu3", "relu", "3"), Step("fc4", "fc", "4")]
    if name == "convnet":
        return _convnet_plan(model)
    raise ValueError(f"cannot look inside a {name!r} model (known: linear, twolayer, fcnet, ...)")


def _fcnet_plan(model: Any) -> list[Step]:
    steps = []
    norm = {"batchnorm": "bn", "layernorm": "ln", None: None}[model.normalization]
    for i in range(1, model.num_layers):
        k = str(i)
        steps.append(Step(f"fc{i}", "fc", k))
        if norm:
            steps.append(Step(f"{norm}{i}", norm, k))
        steps.append(Step(f"relu{i}", "relu", k))
        if model.dropout > 0:
            steps.append(Step(f"dropout{i}", "dropout", k, p=model.dropout))
    return [*steps, Step(f"fc{model.num_layers}", "fc", str(model.num_layers))]


def _convnet_plan(model: Any) -> list[Step]:
    steps: list[Step] = []
    i = 0
    for token in model.spec.features:
        if token == POOL:
            taken = {s.name for s in steps}
            name, n = f"pool{i}", 1
            while name in taken:  # "M,M": pool2, then pool2_2
                n += 1
                name = f"pool{i}_{n}"
            steps.append(Step(name, "pool", str(i)))
            continue
        i += 1
        steps.append(Step(f"conv{i}", "conv", str(i), pad=1))
        if model.batchnorm:
            steps.append(Step(f"bn{i}", "sbn", str(i)))
        steps.append(Step(f"relu{i}", "relu", str(i)))
    for _ in model.spec.hidden:
        i += 1
        steps += [Step(f"fc{i}", "fc", str(i)), Step(f"relu{i}", "relu", str(i))]
        if model.dropout > 0:
            steps.append(Step(f"dropout{i}", "dropout", str(i), p=model.dropout))
    return [*steps, Step(f"fc{model.num_layers}", "fc", str(model.num_layers))]


def _feature_modules(model: Any) -> list[tuple[str, Any]] | None:
    """The named feature-map modules of a torch network outside the plan (FastResNet), or None."""
    modules = getattr(unwrap(model), "feature_modules", None)
    return None if modules is None else modules()


def layer_names(model: Any) -> list[str]:
    """The names `layer_outputs` uses, in order (the last is the scores)."""
    modules = _feature_modules(model)
    if modules is not None:
        return [*(name for name, _ in modules), "scores"]
    return [s.name for s in layer_plan(model)]


def conv_layer_names(model: Any) -> list[str]:
    """The rectified outputs of the conv layers (``relu{i}`` after each ``conv{i}``; a resnet's
    ``group{i}``), in order; empty for a model without convolutions. Grad-CAM uses the last one
    by default."""
    modules = _feature_modules(model)
    if modules is not None:
        return [name for name, _ in modules]
    steps = layer_plan(model)
    convs = {s.key for s in steps if s.kind == "conv"}
    return [s.name for s in steps if s.kind == "relu" and s.key in convs]


# ------------------------------------------------------------------------------------ numpy


def _np_step(
    model: Any, step: Step, x: np.ndarray, train: bool, rng: np.random.Generator
) -> tuple[np.ndarray, Any, Any]:
    """One step forward: ``(out, cache, backward)``; train-mode batch norm leaves the buffers."""
    P, k = model.params, step.key
    if step.kind == "conv":
        out, cache = fast_layers.conv_forward(x, P[f"W{k}"], P[f"b{k}"], stride=1, pad=step.pad)
        return out, cache, fast_layers.conv_backward
    if step.kind == "fc":
        out, cache = npl.affine_forward(x, P[f"W{k}"], P[f"b{k}"])
        return out, cache, npl.affine_backward
    if step.kind == "relu":
        return (*npl.relu_forward(x), npl.relu_backward)
    if step.kind == "pool":
        return (*fast_layers.max_pool_forward(x, pool=2, stride=2), fast_layers.max_pool_backward)
    if step.kind == "dropout":
        if not train:
            return x, None, lambda dout, cache: dout
        out, cache = npl.dropout_forward(x, {"mode": "train", "p": step.p, "seed": rng})
        return out, cache, npl.dropout_backward
    gamma, beta = P[f"gamma{k}"], P[f"beta{k}"]
    if step.kind == "ln":
        out, cache = npl.layernorm_forward(x, gamma, beta, {"eps": LN_EPS})
        return out, cache, npl.layernorm_backward
    bn_param = {
        "mode": "train" if train else "eval",
        "eps": BN_EPS,
        "running_mean": model.buffers[f"running_mean{k}"].copy(),
        "running_var": model.buffers[f"running_var{k}"].copy(),
    }
    if step.kind == "sbn":
        out, cache = fast_layers.spatial_batchnorm_forward(x, gamma, beta, bn_param)
        return out, cache, fast_layers.spatial_batchnorm_backward
    out, cache = npl.batchnorm_forward(x, gamma, beta, bn_param)  # as affine_norm_relu does
    return out, cache, npl.batchnorm_backward


def _np_check_input(model: Any, X: Any) -> np.ndarray:
    X = model._check_input(X)  # dtype and shape, with the model's own message
    return X.reshape(X.shape[0], *model.input_shape)


def _np_forward(
    model: Any, X: np.ndarray, train: bool, seed: int
) -> tuple[dict[str, np.ndarray], list[tuple[Step, Any, Any]]]:
    rng = np.random.default_rng(seed)
    outputs: dict[str, np.ndarray] = {}
    tape = []
    h = X
    for step in layer_plan(model):
        h, cache, backward = _np_step(model, step, h, train, rng)
        outputs[step.name] = h
        tape.append((step, cache, backward))
    return outputs, tape


# ------------------------------------------------------------------------------------ torch


def _torch_forward(model: Any, x: Any, train: bool, seed: int) -> dict[str, Any]:
    """The plan over torch tensors (autograd records it); buffers are never updated. A network
    outside the plan (FastResNet) is run whole, its feature maps read by hooks, eval mode only."""
    import torch

    from pix2pred.nn_torch import layers as L

    if _feature_modules(model) is not None:
        if train:
            raise ValueError(f"a {model.name} model's layer outputs are eval-mode only")
        return _module_forward(model, x)

    P = dict(model.named_parameters())
    B = dict(model.named_buffers())
    rng = torch.Generator(device=x.device).manual_seed(seed)
    outputs: dict[str, Any] = {}
    h = x
    for step in layer_plan(model):
        k = step.key
        if step.kind == "conv":
            h = L.conv_forward(h, P[f"W{k}"], P[f"b{k}"], stride=1, pad=step.pad)
        elif step.kind == "fc":
            h = L.affine_forward(h, P[f"W{k}"], P[f"b{k}"])
        elif step.kind == "relu":
            h = L.relu_forward(h)
        elif step.kind == "pool":
            h = L.max_pool_forward(h, pool=2, stride=2)
        elif step.kind == "dropout":
            if train:
                h = L.dropout_forward(h, {"mode": "train", "p": step.p, "seed": rng})
        elif step.kind == "ln":
            h = L.layernorm_forward(h, P[f"gamma{k}"], P[f"beta{k}"], {"eps": LN_EPS})
        else:
            bn_param = {
                "mode": "train" if train else "eval",
                "eps": BN_EPS,
                "running_mean": B[f"running_mean{k}"].detach().clone(),
                "running_var": B[f"running_var{k}"].detach().clone(),
            }
            norm = L.spatial_batchnorm_forward if step.kind == "sbn" else L.batchnorm_forward
            h = norm(h, P[f"gamma{k}"], P[f"beta{k}"], bn_param)
        outputs[step.name] = h
    return outputs


def _module_forward(model: Any, x: Any) -> dict[str, Any]:
    """Eval-mode outputs of a network's `feature_modules`, by forward hooks, then its scores."""
    outputs: dict[str, Any] = {}
    handles = [
        module.register_forward_hook(lambda _m, _in, out, name=name: outputs.update({name: out}))
        for name, module in model.feature_modules()
    ]
    was_training = model.training
    model.eval()
    try:
        outputs["scores"] = model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return outputs


def _torch_input(model: Any, X: Any, requires_grad: bool) -> Any:
    if hasattr(model, "_check_input"):
        x = model._check_input(X)  # dtype, device and shape, with the model's own message
        x = x.reshape(x.shape[0], *model.input_shape).detach().clone()
    else:  # a network outside the plan takes (N, C, H, W) float32 on its own device
        import torch

        device = next(model.parameters()).device
        x = torch.as_tensor(np.asarray(X), dtype=torch.float32, device=device).clone()
    return x.requires_grad_(requires_grad)


def _torch_dscores(model: Any, dscores: Any, scores: Any) -> Any:
    import torch

    d = torch.as_tensor(np.asarray(dscores), dtype=scores.dtype, device=scores.device)
    if tuple(d.shape) != tuple(scores.shape):
        raise ValueError(f"dscores must have shape {tuple(scores.shape)}, got {tuple(d.shape)}")
    return d


def _numpy(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy()


# ------------------------------------------------------------------------------------ public


def scores(model: Any, X: Any) -> np.ndarray:
    """Eval-mode class scores (N, num_classes) of the model input ``X`` (N, C, H, W)."""
    model = unwrap(model)
    if not is_torch(model):
        return model.loss(np.asarray(X))
    import torch

    with torch.no_grad():
        x = _torch_input(model, X, False)
        if _feature_modules(model) is not None:
            return _numpy(_torch_forward(model, x, False, 0)["scores"])
        return _numpy(model.loss(x))


def input_gradient(model: Any, X: Any, dscores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode scores of ``X`` and the gradient of ``sum(scores * dscores)`` w.r.t. ``X``.

    Parameters
    ----------
    model : a numpy or torch pix2pred model, or a fitted estimator (its ``model_``)
    X : ndarray of shape (N, C, H, W), the model's input (preprocessed floats)
    dscores : ndarray of shape (N, num_classes), the upstream gradient (e.g. one-hot rows for
        ``d score_y / dX``)

    Returns
    -------
    scores : ndarray of shape (N, num_classes)
    dX : ndarray of shape (N, C, H, W), in the model's dtype

    The numpy backend backpropagates through its layers' backward passes, the torch backend
    through autograd; neither changes the model (batch norm uses its running statistics,
    dropout is off, no parameter ``.grad`` is touched).
    """
    model = unwrap(model)
    if not is_torch(model):
        X = np.asarray(X)
        if X.ndim != 4:
            raise ValueError(f"X must have shape (N, C, H, W), got {X.shape}")
        return model.backward_to_input(X, dscores)
    import torch

    x = _torch_input(model, X, requires_grad=True)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            scores = model(x)
            (dx,) = torch.autograd.grad(scores, x, _torch_dscores(model, dscores, scores))
    finally:
        model.train(was_training)
    return _numpy(scores), _numpy(dx)


def layer_outputs(model: Any, X: Any, train: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """The output of every layer of ``model`` for the batch ``X``, in order, by name.

    Parameters
    ----------
    model : a numpy or torch pix2pred model, or a fitted estimator
    X : ndarray of shape (N, C, H, W), the model's input
    train : False (eval mode: running batch-norm statistics, no dropout) or True (batch
        statistics, dropout masks drawn from ``seed``); the model's buffers, generator and
        mode are never changed
    seed : seeds the dropout masks in train mode (numpy and torch masks differ)

    Returns
    -------
    dict of str to ndarray
        Names as `layer_names` (``conv1``, ``relu1``, ``pool1``, ..., ``fc{L}``); conv layers
        give (N, F, H', W'), fc layers (N, M). The last entry is the scores.
    """
    model = unwrap(model)
    if not is_torch(model):
        return _np_forward(model, _np_check_input(model, X), train, seed)[0]
    import torch

    with torch.no_grad():
        outputs = _torch_forward(model, _torch_input(model, X, False), train, seed)
    return {k: _numpy(v) for k, v in outputs.items()}


def layer_gradient(
    model: Any, X: Any, dscores: Any, layer: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eval-mode scores, the output of ``layer``, and ``d sum(scores * dscores) / d output``.

    Parameters
    ----------
    model : a numpy or torch pix2pred model, or a fitted estimator
    X : ndarray of shape (N, C, H, W)
    dscores : ndarray of shape (N, num_classes)
    layer : a name from `layer_names` (e.g. the last of `conv_layer_names` for Grad-CAM)

    Returns
    -------
    scores (N, num_classes), activation and its gradient (both shaped like the layer's output)
    """
    model = unwrap(model)
    names = layer_names(model)
    if layer not in names:
        raise ValueError(f"{model.name} has no layer {layer!r}; its layers: {', '.join(names)}")
    if not is_torch(model):
        outputs, tape = _np_forward(model, _np_check_input(model, X), False, 0)
        scores = outputs[names[-1]]
        dout = np.asarray(dscores, dtype=scores.dtype)
        if dout.shape != scores.shape:
            raise ValueError(f"dscores must have shape {scores.shape}, got {dout.shape}")
        for step, cache, backward in reversed(tape):
            if step.name == layer:
                break
            result = backward(dout, cache)
            dout = result[0] if isinstance(result, tuple) else result
        return scores, outputs[layer], np.asarray(dout)
    import torch

    with torch.enable_grad():
        outputs = _torch_forward(model, _torch_input(model, X, False), False, 0)
        scores, act = outputs[names[-1]], outputs[layer]
        d = _torch_dscores(model, dscores, scores)
        if act is scores:
            grad = d
        else:
            (grad,) = torch.autograd.grad(scores, act, d)
    return _numpy(scores), _numpy(act), _numpy(grad)
