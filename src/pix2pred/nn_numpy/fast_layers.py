"""Fast convolution, pooling, batch-norm and affine layers: im2col + BLAS, float32, threads.

Same names, arguments, shapes, caches-in/gradients-out contract and error messages as
``layers``, which keeps the readable loop versions; the tests hold the two equal. Everything
else ``layers`` defines (activations, dropout, layer norm, ...) is re-exported unchanged, so a
model picks its speed by picking its module.

How the speed is won (details in ``im2col``, ``workspace`` and ``fast_batchnorm``):

- Outputs are ``(N, C, H, W)`` arrays stored channels-last (``(N, H, W, C)`` in memory, as
  torch's ``channels_last``); inputs of any memory order are accepted. Elementwise NumPy
  (``np.maximum(x, 0)``, ``dout * mask``) keeps that order, so a conv → relu → pool → conv chain
  never transposes.
- A convolution is one im2col copy (a strided window view, no Python loop over pixels) and
  one GEMM per cache-sized chunk of the batch, forward. Backward rebuilds each chunk's column
  matrix from the cached padded input (a copy within the cache: cheaper than keeping the
  whole matrix, ``KH * KW`` times the input's size, in memory) for ``dw`` (one GEMM; the bias
  gradient comes out of it through the column of ones), then computes that chunk's ``dx`` by
  one GEMM and ``KH * ceil(KW / stride)`` strided adds.
- Pooling reads ``pool_h * pool_w`` strided views (a reshape when windows tile the input) and
  batch norm makes two passes over memory, each over cache-sized chunks of the batch.
- Everything runs on every core: NumPy releases the GIL, and ``workspace.parallel`` splits
  pooling and batch norm over the batch (``workspace.set_num_threads``); the convolutions'
  pipelines are split the same way, each thread with a one-thread BLAS.
- Large results go into reused ``workspace.WORKSPACE`` buffers; a buffer is reused only once no
  array (or view) of it is held, so keeping an output or a cache is always safe.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

import numpy as np

from pix2pred.nn_numpy import fast_batchnorm, layers
from pix2pred.nn_numpy import im2col as I
from pix2pred.nn_numpy import workspace as WS
from pix2pred.nn_numpy.layers import (
    _NORMS,
    IntPair,
    _affine_sandwiches,
    _check_ndim,
    _check_shape,
    _output_size,
    _pair,
    _pool_setup,
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


# ---------------------------------------------------------------- fully connected


def affine_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, Any]:
    """``layers.affine_forward``, the output columns shared among threads (one-thread BLAS).

    Splitting the weights rather than the batch: each thread reads only its share of ``w``,
    which for a small batch is most of the memory traffic. Outside a model's pass (BLAS not
    held to one thread, see ``workspace.blas_one_thread``) BLAS's own threads do it faster.
    """
    if not WS.blas_held():
        return layers.affine_forward(x, w, b)
    x2 = layers._affine_input(x, w, b)  # (N, D)
    out = WS.empty((len(x2), w.shape[1]), np.result_type(x, w, b))

    def part(i: int, j: int) -> None:
        np.matmul(x2, w[:, i:j], out=out[:, i:j])
        out[:, i:j] += b[i:j]

    WS.parallel_blas(part, w.shape[1])
    return out, (x, w)


def affine_backward(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``affine_forward``; threads share the rows of ``w`` (columns of ``dx``)."""
    if not WS.blas_held():
        return layers.affine_backward(dout, cache)
    x, w = cache
    x2 = x.reshape(x.shape[0], -1)  # (N, D)
    dx = WS.empty(x2.shape, np.result_type(dout, w))
    dw = np.empty(w.shape, np.result_type(x2, dout))

    def part(i: int, j: int) -> None:
        np.matmul(dout, w[i:j].T, out=dx[:, i:j])
        np.matmul(x2[:, i:j].T, dout, out=dw[i:j])

    WS.parallel_blas(part, w.shape[0])
    return dx.reshape(x.shape), dw, dout.sum(axis=0)


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
    cache : for ``conv_backward``: the padded channels-last input (a view of x when x is
        channels-last already and needs no padding), from which backward rebuilds the column
        matrix chunk by chunk
    """
    return _conv_forward(x, w, b, stride, pad, relu=False)


def _conv_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: IntPair, pad: IntPair, relu: bool
) -> tuple[np.ndarray, Any]:
    """``conv_forward``, and with ``relu`` the relu applied to each chunk of the output
    while it is in cache (for ``conv_relu_forward``)."""
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
    w_cols = np.empty((HH * WW * C + 1, F), dtype)  # (K + 1, F): kernel in (HH, WW, C) order, bias
    w_cols[:-1] = w.transpose(2, 3, 1, 0).reshape(-1, F)
    w_cols[-1] = b
    xp = I.to_nhwc(x, pad, dtype)  # (N, H + 2 pad_h, W + 2 pad_w, C)
    out = I.im2col_gemm(xp, w_cols, (HH, WW), stride, out_hw, relu)  # (N * H_out * W_out, F)
    return I.nchw(out.reshape(N, *out_hw, F)), (xp, w, x.shape, stride, pad)


def conv_backward(
    dout: np.ndarray, cache: Any, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of ``conv_forward``: ``dout`` (N, F, H_out, W_out) → ``dx, dw, db``.

    ``dx`` (N, C, H, W) is stored channels-last, or C-contiguous for inputs with few channels
    (see ``im2col.conv_dx_nchw``); it is None when ``need_dx`` is False, which a network's
    first layer can ask for to skip a third of the work.
    """
    return _conv_backward(dout, cache, need_dx, relu_out=None)


