"""Reusable buffers and worker threads for the fast NumPy layers.

Two things cost as much as the arithmetic in the fast layers, and this module removes both:

1. **Fresh large arrays.** A new array's pages are faulted in one 4 KiB page at a time when
   first written, which on this kind of machine takes about as long as a GEMM into a buffer
   that is already mapped. ``Workspace`` hands out preallocated arrays, and only those that
   nobody else holds: a returned activation, or a cache kept for the backward pass, stays
   untouched for as long as a reference (or a view) to it exists.
2. **One core doing memory-bound work.** BLAS uses every core for the GEMMs, but NumPy's
   copies and elementwise loops use one. They release the GIL, so ``parallel`` splits such
   work (pooling, batch norm) over the batch and runs the parts on a small thread pool.
   ``parallel_blas`` does the same for whole im2col → GEMM → col2im pipelines, each thread
   with a one-thread BLAS: the copies and adds around the GEMMs then use every core too, and
   a GEMM that reduces over the batch (a filter gradient) is split along that long axis
   rather than over its small output, as BLAS would split it.

Work is also cut into ``CHUNK_BYTES`` pieces (``chunks``) so that several operations on a
piece run while it is still in cache.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import numpy as np
from threadpoolctl import ThreadpoolController

#: Bytes of buffers the default workspace keeps for reuse.
DEFAULT_WORKSPACE_BYTES = 1 << 30

#: Bytes of one chunk of work: a few operations on it run while it stays in cache.
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


def _forget_threads_after_fork() -> None:
    # A forked child has none of the parent's threads; holding on to the parent's pool (or
    # to a lock some thread held at the fork) would hang it.
    global _executor, _executor_lock
    _executor, _executor_lock = None, threading.Lock()
    WORKSPACE._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads_after_fork)


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
        # Each part runs in a copy of the caller's context, so that np.errstate (a context
        # variable) applies to it as to the caller.
        futures = [
            _executor.submit(contextvars.copy_context().run, fn, a, b)
            for a, b in itertools.pairwise(bounds[1:])
        ]
    return [fn(bounds[0], bounds[1]), *(f.result() for f in futures)]


_blas_controller: ThreadpoolController | None = None
_blas_held: contextvars.ContextVar[bool] = contextvars.ContextVar("blas_held", default=False)


@contextmanager
def blas_one_thread() -> Iterator[None]:
    """Hold BLAS to one thread for the block, when this module has threads of its own.

    A model's forward and backward passes run inside it: all their GEMMs then go through
    ``parallel_blas``, and no BLAS worker thread is left spinning (OpenBLAS's wait for the
    next call after a many-thread GEMM) on a core that this module's threads need.
    """
    global _blas_controller
    if _threads <= 1 or _blas_held.get():  # nothing to do, or already held by the caller
        yield
        return
    if _blas_controller is None:
        _blas_controller = ThreadpoolController()
    token = _blas_held.set(True)
    try:
        with _blas_controller.limit(limits=1, user_api="blas"):
            yield
    finally:
        _blas_held.reset(token)


def blas_held() -> bool:
    """Whether the caller runs inside ``blas_one_thread`` (BLAS held to one thread)."""
    return _blas_held.get()


def parallel_blas(fn: Callable[[int, int], T], n: int) -> list[T]:
    """``parallel(fn, n)`` with BLAS held to one thread per call while the parts run.

    For work whose parts each call BLAS: the threads here, not BLAS's, then share the cores
    (both at once would oversubscribe them). With one thread configured, or one part, ``fn``
    runs on the caller with BLAS as it is.
    """
    if min(_threads, n) <= 1:
        return [fn(0, n)]
    with blas_one_thread():
        return parallel(fn, n)


def chunks(n: int, rows_per_item: int, row_bytes: int, scale: int = 1) -> Iterator[tuple[int, int]]:
    """Split ``range(n)`` into ``(start, stop)`` chunks of about ``scale * CHUNK_BYTES`` each.

    An item (a sample) is ``rows_per_item`` rows of ``row_bytes``; a chunk holds at least one.
    """
    step = max(1, scale * CHUNK_BYTES // max(1, rows_per_item * row_bytes))
    for start in range(0, n, step):
        yield start, min(n, start + step)
