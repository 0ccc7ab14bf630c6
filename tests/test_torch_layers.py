"""Each torch layer against its numpy twin: same output, autograd equals the hand-written backward.

One line per op through ``parity.check_layer``, with the torch twin as the oracle (float64; the
numerical checks of the numpy layers live in their own tests).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest
import torch

from parity import check_layer
from pix2pred.gradcheck import (
    loss_layer,
    random_away_from_zero,
    random_distinct,
    random_hinge_scores,
)
from pix2pred.nn_numpy import layers as NL
from pix2pred.nn_numpy import losses as NLoss
from pix2pred.nn_torch import layers as TL

rng = np.random.default_rng(0)


def check(np_fwd: Callable, np_bwd: Callable, th_fwd: Callable, inputs: list) -> None:
    check_layer(np_fwd, np_bwd, th_fwd, inputs, numeric=False)


def test_affine_flattens_like_numpy() -> None:
    check(NL.affine_forward, NL.affine_backward, TL.affine_forward, [(3, 2, 2, 3), (12, 5), (5,)])


def test_flatten() -> None:
    check(NL.flatten_forward, NL.flatten_backward, TL.flatten_forward, [(2, 3, 4)])


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh"], ids=lambda name: name)
def test_activations(name: str) -> None:
    x = random_away_from_zero(rng, (4, 3, 2))
    check(
        getattr(NL, f"{name}_forward"),
        getattr(NL, f"{name}_backward"),
        getattr(TL, f"{name}_forward"),
        [x],
    )


def test_leaky_relu_slope() -> None:
    x = random_away_from_zero(rng, (5, 4))
    check(
        lambda x: NL.leaky_relu_forward(x, 0.2),
        NL.leaky_relu_backward,
        lambda x: TL.leaky_relu_forward(x, 0.2),
        [x],
    )


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "stride", "pad"),
    [
        ((2, 3, 5, 5), (4, 3, 3, 3), 1, 1),
        ((2, 2, 7, 6), (3, 2, 3, 2), 2, 0),
        ((1, 2, 6, 5), (2, 2, 2, 3), (2, 1), (1, 0)),
    ],
)
def test_conv(x_shape: tuple, w_shape: tuple, stride, pad) -> None:
    check(
        lambda x, w, b: NL.conv_forward(x, w, b, stride=stride, pad=pad),
        NL.conv_backward,
        lambda x, w, b: TL.conv_forward(x, w, b, stride=stride, pad=pad),
        [x_shape, w_shape, (w_shape[0],)],
    )


@pytest.mark.parametrize(("pool", "stride"), [(2, 2), (3, 1), ((2, 3), (1, 2))])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool(kind: str, pool, stride) -> None:
    x = random_distinct(rng, (2, 3, 7, 6))
    check(
        lambda x: getattr(NL, f"{kind}_pool_forward")(x, pool=pool, stride=stride),
        getattr(NL, f"{kind}_pool_backward"),
        lambda x: getattr(TL, f"{kind}_pool_forward")(x, pool=pool, stride=stride),
        [x],
    )


def test_global_avg_pool() -> None:
    check(
        NL.global_avg_pool_forward,
        NL.global_avg_pool_backward,
        TL.global_avg_pool_forward,
        [(2, 3, 4, 5)],
    )


def _bn_params(mode: str, C: int, with_stats: bool, momentum: float = 0.1):
    np_param: dict = {"mode": mode, "momentum": momentum, "eps": 1e-5}
    if with_stats:
        np_param["running_mean"] = rng.standard_normal(C)
        np_param["running_var"] = rng.uniform(0.5, 2.0, C)
    th_param = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in np_param.items()}
    return np_param, th_param


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("with_stats", [True, False], ids=["stats", "no-stats"])
@pytest.mark.parametrize("spatial", [False, True], ids=["1d", "2d"])
def test_batchnorm_and_running_stats(mode: str, with_stats: bool, spatial: bool) -> None:
    name = "spatial_batchnorm" if spatial else "batchnorm"
    x_shape = (4, 3, 3, 2) if spatial else (6, 3)
    np_param, th_param = _bn_params(mode, 3, with_stats, momentum=0.3)
    x = 2.0 + 3.0 * rng.standard_normal(x_shape)  # far from the initial statistics
    check(
        lambda x, g, b: getattr(NL, f"{name}_forward")(x, g, b, np_param),
        getattr(NL, f"{name}_backward"),
        lambda x, g, b: getattr(TL, f"{name}_forward")(x, g, b, th_param),
        [x, (3,), (3,)],
    )
    assert ("running_mean" in th_param) == ("running_mean" in np_param)
    for key in ("running_mean", "running_var"):
        if key in np_param:
            np.testing.assert_allclose(th_param[key].numpy(), np_param[key], rtol=1e-12)


def test_batchnorm_updates_the_tensors_in_place() -> None:
    mean, var = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    bn_param = {"mode": "train", "running_mean": mean, "running_var": var}
    x = torch.tensor(rng.standard_normal((5, 3)))
    TL.batchnorm_forward(
        x, torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), bn_param
    )
    assert bn_param["running_mean"] is mean
    torch.testing.assert_close(mean, 0.1 * x.mean(0))
    torch.testing.assert_close(var, 0.9 + 0.1 * x.var(0, unbiased=True))


@pytest.mark.parametrize("x_shape", [(4, 5), (3, 2, 2, 3)])
def test_layernorm(x_shape: tuple) -> None:
    feat = x_shape[1:]
    check(
        lambda x, g, b: NL.layernorm_forward(x, g, b, {"eps": 1e-5}),
        NL.layernorm_backward,
        lambda x, g, b: TL.layernorm_forward(x, g, b, {"eps": 1e-5}),
        [x_shape, feat, feat],
    )


def test_spatial_groupnorm() -> None:
    check(
        lambda x, g, b: NL.spatial_groupnorm_forward(x, g, b, 2),
        NL.spatial_groupnorm_backward,
        lambda x, g, b: TL.spatial_groupnorm_forward(x, g, b, 2),
        [(2, 4, 3, 3), (4,), (4,)],
    )


@pytest.mark.parametrize(
    "norm", ["batchnorm", "layernorm", None], ids=["batchnorm", "layernorm", "none"]
)
def test_affine_norm_relu(norm: str | None) -> None:
    # NOTE: numpy returns None gradients for unused gamma/beta; feed zeros in their place.
    def np_bwd(dout, cache):
        dx, dw, db, dgamma, dbeta = NL.affine_norm_relu_backward(dout, cache)
        zero = np.zeros(4)
        return dx, dw, db, zero if dgamma is None else dgamma, zero if dbeta is None else dbeta

    np_param = {"mode": "train"}
    th_param = {"mode": "train"}
    check(
        lambda x, w, b, g, be: NL.affine_norm_relu_forward(x, w, b, g, be, np_param, norm),
        np_bwd,
        lambda x, w, b, g, be: TL.affine_norm_relu_forward(x, w, b, g, be, th_param, norm),
        [(5, 2, 3), (6, 4), (4,), (4,), (4,)],
    )


def test_affine_relu() -> None:
    check(
        NL.affine_relu_forward,
        NL.affine_relu_backward,
        TL.affine_relu_forward,
        [(4, 6), (6, 3), (3,)],
    )


def test_conv_relu_and_conv_relu_pool() -> None:
    conv_param, pool_param = {"stride": 1, "pad": 1}, {"pool": 2, "stride": 2}
    inputs = [(2, 3, 6, 6), (4, 3, 3, 3), (4,)]
    check(
        lambda x, w, b: NL.conv_relu_forward(x, w, b, conv_param),
        NL.conv_relu_backward,
        lambda x, w, b: TL.conv_relu_forward(x, w, b, conv_param),
        inputs,
    )
    check(
        lambda x, w, b: NL.conv_relu_pool_forward(x, w, b, conv_param, pool_param),
        NL.conv_relu_pool_backward,
        lambda x, w, b: TL.conv_relu_pool_forward(x, w, b, conv_param, pool_param),
        inputs,
    )


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_softmax_loss(label_smoothing: float) -> None:
    y = rng.integers(0, 5, size=7)
    forward, backward = loss_layer(lambda s: NLoss.softmax_loss(s, y, label_smoothing))
    check(
        forward, backward, lambda s: TL.softmax_loss(s, torch.tensor(y), label_smoothing), [(7, 5)]
    )


@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_svm_loss(margin: float) -> None:
    y = rng.integers(0, 5, size=7)
    scores = random_hinge_scores(rng, y, 5, margin=margin)
    forward, backward = loss_layer(lambda s: NLoss.svm_loss(s, y, margin))
    check(forward, backward, lambda s: TL.svm_loss(s, torch.tensor(y), margin), [scores])


def test_svm_loss_zero_margin_has_zero_gradient() -> None:
    scores = torch.tensor([[1.0, 0.0, 5.0]], dtype=torch.float64, requires_grad=True)
    TL.svm_loss(scores, torch.tensor([2]), margin=5.0).backward()  # hinge of class 1 at 0
    _, dscores = NLoss.svm_loss(scores.detach().numpy(), np.array([2]), margin=5.0)
    np.testing.assert_array_equal(scores.grad.numpy(), dscores)


def test_l2_regularization() -> None:
    params = {"W1": rng.standard_normal((3, 2)), "W2": rng.standard_normal(4)}
    th = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    loss, grads = NLoss.l2_regularization(params, 0.3)
    th_loss = TL.l2_regularization(th, 0.3)
    th_loss.backward()
    assert th_loss.item() == pytest.approx(loss, rel=1e-12)
    for k in params:
        np.testing.assert_allclose(th[k].grad.numpy(), grads[k], rtol=1e-12)
    single = TL.l2_regularization(th["W1"], 0.3).item()
    assert single == pytest.approx(NLoss.l2_regularization(params["W1"], 0.3)[0], rel=1e-12)


# ---------------------------------------------------------------- dropout


def test_dropout_eval_and_p0_are_identity() -> None:
    x = torch.tensor(rng.standard_normal((4, 5)))
    assert TL.dropout_forward(x, {"mode": "eval", "p": 0.5}) is x
    assert TL.dropout_forward(x, {"mode": "train", "p": 0.0}) is x


def test_dropout_train_mask() -> None:
    x = torch.ones(200, 100, dtype=torch.float64, requires_grad=True)
    out = TL.dropout_forward(x, {"mode": "train", "p": 0.3, "seed": 1})
    kept = out != 0
    assert abs(kept.double().mean().item() - 0.7) < 0.01
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.7))
    # The gradient is the mask, as numpy's dropout_backward(dout, mask).
    dout = torch.tensor(rng.standard_normal(x.shape))
    out.backward(dout)
    mask = out.detach()
    np.testing.assert_allclose(x.grad.numpy(), NL.dropout_backward(dout.numpy(), mask.numpy()))


def test_dropout_seeding() -> None:
    x = torch.ones(10, 10)
    same = [TL.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 3}) for _ in range(2)]
    torch.testing.assert_close(same[0], same[1])
    generator = torch.Generator().manual_seed(3)
    fresh = [
        TL.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": generator}) for _ in range(2)
    ]
    assert not torch.equal(fresh[0], fresh[1])
    torch.testing.assert_close(fresh[0], same[0])  # a generator seeded 3 starts with seed 3's mask
    assert torch.equal(TL.dropout_forward(x, {"mode": "train", "p": 1.0, "seed": 0}), x * 0)


# ---------------------------------------------------------------- validation, as numpy's


def _t(*shape: int) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.float64)


BAD_CALLS = [
    ("affine_forward", lambda z: (z(2, 3), z(4, 2), z(2)), {}),
    ("affine_forward", lambda z: (z(2, 4), z(4, 2), z(3)), {}),
    ("conv_forward", lambda z: (z(1, 2, 4, 4), z(3, 1, 3, 3), z(3)), {}),
    ("conv_forward", lambda z: (z(1, 2, 4, 4), z(3, 2, 3, 3), z(3)), {"stride": 0}),
    ("conv_forward", lambda z: (z(1, 2, 2, 2), z(3, 2, 3, 3), z(3)), {}),
    ("conv_forward", lambda z: (z(2, 4, 4), z(3, 2, 3, 3), z(3)), {}),
    ("max_pool_forward", lambda z: (z(1, 1, 1, 4),), {}),
    ("max_pool_forward", lambda z: (z(1, 1, 4, 4),), {"pool": (2, 2, 2)}),
    ("batchnorm_forward", lambda z: (z(3, 2), z(2), z(2), {"mode": "test"}), {}),
    ("batchnorm_forward", lambda z: (z(1, 2), z(2), z(2), {"mode": "train"}), {}),
    ("batchnorm_forward", lambda z: (z(3, 2), z(3), z(2), {"mode": "eval"}), {}),
    ("batchnorm_forward", lambda z: (z(3, 2), z(2), z(2), {"mode": "train", "momentum": 2}), {}),
    ("spatial_groupnorm_forward", lambda z: (z(1, 4, 2, 2), z(4), z(4), 3), {}),
    ("layernorm_forward", lambda z: (z(3, 2), z(3), z(2)), {}),
    ("dropout_forward", lambda z: (z(3, 2), {"mode": "train", "p": 1.5}), {}),
    ("dropout_forward", lambda z: (z(3, 2), {"mode": "train", "p": 0.5}), {}),
    ("affine_norm_relu_forward", lambda z: (z(2, 2), z(2, 2), z(2), None, None, None, "x"), {}),
]


def _zeros_np(*shape: int) -> np.ndarray:
    return np.zeros(shape)


@pytest.mark.parametrize(("name", "args", "kwargs"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_rejects_what_numpy_rejects_with_its_message(name: str, args, kwargs) -> None:
    with pytest.raises(ValueError) as np_error:
        getattr(NL, name)(*args(_zeros_np), **kwargs)
    message = str(np_error.value)
    # The seed's expected type is the one thing that names the backend.
    message = message.replace("numpy.random.Generator", "torch.Generator")
    with pytest.raises(ValueError, match=re.escape(message)):
        getattr(TL, name)(*args(_t), **kwargs)


@pytest.mark.parametrize(
    ("name", "scores", "y"),
    [
        ("softmax_loss", (3,), [0, 1, 2]),
        ("svm_loss", (3, 4), [0, 1]),
        ("svm_loss", (3, 4), [0.0, 1.0, 2.0]),
        ("softmax_loss", (3, 4), [0, 4, 1]),
    ],
)
def test_losses_reject_what_numpy_rejects(name: str, scores: tuple, y: list) -> None:
    with pytest.raises(ValueError) as np_error:
        getattr(NLoss, name)(np.zeros(scores), np.array(y))
    with pytest.raises(ValueError, match=re.escape(str(np_error.value))):
        getattr(TL, name)(torch.zeros(scores), torch.from_numpy(np.array(y)))
