"""The numpy backend's layers and losses over ``torch.nn.functional``; autograd does the backward.

Every op of `pix2pred.nn_numpy.layers` (and its losses) has a twin here with the same name,
arguments and param-dict keys (``bn_param``, ``ln_param``, ``gn_param``, ``dropout_param``), so a
diff of two call sites shows only the maths. The one difference: where a numpy ``*_forward``
returns ``(out, cache)`` for its hand-written ``*_backward``, its twin returns ``out`` alone, and
where a numpy loss returns ``(loss, dscores)`` its twin returns the loss tensor; gradients come
from ``loss.backward()``. There are no ``*_backward`` functions here.

Shapes, defaults and validation messages are the numpy ones; the affine weight keeps the course's
``(D, M)`` layout (``x @ w + b``, the transpose of ``nn.Linear.weight``). Batch norm and dropout
follow PyTorch, as the numpy layers do. Dropout draws its masks from a ``torch.Generator``, so
its masks are not the numpy masks: compare the backends with ``p = 0``, or in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import torch
import torch.nn.functional as F

IntPair = int | tuple[int, int]

__all__ = [
    "affine_forward",
    "affine_norm_relu_forward",
    "affine_relu_forward",
    "avg_pool_forward",
    "batchnorm_forward",
    "conv_forward",
    "conv_relu_forward",
    "conv_relu_pool_forward",
    "dropout_forward",
    "flatten_forward",
    "global_avg_pool_forward",
    "l2_regularization",
    "layernorm_forward",
    "leaky_relu_forward",
    "max_pool_forward",
    "relu_forward",
    "sigmoid_forward",
    "softmax_loss",
    "spatial_batchnorm_forward",
    "spatial_groupnorm_forward",
    "svm_loss",
    "tanh_forward",
]


def _pair(value: Any, name: str, minimum: int) -> tuple[int, int]:
    """Read an int or an ``(h, w)`` pair of ints, each at least ``minimum``."""
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return pair


def _check_ndim(a: torch.Tensor, ndim: int, name: str, layout: str) -> None:
    if a.ndim != ndim:
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(a.shape)}")


def _check_shape(a: torch.Tensor, shape: tuple[int, ...], name: str) -> None:
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got shape {tuple(a.shape)}")


def _mode(param: Mapping[str, Any], name: str) -> str:
    mode = param.get("mode")
    if mode not in ("train", "eval"):
        raise ValueError(f"{name}['mode'] must be 'train' or 'eval', got {mode!r}")
    return mode


def _check_window(size: int, kernel: int, pad: int, what: str) -> None:
    if kernel > size + 2 * pad:
        raise ValueError(
            f"{what} of size {kernel} is larger than the padded input ({size + 2 * pad})"
        )


def _eps(param: Mapping[str, Any] | None) -> float:
    eps = (param or {}).get("eps", 1e-5)
    if eps < 0:
        raise ValueError(f"eps must be non-negative, got {eps!r}")
    return eps


# ---------------------------------------------------------------- affine, flatten, activations


def affine_forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Fully-connected layer ``x.reshape(N, D) @ w + b``.

    Parameters
    ----------
    x : Tensor of shape (N, d1, ..., dk), flattened to (N, D) with D = d1 * ... * dk
    w : Tensor of shape (D, M), the course's layout (the transpose of ``nn.Linear.weight``)
    b : Tensor of shape (M,)

    Returns
    -------
    out : Tensor of shape (N, M)
    """
    x2 = x.reshape(x.shape[0], -1)  # (N, D)
    _check_ndim(w, 2, "w", "(D, M)")
    if w.shape[0] != x2.shape[1]:
        raise ValueError(
            f"w has {w.shape[0]} rows but x {tuple(x.shape)} flattens to {x2.shape[1]}"
        )
    _check_shape(b, (w.shape[1],), "b")
    return torch.addmm(b, x2, w)


def flatten_forward(x: torch.Tensor) -> torch.Tensor:
    """Flatten ``x`` of shape (N, d1, ..., dk) to (N, d1 * ... * dk)."""
    return x.reshape(x.shape[0], -1)


def relu_forward(x: torch.Tensor) -> torch.Tensor:
    """``max(x, 0)`` elementwise; x of any shape (gradient zero at x == 0)."""
    return F.relu(x)


def leaky_relu_forward(x: torch.Tensor, negative_slope: float = 0.01) -> torch.Tensor:
    """``x`` where positive, ``negative_slope * x`` elsewhere; x of any shape."""
    return F.leaky_relu(x, negative_slope)


def sigmoid_forward(x: torch.Tensor) -> torch.Tensor:
    """Logistic sigmoid elementwise; x of any shape."""
    return torch.sigmoid(x)


