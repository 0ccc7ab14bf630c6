"""k-nearest neighbours: the course's classifier, exact and fast, with cross-validation of k.

:class:`KNearestNeighbors` is the scikit-learn style estimator; :func:`cross_validate_k` picks
k by folds. Distances and the neighbour search (the course's three distance matrices, the fast
exact search, the torch path) live in :mod:`pix2pred.knn_search`, whose public names this
module re-exports.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pix2pred.checkpoint import load_safetensors, read_json, save_safetensors, write_json
from pix2pred.estimators import FORMAT, FORMAT_VERSION, NotFittedError, model_files
from pix2pred.knn_search import (
    BACKENDS,
    METRICS,
    _as_rows,
    _check_backend,
    _check_chunk_size,
    _check_metric,
    _check_n_neighbors,
    distances_no_loops,
    distances_one_loop,
    distances_two_loops,
    kneighbors,
    pairwise_distances,
)

__all__ = [
    "BACKENDS",
    "METRICS",
    "CrossValidationResult",
    "KNearestNeighbors",
    "cross_validate_k",
    "distances_no_loops",
    "distances_one_loop",
    "distances_two_loops",
    "kneighbors",
    "majority_vote",
    "pairwise_distances",
    "vote_counts",
]


def vote_counts(neighbor_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Votes per class among neighbours.

    Parameters
    ----------
    neighbor_labels : ndarray of shape (n, k), int, class indices in [0, n_classes)
    n_classes : int

    Returns
    -------
    ndarray of shape (n, n_classes), int64
    """
    n = len(neighbor_labels)
    flat = (np.arange(n)[:, None] * n_classes + neighbor_labels).ravel()  # (n * k,)
    return np.bincount(flat, minlength=n * n_classes).reshape(n, n_classes)


