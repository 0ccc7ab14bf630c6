"""Every layer of nn_numpy.layers against torch autograd and central differences (float64)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity import check_layer
from pix2pred.gradcheck import random_away_from_zero, random_distinct
from pix2pred.nn_numpy import layers as L

torch = pytest.importorskip("torch")
F = torch.nn.functional

SETTINGS = settings(max_examples=20, deadline=None)
seeds = st.integers(0, 2**16)


def int_or_pair(low: int, high: int) -> st.SearchStrategy:
    """An int, or an (h, w) tuple of ints, in [low, high]."""
    return st.integers(low, high) | st.tuples(st.integers(low, high), st.integers(low, high))


def as_pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else v


# ---------------------------------------------------------------- affine, flatten, activations


@SETTINGS
@given(
    N=st.integers(1, 4),
    dims=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    M=st.integers(1, 4),
    seed=seeds,
)
def test_affine(N, dims, M, seed):
    D = int(np.prod(dims))
    check_layer(
        L.affine_forward,
        L.affine_backward,
        lambda x, w, b: x.reshape(N, -1) @ w + b,
        [(N, *dims), (D, M), (M,)],
        seed=seed,
    )


def test_affine_flattens_like_the_course():
    x = np.arange(12.0).reshape(2, 3, 2)
    out, _ = L.affine_forward(x, np.eye(6), np.zeros(6))
    np.testing.assert_array_equal(out, x.reshape(2, 6))


def test_flatten():
    check_layer(L.flatten_forward, L.flatten_backward, lambda x: x.flatten(1), [(3, 2, 4, 1)])


ELEMENTWISE = {
    "relu": (L.relu_forward, L.relu_backward, torch.relu),
    "leaky_relu": (L.leaky_relu_forward, L.leaky_relu_backward, F.leaky_relu),
    "leaky_relu 0.2": (
        lambda x: L.leaky_relu_forward(x, negative_slope=0.2),
        L.leaky_relu_backward,
        lambda x: F.leaky_relu(x, negative_slope=0.2),
    ),
    "sigmoid": (L.sigmoid_forward, L.sigmoid_backward, torch.sigmoid),
    "tanh": (L.tanh_forward, L.tanh_backward, torch.tanh),
}


@pytest.mark.parametrize("name", ELEMENTWISE)
@settings(max_examples=5, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), seed=seeds)
def test_elementwise(name, shape, seed):
    forward, backward, torch_fn = ELEMENTWISE[name]
    x = random_away_from_zero(np.random.default_rng(seed), tuple(shape))
    check_layer(forward, backward, torch_fn, [2 * x], seed=seed)


def test_relu_and_leaky_relu_at_zero_follow_torch():
    x = np.array([-1.0, 0.0, 1.0])
    assert L.relu_backward(np.ones(3), L.relu_forward(x)[1]).tolist() == [0, 0, 1]
    assert L.leaky_relu_backward(np.ones(3), L.leaky_relu_forward(x)[1]).tolist() == [0.01, 0.01, 1]


def test_sigmoid_is_finite_for_huge_inputs():
    out, cache = L.sigmoid_forward(np.array([-1e4, -800.0, 0.0, 800.0, 1e4], dtype=np.float32))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [0, 0, 0.5, 1, 1])
    assert np.isfinite(L.sigmoid_backward(np.ones(5, dtype=np.float32), cache)).all()


# ---------------------------------------------------------------- convolution and pooling


@st.composite
def conv_cases(draw):
    HH, WW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride, pad = draw(int_or_pair(1, 3)), draw(int_or_pair(0, 2))
    ph, pw = as_pair(pad)
    H = draw(st.integers(max(1, HH - 2 * ph), HH + 3))
    W = draw(st.integers(max(1, WW - 2 * pw), WW + 3))
    N, C, Fo = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return [(N, C, H, W), (Fo, C, HH, WW), (Fo,)], stride, pad


@settings(max_examples=40, deadline=None)
@given(case=conv_cases(), seed=seeds)
def test_conv(case, seed):
    shapes, stride, pad = case
    check_layer(
        lambda x, w, b: L.conv_forward(x, w, b, stride=stride, pad=pad),
        L.conv_backward,
        lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=pad),
        shapes,
        seed=seed,
    )


def test_conv_output_shape_rounds_down_like_torch():
    out, _ = L.conv_forward(np.zeros((1, 1, 6, 7)), np.zeros((2, 1, 3, 2)), np.zeros(2), 2, (1, 0))
    assert out.shape == (1, 2, 3, 3)


@st.composite
def pool_cases(draw):
    pool, stride = draw(int_or_pair(1, 3)), draw(int_or_pair(1, 3))
    ph, pw = as_pair(pool)
    H, W = draw(st.integers(ph, ph + 4)), draw(st.integers(pw, pw + 4))
    return (draw(st.integers(1, 2)), draw(st.integers(1, 3)), H, W), pool, stride


@SETTINGS
@given(case=pool_cases(), seed=seeds)
def test_max_pool(case, seed):
    shape, pool, stride = case
    x = random_distinct(np.random.default_rng(seed), shape)  # no ties: differentiable
    check_layer(
        lambda x: L.max_pool_forward(x, pool=pool, stride=stride),
        L.max_pool_backward,
        lambda x: F.max_pool2d(x, pool, stride),
        [x],
        seed=seed,
    )


@pytest.mark.parametrize(("pool", "stride"), [(2, 2), (2, 1), (3, 1), ((1, 3), (2, 1))])
def test_max_pool_sends_gradient_to_the_first_max_like_torch(pool, stride):
    x = np.random.default_rng(0).integers(0, 2, size=(2, 2, 5, 5)).astype(np.float64)
    check_layer(
        lambda x: L.max_pool_forward(x, pool, stride),
        L.max_pool_backward,
        lambda x: F.max_pool2d(x, pool, stride),
        [x],
        numeric=False,  # ties are kinks
    )


@SETTINGS
@given(case=pool_cases(), seed=seeds)
def test_avg_pool(case, seed):
    shape, pool, stride = case
    check_layer(
        lambda x: L.avg_pool_forward(x, pool=pool, stride=stride),
        L.avg_pool_backward,
        lambda x: F.avg_pool2d(x, pool, stride),
        [shape],
        seed=seed,
    )


def test_global_avg_pool():
    check_layer(
        L.global_avg_pool_forward,
        L.global_avg_pool_backward,
        lambda x: x.mean(dim=(2, 3)),
        [(3, 4, 2, 5)],
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: L.conv_forward(np.zeros((1, 2, 4, 4)), np.zeros((3, 1, 2, 2)), np.zeros(3)),
            "channels",
        ),
        (
            lambda: L.conv_forward(np.zeros((1, 1, 4, 4)), np.zeros((3, 1, 2, 2)), np.zeros(2)),
            r"b must have shape \(3,\)",
        ),
        (
            lambda: L.conv_forward(
                np.zeros((1, 1, 2, 4)), np.zeros((1, 1, 5, 1)), np.zeros(1), pad=1
            ),
            "larger than the padded input",
        ),
        (
            lambda: L.conv_forward(
                np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 2, 2)), np.zeros(1), stride=0
            ),
            "stride must be at least 1, got 0",
        ),
        (
            lambda: L.conv_forward(
                np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 2, 2)), np.zeros(1), pad=(1, 2, 3)
            ),
            r"pad must be an int or a pair of ints, got \(1, 2, 3\)",
        ),
        (
            lambda: L.conv_forward(np.zeros((4, 4)), np.zeros((1, 1, 2, 2)), np.zeros(1)),
            r"x must have shape \(N, C, H, W\), got shape \(4, 4\)",
        ),
        (lambda: L.max_pool_forward(np.zeros((1, 1, 3, 3)), pool=4), "pool height of size 4"),
        (
            lambda: L.avg_pool_forward(np.zeros((1, 1, 3, 3)), stride=-1),
            "stride must be at least 1",
        ),
        (
            lambda: L.affine_forward(np.zeros((2, 3)), np.zeros((4, 5)), np.zeros(5)),
            "w has 4 rows but x",
        ),
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------- normalisation


def norm_params(seed: int, n: int) -> list[np.ndarray]:
    """gamma (around 1) and beta of shape (n,)."""
    rng = np.random.default_rng(seed + 1)
    return [1 + 0.5 * rng.standard_normal(n), rng.standard_normal(n)]


@SETTINGS
@given(N=st.integers(3, 6), D=st.integers(1, 5), seed=seeds)
def test_batchnorm_train(N, D, seed):
    check_layer(
        lambda x, g, b: L.batchnorm_forward(x, g, b, {"mode": "train"}),
        L.batchnorm_backward,
        lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True, eps=1e-5),
        [(N, D), *norm_params(seed, D)],
        seed=seed,
    )


@SETTINGS
@given(N=st.integers(1, 4), D=st.integers(1, 5), seed=seeds)
def test_batchnorm_eval(N, D, seed):
    rng = np.random.default_rng(seed + 2)
    mean, var = rng.standard_normal(D), rng.uniform(0.5, 2, D)
    bn_param = {"mode": "eval", "running_mean": mean, "running_var": var}
    check_layer(
        lambda x, g, b: L.batchnorm_forward(x, g, b, bn_param),
        L.batchnorm_backward,
        lambda x, g, b: F.batch_norm(
            x, torch.tensor(mean), torch.tensor(var), g, b, training=False
        ),
        [(N, D), *norm_params(seed, D)],
        seed=seed,
    )


@pytest.mark.parametrize("spatial", [False, True])
def test_batchnorm_running_statistics_follow_torch(spatial):
    rng = np.random.default_rng(0)
    shape, C = ((4, 3, 2, 5), 3) if spatial else ((6, 3), 3)
    forward = L.spatial_batchnorm_forward if spatial else L.batchnorm_forward
    gamma, beta = norm_params(0, C)
    bn_param = {"mode": "train", "momentum": 0.1}
    t_mean, t_var = torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64)
    for step in range(5):
        x = 3 * rng.standard_normal(shape) + step
        out, _ = forward(x, gamma, beta, bn_param)
        t_out = F.batch_norm(
            torch.tensor(x),
            t_mean,
            t_var,
            torch.tensor(gamma),
            torch.tensor(beta),
            training=True,
            momentum=0.1,
        )
        np.testing.assert_allclose(out, t_out.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bn_param["running_mean"], t_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(bn_param["running_var"], t_var.numpy(), rtol=1e-12)
    x = rng.standard_normal(shape)
    bn_param["mode"] = "eval"
    out, _ = forward(x, gamma, beta, bn_param)
    t_out = F.batch_norm(torch.tensor(x), t_mean, t_var, torch.tensor(gamma), torch.tensor(beta))
    np.testing.assert_allclose(out, t_out.numpy(), rtol=1e-10, atol=1e-12)


def test_batchnorm_in_float32_stays_float32():
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    g, b = np.ones(3, np.float32), np.zeros(3, np.float32)
    bn_param = {"mode": "train"}
    out, cache = L.batchnorm_forward(x, g, b, bn_param)
    grads = L.batchnorm_backward(out, cache)
    assert out.dtype == np.float32 and all(d.dtype == np.float32 for d in grads)
    assert bn_param["running_var"].dtype == np.float32


@pytest.mark.parametrize(
    ("x", "bn_param", "message"),
    [
        (np.zeros((1, 3)), {"mode": "train"}, "more than 1 sample"),
        (
            np.zeros((2, 3)),
            {"mode": "test"},
            r"bn_param\['mode'\] must be 'train' or 'eval', got 'test'",
        ),
        (np.zeros((2, 3)), {}, r"got None"),
        (np.zeros((2, 3)), {"mode": "train", "momentum": 0.9 + 1}, "momentum"),
        (
            np.zeros((2, 3)),
            {"mode": "eval", "running_mean": np.zeros(4)},
            r"running_mean'\] must have shape \(3,\)",
        ),
    ],
)
def test_batchnorm_rejects_bad_arguments(x, bn_param, message):
    with pytest.raises(ValueError, match=message):
        L.batchnorm_forward(x, np.ones(3), np.zeros(3), bn_param)


@SETTINGS
@given(
    N=st.integers(1, 3), C=st.integers(1, 3), H=st.integers(1, 3), W=st.integers(2, 3), seed=seeds
)
def test_spatial_batchnorm_train(N, C, H, W, seed):
    check_layer(
        lambda x, g, b: L.spatial_batchnorm_forward(x, g, b, {"mode": "train"}),
        L.spatial_batchnorm_backward,
        lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True),
        [(N, C, H, W), *norm_params(seed, C)],
        seed=seed,
    )


def test_spatial_batchnorm_eval():
    mean, var = np.array([0.5, -1.0]), np.array([2.0, 0.5])
    bn_param = {"mode": "eval", "running_mean": mean, "running_var": var}
    check_layer(
        lambda x, g, b: L.spatial_batchnorm_forward(x, g, b, bn_param),
        L.spatial_batchnorm_backward,
        lambda x, g, b: F.batch_norm(x, torch.tensor(mean), torch.tensor(var), g, b),
        [(2, 2, 3, 2), *norm_params(0, 2)],
    )


@SETTINGS
@given(N=st.integers(1, 4), dims=st.lists(st.integers(1, 3), min_size=1, max_size=3), seed=seeds)
def test_layernorm(N, dims, seed):
    dims = (*dims[:-1], dims[-1] + 2)  # at least 3 features: no near-constant rows
    rng = np.random.default_rng(seed + 1)
    gamma, beta = 1 + 0.5 * rng.standard_normal(dims), rng.standard_normal(dims)
    check_layer(
        lambda x, g, b: L.layernorm_forward(x, g, b, {"eps": 1e-5}),
        L.layernorm_backward,
        lambda x, g, b: F.layer_norm(x, dims, g, b, eps=1e-5),
        [(N, *dims), gamma, beta],
        seed=seed,
    )


@st.composite
def group_cases(draw):
    G, per_group = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    H, W = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if per_group * H * W < 3:
        W += 2  # at least 3 values per group
    return draw(st.integers(1, 2)), G * per_group, H, W, G


@SETTINGS
@given(case=group_cases(), seed=seeds)
def test_spatial_groupnorm(case, seed):
    N, C, H, W, G = case
    check_layer(
        lambda x, g, b: L.spatial_groupnorm_forward(x, g, b, G, {}),
        L.spatial_groupnorm_backward,
        lambda x, g, b: F.group_norm(x, G, g, b),
        [(N, C, H, W), *norm_params(seed, C)],
        seed=seed,
    )


def test_spatial_groupnorm_rejects_a_non_divisor():
    with pytest.raises(ValueError, match="divisor of the 6 channels, got 4"):
        L.spatial_groupnorm_forward(np.zeros((1, 6, 2, 2)), np.ones(6), np.zeros(6), 4)


# ---------------------------------------------------------------- dropout


def test_dropout_gradient_uses_the_mask():
    check_layer(
        lambda x: L.dropout_forward(x, {"mode": "train", "p": 0.4, "seed": 3}),
        L.dropout_backward,
        None,
        [(5, 6)],
    )


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_drops_a_fraction_p_and_rescales(p):
    x = np.ones((400, 500), dtype=np.float32)
    out, mask = L.dropout_forward(x, {"mode": "train", "p": p, "seed": 0})
    assert out.dtype == np.float32
    dropped = np.mean(out == 0)
    assert abs(dropped - p) < 4 * np.sqrt(p * (1 - p) / x.size)
    np.testing.assert_allclose(out[out != 0], 1 / (1 - p), rtol=1e-6)
    np.testing.assert_array_equal(L.dropout_backward(x, mask), out)


def test_dropout_p_matches_torch_meaning():
    x = np.ones(200_000)
    ours, _ = L.dropout_forward(x, {"mode": "train", "p": 0.3, "seed": 0})
    theirs = F.dropout(torch.tensor(x), p=0.3, training=True).numpy()
    assert abs(np.mean(ours == 0) - np.mean(theirs == 0)) < 0.01
    assert set(np.unique(ours)) == set(np.unique(theirs))


def test_dropout_seeds():
    x = np.ones((20, 30))
    same = [L.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 7})[0] for _ in range(2)]
    np.testing.assert_array_equal(*same)
    other, _ = L.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 8})
    assert not np.array_equal(same[0], other)
    rng = np.random.default_rng(7)
    first, second = (
        L.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": rng})[0] for _ in range(2)
    )
    np.testing.assert_array_equal(first, same[0])  # a fresh Generator(7) draws what seed 7 does
    assert not np.array_equal(first, second)  # a Generator moves on: a new mask every call


@pytest.mark.parametrize(("mode", "p"), [("eval", 0.5), ("train", 0.0)])
def test_dropout_identity(mode, p):
    x = np.arange(6.0).reshape(2, 3)
    out, cache = L.dropout_forward(x, {"mode": mode, "p": p, "seed": 0})
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(L.dropout_backward(x + 1, cache), x + 1)


def test_dropout_p_one_drops_everything():
    out, cache = L.dropout_forward(np.ones((3, 4)), {"mode": "train", "p": 1.0, "seed": 0})
    assert not out.any() and not L.dropout_backward(np.ones((3, 4)), cache).any()


@pytest.mark.parametrize(
    ("dropout_param", "message"),
    [
        (
            {"mode": "train", "p": 1.5, "seed": 0},
            r"dropout_param\['p'\] must be in \[0, 1\], got 1.5",
        ),
        (
            {"mode": "train", "p": 0.5},
            r"dropout_param\['seed'\] must be an int or a numpy.random.Generator",
        ),
        ({"mode": "train", "p": 0.5, "seed": 1.5}, "got 1.5"),
        ({"p": 0.5, "seed": 0}, r"dropout_param\['mode'\]"),
    ],
)
def test_dropout_rejects_bad_params(dropout_param, message):
    with pytest.raises(ValueError, match=message):
        L.dropout_forward(np.ones(3), dropout_param)


# ---------------------------------------------------------------- sandwich layers
# Fixed seeds: relu and pooling inside a sandwich see values we do not choose, and these
# seeds keep them away from the kinks.


@pytest.mark.parametrize("seed", [0, 1])
def test_affine_relu(seed):
    check_layer(
        L.affine_relu_forward,
        L.affine_relu_backward,
        lambda x, w, b: torch.relu(x.flatten(1) @ w + b),
        [(3, 2, 2), (4, 5), (5,)],
        seed=seed,
    )


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("norm", ["batchnorm", "layernorm", None])
def test_affine_norm_relu(norm, seed):
    def torch_fn(x, w, b, g, be):
        a = x @ w + b
        if norm == "batchnorm":
            a = F.batch_norm(a, None, None, g, be, training=True)
        elif norm == "layernorm":
            a = F.layer_norm(a, (a.shape[1],), g, be)
        return torch.relu(a)

    def forward(x, w, b, g, be):
        return L.affine_norm_relu_forward(x, w, b, g, be, {"mode": "train"}, norm)

    if norm is None:
        check_layer(
            lambda x, w, b: forward(x, w, b, None, None),
            lambda dout, cache: L.affine_norm_relu_backward(dout, cache)[:3],
            lambda x, w, b: torch_fn(x, w, b, None, None),
            [(4, 3), (3, 5), (5,)],
            seed=seed,
        )
    else:
        check_layer(
            forward,
            L.affine_norm_relu_backward,
            torch_fn,
            [(4, 3), (3, 5), (5,), *norm_params(seed, 5)],
            seed=seed,
        )


def test_affine_norm_relu_rejects_an_unknown_norm():
    with pytest.raises(ValueError, match="got 'groupnorm'"):
        L.affine_norm_relu_forward(
            np.ones((2, 2)), np.ones((2, 2)), np.ones(2), None, None, None, "groupnorm"
        )


@pytest.mark.parametrize("seed", [0, 1])
def test_conv_relu(seed):
    check_layer(
        lambda x, w, b: L.conv_relu_forward(x, w, b, {"stride": 2, "pad": 1}),
        L.conv_relu_backward,
        lambda x, w, b: torch.relu(F.conv2d(x, w, b, stride=2, padding=1)),
        [(2, 2, 5, 4), (3, 2, 3, 3), (3,)],
        seed=seed,
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_conv_relu_pool(seed):
    check_layer(
        lambda x, w, b: L.conv_relu_pool_forward(x, w, b, {"pad": 1}, {"pool": 2, "stride": 2}),
        L.conv_relu_pool_backward,
        lambda x, w, b: F.max_pool2d(torch.relu(F.conv2d(x, w, b, padding=1)), 2, 2),
        [(2, 2, 4, 6), (3, 2, 3, 3), (3,)],
        seed=seed,
    )
