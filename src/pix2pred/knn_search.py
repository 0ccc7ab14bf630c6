"""Distances and exact k-nearest-neighbour search, the engine under `pix2pred.knn`.

1. :func:`distances_two_loops`, :func:`distances_one_loop`, :func:`distances_no_loops` — the
   course's readable references, in plain NumPy (float64).
2. :func:`pairwise_distances` — the same matrix, fast: compiled kernels for L1 and uint8 L2
   (see :mod:`pix2pred._knn_kernels`), a chunked float64 GEMM for other L2.
3. :func:`kneighbors` — the k nearest training rows of each test row, exact, in chunks of test
   rows so memory stays bounded. Neighbours are ordered by distance, equal distances by index.

``backend="torch"`` runs the search with ``torch.cdist`` and ``topk`` on a device (a GPU when
there is one), chunked the same way; in float64 it is exact for uint8 pixels too, so both
backends predict the same. Only that path imports torch.

Distances are exact for uint8 pixels, so predictions equal scikit-learn's float64 ones: L1 in
integers; L2 in integers too on CPUs with AVX-512 VNNI, elsewhere (and for float input) from a
float32 GEMM whose provable error bound decides which candidates to recompute exactly (float32
alone, with squared norms near 2e8, misorders close neighbours).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from pix2pred import _knn_kernels as kernels

METRICS = ("l1", "l2")
BACKENDS = ("numpy", "torch")
_CHUNK_ELEMENTS = 2**25  # entries of one chunk's distance block: 128 MiB as int32 or float32
_EXTRA_CANDIDATES = 4  # approximate L2 candidates beyond k, for a tight exact threshold
_INSERTION_MAX_K = 256  # top-k by insertion up to this k, by a stable sort beyond


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def _as_rows(X: Any, name: str) -> np.ndarray:
    """Rows of ``X`` as a C-contiguous 2-D array: uint8 stays uint8, the rest becomes float64.

    ``X`` is ``(N, D)`` features or ``(N, H, W, C)`` images (flattened to ``(N, H*W*C)``).
    """
    X = np.asarray(X)
    if X.ndim < 2:
        raise ValueError(
            f"{name} must be (n_samples, n_features) or images (N, H, W, C), got shape {X.shape}"
        )
    if X.dtype != np.uint8:
        if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_):
            raise ValueError(f"{name} must be numeric, got dtype {X.dtype}")
        X = X.astype(np.float64, copy=False)
        if not np.isfinite(X).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(X.reshape(len(X), int(np.prod(X.shape[1:]))))  # (N, D)


def _check_pair(X_test: Any, X_train: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as rows of one dtype (uint8 only when both are uint8) and one width."""
    a, b = _as_rows(X_test, "X_test"), _as_rows(X_train, "X_train")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"X_test has {a.shape[1]} features per row but X_train has {b.shape[1]}")
    if a.dtype != b.dtype:
        a, b = a.astype(np.float64), b.astype(np.float64)
    return a, b


def _check_backend(backend: str, device: str | None) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "numpy" and device not in (None, "auto", "cpu"):
        raise ValueError(f"device={device!r} needs backend='torch' (numpy runs on the cpu)")


def _check_chunk_size(chunk_size: int | None, n_train: int) -> int:
    if chunk_size is None:
        return max(1, _CHUNK_ELEMENTS // max(n_train, 1))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return int(chunk_size)


# ---------------------------------------------------------------------------------------------
# 1. The course's three ways (readable references)


def distances_two_loops(X_test: np.ndarray, X_train: np.ndarray, metric: str = "l2") -> np.ndarray:
    """Distance matrix with a loop over test rows and a loop over train rows.

    Parameters
    ----------
    X_test : ndarray of shape (n_test, D) or (n_test, H, W, C)
    X_train : ndarray of shape (n_train, D) or (n_train, H, W, C)
    metric : "l1" or "l2"

    Returns
    -------
    ndarray of shape (n_test, n_train), float64
    """
    _check_metric(metric)
    a, b = (x.astype(np.float64) for x in _check_pair(X_test, X_train))
    dists = np.empty((len(a), len(b)))
    for i in range(len(a)):
        for j in range(len(b)):
            diff = a[i] - b[j]  # (D,)
            if metric == "l1":
                dists[i, j] = np.sum(np.abs(diff))
            else:
                dists[i, j] = np.sqrt(np.sum(diff * diff))
    return dists


def distances_one_loop(X_test: np.ndarray, X_train: np.ndarray, metric: str = "l2") -> np.ndarray:
    """Distance matrix with one loop over test rows, broadcasting over train rows.

    Shapes as in :func:`distances_two_loops`.
    """
    _check_metric(metric)
    a, b = (x.astype(np.float64) for x in _check_pair(X_test, X_train))
    dists = np.empty((len(a), len(b)))
    for i in range(len(a)):
        diff = b - a[i]  # (n_train, D)
        if metric == "l1":
            dists[i] = np.abs(diff).sum(axis=1)
        else:
            dists[i] = np.sqrt((diff * diff).sum(axis=1))
    return dists


def distances_no_loops(X_test: np.ndarray, X_train: np.ndarray, metric: str = "l2") -> np.ndarray:
    """Distance matrix without Python loops.

    L2 expands ``|a - b|^2 = |a|^2 + |b|^2 - 2 a.b`` into one matrix product; L1 has no such
    form and broadcasts to an ``(n_test, n_train, D)`` array, so keep it to small inputs.
    Shapes as in :func:`distances_two_loops`.
    """
    _check_metric(metric)
    a, b = (x.astype(np.float64) for x in _check_pair(X_test, X_train))
    if metric == "l1":
        return np.abs(a[:, None, :] - b[None, :, :]).sum(axis=2)  # (n_test, n_train)
    sq = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(sq, 0.0))  # NOTE: rounding can make sq slightly negative


