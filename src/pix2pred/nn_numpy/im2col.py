"""The machinery under ``fast_layers``: reusable buffers, channels-last views, im2col, col2im.

Three ideas make the NumPy convolution fast, and each lives here:

1. **Channels-last memory.** Arrays keep the course's ``(N, C, H, W)`` shape, but the fast
   layers store them as ``(N, H, W, C)`` in memory (torch calls this ``channels_last``) and
   return transposed views. Then a pixel's C channels are adjacent, so one output pixel's
   window row ``(KW, C)`` is a single contiguous run: im2col copies runs of ``KW * C`` numbers
   instead of single ones, and the GEMM result ``(N * H_out * W_out, F)`` *is* the next
   activation, with no transpose. Any memory order is accepted; others are copied once.
2. **Strided views instead of loops.** im2col is one copy from an ``as_strided`` window view
   of the padded input; col2im is ``KH * ceil(KW / stride)`` strided adds (windows of one
   residue class never overlap, so each add covers a whole kernel row at once).
3. **Buffers that are reused.** Fresh large arrays cost a page fault per 4 KiB page, which
   here is as slow as the arithmetic. ``Workspace`` hands out preallocated arrays, and only
   those that nobody else holds: a returned activation, or a cache kept for the backward
   pass, stays untouched for as long as a reference (or a view) to it exists.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from numpy.lib.stride_tricks import as_strided

#: Bytes of buffers the default workspace keeps for reuse.
DEFAULT_WORKSPACE_BYTES = 1 << 30

#: Rows of a backward chunk are chosen so that its ``dcols`` block has about this many bytes:
#: small enough to stay in the L2 cache between the GEMM that writes it and the adds that
#: read it, large enough for an efficient GEMM.
CHUNK_BYTES = 1 << 20


T = TypeVar("T")


def _refcount(bufs: list[np.ndarray], i: int) -> int:
    return sys.getrefcount(bufs[i])


# References to a buffer that only its workspace list holds, as seen from ``_refcount``.
_IDLE_REFS = _refcount([np.empty(0)], 0)


class Workspace:
    """Preallocated arrays keyed by shape and dtype, reused once nobody holds them.

    A buffer is reusable when its only reference is the workspace's own list: any caller
    (or any view of the buffer, which references it through ``.base``) keeps it out of
    circulation. Idle buffers are dropped least recently used first to stay under
    ``max_bytes``; arrays larger than a quarter of it are never kept.

    Parameters
    ----------
    max_bytes : int
        Bytes of buffers kept for reuse.
    """

    def __init__(self, max_bytes: int = DEFAULT_WORKSPACE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be non-negative, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._bufs: OrderedDict[tuple[tuple[int, ...], str], list[np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes of the buffers held (idle or in use)."""
        return sum(b.nbytes for bufs in self._bufs.values() for b in bufs)

    def empty(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype``, reused if possible."""
        shape = tuple(int(s) for s in shape)
        dtype = np.dtype(dtype)
        key = (shape, dtype.str)
        with self._lock:
            bufs = self._bufs.get(key)
            if bufs is not None:
                self._bufs.move_to_end(key)
                for i in range(len(bufs)):
                    if _refcount(bufs, i) <= _IDLE_REFS:
                        return bufs[i]
            buf = np.empty(shape, dtype)
            if buf.nbytes <= self.max_bytes // 4:
                self._make_room(buf.nbytes)
                self._bufs.setdefault(key, []).append(buf)
            return buf

    def clear(self) -> None:
        """Forget every buffer (arrays still held elsewhere stay valid)."""
        with self._lock:
            self._bufs.clear()

    def _make_room(self, nbytes: int) -> None:
        """Drop buffers, least recently used first, until ``nbytes`` more fit."""
        total = self.nbytes
        for key in list(self._bufs):
            if total + nbytes <= self.max_bytes:
                return
            total -= sum(b.nbytes for b in self._bufs.pop(key))


#: The workspace every fast layer draws from.
WORKSPACE = Workspace()


def empty(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """A reusable C-contiguous array from ``WORKSPACE`` (see ``Workspace.empty``)."""
    return WORKSPACE.empty(shape, dtype)


# ---------------------------------------------------------------- threads


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_threads = _default_threads()
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for the memory-bound loops (copies, adds, norms); BLAS has its own."""
    global _threads, _executor
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of threads must be a positive int, got {n!r}")
    with _executor_lock:
        _threads = n
        if _executor is not None:
            _executor.shutdown(wait=False)
            _executor = None


def get_num_threads() -> int:
    """Threads the memory-bound loops use (the number of usable cores unless set)."""
    return _threads


def parallel(fn: Callable[[int, int], T], n: int) -> list[T]:
    """``[fn(start, stop), ...]`` over contiguous parts of ``range(n)``, run at the same time.

    NumPy releases the GIL inside its loops, so memory-bound work split over the batch axis
    runs on every core; the calling thread does the first part itself.
    """
    global _executor
    parts = min(_threads, n)
    if parts <= 1:
        return [fn(0, n)]
    bounds = [n * i // parts for i in range(parts + 1)]
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(_threads - 1, thread_name_prefix="pix2pred")
        futures = [_executor.submit(fn, a, b) for a, b in itertools.pairwise(bounds[1:])]
    return [fn(bounds[0], bounds[1]), *(f.result() for f in futures)]


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


def im2col(
    xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], out_hw: tuple[int, int]
) -> np.ndarray:
    """Column matrix of a padded NHWC input, with a trailing column of ones for the bias.

    Parameters
    ----------
    xp : ndarray of shape (N, Hp, Wp, C), C-contiguous in (Wp, C)
    kernel, stride : (KH, KW) and (stride_h, stride_w)
    out_hw : (H_out, W_out)

    Returns
    -------
    cols : ndarray of shape (N * H_out * W_out, KH * KW * C + 1), rows in (n, i, j) order,
        columns in (a, b, c) kernel order then the ones (a workspace buffer)
    """
    N, _, _, C = xp.shape
    K = kernel[0] * kernel[1] * C
    cols = empty((N * out_hw[0] * out_hw[1], K + 1), xp.dtype)
    s = cols.strides[0]
    # (N, H_out, W_out, KH, KW * C) view of cols[:, :K]
    dst = as_strided(
        cols,
        shape=(N, *out_hw, kernel[0], kernel[1] * C),
        strides=(
            out_hw[0] * out_hw[1] * s,
            out_hw[1] * s,
            s,
            kernel[1] * C * cols.itemsize,
            cols.itemsize,
        ),
    )
    src = window_view(xp, kernel, stride, out_hw)

    def copy(a: int, b: int) -> None:
        np.copyto(dst[a:b], src[a:b])

    parallel(copy, N)
    cols[:, K] = 1
    return cols


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


def chunks(n: int, rows_per_item: int, row_bytes: int) -> Iterator[tuple[int, int]]:
    """Split ``range(n)`` into ``(start, stop)`` chunks of about ``CHUNK_BYTES`` each."""
    step = max(1, CHUNK_BYTES // max(1, rows_per_item * row_bytes))
    for start in range(0, n, step):
        yield start, min(n, start + step)


DX_MODE = "gemm_then_parallel"


def conv_dx(
    dout2: np.ndarray,
    w_rows: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
    out_hw: tuple[int, int],
) -> np.ndarray:
    """dx (N, H, W, C) of a convolution from ``dout2`` (N * H_out * W_out, F), w_rows (F, K)."""
    N, C, H, W = x_shape
    ph, pw = pad
    dtype = dout2.dtype
    dx = empty((N, H, W, C), dtype)
    rows = out_hw[0] * out_hw[1]
    K = w_rows.shape[1]
    if DX_MODE == "gemm_then_parallel":
        dcols_all = empty((N * rows, K), dtype)
        np.matmul(dout2, w_rows, out=dcols_all)
    else:
        dcols_all = None

    def part(a: int, b: int) -> None:
        dcols = dxp = None
        for n0, n1 in chunks(b - a, rows, K * dout2.itemsize):
            n0, n1 = n0 + a, n1 + a
            n = n1 - n0
            if dcols_all is not None:
                block = dcols_all[n0 * rows : n1 * rows]
            else:
                if dcols is None or len(dcols) != n * rows:
                    dcols = empty((n * rows, K), dtype)
                np.matmul(dout2[n0 * rows : n1 * rows], w_rows, out=dcols)
                block = dcols
            if ph or pw:
                if dxp is None or len(dxp) != n:
                    dxp = empty((n, H + 2 * ph, W + 2 * pw, C), dtype)
                target = dxp
            else:
                target = dx[n0:n1]
            target.fill(0)
            col2im_add(block, target, kernel, stride, out_hw)
            if ph or pw:
                dx[n0:n1] = dxp[:, ph : ph + H, pw : pw + W]

    if DX_MODE == "sequential":
        part(0, N)
    else:
        parallel(part, N)
    return dx
