"""Numerical gradients and relative errors, to check hand-written backward passes (float64).

``eval_numerical_gradient`` and ``eval_numerical_gradient_array`` perturb one entry of x at a
time by ``±h`` and take central differences; ``grad_check_sparse`` does so for a few random
entries of a large array. ``run_layer_checks`` checks every layer and loss of
``pix2pred.nn_numpy`` this way on small inputs; ``pix2pred gradcheck`` prints its results.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def _check_float64(x: np.ndarray, name: str) -> None:
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        raise TypeError(
            f"{name} must be a float64 ndarray (central differences need double precision), "
            f"got {getattr(x, 'dtype', type(x).__name__)}"
        )


def eval_numerical_gradient(
    f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-5
) -> np.ndarray:
    """Gradient of a scalar function by central differences.

    Parameters
    ----------
    f : function of x returning a scalar; it reads x, which is perturbed in place
    x : float64 ndarray of any shape; restored before returning, even if f raises
    h : step

    Returns
    -------
    grad : ndarray of the shape of x, ``(f(x + h e_i) - f(x - h e_i)) / (2 h)`` per entry
    """
    _check_float64(x, "x")
    grad = np.zeros_like(x)
    for ix in np.ndindex(x.shape):
        old = x[ix]
        try:
            x[ix] = old + h
            f_plus = float(f(x))
            x[ix] = old - h
            f_minus = float(f(x))
        finally:
            x[ix] = old
        grad[ix] = (f_plus - f_minus) / (2 * h)
    return grad


def eval_numerical_gradient_array(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, df: np.ndarray, h: float = 1e-5
) -> np.ndarray:
    """Gradient of ``sum(f(x) * df)`` for an array-valued f, by central differences.

    Parameters
    ----------
    f : function of x returning an ndarray of the shape of df; x is perturbed in place
    x : float64 ndarray of any shape; restored before returning, even if f raises
    df : ndarray, the upstream gradient of f's output
    h : step

    Returns
    -------
    grad : ndarray of the shape of x
    """
    _check_float64(x, "x")
    grad = np.zeros_like(x)
    for ix in np.ndindex(x.shape):
        old = x[ix]
        try:
            x[ix] = old + h
            # Copies, because f may return a view of x or a buffer it reuses.
            f_plus = np.array(f(x), dtype=np.float64)
            x[ix] = old - h
            f_minus = np.array(f(x), dtype=np.float64)
        finally:
            x[ix] = old
        grad[ix] = np.sum((f_plus - f_minus) * df) / (2 * h)
    return grad


def rel_error(x: np.ndarray, y: np.ndarray, eps: float = 1e-8) -> float:
    """Largest elementwise relative error ``|x - y| / max(|x| + |y|, eps)``.

    ``eps`` guards entries where both are (nearly) zero: below it, the absolute difference
    over ``eps`` is what counts.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"cannot compare arrays of shapes {x.shape} and {y.shape}")
    if x.size == 0:
        return 0.0
    return float(np.max(np.abs(x - y) / np.maximum(eps, np.abs(x) + np.abs(y))))


def grad_check_sparse(
    f: Callable[[np.ndarray], float],
    x: np.ndarray,
    analytic_grad: np.ndarray,
    num_checks: int = 10,
    h: float = 1e-5,
    seed: int | np.random.Generator = 0,
) -> np.ndarray:
    """Compare ``analytic_grad`` with central differences of scalar f at random entries of x.

    Parameters
    ----------
    f : function of x returning a scalar; x is perturbed in place and restored
    x : float64 ndarray of any shape
    analytic_grad : ndarray of the shape of x
    num_checks : number of random entries (drawn with replacement)
    h : step
    seed : int or numpy.random.Generator choosing the entries

    Returns
    -------
    errors : ndarray of shape (num_checks,), the relative error at each checked entry
    """
    _check_float64(x, "x")
    if analytic_grad.shape != x.shape:
        raise ValueError(f"analytic_grad has shape {analytic_grad.shape}, x has {x.shape}")
    if num_checks < 1:
        raise ValueError(f"num_checks must be at least 1, got {num_checks!r}")
    rng = np.random.default_rng(seed)
    errors = np.empty(num_checks)
    for k in range(num_checks):
        ix = tuple(int(rng.integers(n)) for n in x.shape)
        old = x[ix]
        try:
            x[ix] = old + h
            f_plus = float(f(x))
            x[ix] = old - h
            f_minus = float(f(x))
        finally:
            x[ix] = old
        errors[k] = rel_error(np.array((f_plus - f_minus) / (2 * h)), analytic_grad[ix])
    return errors


