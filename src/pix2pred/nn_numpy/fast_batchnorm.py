"""Batch normalisation kernels of ``fast_layers``: few passes over memory, long runs, threads.

Batch norm does almost no arithmetic per number, so its speed is the number of passes over
memory and the length of the runs NumPy's loops work on. The data is seen as a 2-D array
whose rows are long contiguous runs (``_ChannelRows``); per-channel sums are BLAS
matrix-vector products, and every pass works on cache-sized chunks shared among threads.
Forward is one pass for the statistics (two when a channel's mean dwarfs its spread) and one
for the output; backward one for the two parameter gradients and one for dx, which never
materialises ``xhat``.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import numpy as np

from pix2pred.nn_numpy import workspace as WS
from pix2pred.nn_numpy.im2col import is_channels_last, nchw, to_nhwc
from pix2pred.nn_numpy.layers import _check_shape, _mode


class _ChannelRows:
    """x as a C-contiguous 2-D array ``R`` (rows, L) whose channels repeat along one axis.

    Batch norm needs per-channel sums and per-channel scaling; both are fastest on long
    contiguous runs, so instead of reducing over (N, H, W) the data is seen as rows:

    - channels-last (N, C, H, W) and (N, D) inputs: ``R`` is (N * H, W * C) or (N, D), and the
      channel of column j is ``j % C`` (per-channel vectors are tiled along a row);
    - other (N, C, H, W) inputs: ``R`` is (N * C, H * W) and the channel of row i is ``i % C``.

    Chunks of rows (whole samples in the second case) are the unit of work: each is about
    ``workspace.CHUNK_BYTES``, so the several operations on it run in cache, and the chunks are
    shared among threads.
    """

    def __init__(self, x: np.ndarray) -> None:
        self.shape, self.C = x.shape, x.shape[1]
        if x.ndim == 2:
            self.kind = "nd"
            self.R = np.ascontiguousarray(x)
        elif is_channels_last(x):
            N, C, H, W = x.shape
            self.kind = "nhwc"
            self.R = x.transpose(0, 2, 3, 1).reshape(N * H, W * C)
        else:
            N, C, H, W = x.shape
            self.kind = "nchw"
            self.R = np.ascontiguousarray(x).reshape(N * C, H * W)
        self.by_cols = self.kind != "nchw"
        self.period = 1 if self.by_cols else self.C  # rows that make up whole samples
        self.units = len(self.R) // self.period
        self.count = x.size // self.C  # values per channel

    def same_layout(self, a: np.ndarray) -> np.ndarray:
        """An array of x's shape (dout) as rows like ``R``: a view when its layout matches."""
        if self.kind == "nd":
            return np.ascontiguousarray(a, dtype=self.R.dtype)
        if self.kind == "nhwc":
            return to_nhwc(a, dtype=self.R.dtype).reshape(self.R.shape)
        return np.ascontiguousarray(a, dtype=self.R.dtype).reshape(self.R.shape)

    def empty(self) -> tuple[np.ndarray, np.ndarray]:
        """A workspace array shaped like ``R``, and its view of x's shape."""
        if self.kind == "nhwc":
            N, C, H, W = self.shape
            out = WS.empty((N, H, W, C), self.R.dtype)
            return out.reshape(self.R.shape), nchw(out)
        out = WS.empty(self.shape, self.R.dtype)
        return out.reshape(self.R.shape), out

    def chunks(self, a: int, b: int) -> Iterator[slice]:
        """Row slices of about ``CHUNK_BYTES`` covering units (whole samples) a to b."""
        unit_bytes = self.period * self.R.shape[1] * self.R.itemsize
        for u0, u1 in WS.chunks(b - a, 1, unit_bytes):
            yield slice((a + u0) * self.period, (a + u1) * self.period)

    def tile(self, v: np.ndarray, rows: slice) -> np.ndarray:
        """Per-channel ``v`` (C,) repeated to broadcast against ``R[rows]`` (a small array)."""
        if self.by_cols:
            return np.tile(v, self.R.shape[1] // self.C)  # (L,)
        return np.tile(v, (rows.stop - rows.start) // self.C)[:, None]  # (rows, 1)

    def sums(self, a: np.ndarray) -> np.ndarray:
        """Per-channel sums (C,) in float64 of a chunk shaped like ``R[rows]``."""
        if self.by_cols:
            # A BLAS matrix-vector product sums columns far faster than a NumPy reduction.
            col = np.ones(len(a), a.dtype) @ a  # (L,)
            return col.reshape(-1, self.C).sum(axis=0, dtype=np.float64)
        return a.sum(axis=1).reshape(-1, self.C).sum(axis=0, dtype=np.float64)


# Raw moments (sums of x and x**2, of dout and dout * x) need one elementwise operation fewer
# per pass than centred ones, but lose digits to cancellation when a channel's mean is large
# against its standard deviation; above this ratio of mean**2 to variance the centred
# formulas are used. Up to it, float32 keeps about 5 significant digits of the variance.
_RAW_MOMENTS_MAX_RATIO = 9.0


def _raw_moments_ok(mean: np.ndarray, var: np.ndarray) -> bool:
    return bool(np.all(mean**2 <= _RAW_MOMENTS_MAX_RATIO * var))


def _bn_statistics(rows: _ChannelRows) -> tuple[np.ndarray, np.ndarray, bool]:
    """Mean and biased variance (C,) in float64, and whether raw moments were accurate.

    The first pass sums x and x**2 per chunk (float32 within a chunk, float64 across). When a
    channel's mean dwarfs its spread, a second pass recomputes each chunk's mean and sum of
    squared deviations while the chunk is in cache and merges them (Chan et al.), which
    avoids the cancellation of ``E[x**2] - E[x]**2``.
    """
    R, C = rows.R, rows.C

    def raw(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        s1, s2 = np.zeros(C), np.zeros(C)
        for s in rows.chunks(a, b):
            tmp = WS.empty(R[s].shape, R.dtype)
            np.square(R[s], out=tmp)
            s1 += rows.sums(R[s])
            s2 += rows.sums(tmp)
        return s1, s2

    parts = WS.parallel(raw, rows.units)
    mean = sum(p[0] for p in parts) / rows.count
    var = np.maximum(sum(p[1] for p in parts) / rows.count - mean**2, 0)
    if _raw_moments_ok(mean, var):
        return mean, var, True

    def centred(a: int, b: int) -> tuple[float, np.ndarray, np.ndarray]:
        count, mean, m2 = 0.0, np.zeros(C), np.zeros(C)
        for s in rows.chunks(a, b):
            xc = R[s]
            k = xc.size / C
            chunk_mean = rows.sums(xc) / k
            tmp = WS.empty(xc.shape, xc.dtype)
            np.subtract(xc, rows.tile(chunk_mean.astype(xc.dtype), s), out=tmp)
            np.square(tmp, out=tmp)
            count, mean, m2 = _merge((count, mean, m2), (k, chunk_mean, rows.sums(tmp)))
        return count, mean, m2

    total = (0.0, np.zeros(C), np.zeros(C))
    for stats in WS.parallel(centred, rows.units):
        total = _merge(total, stats)
    count, mean, m2 = total
    return mean, m2 / count, False


def _merge(a: tuple, b: tuple) -> tuple[float, np.ndarray, np.ndarray]:
    """Combine (count, mean, sum of squared deviations) of two disjoint sets (Chan et al.)."""
    (na, ma, sa), (nb, mb, sb) = a, b
    n = na + nb
    if n == 0:
        return a
    delta = mb - ma
    return n, ma + delta * (nb / n), sa + sb + delta**2 * (na * nb / n)


def forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, bn_param: MutableMapping[str, Any]
) -> tuple[np.ndarray, Any]:
    """Batch norm of x (N, D) or (N, C, H, W) per entry of axis 1; see the callers."""
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
    rows = _ChannelRows(x.astype(dtype, copy=False))

    if mode == "train":
        if rows.count < 2:
            raise ValueError(f"batch norm in train mode needs more than 1 sample, got x {x.shape}")
        mean, var, raw = _bn_statistics(rows)
        unbiased = var * (rows.count / (rows.count - 1))
        bn_param["running_mean"] = ((1 - momentum) * running_mean + momentum * mean).astype(dtype)
        bn_param["running_var"] = ((1 - momentum) * running_var + momentum * unbiased).astype(dtype)
    else:
        mean = np.asarray(running_mean, dtype=np.float64)
        var = np.asarray(running_var, dtype=np.float64)
        raw = _raw_moments_ok(mean, var)
    inv_std = 1 / np.sqrt(var + eps)
    scale = (gamma * inv_std).astype(dtype)
    shift = (beta - mean * gamma * inv_std).astype(dtype)
    out_rows, out = rows.empty()

    def write(a: int, b: int) -> None:
        for s in rows.chunks(a, b):
            np.multiply(rows.R[s], rows.tile(scale, s), out=out_rows[s])
            out_rows[s] += rows.tile(shift, s)

    WS.parallel(write, rows.units)
    return out, (mode, rows, mean, inv_std, np.asarray(gamma, dtype=np.float64), raw)


def backward(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``forward``: two passes over chunks of (x, dout), none over xhat.

    With ``xhat = (x - mean) * inv_std`` and m values per channel, train mode gives
    ``dx = gamma * inv_std / m * (m * dout - sum(dout) - xhat * sum(dout * xhat))``, which is
    ``a * dout + b * (x - mean) + c`` with per-channel a, b, c.
    """
    mode, rows, mean, inv_std, gamma, raw = cache
    R, dtype = rows.R, rows.R.dtype
    D = rows.same_layout(dout)
    mean_t, inv_std_t = mean.astype(dtype), inv_std.astype(dtype)

    def sums(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel sums of dout and of dout * x (raw) or dout * xhat (centred)."""
        s_dx, s_d = np.zeros(rows.C), np.zeros(rows.C)
        for s in rows.chunks(lo, hi):
            tmp = WS.empty(R[s].shape, dtype)
            if raw:
                np.multiply(R[s], D[s], out=tmp)
            else:
                np.subtract(R[s], rows.tile(mean_t, s), out=tmp)
                tmp *= rows.tile(inv_std_t, s)
                tmp *= D[s]
            s_dx += rows.sums(tmp)
            s_d += rows.sums(D[s])
        return s_dx, s_d

    parts = WS.parallel(sums, rows.units)
    s_dx, dbeta = sum(p[0] for p in parts), sum(p[1] for p in parts)
    dgamma = inv_std * (s_dx - mean * dbeta) if raw else s_dx
    a = gamma * inv_std  # d out / d x with the statistics held fixed
    a_t = a.astype(dtype)
    dx_rows, dx = rows.empty()
    if mode == "train":
        m = rows.count
        b = -a * inv_std * dgamma / m
        c = -a * dbeta / m
        b_t = b.astype(dtype)
        # Raw: b * x + (c - b * mean), one subtraction fewer.
        c_t = (c - b * mean if raw else c).astype(dtype)

        def write(lo: int, hi: int) -> None:
            for s in rows.chunks(lo, hi):
                tmp = WS.empty(R[s].shape, dtype)
                if raw:
                    np.multiply(R[s], rows.tile(b_t, s), out=tmp)
                else:
                    np.subtract(R[s], rows.tile(mean_t, s), out=tmp)
                    tmp *= rows.tile(b_t, s)
                tmp += rows.tile(c_t, s)
                np.multiply(D[s], rows.tile(a_t, s), out=dx_rows[s])
                dx_rows[s] += tmp

    else:

        def write(lo: int, hi: int) -> None:
            for s in rows.chunks(lo, hi):
                np.multiply(D[s], rows.tile(a_t, s), out=dx_rows[s])

    WS.parallel(write, rows.units)
    return dx, dgamma.astype(dtype), dbeta.astype(dtype)
