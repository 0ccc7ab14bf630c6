"""im2col and col2im over channels-last arrays: the convolution kernels of ``fast_layers``.

Arrays keep the course's ``(N, C, H, W)`` shape, but the fast layers store them as
``(N, H, W, C)`` in memory (torch calls this ``channels_last``) and return transposed views.
Then a pixel's C channels are adjacent, so one output pixel's window row ``(KW, C)`` is a
single contiguous run: im2col copies runs of ``KW * C`` numbers instead of single ones, and
the GEMM result ``(N * H_out * W_out, F)`` *is* the next activation, with no transpose. Any
memory order is accepted; others are copied once, into the padded buffer im2col needs anyway.

No Python loop runs over pixels: im2col is one copy from an ``as_strided`` window view of the
padded input, and col2im is ``KH * ceil(KW / stride)`` strided adds (windows of one residue
class of output columns never overlap, so each add covers a whole kernel row at once).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.lib.stride_tricks import as_strided

from pix2pred.nn_numpy.workspace import chunks, empty

# ---------------------------------------------------------------- layouts


def is_channels_last(x: np.ndarray) -> bool:
    """Whether x of shape (N, C, H, W) is stored as a C-contiguous (N, H, W, C) array."""
    return x.transpose(0, 2, 3, 1).flags.c_contiguous


def nchw(x_nhwc: np.ndarray) -> np.ndarray:
    """The (N, C, H, W) view of a (N, H, W, C) array."""
    return x_nhwc.transpose(0, 3, 1, 2)


def to_nhwc(x: np.ndarray, pad: tuple[int, int] = (0, 0), dtype: np.dtype | None = None):
    """x (N, C, H, W) as a C-contiguous (N, H + 2 pad_h, W + 2 pad_w, C) array with zero borders.

    A view of x when it is channels-last already, unpadded and of ``dtype``; otherwise one copy
    into a workspace buffer.
    """
    dtype = x.dtype if dtype is None else np.dtype(dtype)
    N, C, H, W = x.shape
    ph, pw = pad
    if ph == pw == 0 and x.dtype == dtype and is_channels_last(x):
        return x.transpose(0, 2, 3, 1)
    xp = empty((N, H + 2 * ph, W + 2 * pw, C), dtype)
    if ph:
        xp[:, :ph] = 0
        xp[:, ph + H :] = 0
    if pw:
        xp[:, ph : ph + H, :pw] = 0
        xp[:, ph : ph + H, pw + W :] = 0
    xp[:, ph : ph + H, pw : pw + W] = x.transpose(0, 2, 3, 1)
    return xp


def empty_like_layout(
    x: np.ndarray, shape: tuple[int, int, int, int], dtype: np.dtype | type | None = None
) -> np.ndarray:
    """A workspace array of NCHW ``shape`` with x's memory order (channels-last or not)."""
    N, C, H, W = shape
    dtype = x.dtype if dtype is None else dtype
    if is_channels_last(x) and not x.flags.c_contiguous:
        return nchw(empty((N, H, W, C), dtype))
    return empty(shape, dtype)


# ---------------------------------------------------------------- im2col / col2im

#: Chunks around the GEMMs are this many times ``workspace.CHUNK_BYTES`` (measured best):
#: larger than elsewhere, for efficient GEMMs, yet small enough to be read back from cache.
_GEMM_CHUNK_SCALE = 2
_DX_CHUNK_SCALE = 4


def window_view(
    xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], out_hw: tuple[int, int]
) -> np.ndarray:
    """The windows of a padded NHWC array as a (N, H_out, W_out, KH, KW * C) view, no copy.

    ``view[n, i, j, a]`` is the contiguous run ``xp[n, i * stride_h + a, j * stride_w :
    j * stride_w + KW, :]`` flattened; this is why the layout is channels-last.
    """
    N, Hp, Wp, C = xp.shape
    assert xp.flags.c_contiguous, "xp must be C-contiguous"
    # Strides from the shape: those numpy reports for axes of length 1 are arbitrary.
    sC = xp.itemsize
    sW, sH, sN = C * sC, Wp * C * sC, Hp * Wp * C * sC
    return as_strided(
        xp,
        shape=(N, *out_hw, kernel[0], kernel[1] * C),
        strides=(sN, stride[0] * sH, stride[1] * sW, sH, sC),
        writeable=False,
    )