def tanh_forward(x: torch.Tensor) -> torch.Tensor:
    """Hyperbolic tangent elementwise; x of any shape."""
    return torch.tanh(x)


# ---------------------------------------------------------------- convolution and pooling


def conv_forward(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, stride: IntPair = 1, pad: IntPair = 0
) -> torch.Tensor:
    """2-D convolution (cross-correlation), ``F.conv2d``.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)
    w : Tensor of shape (F, C, HH, WW)
    b : Tensor of shape (F,)
    stride : int or (int, int), at least 1
    pad : int or (int, int), zeros added on both sides of H and of W

    Returns
    -------
    out : Tensor of shape (N, F, 1 + (H + 2 * pad_h - HH) // stride_h,
        1 + (W + 2 * pad_w - WW) // stride_w)
    """
    stride, pad = _pair(stride, "stride", 1), _pair(pad, "pad", 0)
    _check_ndim(x, 4, "x", "(N, C, H, W)")
    _check_ndim(w, 4, "w", "(F, C, HH, WW)")
    C, H, W = x.shape[1:]
    if w.shape[1] != C:
        raise ValueError(
            f"w {tuple(w.shape)} expects {w.shape[1]} input channels but x {tuple(x.shape)} has {C}"
        )
    _check_shape(b, (w.shape[0],), "b")
    _check_window(H, w.shape[2], pad[0], "kernel height")
    _check_window(W, w.shape[3], pad[1], "kernel width")
    return F.conv2d(x, w, b, stride=stride, padding=pad)


def _check_pool(x: torch.Tensor, pool: IntPair, stride: IntPair) -> tuple[tuple[int, int], ...]:
    pool, stride = _pair(pool, "pool", 1), _pair(stride, "stride", 1)
    _check_ndim(x, 4, "x", "(N, C, H, W)")
    _check_window(x.shape[2], pool[0], 0, "pool height")
    _check_window(x.shape[3], pool[1], 0, "pool width")
    return pool, stride


def max_pool_forward(x: torch.Tensor, pool: IntPair = 2, stride: IntPair = 2) -> torch.Tensor:
    """Max pooling over ``pool`` windows moved by ``stride`` (no padding, sizes rounded down).

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)
    pool, stride : int or (int, int)

    Returns
    -------
    out : Tensor of shape (N, C, 1 + (H - pool_h) // stride_h, 1 + (W - pool_w) // stride_w)
    """
    pool, stride = _check_pool(x, pool, stride)
    return F.max_pool2d(x, pool, stride)


def avg_pool_forward(x: torch.Tensor, pool: IntPair = 2, stride: IntPair = 2) -> torch.Tensor:
    """Average pooling; shapes and window rules as ``max_pool_forward``."""
    pool, stride = _check_pool(x, pool, stride)
    return F.avg_pool2d(x, pool, stride)


def global_avg_pool_forward(x: torch.Tensor) -> torch.Tensor:
    """Mean over the spatial axes: x (N, C, H, W) → out (N, C)."""
    _check_ndim(x, 4, "x", "(N, C, H, W)")
    return x.mean(dim=(2, 3))


# ---------------------------------------------------------------- normalisation


def _batchnorm(
    x: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    bn_param: MutableMapping[str, Any],
    samples: int,
) -> torch.Tensor:
    """``F.batch_norm`` with the numpy layer's checks; ``samples`` values per channel."""
    mode = _mode(bn_param, "bn_param")
    C = x.shape[1]
    _check_shape(gamma, (C,), "gamma")
    _check_shape(beta, (C,), "beta")
    eps = _eps(bn_param)
    momentum = bn_param.get("momentum", 0.1)
    if not 0 <= momentum <= 1:
        raise ValueError(f"bn_param['momentum'] must be in [0, 1], got {momentum!r}")
    running_mean = bn_param.get("running_mean")
    running_var = bn_param.get("running_var")
    if running_mean is None:
        running_mean = torch.zeros(C, dtype=x.dtype, device=x.device)
    if running_var is None:
        running_var = torch.ones(C, dtype=x.dtype, device=x.device)
    _check_shape(running_mean, (C,), "bn_param['running_mean']")
    _check_shape(running_var, (C,), "bn_param['running_var']")
    training = mode == "train"
    if training:
        if samples < 2:
            raise ValueError(
                f"batch norm in train mode needs more than 1 sample, got x {tuple(x.shape)}"
            )
        # F.batch_norm updates the running tensors in place (unbiased variance, PyTorch's
        # momentum); storing them makes a missing entry appear, as in the numpy layer.
        bn_param["running_mean"] = running_mean
        bn_param["running_var"] = running_var
    return F.batch_norm(x, running_mean, running_var, gamma, beta, training, momentum, eps)