# ---------------------------------------------------------------------------------------------
# 2. Fast distance matrix


def _l1_block(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """L1 distances of rows ``a`` (n, D) to rows ``b`` (m, D) into ``out`` (n, m)."""
    if a.dtype == np.uint8:
        kernels.l1_uint8(a, b, out)
    else:
        kernels.l1_float(a, b, out)


def _use_vnni(x: np.ndarray) -> bool:
    """Whether squared L2 of rows ``x`` (n, D) goes to the exact int32 VNNI kernel."""
    return kernels.HAS_VNNI and x.dtype == np.uint8 and x.shape[1] * 255**2 < 2**31


def _signed_bytes(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``b - 128`` as int8 (n, D) and the squared norms of ``b`` as int64 (n,), for VNNI."""
    return np.bitwise_xor(b, 0x80).view(np.int8), np.einsum("ij,ij->i", b, b, dtype=np.int64)


def _l1_out_dtype(x: np.ndarray) -> type:
    if x.dtype != np.uint8:
        return np.float64
    return np.int32 if x.shape[1] * 255 < 2**31 else np.int64


def pairwise_distances(
    X_test: np.ndarray, X_train: np.ndarray, metric: str = "l2", chunk_size: int | None = None
) -> np.ndarray:
    """The full distance matrix, fast: compiled kernels for L1 and (uint8, with AVX-512 VNNI) L2,
    otherwise a float64 GEMM per chunk for L2.

    Exact for uint8 input (in integers, or a float64 GEMM of integers below 2**53).

    Parameters
    ----------
    X_test : ndarray of shape (n_test, D) or (n_test, H, W, C)
    X_train : ndarray of shape (n_train, D) or (n_train, H, W, C)
    metric : "l1" or "l2"
    chunk_size : int, optional, test rows per chunk (default: about 2**25 distances a chunk)

    Returns
    -------
    ndarray of shape (n_test, n_train), float64
    """
    _check_metric(metric)
    a, b = _check_pair(X_test, X_train)
    chunk = _check_chunk_size(chunk_size, len(b))
    out = np.empty((len(a), len(b)))
    if metric == "l1":
        if a.dtype != np.uint8:
            _l1_block(a, b, out)
            return out
        buf = np.empty((min(chunk, len(a)), len(b)), _l1_out_dtype(a))  # integer sums
        for i0 in range(0, len(a), chunk):
            i1 = min(i0 + chunk, len(a))
            _l1_block(a[i0:i1], b, buf[: i1 - i0])
            out[i0:i1] = buf[: i1 - i0]
        return out
    if _use_vnni(a):
        b_signed, sq_train = _signed_bytes(b)
        buf = np.empty((min(chunk, len(a)), len(b)), np.int32)
        for i0 in range(0, len(a), chunk):
            i1 = min(i0 + chunk, len(a))
            kernels.l2_uint8(a[i0:i1], b_signed, sq_train, buf[: i1 - i0])
            np.sqrt(buf[: i1 - i0], out=out[i0:i1])
        return out
    b64 = b.astype(np.float64)
    sq_train = np.einsum("ij,ij->i", b64, b64)  # (n_train,)
    for i0 in range(0, len(a), chunk):
        a64 = a[i0 : i0 + chunk].astype(np.float64)  # (c, D)
        block = out[i0 : i0 + chunk]  # (c, n_train)
        np.matmul(a64, b64.T, out=block)
        block *= -2.0
        block += np.einsum("ij,ij->i", a64, a64)[:, None]
        block += sq_train[None, :]
        np.maximum(block, 0.0, out=block)
        np.sqrt(block, out=block)
    return out


# ---------------------------------------------------------------------------------------------
# 3. Exact top-k search in chunks of test rows


def _float32_dot_error(D: int, exact_cast: bool) -> float:
    """``gamma`` with ``|fl32(a.b) - a.b| <= gamma * |a| * |b|`` for any summation order.

    The classic bound is ``gamma_n * sum|a_d b_d|`` with ``gamma_n = n u / (1 - n u)`` and
    ``u = 2**-24``; Cauchy-Schwarz gives ``sum|a_d b_d| <= |a| |b|``. Casting float64 input to
    float32 adds 2 u; a 1% margin covers the rest.
    """
    nu = (D + (1 if exact_cast else 4)) * 2.0**-24
    return np.inf if nu >= 0.5 else 1.01 * nu / (1.0 - nu)


def kneighbors(
    X_test: np.ndarray,
    X_train: np.ndarray,
    n_neighbors: int,
    metric: str = "l2",
    chunk_size: int | None = None,
    *,
    backend: str = "numpy",
    device: str | None = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_neighbors`` nearest training rows of every test row, exactly.

    Works on ``chunk_size`` test rows at a time, so memory is one ``(chunk_size, n_train)``
    block (128 MiB by default), never the full matrix. L1 computes each block with the
    compiled kernel, and so does L2 for uint8 rows on CPUs with AVX-512 VNNI (exact integer
    dot products); otherwise L2 runs one float32 GEMM a block, then recomputes exactly the few
    columns that the GEMM's error bound cannot rule out.

    Parameters
    ----------
    X_test : ndarray of shape (n_test, D) or (n_test, H, W, C)
    X_train : ndarray of shape (n_train, D) or (n_train, H, W, C)
    n_neighbors : int, 1 <= n_neighbors <= n_train
    metric : "l1" or "l2"
    chunk_size : int, optional, test rows per chunk
    backend : "numpy" or "torch" (see `_kneighbors_torch`)
    device : str, optional, where the torch backend computes ("auto": CUDA, MPS, CPU)

    Returns
    -------
    distances : ndarray of shape (n_test, n_neighbors), float64, ascending in each row
    indices : ndarray of shape (n_test, n_neighbors), int64, rows of ``X_train``; equal
        distances in increasing index order
    """
    _check_metric(metric)
    _check_backend(backend, device)
    a, b = _check_pair(X_test, X_train)
    k = _check_n_neighbors(n_neighbors, len(b))
    chunk = min(_check_chunk_size(chunk_size, len(b)), max(len(a), 1))
    if backend == "torch":
        return _kneighbors_torch(a, b, k, metric, chunk, device)
    if metric == "l1":
        fill = partial(_l1_block, b=b)
        return _kneighbors_by_blocks(a, len(b), k, chunk, _l1_out_dtype(a), fill)
    if _use_vnni(a):
        b_signed, sq_train = _signed_bytes(b)
        fill = partial(kernels.l2_uint8, b_signed=b_signed, sq_b=sq_train)
        sq_dists, idx = _kneighbors_by_blocks(a, len(b), k, chunk, np.int32, fill)
        return np.sqrt(sq_dists), idx
    return _l2_kneighbors_gemm(a, b, k, chunk)


def _kneighbors_by_blocks(
    a: np.ndarray, n_train: int, k: int, chunk: int, dtype: type, fill: Callable
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of exact distance blocks: ``fill(a_chunk, out=block)`` writes the distances of
    rows ``a_chunk`` (c, D) to all training rows into ``block`` (c, n_train) of ``dtype``.
    Returns float64 distances (n_test, k) and int64 indices (n_test, k)."""
    dists = np.empty((len(a), k))
    idx = np.empty((len(a), k), np.int64)
    block = np.empty((chunk, n_train), dtype)  # reused: fresh pages cost page faults
    vals = np.empty((chunk, k), dtype)
    for i0 in range(0, len(a), chunk):
        i1 = min(i0 + chunk, len(a))
        fill(a[i0:i1], out=block[: i1 - i0])
        if k <= _INSERTION_MAX_K:
            kernels.topk_rows(block[: i1 - i0], k, vals[: i1 - i0], idx[i0:i1])
        else:  # insertion costs up to k per row entry; a stable sort keeps the same order
            idx[i0:i1] = np.argsort(block[: i1 - i0], axis=1, kind="stable")[:, :k]
            vals[: i1 - i0] = np.take_along_axis(block[: i1 - i0], idx[i0:i1], axis=1)
        dists[i0:i1] = vals[: i1 - i0]
    return dists, idx


def _l2_kneighbors_gemm(
    a: np.ndarray, b: np.ndarray, k: int, chunk: int
) -> tuple[np.ndarray, np.ndarray]:
    """L2 top-k of rows ``a`` (n_test, D) among rows ``b`` (n_train, D), both uint8 or both
    float64, from a float32 GEMM per chunk made exact by :func:`kernels.l2_topk_exact`."""
    dists = np.empty((len(a), k))
    idx = np.empty((len(a), k), np.int64)
    b32 = b.astype(np.float32)  # (n_train, D)
    sq_train = np.einsum("ij,ij->i", b, b, dtype=np.float64)
    sq_test = np.einsum("ij,ij->i", a, a, dtype=np.float64)
    gamma = _float32_dot_error(a.shape[1], exact_cast=a.dtype == np.uint8)
    n_candidates = min(len(b), k + _EXTRA_CANDIDATES)
    gram = np.empty((chunk, len(b)), np.float32)
    for i0 in range(0, len(a), chunk):
        i1 = min(i0 + chunk, len(a))
        np.matmul(a[i0:i1].astype(np.float32), b32.T, out=gram[: i1 - i0])
        kernels.l2_topk_exact(
            gram[: i1 - i0], a[i0:i1], b, sq_test[i0:i1], sq_train, gamma, k, n_candidates,
            dists[i0:i1], idx[i0:i1],
        )  # fmt: skip
    np.sqrt(dists, out=dists)
    return dists, idx


# ---------------------------------------------------------------------------------------------
# 4. Votes, the estimator and cross-validation


def _kneighbors_torch(
    a: np.ndarray, b: np.ndarray, k: int, metric: str, chunk: int, device: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """`kneighbors` with ``torch.cdist`` and ``topk`` on ``device``, ``chunk`` test rows a time.

    Rows ``a`` (n_test, D) and ``b`` (n_train, D) as `_check_pair` gives them. The arithmetic is
    float64 (float32 on MPS, which has no float64), so uint8 pixels give exact distances: L1
    from ``torch.cdist``, sums of integers; L2 squared from one GEMM, ``|a|^2 + |b|^2 - 2 a.b``
    in integers below 2**53, as cdist's "mm" mode but without its square root, taken at the
    end by numpy. ``topk`` does not order equal distances, so its few extra candidates are
    sorted by (distance, index), and a row whose k-th distance ties with its last candidate is
    sorted in full.
    """
    import torch

    from pix2pred.nn_torch.train import choose_device

    dev = choose_device(device)
    dtype = torch.float32 if dev.type == "mps" else torch.float64
    train = torch.as_tensor(b, device=dev).to(dtype)  # (n_train, D)
    sq_train = (train * train).sum(dim=1)  # (n_train,)
    m = min(len(b), k + _EXTRA_CANDIDATES)
    dists = np.empty((len(a), k))
    idx = np.empty((len(a), k), np.int64)
    for i0 in range(0, len(a), chunk):
        test = torch.as_tensor(a[i0 : i0 + chunk], device=dev).to(dtype)  # (c, D)
        if metric == "l1":
            d = torch.cdist(test, train, p=1.0)  # (c, n_train)
        else:
            # NOTE: not cdist: torch's vectorised sqrt can be an ulp off numpy's exact one.
            sq = (test * test).sum(dim=1)[:, None] + sq_train[None, :]
            d = torch.addmm(sq, test, train.T, alpha=-2).clamp_min_(0)  # (c, n_train), squared
        vals, cand = torch.topk(d, m, dim=1, largest=False)  # (c, m)
        by_index = torch.argsort(cand, dim=1)
        vals, cand = vals.gather(1, by_index), cand.gather(1, by_index)
        by_dist = torch.argsort(vals, dim=1, stable=True)
        vals, cand = vals.gather(1, by_dist), cand.gather(1, by_dist)
        if m < len(b):
            for r in torch.nonzero(vals[:, k - 1] == vals[:, -1]).flatten().tolist():
                vals[r, :], cand[r, :] = (t[:m] for t in torch.sort(d[r], stable=True))
        dists[i0 : i0 + len(test)] = vals[:, :k].cpu().numpy()
        idx[i0 : i0 + len(test)] = cand[:, :k].cpu().numpy()
    if metric == "l2":
        np.sqrt(dists, out=dists)
    return dists, idx


def _check_n_neighbors(k: Any, n_train: int, name: str = "n_neighbors") -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {k!r}")
    if k < 1:
        raise ValueError(f"{name} must be >= 1, got {k}")
    if k > n_train:
        raise ValueError(f"{name}={k} exceeds the number of training samples ({n_train})")
    return int(k)