def im2col_gemm(
    xp: np.ndarray,
    w_cols: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    out_hw: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """The column matrix of a padded NHWC input, and its product with the kernel matrix.

    Chunk by chunk of the batch: a chunk's windows (and the column of ones for the bias) are
    copied, then the GEMM multiplies the chunk while it is still in cache.

    Parameters
    ----------
    xp : ndarray of shape (N, Hp, Wp, C), C-contiguous
    w_cols : ndarray of shape (KH * KW * C + 1, F), the kernel in (a, b, c) order, then the bias
    kernel, stride : (KH, KW) and (stride_h, stride_w)
    out_hw : (H_out, W_out)

    Returns
    -------
    cols : ndarray of shape (N * H_out * W_out, KH * KW * C + 1), rows in (n, i, j) order,
        columns in (a, b, c) kernel order then the ones (a workspace buffer)
    out : ndarray of shape (N * H_out * W_out, F), ``cols @ w_cols`` (a workspace buffer)
    """
    N, _, _, C = xp.shape
    K = kernel[0] * kernel[1] * C
    rows = out_hw[0] * out_hw[1]
    dtype = xp.dtype
    cols = empty((N * rows, K + 1), dtype)
    out = empty((N * rows, w_cols.shape[1]), dtype)
    s = cols.strides[0]
    # (N, H_out, W_out, KH, KW * C) view of cols[:, :K]
    dst = as_strided(
        cols,
        shape=(N, *out_hw, kernel[0], kernel[1] * C),
        strides=(rows * s, out_hw[1] * s, s, kernel[1] * C * dtype.itemsize, dtype.itemsize),
    )
    src = window_view(xp, kernel, stride, out_hw)
    # NOTE: no worker threads here: next to BLAS's own (which spin-wait between GEMMs) they
    # made the whole convolution slower, and at times a third slower.
    for n0, n1 in chunks(N, rows, s, _GEMM_CHUNK_SCALE):
        np.copyto(dst[n0:n1], src[n0:n1])
        cols[n0 * rows : n1 * rows, K] = 1
        np.matmul(cols[n0 * rows : n1 * rows], w_cols, out=out[n0 * rows : n1 * rows])
    return cols, out


def _residue_classes(W_out: int, KW: int, sw: int) -> Iterator[tuple[int, int]]:
    """Yield ``(r, q)``: output columns ``r, r + q, r + 2q, ...`` whose windows are disjoint."""
    q = -(-KW // sw)  # windows q apart are at least KW input columns apart
    for r in range(min(q, W_out)):
        yield r, q


def col2im_add(
    dcols: np.ndarray,
    dxp: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    out_hw: tuple[int, int],
) -> None:
    """Add each row of ``dcols`` back onto the window it came from: the adjoint of im2col.

    Parameters
    ----------
    dcols : ndarray of shape (n * H_out * W_out, KH * KW * C), rows and columns as ``im2col``
    dxp : ndarray of shape (n, Hp, Wp, C), C-contiguous, added to in place
    kernel, stride, out_hw : as ``im2col``
    """
    n, Hp, Wp, C = dxp.shape
    KH, KW = kernel
    sh, sw = stride
    H_out, W_out = out_hw
    d5 = dcols.reshape(n, H_out, W_out, KH, KW * C)
    assert dxp.flags.c_contiguous, "dxp must be C-contiguous"
    sC = dxp.itemsize
    sW, sH, sN = C * sC, Wp * C * sC, Hp * Wp * C * sC
    for a in range(KH):
        for r, q in _residue_classes(W_out, KW, sw):
            src = d5[:, :, r::q, a]  # (n, H_out, W_r, KW * C)
            # The windows of columns r, r + q, ... of kernel row a: disjoint runs in dxp.
            dst = as_strided(
                dxp[:, a:, sw * r :],
                shape=src.shape,
                strides=(sN, sh * sH, q * sw * sW, sC),
            )
            np.add(dst, src, out=dst)


def conv_dx(
    dout2: np.ndarray,
    w_rows: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
    out_hw: tuple[int, int],
) -> np.ndarray:
    """dx of a convolution, channels-last: a GEMM and col2im per chunk of the batch.

    Parameters
    ----------
    dout2 : ndarray of shape (N * H_out * W_out, F), the output gradient's rows
    w_rows : ndarray of shape (F, KH * KW * C), the kernel in im2col's column order
    x_shape : (N, C, H, W)
    kernel, stride, pad, out_hw : (KH, KW), strides, paddings and (H_out, W_out)

    Returns
    -------
    dx : ndarray of shape (N, H, W, C), a workspace buffer
    """
    N, C, H, W = x_shape
    ph, pw = pad
    dtype = dout2.dtype
    rows, K = out_hw[0] * out_hw[1], w_rows.shape[1]
    dx = empty((N, H, W, C), dtype)

    # Chunk by chunk of the batch, so that the GEMM's output is still in cache for the adds
    # (read from memory they would run at a fraction of the speed: each reads one gappy
    # ninth of the rows). Larger chunks than elsewhere keep the GEMMs efficient.
    for n0, n1 in chunks(N, rows, K * dtype.itemsize, _DX_CHUNK_SCALE):
        dcols = empty(((n1 - n0) * rows, K), dtype)  # (n * H_out * W_out, K)
        np.matmul(dout2[n0 * rows : n1 * rows], w_rows, out=dcols)
        target = dx[n0:n1]
        if ph or pw:  # a zeroed padded scratch, whose interior is then copied out
            target = empty((n1 - n0, H + 2 * ph, W + 2 * pw, C), dtype)
        target.fill(0)
        col2im_add(dcols, target, kernel, stride, out_hw)
        if ph or pw:
            dx[n0:n1] = target[:, ph : ph + H, pw : pw + W]
    return dx


def conv_dx_nchw(
    dout2: np.ndarray,
    w_rows: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
    out_hw: tuple[int, int],
) -> np.ndarray:
    """dx of a convolution with few input channels, in NCHW order.

    When ``KW * C`` is short (a first layer over RGB), the channels-last adds of ``conv_dx``
    would move a few numbers at a time. Here the GEMM writes the column gradients transposed,
    ``(KH, KW, C, n, H_out, W_out)``, so each kernel offset adds whole output rows onto a
    shifted window of dx, clipped to the unpadded image. Arguments as ``conv_dx``.

    Returns
    -------
    dx : ndarray of shape (N, C, H, W), C-contiguous (a workspace buffer)
    """
    N, C, H, W = x_shape
    (KH, KW), (sh, sw), (ph, pw), (Ho, Wo) = kernel, stride, pad, out_hw
    dtype = dout2.dtype
    rows, K = Ho * Wo, w_rows.shape[1]
    dx = empty((N, C, H, W), dtype)
    offsets = []  # (a, b, output rows, output cols, input rows, input cols) per kernel offset
    for a in range(KH):
        for b in range(KW):
            i0, i1 = max(0, -(-(ph - a) // sh)), min(Ho, (H - 1 + ph - a) // sh + 1)
            j0, j1 = max(0, -(-(pw - b) // sw)), min(Wo, (W - 1 + pw - b) // sw + 1)
            if i0 < i1 and j0 < j1:
                h0, w0 = i0 * sh + a - ph, j0 * sw + b - pw
                dst = (
                    slice(h0, h0 + sh * (i1 - i0 - 1) + 1, sh),
                    slice(w0, w0 + sw * (j1 - j0 - 1) + 1, sw),
                )
                offsets.append((a, b, slice(i0, i1), slice(j0, j1), *dst))
    for n0, n1 in chunks(N, rows, K * dtype.itemsize, _DX_CHUNK_SCALE):
        dcols_t = empty((K, (n1 - n0) * rows), dtype)  # (K, n * H_out * W_out)
        np.matmul(w_rows.T, dout2[n0 * rows : n1 * rows].T, out=dcols_t)
        d6 = dcols_t.reshape(KH, KW, C, n1 - n0, Ho, Wo)
        dxc = dx[n0:n1].transpose(1, 0, 2, 3)  # (C, n, H, W)
        dxc.fill(0)
        for a, b, oi, oj, rows_in, cols_in in offsets:
            view = dxc[:, :, rows_in, cols_in]
            view += d6[a, b, :, :, oi, oj]
    return dx