def batchnorm_forward(
    x: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    bn_param: MutableMapping[str, Any],
) -> torch.Tensor:
    """Batch normalisation over the batch axis, ``torch.nn.BatchNorm1d``'s maths.

    Train mode normalises with the batch mean and biased variance and updates
    ``bn_param["running_mean"/"running_var"]`` in place with
    ``running = (1 - momentum) * running + momentum * batch_statistic`` (unbiased variance);
    eval mode normalises with the running statistics.

    Parameters
    ----------
    x : Tensor of shape (N, D)
    gamma, beta : Tensor of shape (D,)
    bn_param : dict with ``mode`` ("train" or "eval"), optional ``eps`` (1e-5), ``momentum``
        (0.1, the weight of the new batch) and ``running_mean``, ``running_var`` (Tensor of
        shape (D,); zeros and ones when absent, then stored in train mode)

    Returns
    -------
    out : Tensor of shape (N, D)
    """
    _check_ndim(x, 2, "x", "(N, D)")
    return _batchnorm(x, gamma, beta, bn_param, x.shape[0])


def spatial_batchnorm_forward(
    x: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    bn_param: MutableMapping[str, Any],
) -> torch.Tensor:
    """Batch normalisation per channel over (N, H, W), ``torch.nn.BatchNorm2d``'s maths.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)
    gamma, beta : Tensor of shape (C,)
    bn_param : as ``batchnorm_forward``, running statistics of shape (C,)

    Returns
    -------
    out : Tensor of shape (N, C, H, W)
    """
    _check_ndim(x, 4, "x", "(N, C, H, W)")
    N, _, H, W = x.shape
    return _batchnorm(x, gamma, beta, bn_param, N * H * W)