def majority_vote(neighbor_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """The most common class index of each row of ``neighbor_labels`` (n, k); ties go to the
    smaller index (as scikit-learn and ``scipy.stats.mode``). Returns int64 of shape (n,)."""
    return np.argmax(vote_counts(neighbor_labels, n_classes), axis=1)


class KNearestNeighbors:
    """k-nearest-neighbour classifier with L1 or L2 distance, exact brute-force search.

    Parameters
    ----------
    k : int, neighbours that vote (ties go to the smaller label)
    metric : "l1" or "l2"
    chunk_size : int, optional, test rows per chunk of the search (bounds memory)
    backend : "numpy" or "torch" (``torch.cdist`` and ``topk``; the same predictions)
    device : str, where the torch backend searches ("auto": CUDA, then MPS, then the CPU)

    Attributes
    ----------
    X_ : ndarray of shape (n_train, D), the training rows (uint8 images stay uint8)
    y_ : ndarray of shape (n_train,), the labels as given
    classes_ : ndarray of shape (n_classes,), the sorted distinct labels
    """

    def __init__(
        self,
        k: int = 1,
        metric: str = "l2",
        chunk_size: int | None = None,
        backend: str = "numpy",
        device: str = "auto",
    ) -> None:
        self.k = k
        self.metric = metric
        self.chunk_size = chunk_size
        self.backend = backend
        self.device = device

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The hyperparameters, by name."""
        names = ("k", "metric", "chunk_size", "backend", "device")
        return {name: getattr(self, name) for name in names}

    def set_params(self, **params: Any) -> KNearestNeighbors:
        """Set hyperparameters by name; returns self."""
        for name, value in params.items():
            if name not in self.get_params():
                raise ValueError(
                    f"invalid parameter {name!r} for KNearestNeighbors; "
                    f"valid: {sorted(self.get_params())}"
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"KNearestNeighbors({args})"

    def fit(self, X: np.ndarray, y: np.ndarray) -> KNearestNeighbors:
        """Store the training set.

        Parameters
        ----------
        X : ndarray of shape (n_train, D), or uint8 images of shape (n_train, H, W, C)
        y : ndarray of shape (n_train,), integer labels
        """
        _check_metric(self.metric)
        _check_backend(self.backend, self.device)
        X = _as_rows(X, "X")
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"y must have shape (n_samples,), got shape {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"y must hold integer labels, got dtype {y.dtype}")
        if len(X) != len(y):
            raise ValueError(f"X and y differ in length: {len(X)} rows vs {len(y)} labels")
        _check_n_neighbors(self.k, len(X), name="k")
        _check_chunk_size(self.chunk_size, len(X))
        self.X_ = X
        self.y_ = y
        self.classes_, self._y_index = np.unique(y, return_inverse=True)
        self.n_features_in_ = X.shape[1]
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "X_"):
            raise NotFittedError("this KNearestNeighbors is not fitted yet; call fit(X, y) first")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path.safetensors`` (the training set) and ``path.json``; return the JSON path."""
        self._check_fitted()
        weights, meta = model_files(path)
        save_safetensors(weights, {"X": self.X_, "y": self.y_})
        write_json(
            meta,
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "estimator": "KNearestNeighbors",
                "params": self.get_params(),
                "classes": self.classes_.tolist(),
            },
        )
        return meta

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KNearestNeighbors:
        """Rebuild a saved kNN; refuses files that are not a pix2pred kNN."""
        weights, meta_path = model_files(path)
        meta = read_json(meta_path)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: not a pix2pred model file")
        if meta.get("estimator") != "KNearestNeighbors":
            raise ValueError(
                f"{meta_path}: holds a {meta.get('estimator')}, not a KNearestNeighbors; "
                f"use pix2pred.{meta.get('estimator')}.load"
            )
        arrays = load_safetensors(weights)
        return cls(**meta["params"]).fit(arrays["X"], arrays["y"])

    def kneighbors(
        self, X: np.ndarray, n_neighbors: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Distances and training indices of the nearest neighbours of each row of ``X``.

        Parameters
        ----------
        X : ndarray of shape (n, D) or (n, H, W, C)
        n_neighbors : int, optional (default: ``k``)

        Returns
        -------
        distances : ndarray of shape (n, n_neighbors), float64, ascending
        indices : ndarray of shape (n, n_neighbors), int64, rows of ``X_``
        """
        self._check_fitted()
        n_neighbors = self.k if n_neighbors is None else n_neighbors
        return kneighbors(
            X,
            self.X_,
            n_neighbors,
            self.metric,
            self.chunk_size,
            backend=self.backend,
            device=self.device,
        )

    def _votes(self, X: np.ndarray) -> np.ndarray:
        _, idx = self.kneighbors(X)
        return vote_counts(self._y_index[idx], len(self.classes_))  # (n, n_classes)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Majority label of the k nearest neighbours; ties go to the smaller label.

        ``X`` is ``(n, D)`` or ``(n, H, W, C)``; returns labels of shape (n,).
        """
        votes = self._votes(X)  # (n, n_classes)
        return self.classes_[np.argmax(votes, axis=1)]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Fraction of the k neighbours in each class: (n, n_classes), columns as ``classes_``."""
        return self._votes(X) / self.k

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Accuracy of :meth:`predict` on ``X`` (n, ...) against labels ``y`` (n,)."""
        y = np.asarray(y)
        if y.shape != (len(X),):
            raise ValueError(f"y must have shape ({len(X)},), got shape {y.shape}")
        return float(np.mean(self.predict(X) == y))


@dataclass(frozen=True)
class CrossValidationResult:
    """Accuracy of k-NN for each k on each fold.

    Attributes
    ----------
    ks : ndarray of shape (n_k,), int64, the values of k, in the order given
    fold_accuracies : ndarray of shape (n_k, n_folds), float64
    mean : ndarray of shape (n_k,), float64, mean over folds
    std : ndarray of shape (n_k,), float64, standard deviation over folds (ddof=0)
    metric : str
    """

    ks: np.ndarray
    fold_accuracies: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    metric: str

    @property
    def best_k(self) -> int:
        """The k with the highest mean accuracy (the smallest such k on a tie)."""
        best = self.mean == self.mean.max()
        return int(self.ks[best].min())

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers, ready for JSON."""
        return {
            "ks": self.ks.tolist(),
            "fold_accuracies": self.fold_accuracies.tolist(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "metric": self.metric,
            "best_k": self.best_k,
        }


def cross_validate_k(
    X: np.ndarray,
    y: np.ndarray,
    ks: Any,
    n_folds: int = 5,
    metric: str = "l2",
    seed: int = 0,
    chunk_size: int | None = None,
    *,
    backend: str = "numpy",
    device: str | None = "auto",
) -> CrossValidationResult:
    """k-fold cross-validation of the number of neighbours.

    The rows are shuffled with ``seed`` and cut into ``n_folds`` folds of near-equal size
    (``numpy.array_split``). Each fold is held out once: one search for its ``max(ks)``
    nearest neighbours in the other folds serves every k.

    Parameters
    ----------
    X : ndarray of shape (N, D) or (N, H, W, C)
    y : ndarray of shape (N,), integer labels
    ks : sequence of int, each >= 1 and at most the size of a training split
    n_folds : int, 2 <= n_folds <= N
    metric : "l1" or "l2"
    seed : int, seeds the shuffle
    chunk_size : int, optional, as in :func:`kneighbors`
    backend, device : as in :func:`kneighbors`

    Returns
    -------
    CrossValidationResult
    """
    _check_metric(metric)
    _check_backend(backend, device)
    X = _as_rows(X, "X")
    y = np.asarray(y)
    if y.shape != (len(X),):
        raise ValueError(f"y must have shape ({len(X)},), got shape {y.shape}")
    if isinstance(n_folds, bool) or not isinstance(n_folds, numbers.Integral):
        raise ValueError(f"n_folds must be an int, got {n_folds!r}")
    if not 2 <= n_folds <= len(X):
        raise ValueError(f"n_folds must be in [2, {len(X)}] (the number of samples), got {n_folds}")
    ks_arr = np.asarray(ks)
    if ks_arr.ndim != 1 or ks_arr.size == 0 or not np.issubdtype(ks_arr.dtype, np.integer):
        raise ValueError(f"ks must be a non-empty sequence of ints, got {ks!r}")
    folds = np.array_split(np.random.default_rng(seed).permutation(len(X)), n_folds)
    smallest_train = len(X) - max(len(f) for f in folds)
    if ks_arr.min() < 1:
        raise ValueError(f"every k in ks must be >= 1, got {ks_arr.min()}")
    if ks_arr.max() > smallest_train:
        raise ValueError(
            f"k={ks_arr.max()} in ks exceeds the smallest training split "
            f"({smallest_train} samples with n_folds={n_folds})"
        )
    classes, y_index = np.unique(y, return_inverse=True)
    k_max = int(ks_arr.max())
    acc = np.empty((len(ks_arr), n_folds))
    for f, val in enumerate(folds):
        train = np.concatenate([folds[g] for g in range(n_folds) if g != f])
        _, idx = kneighbors(
            X[val], X[train], k_max, metric, chunk_size, backend=backend, device=device
        )
        labels = y_index[train][idx]  # (n_val, k_max), ordered nearest first
        for t, k in enumerate(ks_arr):
            pred = majority_vote(labels[:, :k], len(classes))
            acc[t, f] = np.mean(pred == y_index[val])
    return CrossValidationResult(
        ks=ks_arr.astype(np.int64),
        fold_accuracies=acc,
        mean=acc.mean(axis=1),
        std=acc.std(axis=1),
        metric=metric,
    )
