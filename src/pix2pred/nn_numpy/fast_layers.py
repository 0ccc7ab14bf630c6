"""Fast versions of the convolution, pooling and batch-norm layers: im2col + BLAS, float32.

Same names, arguments, shapes, caches-in/gradients-out contract and error messages as
``layers``, which keeps the readable loop versions; the tests hold the two equal. Everything
else ``layers`` defines (activations, dropout, layer norm, ...) is re-exported unchanged, so a
model picks its speed by picking its module.

How the speed is won (details in ``im2col``):

- Outputs are ``(N, C, H, W)`` arrays stored channels-last (``(N, H, W, C)`` in memory, as
  torch's ``channels_last``); inputs of any memory order are accepted. Elementwise NumPy
  (``np.maximum(x, 0)``, ``dout * mask``) keeps that order, so a conv → relu → pool → conv chain
  never transposes.
- A convolution is one im2col copy (a strided window view, no Python loop over pixels) and
  one GEMM forward; backward reuses the cached column matrix for ``dw`` (one GEMM; the bias
  gradient comes out of it through the column of ones) and computes ``dx`` in cache-sized
  chunks of the batch: a GEMM, then ``KH * ceil(KW / stride)`` strided adds.
- Pooling reads ``pool_h * pool_w`` strided views (a reshape when windows tile the input) and
  batch norm makes two passes over memory, each over cache-sized chunks of the batch.
- Large results go into reused ``im2col.WORKSPACE`` buffers; a buffer is reused only once no
  array (or view) of it is held, so keeping an output or a cache is always safe.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import numpy as np

from pix2pred.nn_numpy import im2col as I
from pix2pred.nn_numpy.layers import (
    IntPair,
    _check_ndim,
    _check_shape,
    _mode,
    _output_size,
    _pair,
    _pool_setup,
    affine_backward,
    affine_forward,
    affine_norm_relu_backward,
    affine_norm_relu_forward,
    affine_relu_backward,
    affine_relu_forward,
    dropout_backward,
    dropout_forward,
    flatten_backward,
    flatten_forward,
    global_avg_pool_backward,
    global_avg_pool_forward,
    layernorm_backward,
    layernorm_forward,
    leaky_relu_backward,
    leaky_relu_forward,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    spatial_groupnorm_backward,
    spatial_groupnorm_forward,
    tanh_backward,
    tanh_forward,
)

__all__ = [
    "affine_backward",
    "affine_forward",
    "affine_norm_relu_backward",
    "affine_norm_relu_forward",
    "affine_relu_backward",
    "affine_relu_forward",
    "avg_pool_backward",
    "avg_pool_forward",
    "batchnorm_backward",
    "batchnorm_forward",
    "conv_backward",
    "conv_forward",
    "conv_relu_backward",
    "conv_relu_forward",
    "conv_relu_pool_backward",
    "conv_relu_pool_forward",
    "dropout_backward",
    "dropout_forward",
    "flatten_backward",
    "flatten_forward",
    "global_avg_pool_backward",
    "global_avg_pool_forward",
    "layernorm_backward",
    "layernorm_forward",
    "leaky_relu_backward",
    "leaky_relu_forward",
    "max_pool_backward",
    "max_pool_forward",
    "relu_backward",
    "relu_forward",
    "sigmoid_backward",
    "sigmoid_forward",
    "spatial_batchnorm_backward",
    "spatial_batchnorm_forward",
    "spatial_groupnorm_backward",
    "spatial_groupnorm_forward",
    "tanh_backward",
    "tanh_forward",
]


# ---------------------------------------------------------------- convolution


def conv_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: IntPair = 1, pad: IntPair = 0
) -> tuple[np.ndarray, Any]:
    """2-D convolution (cross-correlation, as ``torch.nn.functional.conv2d``) by im2col + GEMM.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), any memory order
    w : ndarray of shape (F, C, HH, WW)
    b : ndarray of shape (F,)
    stride : int or (int, int), at least 1
    pad : int or (int, int), zeros added on both sides of H and of W

    Returns
    -------
    out : ndarray of shape (N, F, H_out, W_out), stored channels-last, with ``H_out = 1 +
        (H + 2 * pad_h - HH) // stride_h`` (rounded down as torch)
    cache : for ``conv_backward``; holds the column matrix, so backward does not rebuild it
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
    dtype = np.result_type(x, w, b)
    cols = I.im2col(I.to_nhwc(x, pad, dtype), (HH, WW), stride, out_hw)  # (M, K + 1)
    w_cols = np.empty((cols.shape[1], F), dtype)  # (K + 1, F): kernel in (HH, WW, C) order, bias
    w_cols[:-1] = w.transpose(2, 3, 1, 0).reshape(-1, F)
    w_cols[-1] = b
    out = I.empty((cols.shape[0], F), dtype)  # (N * H_out * W_out, F)
    np.matmul(cols, w_cols, out=out)
    return I.nchw(out.reshape(N, *out_hw, F)), (cols, w, x.shape, stride, pad)


