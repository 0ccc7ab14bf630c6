"""Forward/backward pairs of every layer, readable reference versions.

Each ``*_forward`` returns ``(out, cache)``; the matching ``*_backward(dout, cache)`` returns
the gradients of its array arguments in argument order (``dx, dw, db``; ``dx`` alone for a
one-input layer). Arithmetic runs in the dtype of the inputs: float32 to train, float64 to check.

Convolution and pooling loop over output positions so the maths stays visible;
``fast_layers`` holds im2col versions with the same names and signatures, tested against these.
The sandwich helpers at the end (``affine_relu_*``, ``conv_relu_*``, ``conv_relu_pool_*``,
``affine_norm_relu_*``) call this module's layers; ``fast_layers`` provides its own by the same
names, so a model picks its speed by picking its module.

Where the course and PyTorch differ (batch-norm running statistics, the ``p`` of dropout) these
layers follow PyTorch, so that both backends compute the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import numpy as np

IntPair = int | tuple[int, int]


def _pair(value: Any, name: str, minimum: int) -> tuple[int, int]:
    """Read an int or an ``(h, w)`` pair of ints, each at least ``minimum``."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value)
    ):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return pair


def _check_ndim(a: np.ndarray, ndim: int, name: str, layout: str) -> None:
    if a.ndim != ndim:
        raise ValueError(f"{name} must have shape {layout}, got shape {a.shape}")


def _check_shape(a: np.ndarray, shape: tuple[int, ...], name: str) -> None:
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got shape {a.shape}")


def _mode(param: MutableMapping[str, Any], name: str) -> str:
    mode = param.get("mode")
    if mode not in ("train", "eval"):
        raise ValueError(f"{name}['mode'] must be 'train' or 'eval', got {mode!r}")
    return mode


def _output_size(size: int, kernel: int, stride: int, pad: int, what: str) -> int:
    """Output length along one axis, rounded down as torch does."""
    if kernel > size + 2 * pad:
        raise ValueError(
            f"{what} of size {kernel} is larger than the padded input ({size + 2 * pad})"
        )
    return 1 + (size + 2 * pad - kernel) // stride


def _windows(
    out_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int]
) -> Iterator[tuple[int, int, slice, slice]]:
    """Yield ``(i, j, rows, cols)``: each output position and the input slices it reads."""
    for i in range(out_hw[0]):
        for j in range(out_hw[1]):
            rows = slice(i * stride[0], i * stride[0] + kernel[0])
            cols = slice(j * stride[1], j * stride[1] + kernel[1])
            yield i, j, rows, cols


# ---------------------------------------------------------------- affine, flatten, activations


def affine_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, Any]:
    """Fully-connected layer ``x.reshape(N, D) @ w + b``.

    Parameters
    ----------
    x : ndarray of shape (N, d1, ..., dk), flattened to (N, D) with D = d1 * ... * dk
    w : ndarray of shape (D, M), the course's layout (the transpose of ``nn.Linear.weight``)
    b : ndarray of shape (M,)

    Returns
    -------
    out : ndarray of shape (N, M)
    cache : for ``affine_backward``
    """
    x2 = _affine_input(x, w, b)  # (N, D)
    return x2 @ w + b, (x, w)


def _affine_input(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x flattened to (N, D), after checking that w (D, M) and b (M,) fit it."""
    x2 = x.reshape(x.shape[0], -1)
    _check_ndim(w, 2, "w", "(D, M)")
    if w.shape[0] != x2.shape[1]:
        raise ValueError(f"w has {w.shape[0]} rows but x {x.shape} flattens to {x2.shape[1]}")
    _check_shape(b, (w.shape[1],), "b")
    return x2


def affine_backward(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``affine_forward``: ``dout`` (N, M) → ``dx`` like x, ``dw`` (D, M), ``db``."""
    x, w = cache
    x2 = x.reshape(x.shape[0], -1)  # (N, D)
    return (dout @ w.T).reshape(x.shape), x2.T @ dout, dout.sum(axis=0)


def flatten_forward(x: np.ndarray) -> tuple[np.ndarray, Any]:
    """Flatten ``x`` of shape (N, d1, ..., dk) to (N, d1 * ... * dk)."""
    return x.reshape(x.shape[0], -1), x.shape


def flatten_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """Gradient of ``flatten_forward``: ``dout`` (N, D) back to the input's (N, d1, ..., dk)."""
    return dout.reshape(cache)


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, Any]:
    """``max(x, 0)`` elementwise; x of any shape."""
    return np.maximum(x, 0), x


