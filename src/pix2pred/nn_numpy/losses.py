"""Classification losses with their gradients, and the L2 penalty.

Each loss takes class scores ``(N, C)`` and integer labels ``(N,)`` and returns
``(loss, dscores)``: the mean over the N samples and its gradient with respect to the scores.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def _check_scores_labels(scores: np.ndarray, y: np.ndarray) -> None:
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape (N, C), got shape {scores.shape}")
    N, C = scores.shape
    if y.shape != (N,):
        raise ValueError(f"y must have shape ({N},) to match scores {scores.shape}, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
    if N and (y.min() < 0 or y.max() >= C):
        bad = y[(y < 0) | (y >= C)][0]
        raise ValueError(f"labels must be in [0, {C - 1}] for {C} classes, got {bad}")


def softmax_loss(
    scores: np.ndarray, y: np.ndarray, label_smoothing: float = 0.0
) -> tuple[float, np.ndarray]:
    """Softmax cross-entropy, as ``torch.nn.functional.cross_entropy``.

    The target is ``(1 - label_smoothing)`` on the true class plus ``label_smoothing / C`` on
    every class. Log-probabilities use a per-row log-sum-exp, so any finite scores (1e4, -1e4)
    give a finite loss and gradient.

    Parameters
    ----------
    scores : ndarray of shape (N, C)
    y : ndarray of shape (N,), integer labels in [0, C)
    label_smoothing : float in [0, 1]

    Returns
    -------
    loss : float, the mean over N
    dscores : ndarray of shape (N, C)
    """
    _check_scores_labels(scores, y)
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    N, C = scores.shape
    shifted = scores - scores.max(axis=1, keepdims=True)  # (N, C), each row's max is 0
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # (N, C)
    target = np.full(scores.shape, label_smoothing / C, dtype=scores.dtype)  # (N, C)
    target[np.arange(N), y] += 1 - label_smoothing
    loss = -(target * log_probs).sum() / N
    dscores = (np.exp(log_probs) - target) / N
    return float(loss), dscores


def svm_loss(scores: np.ndarray, y: np.ndarray, margin: float = 1.0) -> tuple[float, np.ndarray]:
    """Multiclass hinge loss ``sum_{j != y} max(0, s_j - s_y + margin)``, mean over N.

    ``torch.nn.functional.multi_margin_loss`` also divides each sample's sum by C; this is
    the course's (Weston-Watkins) loss, so ``svm_loss = C * multi_margin_loss``.

    Parameters
    ----------
    scores : ndarray of shape (N, C)
    y : ndarray of shape (N,), integer labels in [0, C)
    margin : float

    Returns
    -------
    loss : float, the mean over N
    dscores : ndarray of shape (N, C)
    """
    _check_scores_labels(scores, y)
    N = scores.shape[0]
    rows = np.arange(N)
    margins = np.maximum(0, scores - scores[rows, y][:, None] + margin)  # (N, C)
    margins[rows, y] = 0
    positive = (margins > 0).astype(scores.dtype)  # (N, C)
    positive[rows, y] = -positive.sum(axis=1)
    return float(margins.sum() / N), positive / N


def l2_regularization(
    params_or_array: np.ndarray | Mapping[str, np.ndarray], weight_decay: float
) -> tuple[float, np.ndarray | dict[str, np.ndarray]]:
    """L2 penalty ``0.5 * weight_decay * sum(w ** 2)`` and its gradient ``weight_decay * w``.

    The factor 0.5 makes ``weight_decay`` mean what it means in ``torch.optim``: there it adds
    ``weight_decay * w`` to each gradient, exactly this penalty's gradient, so a model trained
    with this penalty and one trained by a torch optimizer with the same ``weight_decay``
    take the same steps. (The course's ``reg * sum(w ** 2)`` is this with
    ``weight_decay = 2 * reg``.)

    Parameters
    ----------
    params_or_array : ndarray of any shape, or a mapping of names to ndarrays (the penalty is
        summed over all of them; pass only the arrays to decay, usually not biases)
    weight_decay : float, at least 0

    Returns
    -------
    loss : float
    grad : ndarray like the input, or a dict with the same keys
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be non-negative, got {weight_decay!r}")
    if isinstance(params_or_array, Mapping):
        loss = sum(0.5 * weight_decay * float(np.sum(w * w)) for w in params_or_array.values())
        return float(loss), {k: weight_decay * w for k, w in params_or_array.items()}
    w = params_or_array
    return 0.5 * weight_decay * float(np.sum(w * w)), weight_decay * w