def conv_backward(
    dout: np.ndarray, cache: Any, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of ``conv_forward``: ``dout`` (N, F, H_out, W_out) → ``dx, dw, db``.

    ``dx`` (N, C, H, W, stored channels-last) is None when ``need_dx`` is False, which a
    network's first layer can ask for to skip a third of the work.
    """
    cols, w, x_shape, stride, pad = cache
    N, C, H, W = x_shape
    F, _, HH, WW = w.shape
    out_hw = dout.shape[2:]
    dtype = cols.dtype
    dout2 = I.to_nhwc(dout, dtype=dtype).reshape(-1, F)  # (N * H_out * W_out, F)
    dw_cols = cols.T @ dout2  # (K + 1, F); the row of the ones column is db
    dw = np.ascontiguousarray(dw_cols[:-1].reshape(HH, WW, C, F).transpose(3, 2, 0, 1))
    db = dw_cols[-1].copy()
    if not need_dx:
        return None, dw, db

    w_rows = np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(F, -1), dtype=dtype)  # (F, K)
    ph, pw = pad
    dx = I.empty((N, H, W, C), dtype)
    rows = out_hw[0] * out_hw[1]
    dcols = dxp = None
    for n0, n1 in I.chunks(N, rows, w_rows.nbytes // F):
        n = n1 - n0
        if dcols is None or len(dcols) != n * rows:
            dcols = np.empty((n * rows, w_rows.shape[1]), dtype)  # (n * H_out * W_out, K)
            dxp = np.empty((n, H + 2 * ph, W + 2 * pw, C), dtype) if ph or pw else None
        np.matmul(dout2[n0 * rows : n1 * rows], w_rows, out=dcols)
        target = dx[n0:n1] if dxp is None else dxp
        target.fill(0)
        I.col2im_add(dcols, target, (HH, WW), stride, out_hw)
        if dxp is not None:
            dx[n0:n1] = dxp[:, ph : ph + H, pw : pw + W]
    return I.nchw(dx), dw, db


# ---------------------------------------------------------------- pooling


def _window_offsets(
    a: np.ndarray, pool: tuple[int, int], stride: tuple[int, int], out_hw: tuple[int, int]
) -> list[np.ndarray]:
    """The (N, C, H_out, W_out) view of each window offset of a (N, C, H, W), row-major.

    ``views[p * pool_w + q][n, c, i, j] = a[n, c, i * stride_h + p, j * stride_w + q]``. When
    the windows tile the input (pool == stride) the views come from one reshape
    ``(N, C, H_out, pool_h, W_out, pool_w)``; otherwise from strided slices.
    """
    (ph, pw), (sh, sw), (Ho, Wo) = pool, stride, out_hw
    if pool == stride:
        tiles = a[:, :, : Ho * ph, : Wo * pw].reshape(*a.shape[:2], Ho, ph, Wo, pw)
        return [tiles[:, :, :, p, :, q] for p in range(ph) for q in range(pw)]
    return [
        a[:, :, p : p + sh * (Ho - 1) + 1 : sh, q : q + sw * (Wo - 1) + 1 : sw]
        for p in range(ph)
        for q in range(pw)
    ]


def _pool_dx(
    x: np.ndarray, pool: tuple[int, int], stride: tuple[int, int], out_hw: tuple[int, int]
):
    """An array like x for the pooling gradient, and whether its offset views must be added.

    When windows tile the input, each entry is written once, so the views are assigned and
    only the rows and columns no window reaches are zeroed; otherwise everything starts at 0.
    """
    dx = I.empty_like_layout(x, x.shape)
    (ph, pw), (Ho, Wo) = pool, out_hw
    if pool != stride:
        dx.fill(0)
        return dx, True
    dx[:, :, Ho * ph :] = 0
    dx[:, :, :, Wo * pw :] = 0
    return dx, False


def max_pool_forward(
    x: np.ndarray, pool: IntPair = 2, stride: IntPair = 2
) -> tuple[np.ndarray, Any]:
    """Max pooling over ``pool`` windows moved by ``stride`` (no padding, sizes rounded down).

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), any memory order (the output keeps it)
    pool, stride : int or (int, int)

    Returns
    -------
    out : ndarray of shape (N, C, 1 + (H - pool_h) // stride_h, 1 + (W - pool_w) // stride_w)
    cache : for ``max_pool_backward``, which sends each gradient to the first maximum of its
        window (in row-major order), as torch does on ties
    """
    pool, stride, out_hw = _pool_setup(x, pool, stride)
    views = _window_offsets(x, pool, stride, out_hw)
    out = I.empty_like_layout(x, (*x.shape[:2], *out_hw))
    if len(views) == 1:
        np.copyto(out, views[0])
    else:
        np.maximum(views[0], views[1], out=out)
        for view in views[2:]:
            np.maximum(out, view, out=out)
    return out, (x, out, pool, stride)


def max_pool_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """Gradient of ``max_pool_forward``: ``dout`` (N, C, H_out, W_out) → ``dx`` (N, C, H, W).

    Each gradient goes to the first entry of its window equal to the maximum; in a window
    holding NaN (whose maximum is NaN) to its last NaN, as torch's CPU kernel does.
    """
    x, out, pool, stride = cache
    out_hw = out.shape[2:]
    dx, add = _pool_dx(x, pool, stride, out_hw)
    pairs = list(
        zip(
            _window_offsets(x, pool, stride, out_hw),
            _window_offsets(dx, pool, stride, out_hw),
            strict=True,
        )
    )
    taken = None  # windows whose maximum an earlier offset already claimed
    for x_view, dx_view in pairs:
        hit = x_view == out
        if taken is None:
            taken = hit.copy()
        else:
            np.greater(hit, taken, out=hit)  # hit and not taken
            taken |= hit
        if add:
            dx_view += np.multiply(dout, hit)
        else:
            np.multiply(dout, hit, out=dx_view)
    if out.dtype.kind == "f" and np.isnan(out).any():
        taken = None
        for x_view, dx_view in reversed(pairs):
            hit = np.isnan(x_view)
            if taken is not None:
                np.greater(hit, taken, out=hit)
                taken |= hit
            else:
                taken = hit.copy()
            dx_view += np.multiply(dout, hit)
    return dx


def avg_pool_forward(
    x: np.ndarray, pool: IntPair = 2, stride: IntPair = 2
) -> tuple[np.ndarray, Any]:
    """Average pooling; shapes and window rules as ``max_pool_forward``."""
    pool, stride, out_hw = _pool_setup(x, pool, stride)
    views = _window_offsets(x, pool, stride, out_hw)
    out = I.empty_like_layout(x, (*x.shape[:2], *out_hw))
    np.copyto(out, views[0])
    for view in views[1:]:
        out += view
    out *= x.dtype.type(1 / len(views))
    return out, (x, pool, stride)


def avg_pool_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """Gradient of ``avg_pool_forward``: ``dout`` (N, C, H_out, W_out) → ``dx`` (N, C, H, W)."""
    x, pool, stride = cache
    out_hw = dout.shape[2:]
    dx, add = _pool_dx(x, pool, stride, out_hw)
    share = dout * dout.dtype.type(1 / (pool[0] * pool[1]))
    for dx_view in _window_offsets(dx, pool, stride, out_hw):
        if add:
            dx_view += share
        else:
            np.copyto(dx_view, share)
    return dx


# ---------------------------------------------------------------- batch normalisation


def _chunk_slices(x: np.ndarray) -> list[slice]:
    """Slices of the batch axis, each about ``I.CHUNK_BYTES`` of x: the unit of every pass."""
    per_item = x[:1].nbytes if len(x) else 1
    return [slice(a, b) for a, b in I.chunks(len(x), 1, per_item)]


def _bn_statistics(x: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and biased variance of x over ``axes``, in one pass over memory.

    Each chunk's mean and sum of squared deviations come from the chunk while it is in cache;
    the chunks are merged in float64 (Chan et al.), which avoids both a second pass and the
    cancellation of ``E[x**2] - E[x]**2``.
    """
    shape = [1 if i in axes else s for i, s in enumerate(x.shape)]
    count = 0
    mean = m2 = np.zeros(x.shape[1], dtype=np.float64)
    tmp = None
    for s in _chunk_slices(x):
        xc = x[s]
        k = xc.size // x.shape[1]
        chunk_mean = xc.mean(axis=axes, keepdims=True)
        if tmp is None or len(tmp) != len(xc):
            tmp = np.empty_like(xc)
        np.subtract(xc, chunk_mean, out=tmp)
        np.square(tmp, out=tmp)
        chunk_m2 = tmp.sum(axis=axes, dtype=np.float64)
        chunk_mean = chunk_mean.reshape(-1).astype(np.float64)
        delta = chunk_mean - mean
        total = count + k
        mean = mean + delta * (k / total)
        m2 = m2 + chunk_m2 + delta**2 * (count * k / total)
        count = total
    return mean.reshape(shape), (m2 / count).reshape(shape)


def _bn_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    bn_param: MutableMapping[str, Any],
    axes: tuple[int, ...],
) -> tuple[np.ndarray, Any]:
    """Batch norm of x over ``axes`` (all but axis 1), per entry of axis 1; see the callers."""
    mode = _mode(bn_param, "bn_param")
    D = x.shape[1]
    _check_shape(gamma, (D,), "gamma")
    _check_shape(beta, (D,), "beta")
    eps = bn_param.get("eps", 1e-5)
    if eps < 0:
        raise ValueError(f"eps must be non-negative, got {eps!r}")
    momentum = bn_param.get("momentum", 0.1)
    if not 0 <= momentum <= 1:
        raise ValueError(f"bn_param['momentum'] must be in [0, 1], got {momentum!r}")
    running_mean = bn_param.get("running_mean")
    running_var = bn_param.get("running_var")
    running_mean = np.zeros(D, dtype=x.dtype) if running_mean is None else running_mean
    running_var = np.ones(D, dtype=x.dtype) if running_var is None else running_var
    _check_shape(running_mean, (D,), "bn_param['running_mean']")
    _check_shape(running_var, (D,), "bn_param['running_var']")
    dtype = np.result_type(x, gamma, beta)
    shape = [1 if i in axes else s for i, s in enumerate(x.shape)]  # broadcasts along axis 1

    if mode == "train":
        count = x.size // D
        if count < 2:
            raise ValueError(f"batch norm in train mode needs more than 1 sample, got x {x.shape}")
        mean, var = _bn_statistics(x, axes)
        bn_param["running_mean"] = ((1 - momentum) * running_mean + momentum * mean.ravel()).astype(
            dtype
        )
        bn_param["running_var"] = (
            (1 - momentum) * running_var + momentum * var.ravel() * (count / (count - 1))
        ).astype(dtype)
    else:
        mean = np.asarray(running_mean, dtype=np.float64).reshape(shape)
        var = np.asarray(running_var, dtype=np.float64).reshape(shape)
    inv_std = 1 / np.sqrt(var + eps)
    scale = (gamma.reshape(shape) * inv_std).astype(dtype)
    shift = (beta.reshape(shape) - mean * scale).astype(dtype)
    out = I.empty_like_layout(x, x.shape) if x.ndim == 4 else I.empty(x.shape, dtype)
    for s in _chunk_slices(x):
        np.multiply(x[s], scale, out=out[s])
        out[s] += shift
    cache = (mode, x, mean.astype(dtype), inv_std.astype(dtype), gamma.reshape(shape), axes)
    return out, cache