def check_layer_numerically(
    forward: Callable[..., tuple[Any, Any]],
    backward: Callable[[Any, Any], Any],
    inputs: Sequence[np.ndarray],
    dout: np.ndarray,
    h: float = 1e-5,
    floor: float = 1e-2,
) -> list[float]:
    """Compare each gradient of a forward/backward pair with central differences.

    Each error is ``rel_error(numeric, analytic, eps=floor * scale)``, where ``scale`` is the
    largest ``|numeric| + |analytic|`` over all the gradients. Central differences carry an
    absolute error near 1e-10 of that scale, so a gradient entry that happens to be near zero
    (or a gradient that is zero, as the bias before a batch norm) would show a large
    elementwise relative error though nothing is wrong. With ``floor=1e-2`` such an entry may
    be off by at most 1e-9 of the scale at a tolerance of 1e-7: still far below any real bug.

    Parameters
    ----------
    forward : ``forward(*inputs) -> (out, cache)``; called again for every perturbation
    backward : ``backward(dout, cache)`` returning the gradients of ``inputs`` in order
        (one array, or a tuple)
    inputs : float64 ndarrays, each perturbed in place and restored
    dout : ndarray of the shape of ``out``, the upstream gradient; use a random one (all
        ones hides bugs, e.g. in batch norm, where ``sum(out)`` does not depend on x)
    h : step
    floor : fraction of the gradients' scale below which absolute errors count

    Returns
    -------
    errors : list of float, the relative error of each input's gradient
    """
    _, cache = forward(*inputs)
    analytic = backward(dout, cache)
    analytic = analytic if isinstance(analytic, tuple) else (analytic,)
    if len(analytic) != len(inputs):
        raise ValueError(f"backward returned {len(analytic)} gradients for {len(inputs)} inputs")
    numeric = [
        eval_numerical_gradient_array(lambda _: forward(*inputs)[0], x, dout, h) for x in inputs
    ]
    scale = max(
        float(np.max(np.abs(n) + np.abs(a), initial=0))
        for n, a in zip(numeric, analytic, strict=True)
    )
    eps = max(floor * scale, 1e-300)
    return [rel_error(n, a, eps=eps) for n, a in zip(numeric, analytic, strict=True)]


def loss_layer(
    loss_fn: Callable[..., tuple[float, Any]],
) -> tuple[Callable[..., tuple[np.ndarray, Any]], Callable[[Any, Any], Any]]:
    """Wrap ``loss_fn(*args) -> (loss, grad)`` as a forward/backward pair of a layer.

    The forward returns the loss as a 0-d array; the backward multiplies the gradient (or
    each of a tuple of gradients) by the scalar upstream gradient.
    """

    def forward(*args: Any) -> tuple[np.ndarray, Any]:
        loss, grad = loss_fn(*args)
        return np.asarray(loss, dtype=np.float64), grad

    def backward(dout: Any, grad: Any) -> Any:
        if isinstance(grad, tuple):
            return tuple(dout * g for g in grad)
        return dout * grad

    return forward, backward


def random_away_from_zero(
    rng: np.random.Generator, shape: tuple[int, ...], margin: float = 0.1
) -> np.ndarray:
    """Standard normal draws pushed at least ``margin`` away from 0, the kink of relu."""
    x = rng.standard_normal(shape)
    return x + np.where(x >= 0, margin, -margin)


def random_distinct(
    rng: np.random.Generator, shape: tuple[int, ...], gap: float = 0.05
) -> np.ndarray:
    """A random arrangement of values spaced ``gap`` apart around 0: no two entries tie.

    Max pooling is differentiable at such inputs as long as the step h is far below ``gap``.
    """
    n = int(np.prod(shape))
    return ((rng.permutation(n) - (n - 1) / 2) * gap).reshape(shape)


def random_hinge_scores(
    rng: np.random.Generator,
    y: np.ndarray,
    num_classes: int,
    margin: float = 1.0,
    distance: float = 0.01,
) -> np.ndarray:
    """Standard normal scores (N, C) whose hinge terms ``s_j - s_y + margin`` (j != y) all lie
    at least ``distance`` from their kink at 0; y of shape (N,)."""
    rows = np.arange(len(y))
    scores = rng.standard_normal((len(y), num_classes))  # (N, C)
    m = scores - scores[rows, y][:, None] + margin
    near = np.abs(m) < distance
    near[rows, y] = False
    # Moving s_j alone moves only its own hinge term, so each near one is pushed clear.
    scores[near] += np.where(m[near] >= 0, 2 * distance, -2 * distance)
    return scores


