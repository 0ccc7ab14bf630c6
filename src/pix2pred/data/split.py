"""Stratified, seeded splits and subsamples of labelled arrays.

Every function keeps the class proportions of ``y`` (largest-remainder rounding, ties broken at
random) and returns the chosen rows in their original relative order, so that a dataset that is
already shuffled stays as it is and the same ``seed`` always picks the same rows.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "resolve_size",
    "split_indices",
    "stratified_indices",
    "stratified_subsample",
    "train_val_split",
]


def resolve_size(size: float | int, n: int, *, name: str = "val_size") -> int:
    """Turn a fraction in ``[0, 1)`` or a count in ``[0, n)`` into a count of rows.

    Parameters
    ----------
    size : float or int
        A fraction of ``n`` (float) or a number of rows (int).
    n : int
        The number of rows available.
    name : str
        The argument name used in error messages.
    """
    if isinstance(size, bool) or not isinstance(size, numbers.Real):
        raise ValueError(f"{name} must be a float in [0, 1) or an int, got {size!r}")
    if isinstance(size, numbers.Integral):
        count = int(size)
        if not 0 <= count < max(n, 1):
            raise ValueError(
                f"{name}={count} must be a count in [0, {n}) (there are {n} rows), "
                "or a fraction in [0, 1)"
            )
        return count
    frac = float(size)
    if not 0.0 <= frac < 1.0:
        raise ValueError(f"{name} must be a fraction in [0, 1) or an int count, got {size!r}")
    return round(frac * n)


def _check_labels(y: np.ndarray, X: np.ndarray | None = None) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must have shape (N,), got shape {y.shape}")
    if X is not None and len(X) != len(y):
        raise ValueError(f"X and y differ in length: {len(X)} rows vs {len(y)} labels")
    return y


def stratified_indices(y: np.ndarray, n: int, seed: int | np.random.Generator) -> np.ndarray:
    """Pick ``n`` row indices of ``y`` with each class represented in proportion.

    Parameters
    ----------
    y : ndarray of shape (N,)
        Class labels (any sortable dtype).
    n : int
        How many rows to pick, ``0 <= n <= N``.
    seed : int or numpy.random.Generator
        Source of randomness.

    Returns
    -------
    ndarray of shape (n,), int64
        Sorted indices into ``y``.
    """
    y = _check_labels(y)
    N = len(y)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 0 <= n <= N:
        raise ValueError(f"cannot pick n={n!r} rows out of {N}")
    rng = np.random.default_rng(seed)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    _, y_idx = np.unique(y, return_inverse=True)
    counts = np.bincount(y_idx)
    quota = n * counts / N
    take = np.floor(quota).astype(np.int64)
    frac = quota - take
    # Largest remainders first; a random key breaks ties so no class is favoured by its order.
    order = np.lexsort((rng.random(len(counts)), -frac))
    take[order[: n - int(take.sum())]] += 1

    perm = rng.permutation(N)
    grouped = perm[np.argsort(y_idx[perm], kind="stable")]  # (N,) class by class, random within
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    chosen = np.concatenate([grouped[s : s + t] for s, t in zip(starts, take, strict=True)])
    return np.sort(chosen).astype(np.int64)


def split_indices(
    y: np.ndarray, size: float | int, seed: int | np.random.Generator, *, name: str = "val_size"
) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices of ``y`` into a kept part and a stratified held-out part.

    Returns
    -------
    keep : ndarray of shape (N - n_out,), int64
    out : ndarray of shape (n_out,), int64
        Both sorted; together a partition of ``range(N)``.
    """
    y = _check_labels(y)
    n_out = resolve_size(size, len(y), name=name)
    out = stratified_indices(y, n_out, seed)
    mask = np.ones(len(y), dtype=bool)
    mask[out] = False
    return np.flatnonzero(mask).astype(np.int64), out


def train_val_split(
    X: np.ndarray, y: np.ndarray, val_size: float | int, seed: int | np.random.Generator = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Carve a stratified validation set out of training data.

    Parameters
    ----------
    X : ndarray of shape (N, ...)
        Samples, e.g. images ``(N, H, W, C)``.
    y : ndarray of shape (N,)
        Labels.
    val_size : float or int
        Fraction in ``[0, 1)`` or count in ``[0, N)`` of rows for validation; 0 gives empty
        validation arrays of shape ``(0, ...)``.
    seed : int or numpy.random.Generator

    Returns
    -------
    X_train : ndarray of shape (N - V, ...)
    y_train : ndarray of shape (N - V,)
    X_val : ndarray of shape (V, ...)
    y_val : ndarray of shape (V,)
    """
    y = _check_labels(y, X)
    keep, out = split_indices(y, val_size, seed)
    if len(out) == 0:
        return X, y, X[:0], y[:0]  # nothing carved out: no need to copy the training set
    return X[keep], y[keep], X[out], y[out]


def stratified_subsample(
    X: np.ndarray, y: np.ndarray, n: int, seed: int | np.random.Generator = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Keep ``n`` rows of ``(X, y)``, stratified by class.

    Parameters
    ----------
    X : ndarray of shape (N, ...)
    y : ndarray of shape (N,)
    n : int
        Rows to keep, ``1 <= n <= N``.
    seed : int or numpy.random.Generator

    Returns
    -------
    X_sub : ndarray of shape (n, ...)
    y_sub : ndarray of shape (n,)
    """
    y = _check_labels(y, X)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= len(y):
        raise ValueError(f"n={n!r} must be an int in [1, {len(y)}] (the number of rows)")
    idx = stratified_indices(y, int(n), seed)
    return X[idx], y[idx]