def layernorm_forward(
    x: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    ln_param: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Layer normalisation: each sample over all its features, ``torch.nn.LayerNorm``.

    Parameters
    ----------
    x : Tensor of shape (N, D) (or (N, d1, ..., dk), normalised over d1..dk)
    gamma, beta : Tensor of shape x.shape[1:]
    ln_param : dict with optional ``eps`` (1e-5); the same in train and eval

    Returns
    -------
    out : Tensor of the shape of x
    """
    eps = _eps(ln_param)
    _check_shape(gamma, tuple(x.shape[1:]), "gamma")
    _check_shape(beta, tuple(x.shape[1:]), "beta")
    return F.layer_norm(x, tuple(x.shape[1:]), gamma, beta, eps)


def spatial_groupnorm_forward(
    x: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    G: int,
    gn_param: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Group normalisation, ``torch.nn.GroupNorm(G, C)``.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)
    gamma, beta : Tensor of shape (C,)
    G : number of groups, a divisor of C
    gn_param : dict with optional ``eps`` (1e-5); the same in train and eval

    Returns
    -------
    out : Tensor of shape (N, C, H, W)
    """
    _check_ndim(x, 4, "x", "(N, C, H, W)")
    C = x.shape[1]
    if not isinstance(G, int) or isinstance(G, bool) or G < 1 or C % G:
        raise ValueError(f"G must be a positive divisor of the {C} channels, got {G!r}")
    _check_shape(gamma, (C,), "gamma")
    _check_shape(beta, (C,), "beta")
    return F.group_norm(x, G, gamma, beta, _eps(gn_param))


# ---------------------------------------------------------------- dropout


def dropout_forward(x: torch.Tensor, dropout_param: Mapping[str, Any]) -> torch.Tensor:
    """Inverted dropout, ``torch.nn.Dropout``: drop with probability ``p``, scale by 1 / (1 - p).

    Parameters
    ----------
    x : Tensor of any shape
    dropout_param : dict with ``mode`` ("train" or "eval"), ``p`` (default 0.5) and, in train
        mode, ``seed``: an int (the same mask on every call) or a ``torch.Generator`` (a fresh
        mask on every call). A generator on another device than x (a CPU generator for a CUDA
        model) draws the mask there and moves it.

    Returns
    -------
    out : Tensor of the shape of x
    """
    mode = _mode(dropout_param, "dropout_param")
    p = dropout_param.get("p", 0.5)
    if not 0 <= p <= 1:
        raise ValueError(f"dropout_param['p'] must be in [0, 1], got {p!r}")
    if mode == "eval" or p == 0:
        return x
    seed = dropout_param.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        generator = torch.Generator(device=x.device).manual_seed(seed)
    elif isinstance(seed, torch.Generator):
        generator = seed
    else:
        raise ValueError(
            f"dropout_param['seed'] must be an int or a torch.Generator in train mode, got {seed!r}"
        )
    if p == 1:
        return x * 0
    u = torch.rand(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    keep = (u >= p).to(x.device)
    return x * keep / (1 - p)


# ---------------------------------------------------------------- sandwich layers


def affine_relu_forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``relu(affine(x, w, b))``; shapes as ``affine_forward``."""
    return relu_forward(affine_forward(x, w, b))


_NORMS: dict[str, Callable[..., torch.Tensor]] = {
    "batchnorm": batchnorm_forward,
    "layernorm": layernorm_forward,
}


def affine_norm_relu_forward(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    norm_param: MutableMapping[str, Any] | None,
    norm: str | None = "batchnorm",
) -> torch.Tensor:
    """``relu(norm(affine(x, w, b)))`` with norm "batchnorm", "layernorm" or None (skipped).

    Shapes as ``affine_forward``; gamma, beta of shape (M,) and ``norm_param`` the
    ``bn_param`` or ``ln_param`` of the norm (all three unused when ``norm`` is None).
    """
    if norm is not None and norm not in _NORMS:
        raise ValueError(f"norm must be 'batchnorm', 'layernorm' or None, got {norm!r}")
    a = affine_forward(x, w, b)
    if norm is not None:
        a = _NORMS[norm](a, gamma, beta, norm_param)
    return relu_forward(a)


def conv_relu_forward(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, conv_param: dict[str, Any] | None = None
) -> torch.Tensor:
    """``relu(conv(x, w, b, **conv_param))``; ``conv_param`` holds ``stride`` and ``pad``."""
    return relu_forward(conv_forward(x, w, b, **(conv_param or {})))


def conv_relu_pool_forward(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    conv_param: dict[str, Any] | None = None,
    pool_param: dict[str, Any] | None = None,
) -> torch.Tensor:
    """``max_pool(relu(conv(x, w, b, **conv_param)), **pool_param)``."""
    return max_pool_forward(conv_relu_forward(x, w, b, conv_param), **(pool_param or {}))


# ---------------------------------------------------------------- losses


def _check_scores_labels(scores: torch.Tensor, y: torch.Tensor) -> None:
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape (N, C), got shape {tuple(scores.shape)}")
    N, C = scores.shape
    if tuple(y.shape) != (N,):
        raise ValueError(
            f"y must have shape ({N},) to match scores {tuple(scores.shape)}, got {tuple(y.shape)}"
        )
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        dtype = str(y.dtype).removeprefix("torch.")
        raise ValueError(f"y must hold integer class labels, got dtype {dtype}")
    if N and (y.min() < 0 or y.max() >= C):
        bad = y[(y < 0) | (y >= C)][0].item()
        raise ValueError(f"labels must be in [0, {C - 1}] for {C} classes, got {bad}")


def softmax_loss(
    scores: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Softmax cross-entropy, ``F.cross_entropy``, mean over N.

    Parameters
    ----------
    scores : Tensor of shape (N, C)
    y : Tensor of shape (N,), integer labels in [0, C)
    label_smoothing : float in [0, 1]: the target is ``1 - label_smoothing`` on the true class
        plus ``label_smoothing / C`` on every class

    Returns
    -------
    loss : Tensor of shape ()
    """
    _check_scores_labels(scores, y)
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return F.cross_entropy(scores, y.long(), label_smoothing=label_smoothing)


def svm_loss(scores: torch.Tensor, y: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Multiclass hinge loss ``sum_{j != y} max(0, s_j - s_y + margin)``, mean over N.

    The course's (Weston-Watkins) loss, ``C * F.multi_margin_loss``; written out with a relu so
    that a margin of exactly zero has zero gradient, as in the numpy loss.

    Parameters
    ----------
    scores : Tensor of shape (N, C)
    y : Tensor of shape (N,), integer labels in [0, C)
    margin : float

    Returns
    -------
    loss : Tensor of shape ()
    """
    _check_scores_labels(scores, y)
    y = y.long()
    correct = scores.gather(1, y[:, None])  # (N, 1)
    margins = F.relu(scores - correct + margin)  # (N, C)
    others = torch.ones_like(margins).scatter_(1, y[:, None], 0.0)  # (N, C), 0 on the label
    return (margins * others).sum() / scores.shape[0]


def l2_regularization(
    params_or_array: torch.Tensor | Mapping[str, torch.Tensor], weight_decay: float
) -> torch.Tensor:
    """L2 penalty ``0.5 * weight_decay * sum(w ** 2)``, summed over a mapping's tensors.

    Its gradient ``weight_decay * w`` is what ``torch.optim``'s ``weight_decay`` adds.

    Parameters
    ----------
    params_or_array : Tensor of any shape, or a mapping of names to Tensors
    weight_decay : float, at least 0

    Returns
    -------
    loss : Tensor of shape ()
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be non-negative, got {weight_decay!r}")
    if isinstance(params_or_array, Mapping):
        tensors = list(params_or_array.values())
        if not tensors:
            return torch.zeros(())
        return sum(0.5 * weight_decay * (w * w).sum() for w in tensors)
    w = params_or_array
    return 0.5 * weight_decay * (w * w).sum()