def _kink_free(
    draw: Callable[[], list[np.ndarray]],
    pre_activation: Callable[..., np.ndarray],
    pool: int | None = None,
    margin: float = 1e-3,
) -> list[np.ndarray]:
    """Redraw a sandwich's inputs until the kinks it hides are ``margin`` away.

    Those are the relu inputs ``pre_activation(*inputs)`` near 0 and, with ``pool`` (square
    windows moved by their own size), two near-equal positive maxima in a pooling window.
    """
    for _ in range(100):
        inputs = draw()
        a = pre_activation(*inputs)
        distance = float(np.abs(a).min())
        if pool is not None:
            N, C, H, W = a.shape
            z = np.maximum(a, 0).reshape(N, C, H // pool, pool, W // pool, pool)
            windows = z.transpose(0, 1, 2, 4, 3, 5).reshape(N, C, H // pool, W // pool, -1)
            top2 = np.sort(windows, axis=-1)[..., -2:]  # (N, C, H_out, W_out, 2)
            gaps = np.where(top2[..., 1] > 0, top2[..., 1] - top2[..., 0], np.inf)
            distance = min(distance, float(gaps.min()))
        if distance > margin:
            return inputs
    raise RuntimeError(f"no draw in 100 kept its kinks {margin} away")


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One line of ``run_layer_checks``: a layer's worst ``check_layer_numerically`` error."""

    name: str
    max_rel_error: float
    tolerance: float
    passed: bool


def run_layer_checks(seed: int = 0, tolerance: float = 1e-7) -> list[CheckResult]:
    """Check every layer, sandwich and loss of ``pix2pred.nn_numpy`` against central differences.

    Inputs are small float64 arrays drawn from ``seed``, kept away from the kinks of relu,
    max pooling and the hinge loss; the upstream gradient is random. Takes well under a second.

    Returns
    -------
    results : list of CheckResult, one per layer (and mode), in a fixed order
    """
    from pix2pred.nn_numpy import layers as L
    from pix2pred.nn_numpy import losses

    rng = np.random.default_rng(seed)

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape)

    def norm_params(n: int) -> list[np.ndarray]:
        return [1 + 0.5 * normal(n), normal(n)]  # gamma, beta

    bn_eval = {"mode": "eval", "running_mean": normal(5), "running_var": rng.uniform(0.5, 2, 5)}
    y = rng.integers(5, size=4)
    conv_param = {"stride": (2, 1), "pad": (1, 0)}
    softmax_fwd, softmax_bwd = loss_layer(lambda s: losses.softmax_loss(s, y))
    smooth_fwd, smooth_bwd = loss_layer(lambda s: losses.softmax_loss(s, y, label_smoothing=0.1))
    svm_fwd, svm_bwd = loss_layer(lambda s: losses.svm_loss(s, y))
    l2_fwd, l2_bwd = loss_layer(lambda w: losses.l2_regularization(w, 0.3))

    cases: list[tuple[str, Callable[..., Any], Callable[..., Any], list[np.ndarray]]] = [
        ("affine", L.affine_forward, L.affine_backward, [normal(3, 2, 3), normal(6, 4), normal(4)]),
        ("flatten", L.flatten_forward, L.flatten_backward, [normal(2, 3, 2)]),
        ("relu", L.relu_forward, L.relu_backward, [random_away_from_zero(rng, (4, 5))]),
        (
            "leaky_relu",
            L.leaky_relu_forward,
            L.leaky_relu_backward,
            [random_away_from_zero(rng, (4, 5))],
        ),
        ("sigmoid", L.sigmoid_forward, L.sigmoid_backward, [3 * normal(4, 5)]),
        ("tanh", L.tanh_forward, L.tanh_backward, [2 * normal(4, 5)]),
        (
            "conv",
            lambda x, w, b: L.conv_forward(x, w, b, **conv_param),
            L.conv_backward,
            [normal(2, 3, 5, 6), normal(4, 3, 3, 2), normal(4)],
        ),
        (
            "max_pool",
            lambda x: L.max_pool_forward(x, pool=3, stride=2),
            L.max_pool_backward,
            [random_distinct(rng, (2, 3, 5, 5))],
        ),
        (
            "avg_pool",
            lambda x: L.avg_pool_forward(x, pool=(2, 3), stride=(1, 2)),
            L.avg_pool_backward,
            [normal(2, 3, 4, 5)],
        ),
        (
            "global_avg_pool",
            L.global_avg_pool_forward,
            L.global_avg_pool_backward,
            [normal(2, 3, 2, 3)],
        ),
        (
            "batchnorm (train)",
            lambda x, g, b: L.batchnorm_forward(x, g, b, {"mode": "train"}),
            L.batchnorm_backward,
            [normal(4, 5), *norm_params(5)],
        ),
        (
            "batchnorm (eval)",
            lambda x, g, b: L.batchnorm_forward(x, g, b, bn_eval),
            L.batchnorm_backward,
            [normal(4, 5), *norm_params(5)],
        ),
        (
            "spatial_batchnorm (train)",
            lambda x, g, b: L.spatial_batchnorm_forward(x, g, b, {"mode": "train"}),
            L.spatial_batchnorm_backward,
            [normal(2, 3, 2, 3), *norm_params(3)],
        ),
        (
            "layernorm",
            lambda x, g, b: L.layernorm_forward(x, g, b, {}),
            L.layernorm_backward,
            [normal(4, 5), *norm_params(5)],
        ),
        (
            "spatial_groupnorm",
            lambda x, g, b: L.spatial_groupnorm_forward(x, g, b, 2, {}),
            L.spatial_groupnorm_backward,
            [normal(2, 4, 2, 3), *norm_params(4)],
        ),
        (
            "dropout (train)",
            lambda x: L.dropout_forward(x, {"mode": "train", "p": 0.3, "seed": seed}),
            L.dropout_backward,
            [normal(4, 5)],
        ),
        (
            "affine_relu",
            L.affine_relu_forward,
            L.affine_relu_backward,
            _kink_free(
                lambda: [normal(3, 5), normal(5, 4), normal(4)],
                lambda x, w, b: L.affine_forward(x, w, b)[0],
            ),
        ),
        (
            "affine_batchnorm_relu",
            lambda x, w, b, g, be: L.affine_norm_relu_forward(
                x, w, b, g, be, {"mode": "train"}, "batchnorm"
            ),
            L.affine_norm_relu_backward,
            _kink_free(
                lambda: [normal(5, 4), normal(4, 6), normal(6), *norm_params(6)],
                lambda x, w, b, g, be: L.batchnorm_forward(
                    L.affine_forward(x, w, b)[0], g, be, {"mode": "train"}
                )[0],
            ),
        ),
        (
            "affine_layernorm_relu",
            lambda x, w, b, g, be: L.affine_norm_relu_forward(x, w, b, g, be, {}, "layernorm"),
            L.affine_norm_relu_backward,
            _kink_free(
                lambda: [normal(5, 4), normal(4, 6), normal(6), *norm_params(6)],
                lambda x, w, b, g, be: L.layernorm_forward(L.affine_forward(x, w, b)[0], g, be)[0],
            ),
        ),
        (
            "conv_relu",
            lambda x, w, b: L.conv_relu_forward(x, w, b, conv_param),
            L.conv_relu_backward,
            _kink_free(
                lambda: [normal(2, 3, 5, 6), normal(4, 3, 3, 2), normal(4)],
                lambda x, w, b: L.conv_forward(x, w, b, **conv_param)[0],
            ),
        ),
        (
            "conv_relu_pool",
            lambda x, w, b: L.conv_relu_pool_forward(x, w, b, {"pad": 1}, {"pool": 2}),
            L.conv_relu_pool_backward,
            _kink_free(
                lambda: [normal(2, 3, 4, 4), normal(3, 3, 3, 3), normal(3)],
                lambda x, w, b: L.conv_forward(x, w, b, pad=1)[0],
                pool=2,
            ),
        ),
        ("softmax_loss", softmax_fwd, softmax_bwd, [normal(4, 5)]),
        ("softmax_loss (label smoothing)", smooth_fwd, smooth_bwd, [normal(4, 5)]),
        ("svm_loss", svm_fwd, svm_bwd, [random_hinge_scores(rng, y, 5)]),
        ("l2_regularization", l2_fwd, l2_bwd, [normal(3, 4)]),
    ]
    results = []
    for name, forward, backward, inputs in cases:
        dout = rng.standard_normal(np.shape(forward(*inputs)[0]))
        error = max(check_layer_numerically(forward, backward, inputs, dout))
        results.append(CheckResult(name, error, tolerance, error <= tolerance))
    return results