def _bn_backward(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``_bn_forward``: two passes over chunks of (x, dout), none over xhat.

    With ``xhat = (x - mean) * inv_std`` and m values per channel, train mode gives
    ``dx = gamma * inv_std / m * (m * dout - sum(dout) - xhat * sum(dout * xhat))``.
    """
    mode, x, mean, inv_std, gamma, axes = cache
    dtype = x.dtype
    dgamma = np.zeros(x.shape[1])
    dbeta = np.zeros(x.shape[1])
    tmp = None
    slices = _chunk_slices(x)
    for s in slices:
        xc, dc = x[s], dout[s]
        if tmp is None or len(tmp) != len(xc):
            tmp = np.empty_like(xc)
        np.subtract(xc, mean, out=tmp)
        tmp *= inv_std  # xhat
        tmp *= dc
        dgamma += tmp.sum(axis=axes, dtype=np.float64)
        dbeta += dc.sum(axis=axes, dtype=np.float64)
    shape = mean.shape
    a = (gamma * inv_std).astype(dtype)  # d out / d x with the statistics held fixed
    dx = I.empty_like_layout(x, x.shape) if x.ndim == 4 else I.empty(x.shape, dtype)
    if mode == "train":
        m = x.size // x.shape[1]
        # dx = a * dout - a / m * dbeta - a * inv_std / m * dgamma * (x - mean)
        b = (-a * inv_std * dgamma.reshape(shape) / m).astype(dtype)
        c = (-a * dbeta.reshape(shape) / m).astype(dtype)
        for s in slices:
            np.subtract(x[s], mean, out=tmp[: s.stop - s.start])
            t = tmp[: s.stop - s.start]
            t *= b
            t += c
            np.multiply(dout[s], a, out=dx[s])
            dx[s] += t
    else:
        for s in slices:
            np.multiply(dout[s], a, out=dx[s])
    return dx, dgamma.astype(dtype), dbeta.astype(dtype)


def batchnorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, bn_param: MutableMapping[str, Any]
) -> tuple[np.ndarray, Any]:
    """Batch normalisation over the batch axis, with PyTorch's running statistics.

    Train mode normalises with the batch mean and *biased* variance and replaces
    ``bn_param``'s running statistics by ``(1 - momentum) * running + momentum * batch``,
    with the *unbiased* variance (``torch.nn.BatchNorm1d``); eval mode uses the running ones.

    Parameters
    ----------
    x : ndarray of shape (N, D)
    gamma, beta : ndarray of shape (D,)
    bn_param : dict with ``mode`` ("train" or "eval"), optional ``eps`` (1e-5), ``momentum``
        (0.1, the weight of the new batch) and ``running_mean``, ``running_var`` (ndarray of
        shape (D,); zeros and ones, as torch, when absent). Updated in train mode.

    Returns
    -------
    out : ndarray of shape (N, D)
    cache : for ``batchnorm_backward``
    """
    _check_ndim(x, 2, "x", "(N, D)")
    return _bn_forward(x, gamma, beta, bn_param, (0,))


def batchnorm_backward(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``batchnorm_forward``: ``dout`` (N, D) → ``dx`` (N, D), ``dgamma, dbeta``."""
    return _bn_backward(dout, cache)


def spatial_batchnorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, bn_param: MutableMapping[str, Any]
) -> tuple[np.ndarray, Any]:
    """Batch normalisation per channel over (N, H, W), as ``torch.nn.BatchNorm2d``.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), any memory order (the output keeps it)
    gamma, beta : ndarray of shape (C,)
    bn_param : as ``batchnorm_forward``, running statistics of shape (C,); the unbiased
        variance divides by N * H * W - 1.

    Returns
    -------
    out : ndarray of shape (N, C, H, W)
    cache : for ``spatial_batchnorm_backward``
    """
    _check_ndim(x, 4, "x", "(N, C, H, W)")
    return _bn_forward(x, gamma, beta, bn_param, (0, 2, 3))