def _conv_backward(
    dout: np.ndarray, cache: Any, need_dx: bool, relu_out: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """``conv_backward``; given ``relu_out`` (N, F, H_out, W_out), the output of a relu after
    the convolution, ``dout`` is the relu's output gradient, masked chunk by chunk in cache."""
    xp, w, x_shape, stride, pad = cache
    N, C, H, W = x_shape
    F, _, HH, WW = w.shape
    out_hw = dout.shape[2:]
    dtype = xp.dtype
    dout2 = I.to_nhwc(dout, dtype=dtype).reshape(-1, F)  # (N * H_out * W_out, F)
    w_rows = np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(F, -1), dtype=dtype)  # (F, K)
    kernel = (HH, WW)
    # Channels-last runs of KW * C numbers would be the shorter: dx in NCHW order, apart.
    nchw_dx = need_dx and WW * C < out_hw[1]
    dx = dx_chunk = None
    if need_dx and not nchw_dx:  # dx chunk by chunk, right after the same chunk's share of dw
        dx_nhwc = WS.empty((N, H, W, C), dtype)
        dx_chunk = I.conv_dx_chunk(dx_nhwc, w_rows, kernel, stride, pad, out_hw)
        dx = I.nchw(dx_nhwc)
    relu = None
    if relu_out is not None:
        # conv_dx_nchw reads the masked gradient whole, afterwards; otherwise a chunk's will do.
        da = WS.empty(dout2.shape, dtype) if nchw_dx else None
        relu = (I.to_nhwc(relu_out, dtype=dtype).reshape(-1, F), da)
    dw_cols = I.conv_dw(xp, dout2, kernel, stride, out_hw, dx_chunk, relu)
    if nchw_dx:
        d_conv = dout2 if relu is None else relu[1]  # the convolution's own output gradient
        dx = I.conv_dx_nchw(d_conv, w_rows, x_shape, kernel, stride, pad, out_hw)
    # dw_cols (K + 1, F): kernel rows in (HH, WW, C) order, then the bias gradient
    dw = np.ascontiguousarray(dw_cols[:-1].reshape(HH, WW, C, F).transpose(3, 2, 0, 1))
    return dx, dw, dw_cols[-1].copy()


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


