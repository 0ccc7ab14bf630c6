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

Each pipeline (im2col → GEMM, GEMM → col2im, the filter gradient's GEMM) is split over the
batch and run on every core, each thread with a one-thread BLAS (``workspace.parallel_blas``),
and within a thread over cache-sized chunks of its images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from numpy.lib.stride_tricks import as_strided

from pix2pred.nn_numpy.workspace import chunks, empty, parallel_blas

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


def _each_chunk(
    n: int, rows: int, row_bytes: int, scale: int, body: Callable[[int, int], None]
) -> None:
    """``body(n0, n1)`` for cache-sized chunks of ``range(n)``, a share of them per thread."""

    def part(a: int, b: int) -> None:
        for n0, n1 in chunks(b - a, rows, row_bytes, scale):
            body(a + n0, a + n1)

    parallel_blas(part, n)


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


def _cols(
    windows: np.ndarray, n0: int, n1: int, kernel: tuple[int, int], out_hw: tuple[int, int]
) -> np.ndarray:
    """The column matrix of images ``n0:n1``: their windows, then a column of ones.

    Parameters
    ----------
    windows : the (N, H_out, W_out, KH, KW * C) ``window_view`` of the padded input

    Returns
    -------
    cols : ndarray of shape (n * H_out * W_out, KH * KW * C + 1), rows in (n, i, j) order,
        columns in (a, b, c) kernel order then the ones (a workspace buffer)
    """
    n, run = n1 - n0, windows.shape[-1]
    rows, K = out_hw[0] * out_hw[1], kernel[0] * run
    cols = empty((n * rows, K + 1), windows.dtype)
    s, item = cols.strides[0], cols.itemsize
    dst = as_strided(
        cols,
        shape=(n, *out_hw, kernel[0], run),
        strides=(rows * s, out_hw[1] * s, s, run * item, item),
    )
    np.copyto(dst, windows[n0:n1])
    cols[:, K] = 1
    return cols


def im2col_gemm(
    xp: np.ndarray,
    w_cols: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    out_hw: tuple[int, int],
    relu: bool = False,
) -> np.ndarray:
    """A convolution's output rows: each chunk's column matrix times the kernel matrix.

    A chunk's windows are copied (with the column of ones for the bias) into a buffer that
    stays in cache, where the GEMM reads them; the column matrix is never whole in memory.
    With ``relu``, each chunk's rows are clipped at 0 while they are still in cache.

    Parameters
    ----------
    xp : ndarray of shape (N, Hp, Wp, C), C-contiguous
    w_cols : ndarray of shape (KH * KW * C + 1, F), the kernel in (a, b, c) order, then the bias
    kernel, stride : (KH, KW) and (stride_h, stride_w)
    out_hw : (H_out, W_out)

    Returns
    -------
    out : ndarray of shape (N * H_out * W_out, F), rows in (n, i, j) order (a workspace buffer)
    """
    N = xp.shape[0]
    rows, row_bytes = out_hw[0] * out_hw[1], w_cols.shape[0] * xp.itemsize
    out = empty((N * rows, w_cols.shape[1]), xp.dtype)
    windows = window_view(xp, kernel, stride, out_hw)

    def chunk(n0: int, n1: int) -> None:
        cols = _cols(windows, n0, n1, kernel, out_hw)
        part = out[n0 * rows : n1 * rows]
        np.matmul(cols, w_cols, out=part)
        if relu:
            np.maximum(part, 0, out=part)

    _each_chunk(N, rows, row_bytes, _GEMM_CHUNK_SCALE, chunk)
    return out


def conv_dw(
    xp: np.ndarray,
    dout2: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    out_hw: tuple[int, int],
    dx_chunk: Callable[[int, int, np.ndarray], None] | None = None,
    relu: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> np.ndarray:
    """``cols.T @ dout2``, the filter gradient, with each chunk's column matrix rebuilt.

    Rebuilding a chunk's columns from the padded input costs a copy within the cache; keeping
    the whole column matrix from the forward pass would cost ``KH * KW`` times the input's
    memory per layer, written once and read back once. Each thread sums its own chunks' products
    (BLAS would split the small (K + 1, F) result between threads, not the long batch axis).

    Parameters
    ----------
    xp : ndarray of shape (N, Hp, Wp, C), the padded input the forward pass cached
    dout2 : ndarray of shape (N * H_out * W_out, F), the output gradient's rows
    kernel, stride, out_hw : as ``im2col_gemm``
    dx_chunk : optional ``f(n0, n1, dout_rows)``, run on the same chunks right after their
        filter gradient, while their output gradient is still in cache
    relu : optional ``(relu_out, da)`` when a relu followed the convolution: ``dout2`` is then
        the relu's output gradient, and each chunk of it is first masked where ``relu_out``
        (N * H_out * W_out, F) is not positive, in cache, for the chunk's GEMMs. ``da``, like
        ``relu_out`` or None, receives the masked chunks (the convolution's output gradient)
        for a caller that needs it whole; with None each chunk gets a scratch buffer

    Returns
    -------
    dw_cols : ndarray of shape (KH * KW * C + 1, F); the last row is the bias gradient
    """
    N = xp.shape[0]
    rows, K1 = out_hw[0] * out_hw[1], kernel[0] * kernel[1] * xp.shape[3] + 1
    windows = window_view(xp, kernel, stride, out_hw)

    def part(a: int, b: int) -> np.ndarray:
        total = np.zeros((K1, dout2.shape[1]), dout2.dtype)
        for n0, n1 in chunks(b - a, rows, K1 * xp.itemsize, _GEMM_CHUNK_SCALE):
            n0, n1 = a + n0, a + n1
            d = dout2[n0 * rows : n1 * rows]
            if relu is not None:
                relu_out, da = relu
                masked = empty(d.shape, d.dtype) if da is None else da[n0 * rows : n1 * rows]
                d = np.multiply(d, relu_out[n0 * rows : n1 * rows] > 0, out=masked)
            total += _cols(windows, n0, n1, kernel, out_hw).T @ d
            if dx_chunk is not None:
                dx_chunk(n0, n1, d)
        return total

    parts = parallel_blas(part, N)
    for other in parts[1:]:
        parts[0] += other
    return parts[0]


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


def conv_dx_chunk(
    dx: np.ndarray,
    w_rows: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
    out_hw: tuple[int, int],
) -> Callable[[int, int, np.ndarray], None]:
    """``f(n0, n1, dout_rows)`` writing images ``n0:n1`` of a convolution's dx, channels-last.

    One GEMM gives the chunk's column gradients, which col2im adds onto a zeroed (padded)
    chunk of dx while they are still in cache (read from memory, the adds would run at a
    fraction of the speed: each reads one gappy ninth of the rows).

    Parameters
    ----------
    dx : ndarray of shape (N, H, W, C), written chunk by chunk
    w_rows : ndarray of shape (F, KH * KW * C), the kernel in im2col's column order
    kernel, stride, pad, out_hw : (KH, KW), strides, paddings and (H_out, W_out)
    """
    _, H, W, C = dx.shape
    ph, pw = pad
    dtype = dx.dtype

    def chunk(n0: int, n1: int, dout_rows: np.ndarray) -> None:
        dcols = empty((len(dout_rows), w_rows.shape[1]), dtype)  # (n * H_out * W_out, K)
        np.matmul(dout_rows, w_rows, out=dcols)
        target = dx[n0:n1]
        if ph or pw:  # a zeroed padded scratch, whose interior is then copied out
            target = empty((n1 - n0, H + 2 * ph, W + 2 * pw, C), dtype)
        target.fill(0)
        col2im_add(dcols, target, kernel, stride, out_hw)
        if ph or pw:
            dx[n0:n1] = target[:, ph : ph + H, pw : pw + W]

    return chunk


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

    def chunk(n0: int, n1: int) -> None:
        dcols_t = empty((K, (n1 - n0) * rows), dtype)  # (K, n * H_out * W_out)
        np.matmul(w_rows.T, dout2[n0 * rows : n1 * rows].T, out=dcols_t)
        d6 = dcols_t.reshape(KH, KW, C, n1 - n0, Ho, Wo)
        dxc = dx[n0:n1].transpose(1, 0, 2, 3)  # (C, n, H, W)
        dxc.fill(0)
        for a, b, oi, oj, rows_in, cols_in in offsets:
            view = dxc[:, :, rows_in, cols_in]
            view += d6[a, b, :, :, oi, oj]

    _each_chunk(N, rows, K * dtype.itemsize, _DX_CHUNK_SCALE, chunk)
    return dx