def spatial_batchnorm_backward(
    dout: np.ndarray, cache: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``spatial_batchnorm_forward``: ``dx`` (N, C, H, W), ``dgamma, dbeta`` (C,)."""
    return _bn_backward(dout, cache)


# ---------------------------------------------------------------- sandwich layers


def conv_relu_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, conv_param: dict[str, Any] | None = None
) -> tuple[np.ndarray, Any]:
    """``relu(conv(x, w, b, **conv_param))``; ``conv_param`` holds ``stride`` and ``pad``.

    The relu runs in place on the convolution's fresh output, which then serves as the
    relu's cache (``out > 0`` is ``a > 0``).
    """
    out, conv_cache = conv_forward(x, w, b, **(conv_param or {}))
    np.maximum(out, 0, out=out)
    return out, (conv_cache, out)


def conv_relu_backward(
    dout: np.ndarray, cache: Any, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of ``conv_relu_forward``: ``dx, dw, db`` (``dx`` None unless ``need_dx``)."""
    conv_cache, out = cache
    da = I.empty_like_layout(out, out.shape)
    np.multiply(dout, out > 0, out=da)
    return conv_backward(da, conv_cache, need_dx=need_dx)


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
    dout: np.ndarray, cache: Any, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of ``conv_relu_pool_forward``: ``dx, dw, db`` (``dx`` None unless ``need_dx``)."""
    conv_relu_cache, pool_cache = cache
    return conv_relu_backward(max_pool_backward(dout, pool_cache), conv_relu_cache, need_dx)