def relu_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """Gradient of ``relu_forward``: ``dout`` like x → ``dx`` (zero at x == 0, as torch)."""
    return dout * (cache > 0)


def leaky_relu_forward(x: np.ndarray, negative_slope: float = 0.01) -> tuple[np.ndarray, Any]:
    """``x`` where positive, ``negative_slope * x`` elsewhere; x of any shape (torch's default)."""
    return np.where(x > 0, x, negative_slope * x), (x, negative_slope)


def leaky_relu_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """Gradient of ``leaky_relu_forward``: ``dout`` like x → ``dx`` (slope at 0, as torch)."""
    x, negative_slope = cache
    return np.where(x > 0, dout, negative_slope * dout)


def sigmoid_forward(x: np.ndarray) -> tuple[np.ndarray, Any]:
    """Logistic sigmoid elementwise; x of any shape, finite for any finite x."""
    # exp(-log(1 + exp(-x))) never overflows, unlike 1 / (1 + exp(-x)) for x << 0.
    out = np.exp(-np.logaddexp(0, -x))
    return out, out


def sigmoid_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """Gradient of ``sigmoid_forward``: ``dout`` like x → ``dx``."""
    return dout * cache * (1 - cache)


def tanh_forward(x: np.ndarray) -> tuple[np.ndarray, Any]:
    """Hyperbolic tangent elementwise; x of any shape."""
    out = np.tanh(x)
    return out, out


def tanh_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """Gradient of ``tanh_forward``: ``dout`` like x → ``dx``."""
    return dout * (1 - cache**2)


# ---------------------------------------------------------------- convolution and pooling


def conv_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: IntPair = 1, pad: IntPair = 0
) -> tuple[np.ndarray, Any]:
    """2-D convolution (cross-correlation, as ``torch.nn.functional.conv2d``).

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W)
    w : ndarray of shape (F, C, HH, WW)
    b : ndarray of shape (F,)
    stride : int or (int, int), at least 1
    pad : int or (int, int), zeros added on both sides of H and of W

    Returns
    -------
    out : ndarray of shape (N, F, H_out, W_out), with ``H_out = 1 + (H + 2 * pad_h - HH) //
        stride_h`` (rounded down as torch: trailing rows a window cannot reach are unused)
    cache : for ``conv_backward``
    """
    stride, pad = _pair(stride, "stride", 1), _pair(pad, "pad", 0)
    _check_ndim(x, 4, "x", "(N, C, H, W)")
    _check_ndim(w, 4, "w", "(F, C, HH, WW)")
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    if w.shape[1] != C:
        raise ValueError(f"w {w.shape} expects {w.shape[1]} input channels but x {x.shape} has {C}")
    _check_shape(b, (F,), "b")
    out_hw = (
        _output_size(H, HH, stride[0], pad[0], "kernel height"),
        _output_size(W, WW, stride[1], pad[1], "kernel width"),
    )
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))  # (N, C, Hp, Wp)
    out = np.empty((N, F, *out_hw), dtype=np.result_type(x, w, b))
    for i, j, rows, cols in _windows(out_hw, (HH, WW), stride):
        # (N, C, HH, WW) · (F, C, HH, WW) over (C, HH, WW) → (N, F)
        out[:, :, i, j] = np.tensordot(xp[:, :, rows, cols], w, axes=([1, 2, 3], [1, 2, 3])) + b
    return out, (x, w, stride, pad)


