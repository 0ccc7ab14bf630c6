"""Numerical gradients, relative errors, the layer check table, and the parity helper itself."""

import time

import numpy as np
import pytest

from parity import check_layer, compare_layers
from pix2pred.gradcheck import (
    CheckResult,
    check_layer_numerically,
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    grad_check_sparse,
    loss_layer,
    random_away_from_zero,
    random_distinct,
    random_hinge_scores,
    rel_error,
    run_layer_checks,
)
from pix2pred.nn_numpy import layers as L


def test_eval_numerical_gradient_of_a_cubic():
    x = np.random.default_rng(0).standard_normal((3, 4))
    before = x.copy()
    grad = eval_numerical_gradient(lambda x: np.sum(x**3), x)
    # Central differences of a cubic are off by exactly h**2, plus rounding.
    np.testing.assert_allclose(grad, 3 * before**2 + 1e-10, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(x, before)


def test_eval_numerical_gradient_restores_x_when_f_raises():
    x = np.array([1.0, 2.0])
    calls = []

    def f(x):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return x.sum()

    with pytest.raises(RuntimeError, match="boom"):
        eval_numerical_gradient(f, x)
    np.testing.assert_array_equal(x, [1.0, 2.0])


def test_float32_inputs_are_refused():
    with pytest.raises(TypeError, match=r"x must be a float64 ndarray.*got float32"):
        eval_numerical_gradient(np.sum, np.ones(3, dtype=np.float32))


def test_eval_numerical_gradient_array_with_upstream_gradient():
    rng = np.random.default_rng(1)
    x, df = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    grad = eval_numerical_gradient_array(lambda x: x**2, x, df)
    assert rel_error(grad, 2 * x * df) < 1e-8
    # f returning x itself (a view that the next perturbation would change) still works.
    np.testing.assert_allclose(eval_numerical_gradient_array(lambda x: x, x, df), df, rtol=1e-9)


def test_grad_check_sparse_flags_a_wrong_gradient_only():
    x = np.random.default_rng(2).standard_normal((50, 40))
    before = x.copy()
    errors = grad_check_sparse(lambda x: np.sum(np.sin(x)), x, np.cos(x), num_checks=7, seed=3)
    assert errors.shape == (7,) and errors.max() < 1e-8
    wrong = grad_check_sparse(lambda x: np.sum(np.sin(x)), x, 1.1 * np.cos(x), seed=3)
    assert wrong.min() > 1e-2
    np.testing.assert_array_equal(x, before)


def test_grad_check_sparse_is_reproducible_and_validated():
    x = np.random.default_rng(4).standard_normal((6, 5))
    analytic = 1.01 * np.cos(x)
    first = grad_check_sparse(lambda x: np.sum(np.sin(x)), x, analytic, seed=9)
    np.testing.assert_array_equal(
        first, grad_check_sparse(lambda x: np.sum(np.sin(x)), x, analytic, seed=9)
    )
    with pytest.raises(ValueError, match=r"analytic_grad has shape \(5,\)"):
        grad_check_sparse(np.sum, x, np.ones(5))
    with pytest.raises(ValueError, match="num_checks must be at least 1, got 0"):
        grad_check_sparse(np.sum, x, x, num_checks=0)


def test_rel_error():
    assert rel_error(np.array([1.0, 0.0]), np.array([3.0, 0.0])) == pytest.approx(0.5)
    assert rel_error(np.array([1e-12]), np.array([0.0])) == pytest.approx(1e-4)  # eps 1e-8
    assert rel_error(np.array([1e-12]), np.array([0.0]), eps=1e-4) == pytest.approx(1e-8)
    assert rel_error(np.zeros((0, 2)), np.zeros((0, 2))) == 0.0
    with pytest.raises(ValueError, match=r"shapes \(2,\) and \(3,\)"):
        rel_error(np.ones(2), np.ones(3))


def test_check_layer_numerically_scales_by_all_gradients():
    # Batch norm after an affine layer makes the bias gradient zero: rounding noise on both
    # sides, which must not count as an error...
    def forward(x, w, b):
        return L.affine_norm_relu_forward(x, w, b, np.ones(3), np.zeros(3), {"mode": "train"})

    def backward(dout, cache):
        return L.affine_norm_relu_backward(dout, cache)[:3]

    rng = np.random.default_rng(5)
    inputs = [rng.standard_normal(s) for s in [(4, 5), (5, 3), (3,)]]
    dout = rng.standard_normal((4, 3))
    assert max(check_layer_numerically(forward, backward, inputs, dout)) < 1e-7

    # ...while a real error in it does.
    def bad_backward(dout, cache):
        dx, dw, db = backward(dout, cache)
        return dx, dw, db + 1e-3

    errors = check_layer_numerically(forward, bad_backward, inputs, dout)
    assert errors[:2] == pytest.approx([0, 0], abs=1e-7) and errors[2] > 0.05


def test_check_layer_numerically_counts_gradients():
    with pytest.raises(ValueError, match="backward returned 1 gradients for 3 inputs"):
        check_layer_numerically(
            L.affine_forward,
            lambda dout, cache: L.affine_backward(dout, cache)[0],
            [np.ones((2, 2)), np.ones((2, 2)), np.ones(2)],
            np.ones((2, 2)),
        )


def test_loss_layer_scales_by_the_upstream_gradient():
    forward, backward = loss_layer(lambda w: (float(np.sum(w**2)), 2 * w))
    out, cache = forward(np.array([1.0, 2.0]))
    assert out.shape == () and out == 5.0
    np.testing.assert_array_equal(backward(np.array(0.5), cache), [1.0, 2.0])


def test_random_inputs_stay_away_from_kinks():
    rng = np.random.default_rng(6)
    assert np.abs(random_away_from_zero(rng, (50, 50), margin=0.2)).min() >= 0.2
    x = random_distinct(rng, (3, 4, 5), gap=0.05)
    assert x.shape == (3, 4, 5) and np.diff(np.sort(x.ravel())).min() == pytest.approx(0.05)
    y = rng.integers(10, size=200)
    scores = random_hinge_scores(rng, y, 10, margin=1.0, distance=0.01)
    m = scores - scores[np.arange(200), y][:, None] + 1.0
    m[np.arange(200), y] = 1.0
    assert np.abs(m).min() >= 0.01


@pytest.mark.parametrize("seed", [0, 1])
def test_run_layer_checks_all_pass_quickly(seed):
    start = time.process_time()  # CPU time: other jobs on the machine do not count
    results = run_layer_checks(seed)
    assert time.process_time() - start < 2.0
    assert all(isinstance(r, CheckResult) for r in results)
    failed = [(r.name, r.max_rel_error) for r in results if not r.passed]
    assert not failed
    assert all(r.max_rel_error <= r.tolerance == 1e-7 for r in results)
    names = {r.name for r in results}
    assert len(names) == len(results)
    for name in [
        "affine",
        "conv",
        "max_pool",
        "batchnorm (train)",
        "batchnorm (eval)",
        "spatial_groupnorm",
        "dropout (train)",
        "softmax_loss",
        "svm_loss",
    ]:
        assert name in names


def test_run_layer_checks_reports_a_failure(monkeypatch):
    def wrong_tanh_backward(dout, cache):
        return dout * (1 - cache)

    monkeypatch.setattr(L, "tanh_backward", wrong_tanh_backward)
    results = {r.name: r for r in run_layer_checks()}
    assert not results["tanh"].passed and results["tanh"].max_rel_error > 1e-2
    assert results["sigmoid"].passed


# ---------------------------------------------------------------- the parity helper itself


def test_check_layer_catches_a_slightly_wrong_gradient():
    def backward(dout, cache):
        dx, dw, db = L.affine_backward(dout, cache)
        return dx, dw * (1 + 1e-6), db

    with pytest.raises(AssertionError, match="gradient vs torch of input 1"):
        check_layer(L.affine_forward, backward, lambda x, w, b: x @ w + b, [(3, 4), (4, 2), (2,)])
    with pytest.raises(AssertionError, match="numerical gradient of input 1"):
        check_layer(L.affine_forward, backward, None, [(3, 4), (4, 2), (2,)])


def test_check_layer_catches_a_wrong_forward():
    pytest.importorskip("torch")
    with pytest.raises(AssertionError, match="forward"):
        check_layer(L.tanh_forward, L.tanh_backward, lambda x: 1.0000001 * x.tanh(), [(3, 3)])


def test_check_layer_upstream_gradient_is_not_uniform():
    seen = []

    def backward(dout, cache):
        seen.append(dout)
        return L.batchnorm_backward(dout, cache)

    check_layer(
        lambda x, g, b: L.batchnorm_forward(x, g, b, {"mode": "train"}),
        backward,
        None,
        [(4, 3), np.ones(3), np.zeros(3)],
    )
    assert np.unique(seen[0]).size == seen[0].size


def test_compare_layers():
    compare_layers(
        L.relu_forward,
        L.relu_backward,
        L.leaky_relu_forward,
        L.leaky_relu_backward,
        [np.abs(np.random.default_rng(0).standard_normal((3, 4))) + 0.1],
    )
    with pytest.raises(AssertionError, match="forward"):
        compare_layers(L.relu_forward, L.relu_backward, L.tanh_forward, L.tanh_backward, [(3, 4)])