def _like(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``a`` in ``ref``'s memory order (as ``im2col.empty_like_layout`` chooses it): a copy
    only when the two differ.

    A gradient that comes back through a flatten is NCHW-contiguous while the pooling's own
    arrays may be channels-last; elementwise passes over mixed orders run several times slower
    than one copy and passes over matching ones.
    """
    if I.is_channels_last(ref) and not ref.flags.c_contiguous:
        return I.nchw(I.to_nhwc(a))
    return np.ascontiguousarray(a)


def _pool_parallel(fn: Callable[[slice], None], x: np.ndarray) -> None:
    """Run ``fn`` on cache-sized slices of the batch, the slices shared among threads.

    The window views read x with gaps; a chunk in cache serves all of them from there.
    """

    def part(a: int, b: int) -> None:
        for c0, c1 in WS.chunks(b - a, 1, x[:1].nbytes):
            fn(slice(a + c0, a + c1))

    WS.parallel(part, len(x))


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
    out = I.empty_like_layout(x, (*x.shape[:2], *out_hw))

    def chunk(s: slice) -> None:
        views = _window_offsets(x[s], pool, stride, out_hw)
        if len(views) == 1:
            np.copyto(out[s], views[0])
            return
        np.maximum(views[0], views[1], out=out[s])
        for view in views[2:]:
            np.maximum(out[s], view, out=out[s])

    _pool_parallel(chunk, x)
    return out, (x, out, pool, stride)


def max_pool_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """Gradient of ``max_pool_forward``: ``dout`` (N, C, H_out, W_out) → ``dx`` (N, C, H, W).

    Each gradient goes to the first entry of its window equal to the maximum; in a window
    holding NaN (whose maximum is NaN) to its last NaN, as torch's CPU kernel does.
    """
    x, out, pool, stride = cache
    out_hw = out.shape[2:]
    dout = _like(dout, out)
    dx, add = _pool_dx(x, pool, stride, out_hw)
    hit_all = I.empty_like_layout(out, out.shape, np.bool_)
    free_all = I.empty_like_layout(out, out.shape, np.bool_)
    nan = out.dtype.kind == "f" and bool(np.isnan(out).any())

    def route(pairs: list, o: np.ndarray, d: np.ndarray, hit: np.ndarray, free: np.ndarray):
        """Send d to the first x_view entry equal to o of each window; ``pairs`` in order."""
        for k, (x_view, dx_view) in enumerate(pairs):
            np.equal(x_view, o, out=hit) if o is not None else np.isnan(x_view, out=hit)
            if k == 0:
                np.logical_not(hit, out=free)
            else:
                np.logical_and(hit, free, out=hit)  # the first hit of its window
                if k < len(pairs) - 1:
                    np.logical_xor(free, hit, out=free)
            if add or o is None:
                dx_view += np.multiply(d, hit, out=WS.empty(d.shape, d.dtype))
            else:
                np.multiply(d, hit, out=dx_view)

    def chunk(s: slice) -> None:
        pairs = list(
            zip(
                _window_offsets(x[s], pool, stride, out_hw),
                _window_offsets(dx[s], pool, stride, out_hw),
                strict=True,
            )
        )
        route(pairs, out[s], dout[s], hit_all[s], free_all[s])
        if nan:
            route(pairs[::-1], None, dout[s], hit_all[s], free_all[s])

    _pool_parallel(chunk, x)
    return dx


def avg_pool_forward(
    x: np.ndarray, pool: IntPair = 2, stride: IntPair = 2
) -> tuple[np.ndarray, Any]:
    """Average pooling; shapes and window rules as ``max_pool_forward``."""
    pool, stride, out_hw = _pool_setup(x, pool, stride)
    out = I.empty_like_layout(x, (*x.shape[:2], *out_hw))
    inv_area = x.dtype.type(1 / (pool[0] * pool[1]))

    def chunk(s: slice) -> None:
        views = _window_offsets(x[s], pool, stride, out_hw)
        np.copyto(out[s], views[0])
        for view in views[1:]:
            out[s] += view
        out[s] *= inv_area

    _pool_parallel(chunk, x)
    return out, (x, pool, stride)


def avg_pool_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """Gradient of ``avg_pool_forward``: ``dout`` (N, C, H_out, W_out) → ``dx`` (N, C, H, W)."""
    x, pool, stride = cache
    out_hw = dout.shape[2:]
    dx, add = _pool_dx(x, pool, stride, out_hw)
    share = I.empty_like_layout(dx, dout.shape, dout.dtype)  # in dx's memory order
    np.multiply(dout, dout.dtype.type(1 / (pool[0] * pool[1])), out=share)

    def chunk(s: slice) -> None:
        for dx_view in _window_offsets(dx[s], pool, stride, out_hw):
            if add:
                dx_view += share[s]
            else:
                np.copyto(dx_view, share[s])

    _pool_parallel(chunk, x)
    return dx


# ---------------------------------------------------------------- batch normalisation


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
    return fast_batchnorm.forward(x, gamma, beta, bn_param)


def batchnorm_backward(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``batchnorm_forward``: ``dout`` (N, D) → ``dx`` (N, D), ``dgamma, dbeta``."""
    return fast_batchnorm.backward(dout, cache)


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
    return fast_batchnorm.forward(x, gamma, beta, bn_param)


def spatial_batchnorm_backward(
    dout: np.ndarray, cache: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``spatial_batchnorm_forward``: ``dx`` (N, C, H, W), ``dgamma, dbeta`` (C,)."""
    return fast_batchnorm.backward(dout, cache)


# ---------------------------------------------------------------- sandwich layers


def conv_relu_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, conv_param: dict[str, Any] | None = None
) -> tuple[np.ndarray, Any]:
    """``relu(conv(x, w, b, **conv_param))``; ``conv_param`` holds ``stride`` and ``pad``.

    The relu runs on each chunk of the convolution's output while it is in cache; the output
    then serves as the relu's cache (``out > 0`` is ``a > 0``).
    """
    stride, pad = _conv_args(conv_param or {})
    out, conv_cache = _conv_forward(x, w, b, stride, pad, relu=True)
    return out, (conv_cache, out)


def _conv_args(conv_param: dict[str, Any]) -> tuple[IntPair, IntPair]:
    """``conv_param``'s stride and pad, with ``conv_forward``'s defaults and unknown-key error."""
    for key in conv_param:
        if key not in ("stride", "pad"):
            raise TypeError(f"conv_forward() got an unexpected keyword argument {key!r}")
    return conv_param.get("stride", 1), conv_param.get("pad", 0)


def conv_relu_backward(
    dout: np.ndarray, cache: Any, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of ``conv_relu_forward``: ``dx, dw, db`` (``dx`` None unless ``need_dx``)."""
    conv_cache, out = cache
    return _conv_backward(dout, conv_cache, need_dx, relu_out=out)


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


# The affine sandwich layers over the threaded affine layer and this module's batch norm.
(
    affine_relu_forward,
    affine_relu_backward,
    affine_norm_relu_forward,
    affine_norm_relu_backward,
) = _affine_sandwiches(
    affine_forward,
    affine_backward,
    {**_NORMS, "batchnorm": (batchnorm_forward, batchnorm_backward)},
)