def conv_backward(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``conv_forward``: ``dout`` (N, F, H_out, W_out) → ``dx, dw, db``."""
    x, w, stride, pad = cache
    _, _, H, W = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))  # (N, C, Hp, Wp)
    dxp = np.zeros(xp.shape, dtype=np.result_type(dout, w))
    dw = np.zeros(w.shape, dtype=np.result_type(dout, x))
    for i, j, rows, cols in _windows(dout.shape[2:], w.shape[2:], stride):
        d = dout[:, :, i, j]  # (N, F)
        dxp[:, :, rows, cols] += np.tensordot(d, w, axes=(1, 0))  # (N, C, HH, WW)
        dw += np.tensordot(d, xp[:, :, rows, cols], axes=(0, 0))  # (F, C, HH, WW)
    dx = dxp[:, :, pad[0] : pad[0] + H, pad[1] : pad[1] + W]
    return dx, dw, dout.sum(axis=(0, 2, 3))


def _pool_setup(
    x: np.ndarray, pool: IntPair, stride: IntPair
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Validate a pooling call; return the window, stride and output (H_out, W_out)."""
    pool, stride = _pair(pool, "pool", 1), _pair(stride, "stride", 1)
    _check_ndim(x, 4, "x", "(N, C, H, W)")
    out_hw = (
        _output_size(x.shape[2], pool[0], stride[0], 0, "pool height"),
        _output_size(x.shape[3], pool[1], stride[1], 0, "pool width"),
    )
    return pool, stride, out_hw


def max_pool_forward(
    x: np.ndarray, pool: IntPair = 2, stride: IntPair = 2
) -> tuple[np.ndarray, Any]:
    """Max pooling over ``pool`` windows moved by ``stride`` (no padding, sizes rounded down).

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W)
    pool, stride : int or (int, int)

    Returns
    -------
    out : ndarray of shape (N, C, 1 + (H - pool_h) // stride_h, 1 + (W - pool_w) // stride_w)
    cache : for ``max_pool_backward``, which sends each gradient to the first maximum of its
        window (in row-major order), as torch does on ties
    """
    pool, stride, out_hw = _pool_setup(x, pool, stride)
    N, C = x.shape[:2]
    out = np.empty((N, C, *out_hw), dtype=x.dtype)
    argmax = np.empty((N, C, *out_hw), dtype=np.intp)  # flat index inside each window
    for i, j, rows, cols in _windows(out_hw, pool, stride):
        window = x[:, :, rows, cols].reshape(N, C, -1)  # (N, C, pool_h * pool_w)
        argmax[:, :, i, j] = window.argmax(axis=2)
        out[:, :, i, j] = np.take_along_axis(window, argmax[:, :, i, j, None], axis=2)[..., 0]
    return out, (x.shape, argmax, pool, stride)


def max_pool_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """Gradient of ``max_pool_forward``: ``dout`` (N, C, H_out, W_out) → ``dx`` (N, C, H, W)."""
    x_shape, argmax, pool, stride = cache
    N, C = x_shape[:2]
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for i, j, rows, cols in _windows(dout.shape[2:], pool, stride):
        dwindow = np.zeros((N, C, pool[0] * pool[1]), dtype=dout.dtype)
        np.put_along_axis(dwindow, argmax[:, :, i, j, None], dout[:, :, i, j, None], axis=2)
        dx[:, :, rows, cols] += dwindow.reshape(N, C, *pool)
    return dx


def avg_pool_forward(
    x: np.ndarray, pool: IntPair = 2, stride: IntPair = 2
) -> tuple[np.ndarray, Any]:
    """Average pooling; shapes and window rules as ``max_pool_forward``."""
    pool, stride, out_hw = _pool_setup(x, pool, stride)
    out = np.empty((*x.shape[:2], *out_hw), dtype=x.dtype)
    for i, j, rows, cols in _windows(out_hw, pool, stride):
        out[:, :, i, j] = x[:, :, rows, cols].mean(axis=(2, 3))
    return out, (x.shape, pool, stride)


def avg_pool_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """Gradient of ``avg_pool_forward``: ``dout`` (N, C, H_out, W_out) → ``dx`` (N, C, H, W)."""
    x_shape, pool, stride = cache
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for i, j, rows, cols in _windows(dout.shape[2:], pool, stride):
        dx[:, :, rows, cols] += dout[:, :, i, j, None, None] / (pool[0] * pool[1])
    return dx


def global_avg_pool_forward(x: np.ndarray) -> tuple[np.ndarray, Any]:
    """Mean over the spatial axes: x (N, C, H, W) → out (N, C)."""
    _check_ndim(x, 4, "x", "(N, C, H, W)")
    return x.mean(axis=(2, 3)), x.shape


def global_avg_pool_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """Gradient of ``global_avg_pool_forward``: ``dout`` (N, C) → ``dx`` (N, C, H, W)."""
    H, W = cache[2:]
    dx = np.empty(cache, dtype=dout.dtype)
    dx[...] = dout[:, :, None, None] / (H * W)
    return dx


# ---------------------------------------------------------------- normalisation


def _normalize(
    x: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``xhat = (x - mean) / sqrt(var + eps)`` and ``inv_std = 1 / sqrt(var + eps)``."""
    if eps < 0:
        raise ValueError(f"eps must be non-negative, got {eps!r}")
    inv_std = 1 / np.sqrt(var + eps)
    return (x - mean) * inv_std, inv_std


def _normalize_backward(
    dxhat: np.ndarray, xhat: np.ndarray, inv_std: np.ndarray, axis: int | tuple[int, ...]
) -> np.ndarray:
    """Gradient through ``xhat`` when mean and variance are the statistics of x over ``axis``."""
    mean_dxhat = dxhat.mean(axis=axis, keepdims=True)
    mean_dxhat_xhat = (dxhat * xhat).mean(axis=axis, keepdims=True)
    return inv_std * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)


def batchnorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, bn_param: MutableMapping[str, Any]
) -> tuple[np.ndarray, Any]:
    """Batch normalisation over the batch axis, with PyTorch's running statistics.

    In train mode x is normalised with the batch mean and the *biased* batch variance, and
    ``bn_param``'s running statistics are replaced by
    ``running = (1 - momentum) * running + momentum * batch_statistic``, where the variance
    statistic is the *unbiased* one (divided by N - 1). This is ``torch.nn.BatchNorm1d``: the
    course instead weighs the old value by ``momentum`` and keeps the biased variance, so its
    ``momentum=0.9`` is our ``0.1``. Eval mode normalises with the running statistics.

    Parameters
    ----------
    x : ndarray of shape (N, D)
    gamma, beta : ndarray of shape (D,)
    bn_param : dict with ``mode`` ("train" or "eval"), optional ``eps`` (1e-5), ``momentum``
        (0.1, the weight of the new batch) and ``running_mean``, ``running_var`` (ndarray of
        shape (D,); zeros and ones, as torch, when absent). Updated in place in train mode.

    Returns
    -------
    out : ndarray of shape (N, D)
    cache : for ``batchnorm_backward``
    """
    mode = _mode(bn_param, "bn_param")
    _check_ndim(x, 2, "x", "(N, D)")
    N, D = x.shape
    _check_shape(gamma, (D,), "gamma")
    _check_shape(beta, (D,), "beta")
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.1)
    if not 0 <= momentum <= 1:
        raise ValueError(f"bn_param['momentum'] must be in [0, 1], got {momentum!r}")
    running_mean = bn_param.get("running_mean")
    running_var = bn_param.get("running_var")
    running_mean = np.zeros(D, dtype=x.dtype) if running_mean is None else running_mean
    running_var = np.ones(D, dtype=x.dtype) if running_var is None else running_var
    _check_shape(running_mean, (D,), "bn_param['running_mean']")
    _check_shape(running_var, (D,), "bn_param['running_var']")

    if mode == "train":
        if N < 2:
            raise ValueError(f"batch norm in train mode needs more than 1 sample, got x {x.shape}")
        mean, var = x.mean(axis=0), x.var(axis=0)
        xhat, inv_std = _normalize(x, mean, var, eps)
        bn_param["running_mean"] = (1 - momentum) * running_mean + momentum * mean
        bn_param["running_var"] = (1 - momentum) * running_var + momentum * var * (N / (N - 1))
    else:
        xhat, inv_std = _normalize(x, running_mean, running_var, eps)
    return gamma * xhat + beta, (mode, xhat, inv_std, gamma)


def batchnorm_backward(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``batchnorm_forward``: ``dout`` (N, D) → ``dx`` (N, D), ``dgamma, dbeta`` (D,).

    In eval mode the statistics are constants, so ``dx`` is ``dout * gamma * inv_std``.
    """
    mode, xhat, inv_std, gamma = cache
    dxhat = dout * gamma
    if mode == "train":
        dx = _normalize_backward(dxhat, xhat, inv_std, axis=0)
    else:
        dx = dxhat * inv_std
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def spatial_batchnorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, bn_param: MutableMapping[str, Any]
) -> tuple[np.ndarray, Any]:
    """Batch normalisation per channel over (N, H, W), as ``torch.nn.BatchNorm2d``.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W)
    gamma, beta : ndarray of shape (C,)
    bn_param : as ``batchnorm_forward``, running statistics of shape (C,); the unbiased
        variance divides by N * H * W - 1.

    Returns
    -------
    out : ndarray of shape (N, C, H, W)
    cache : for ``spatial_batchnorm_backward``
    """
    _check_ndim(x, 4, "x", "(N, C, H, W)")
    N, C, H, W = x.shape
    x2 = x.transpose(0, 2, 3, 1).reshape(-1, C)  # (N * H * W, C)
    out2, cache = batchnorm_forward(x2, gamma, beta, bn_param)
    return out2.reshape(N, H, W, C).transpose(0, 3, 1, 2), cache  # (N, C, H, W)


def spatial_batchnorm_backward(
    dout: np.ndarray, cache: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``spatial_batchnorm_forward``: ``dx`` (N, C, H, W), ``dgamma, dbeta`` (C,)."""
    N, C, H, W = dout.shape
    dout2 = dout.transpose(0, 2, 3, 1).reshape(-1, C)  # (N * H * W, C)
    dx2, dgamma, dbeta = batchnorm_backward(dout2, cache)
    return dx2.reshape(N, H, W, C).transpose(0, 3, 1, 2), dgamma, dbeta


def layernorm_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    ln_param: MutableMapping[str, Any] | None = None,
) -> tuple[np.ndarray, Any]:
    """Layer normalisation: each sample over all its features, as ``torch.nn.LayerNorm``.

    Parameters
    ----------
    x : ndarray of shape (N, D) (or (N, d1, ..., dk), normalised over d1..dk)
    gamma, beta : ndarray of shape x.shape[1:], per-feature scale and shift
    ln_param : dict with optional ``eps`` (1e-5); the same in train and eval.

    Returns
    -------
    out : ndarray of the shape of x
    cache : for ``layernorm_backward``
    """
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, D), got shape {x.shape}")
    eps = (ln_param or {}).get("eps", 1e-5)
    _check_shape(gamma, x.shape[1:], "gamma")
    _check_shape(beta, x.shape[1:], "beta")
    x2 = x.reshape(x.shape[0], -1)  # (N, D)
    xhat, inv_std = _normalize(
        x2, x2.mean(axis=1, keepdims=True), x2.var(axis=1, keepdims=True), eps
    )
    xhat = xhat.reshape(x.shape)
    return gamma * xhat + beta, (xhat, inv_std, gamma)


def layernorm_backward(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``layernorm_forward``: ``dx`` like x, ``dgamma, dbeta`` like gamma."""
    xhat, inv_std, gamma = cache
    N = dout.shape[0]
    dxhat = (dout * gamma).reshape(N, -1)  # (N, D)
    dx = _normalize_backward(dxhat, xhat.reshape(N, -1), inv_std, axis=1)
    return dx.reshape(dout.shape), (dout * xhat).sum(axis=0), dout.sum(axis=0)


def spatial_groupnorm_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    G: int,
    gn_param: MutableMapping[str, Any] | None = None,
) -> tuple[np.ndarray, Any]:
    """Group normalisation, as ``torch.nn.GroupNorm(G, C)``.

    Each sample's channels are split into G groups of C // G consecutive channels, and each
    group is normalised over its channels and positions; then a per-channel scale and shift.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W)
    gamma, beta : ndarray of shape (C,)
    G : number of groups, a divisor of C
    gn_param : dict with optional ``eps`` (1e-5); the same in train and eval.

    Returns
    -------
    out : ndarray of shape (N, C, H, W)
    cache : for ``spatial_groupnorm_backward``
    """
    _check_ndim(x, 4, "x", "(N, C, H, W)")
    N, C = x.shape[:2]
    if not isinstance(G, int | np.integer) or G < 1 or C % G:
        raise ValueError(f"G must be a positive divisor of the {C} channels, got {G!r}")
    _check_shape(gamma, (C,), "gamma")
    _check_shape(beta, (C,), "beta")
    eps = (gn_param or {}).get("eps", 1e-5)
    xg = x.reshape(N, G, -1)  # (N, G, C // G * H * W)
    xhat, inv_std = _normalize(
        xg, xg.mean(axis=2, keepdims=True), xg.var(axis=2, keepdims=True), eps
    )
    xhat = xhat.reshape(x.shape)  # (N, C, H, W)
    out = gamma[:, None, None] * xhat + beta[:, None, None]
    return out, (G, xhat, inv_std, gamma)


def spatial_groupnorm_backward(
    dout: np.ndarray, cache: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``spatial_groupnorm_forward``: ``dx`` (N, C, H, W), ``dgamma, dbeta`` (C,)."""
    G, xhat, inv_std, gamma = cache
    N = dout.shape[0]
    dxhat = (dout * gamma[:, None, None]).reshape(N, G, -1)  # (N, G, C // G * H * W)
    dx = _normalize_backward(dxhat, xhat.reshape(N, G, -1), inv_std, axis=2)
    dgamma = (dout * xhat).sum(axis=(0, 2, 3))
    return dx.reshape(dout.shape), dgamma, dout.sum(axis=(0, 2, 3))


# ---------------------------------------------------------------- dropout


def dropout_forward(
    x: np.ndarray, dropout_param: MutableMapping[str, Any]
) -> tuple[np.ndarray, Any]:
    """Inverted dropout, as ``torch.nn.Dropout``.

    In train mode each unit is zeroed with probability ``p`` and the survivors are scaled by
    ``1 / (1 - p)``, so eval mode is the identity. ``p`` is the probability of *dropping* (the
    course's ``p`` is the probability of keeping).

    Parameters
    ----------
    x : ndarray of any shape
    dropout_param : dict with ``mode`` ("train" or "eval"), ``p`` (default 0.5) and, in train
        mode, ``seed``: an int (the same mask on every call, as gradient checks need) or a
        ``numpy.random.Generator`` (a fresh mask on every call, as training needs).

    Returns
    -------
    out : ndarray of the shape of x
    cache : for ``dropout_backward``
    """
    mode = _mode(dropout_param, "dropout_param")
    p = dropout_param.get("p", 0.5)
    if not 0 <= p <= 1:
        raise ValueError(f"dropout_param['p'] must be in [0, 1], got {p!r}")
    if mode == "eval" or p == 0:
        return x, None
    seed = dropout_param.get("seed")
    if not isinstance(seed, int | np.integer | np.random.Generator) or isinstance(seed, bool):
        raise ValueError(
            f"dropout_param['seed'] must be an int or a numpy.random.Generator in train mode, "
            f"got {seed!r}"
        )
    keep = np.random.default_rng(seed).random(x.shape) >= p
    # p == 1 drops everything (torch returns zeros) rather than dividing by zero.
    mask = keep.astype(x.dtype) / (1 - p) if p < 1 else np.zeros(x.shape, dtype=x.dtype)
    return x * mask, mask


def dropout_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """Gradient of ``dropout_forward``: ``dout`` like x times the same mask (eval: identity)."""
    return dout if cache is None else dout * cache


# ---------------------------------------------------------------- sandwich layers


_NORMS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "batchnorm": (batchnorm_forward, batchnorm_backward),
    "layernorm": (layernorm_forward, layernorm_backward),
}


def _affine_sandwiches(
    affine_fwd: Callable[..., Any],
    affine_bwd: Callable[..., Any],
    norms: dict[str, tuple[Callable[..., Any], Callable[..., Any]]],
) -> tuple[Callable[..., Any], ...]:
    """``affine_relu_*`` and ``affine_norm_relu_*`` over the given affine layer and norms.

    This module builds them on its own layers; ``fast_layers`` on its threaded affine layer
    and batch norm. Returns the four functions in the order of their names below.
    """

    def affine_relu_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, Any]:
        """``relu(affine(x, w, b))``; shapes as ``affine_forward``."""
        a, fc_cache = affine_fwd(x, w, b)
        out, relu_cache = relu_forward(a)
        return out, (fc_cache, relu_cache)

    def affine_relu_backward(
        dout: np.ndarray, cache: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Gradients of ``affine_relu_forward``: ``dx, dw, db``."""
        fc_cache, relu_cache = cache
        return affine_bwd(relu_backward(dout, relu_cache), fc_cache)

    def affine_norm_relu_forward(
        x: np.ndarray,
        w: np.ndarray,
        b: np.ndarray,
        gamma: np.ndarray | None,
        beta: np.ndarray | None,
        norm_param: MutableMapping[str, Any] | None,
        norm: str | None = "batchnorm",
    ) -> tuple[np.ndarray, Any]:
        """``relu(norm(affine(x, w, b)))`` with norm "batchnorm", "layernorm" or None (skipped).

        Shapes as ``affine_forward``; gamma, beta of shape (M,) and ``norm_param`` the
        ``bn_param`` or ``ln_param`` of the norm (all three unused when ``norm`` is None).
        """
        if norm is not None and norm not in norms:
            raise ValueError(f"norm must be 'batchnorm', 'layernorm' or None, got {norm!r}")
        a, fc_cache = affine_fwd(x, w, b)
        norm_cache = None
        if norm is not None:
            a, norm_cache = norms[norm][0](a, gamma, beta, norm_param)
        out, relu_cache = relu_forward(a)
        return out, (norm, fc_cache, norm_cache, relu_cache)

    def affine_norm_relu_backward(dout: np.ndarray, cache: Any) -> tuple[Any, ...]:
        """Gradients of ``affine_norm_relu_forward``: ``dx, dw, db, dgamma, dbeta``.

        ``dgamma`` and ``dbeta`` are None when the forward pass had no norm.
        """
        norm, fc_cache, norm_cache, relu_cache = cache
        da = relu_backward(dout, relu_cache)
        dgamma = dbeta = None
        if norm is not None:
            da, dgamma, dbeta = norms[norm][1](da, norm_cache)
        dx, dw, db = affine_bwd(da, fc_cache)
        return dx, dw, db, dgamma, dbeta

    return (
        affine_relu_forward,
        affine_relu_backward,
        affine_norm_relu_forward,
        affine_norm_relu_backward,
    )


(
    affine_relu_forward,
    affine_relu_backward,
    affine_norm_relu_forward,
    affine_norm_relu_backward,
) = _affine_sandwiches(affine_forward, affine_backward, _NORMS)


def conv_relu_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, conv_param: dict[str, Any] | None = None
) -> tuple[np.ndarray, Any]:
    """``relu(conv(x, w, b, **conv_param))``; ``conv_param`` holds ``stride`` and ``pad``."""
    a, conv_cache = conv_forward(x, w, b, **(conv_param or {}))
    out, relu_cache = relu_forward(a)
    return out, (conv_cache, relu_cache)


def conv_relu_backward(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``conv_relu_forward``: ``dx, dw, db``."""
    conv_cache, relu_cache = cache
    return conv_backward(relu_backward(dout, relu_cache), conv_cache)


def conv_relu_pool_forward(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    conv_param: dict[str, Any] | None = None,
    pool_param: dict[str, Any] | None = None,
) -> tuple[np.ndarray, Any]:
    """``max_pool(relu(conv(x, w, b, **conv_param)), **pool_param)``.

    ``conv_param`` holds ``stride`` and ``pad``, ``pool_param`` holds ``pool`` and ``stride``
    (defaults of ``conv_forward`` and ``max_pool_forward`` when absent).
    """
    a, conv_relu_cache = conv_relu_forward(x, w, b, conv_param)
    out, pool_cache = max_pool_forward(a, **(pool_param or {}))
    return out, (conv_relu_cache, pool_cache)


def conv_relu_pool_backward(
    dout: np.ndarray, cache: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``conv_relu_pool_forward``: ``dx, dw, db``."""
    conv_relu_cache, pool_cache = cache
    return conv_relu_backward(max_pool_backward(dout, pool_cache), conv_relu_cache)
