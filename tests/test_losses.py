"""Losses of nn_numpy.losses against torch and central differences (float64)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity import check_layer
from pix2pred.gradcheck import loss_layer, random_hinge_scores
from pix2pred.nn_numpy.losses import l2_regularization, softmax_loss, svm_loss

torch = pytest.importorskip("torch")
F = torch.nn.functional

SETTINGS = settings(max_examples=15, deadline=None)


def test_zero_scores_give_the_course_sanity_values():
    y = np.arange(5) % 10
    scores = np.zeros((5, 10))
    assert svm_loss(scores, y)[0] == pytest.approx(9.0)
    assert softmax_loss(scores, y)[0] == pytest.approx(math.log(10))


@SETTINGS
@given(
    N=st.integers(1, 5),
    C=st.integers(1, 6),
    smoothing=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_softmax_loss_matches_cross_entropy(N, C, smoothing, seed):
    y = np.random.default_rng(seed).integers(C, size=N)
    forward, backward = loss_layer(lambda s: softmax_loss(s, y, label_smoothing=smoothing))
    check_layer(
        forward,
        backward,
        lambda s: F.cross_entropy(s, torch.tensor(y), label_smoothing=smoothing),
        [3 * np.random.default_rng(seed + 1).standard_normal((N, C))],
        seed=seed,
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_loss_is_finite_for_huge_scores(dtype):
    scores = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    y = np.array([1, 2, 0])
    loss, dscores = softmax_loss(scores, y, label_smoothing=0.1)
    assert dscores.dtype == dtype
    assert np.isfinite(loss) and np.isfinite(dscores).all()
    t_scores = torch.tensor(scores.astype(np.float64), requires_grad=True)
    t_loss = F.cross_entropy(t_scores, torch.tensor(y), label_smoothing=0.1)
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=1e-6)
    np.testing.assert_allclose(dscores, t_scores.grad.numpy(), atol=1e-7)


@SETTINGS
@given(
    N=st.integers(1, 5),
    C=st.integers(2, 6),
    margin=st.sampled_from([1.0, 0.5, 2.0]),
    seed=st.integers(0, 2**16),
)
def test_svm_loss_matches_multi_margin_loss_times_c(N, C, margin, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(C, size=N)
    scores = random_hinge_scores(rng, y, C, margin=margin)  # away from the hinge's kink
    forward, backward = loss_layer(lambda s: svm_loss(s, y, margin=margin))
    # torch averages each sample's sum over the C classes; the course's loss does not.
    check_layer(
        forward,
        backward,
        lambda s: C * F.multi_margin_loss(s, torch.tensor(y), margin=margin),
        [scores],
        seed=seed,
    )


def test_svm_loss_gradient_counts_violations():
    scores = np.array([[1.0, 3.0, 0.5, 2.5]])
    loss, dscores = svm_loss(scores, np.array([1]))
    assert loss == pytest.approx(0.5)  # only class 3 violates: 2.5 - 3 + 1
    np.testing.assert_array_equal(dscores, [[0, -1, 0, 1]])


def test_l2_regularization_has_torch_weight_decay_meaning():
    w = np.random.default_rng(0).standard_normal((4, 3))
    loss, grad = l2_regularization(w, 0.3)
    assert loss == pytest.approx(0.5 * 0.3 * np.sum(w**2))
    # One SGD step on the penalty alone equals torch.optim.SGD's step with weight_decay.
    p = torch.tensor(w, requires_grad=True)
    p.grad = torch.zeros_like(p)
    torch.optim.SGD([p], lr=0.1, weight_decay=0.3).step()
    np.testing.assert_allclose(w - 0.1 * grad, p.detach().numpy(), rtol=1e-15)
    forward, backward = loss_layer(lambda w: l2_regularization(w, 0.3))
    check_layer(forward, backward, lambda w: 0.15 * (w**2).sum(), [w])


def test_l2_regularization_sums_over_a_dict():
    params = {"W1": np.ones((2, 2)), "W2": np.full(3, 2.0)}
    loss, grads = l2_regularization(params, 0.5)
    assert loss == pytest.approx(0.5 * 0.5 * (4 + 12))
    assert grads.keys() == params.keys()
    np.testing.assert_array_equal(grads["W2"], np.full(3, 1.0))


@pytest.mark.parametrize(
    ("scores", "y", "message"),
    [
        (np.zeros(3), np.zeros(3, dtype=int), r"scores must have shape \(N, C\), got shape \(3,\)"),
        (np.zeros((2, 3)), np.zeros(3, dtype=int), r"y must have shape \(2,\)"),
        (np.zeros((2, 3)), np.zeros(2), "integer class labels, got dtype float64"),
        (np.zeros((2, 3)), np.array([0, 3]), r"labels must be in \[0, 2\] for 3 classes, got 3"),
        (np.zeros((2, 3)), np.array([-1, 0]), "got -1"),
    ],
)
@pytest.mark.parametrize("loss_fn", [softmax_loss, svm_loss])
def test_losses_reject_bad_labels(loss_fn, scores, y, message):
    with pytest.raises(ValueError, match=message):
        loss_fn(scores, y)


def test_bad_hyperparameters_are_named():
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        softmax_loss(np.zeros((1, 2)), np.zeros(1, dtype=int), label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"weight_decay must be non-negative, got -0\.1"):
        l2_regularization(np.ones(2), -0.1)
