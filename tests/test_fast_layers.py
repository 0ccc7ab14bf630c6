"""fast_layers against torch autograd, central differences and the reference loops of layers."""

import contextlib
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity import check_layer, compare_layers
from pix2pred.gradcheck import random_away_from_zero, random_distinct
from pix2pred.nn_numpy import fast_layers as FL
from pix2pred.nn_numpy import im2col as I
from pix2pred.nn_numpy import layers as L
from pix2pred.nn_numpy import workspace as WS

torch = pytest.importorskip("torch")
F = torch.nn.functional

seeds = st.integers(0, 2**16)
LAYOUTS = ["nchw", "channels_last", "strided"]


def int_or_pair(low: int, high: int) -> st.SearchStrategy:
    """An int, or an (h, w) tuple of ints, in [low, high]."""
    return st.integers(low, high) | st.tuples(st.integers(low, high), st.integers(low, high))


def as_pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else v


def in_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """A copy of x (N, C, H, W) stored as C-contiguous NCHW, as NHWC, or as a strided slice."""
    if layout == "nchw":
        return np.ascontiguousarray(x)
    if layout == "channels_last":
        return I.nchw(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    padded = np.zeros((*x.shape[:3], 2 * x.shape[3]), dtype=x.dtype)
    padded[..., ::2] = x
    return padded[..., ::2]


@contextlib.contextmanager
def chunk_size(nbytes: int) -> Iterator[None]:
    """Run the block with ``workspace.CHUNK_BYTES`` set to ``nbytes``."""
    old = WS.CHUNK_BYTES
    WS.CHUNK_BYTES = nbytes
    try:
        yield
    finally:
        WS.CHUNK_BYTES = old


# ---------------------------------------------------------------- convolution


@st.composite
def conv_cases(draw, max_size: int = 3):
    HH, WW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride, pad = draw(int_or_pair(1, 3)), draw(int_or_pair(0, 2))
    ph, pw = as_pair(pad)
    H = draw(st.integers(max(1, HH - 2 * ph), HH + max_size))
    W = draw(st.integers(max(1, WW - 2 * pw), WW + max_size))
    N, C, Fo = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return [(N, C, H, W), (Fo, C, HH, WW), (Fo,)], stride, pad


@settings(max_examples=30, deadline=None)
@given(case=conv_cases(), layout=st.sampled_from(LAYOUTS), seed=seeds)
def test_conv_matches_torch_and_central_differences(case, layout, seed):
    shapes, stride, pad = case
    check_layer(
        lambda x, w, b: FL.conv_forward(in_layout(x, layout), w, b, stride=stride, pad=pad),
        FL.conv_backward,
        lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=pad),
        shapes,
        seed=seed,
    )


@settings(max_examples=30, deadline=None)
@given(case=conv_cases(max_size=9), seed=seeds)
def test_conv_equals_the_reference_loops(case, seed):
    shapes, stride, pad = case
    compare_layers(
        lambda x, w, b: FL.conv_forward(x, w, b, stride=stride, pad=pad),
        FL.conv_backward,
        lambda x, w, b: L.conv_forward(x, w, b, stride=stride, pad=pad),
        L.conv_backward,
        shapes,
        seed=seed,
    )


@pytest.mark.parametrize(
    ("shape", "w_shape", "stride", "pad"),
    [
        ((4, 3, 12, 10), (8, 3, 5, 5), 1, 2),
        ((4, 8, 8, 8), (6, 8, 3, 3), 1, 1),
        ((3, 6, 9, 7), (5, 6, 3, 2), 2, (1, 0)),
        ((2, 4, 9, 9), (3, 4, 1, 1), 3, 0),
    ],
)
def test_conv_in_float32_is_float32_and_close_to_torch(shape, w_shape, stride, pad):
    check_layer(
        lambda x, w, b: FL.conv_forward(x, w, b, stride=stride, pad=pad),
        FL.conv_backward,
        lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=pad),
        [shape, w_shape, (w_shape[0],)],
        dtype=np.float32,
        rtol=1e-4,
        floor=1e-2,
        numeric=False,
    )
    x, w, b = (np.ones(s, np.float32) for s in (shape, w_shape, (w_shape[0],)))
    out, cache = FL.conv_forward(x, w, b, stride, pad)
    assert out.dtype == np.float32
    assert all(g.dtype == np.float32 for g in FL.conv_backward(out, cache))


def test_conv_output_is_channels_last_and_chunked_backward_matches():
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((9, 4, 6, 5)), rng.standard_normal((3, 4, 3, 3)), np.zeros(3)
    out, cache = FL.conv_forward(x, w, b, 1, 1)
    assert I.is_channels_last(out) and out.shape == (9, 3, 6, 5)
    dout = rng.standard_normal(out.shape)
    expected = FL.conv_backward(dout, cache)
    with chunk_size(1):  # one sample per chunk
        chunked = FL.conv_backward(dout, cache)
    for a, e in zip(chunked, expected, strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "stride", "pad"),
    [
        ((3, 2, 9, 14), (3, 2, 3, 2), (1, 2), (1, 1)),  # KW * C < W_out: the NCHW adds
        ((3, 1, 7, 16), (2, 1, 5, 5), 1, 2),
        ((3, 4, 9, 6), (3, 4, 3, 2), (1, 2), (1, 1)),  # the channels-last adds
    ],
)
def test_conv_dx_both_layouts_of_the_adds_equal_the_reference(x_shape, w_shape, stride, pad):
    compare_layers(
        lambda x, w, b: FL.conv_forward(x, w, b, stride=stride, pad=pad),
        FL.conv_backward,
        lambda x, w, b: L.conv_forward(x, w, b, stride=stride, pad=pad),
        L.conv_backward,
        [x_shape, w_shape, (w_shape[0],)],
    )


def test_conv_backward_can_skip_dx():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3)), np.ones(4)
    out, cache = FL.conv_forward(x, w, b, 2, 1)
    dout = rng.standard_normal(out.shape)
    _, dw, db = FL.conv_backward(dout, cache)
    none, dw2, db2 = FL.conv_backward(dout, cache, need_dx=False)
    assert none is None
    np.testing.assert_array_equal(dw2, dw)
    np.testing.assert_array_equal(db2, db)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: FL.conv_forward(np.zeros((1, 2, 4, 4)), np.zeros((3, 1, 2, 2)), np.zeros(3)),
            "channels",
        ),
        (
            lambda: FL.conv_forward(np.zeros((1, 1, 4, 4)), np.zeros((3, 1, 2, 2)), np.zeros(2)),
            r"b must have shape \(3,\)",
        ),
        (
            lambda: FL.conv_forward(
                np.zeros((1, 1, 2, 4)), np.zeros((1, 1, 5, 1)), np.zeros(1), pad=1
            ),
            "larger than the padded input",
        ),
        (
            lambda: FL.conv_forward(
                np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 2, 2)), np.zeros(1), stride=0
            ),
            "stride must be at least 1, got 0",
        ),
        (
            lambda: FL.conv_forward(np.zeros((4, 4)), np.zeros((1, 1, 2, 2)), np.zeros(1)),
            r"x must have shape \(N, C, H, W\), got shape \(4, 4\)",
        ),
        (lambda: FL.max_pool_forward(np.zeros((1, 1, 3, 3)), pool=4), "pool height of size 4"),
        (lambda: FL.avg_pool_forward(np.zeros((1, 1, 3, 3)), stride=-1), "stride must be at least"),
    ],
)
def test_bad_arguments_are_named_as_in_layers(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------- pooling


@st.composite
def pool_cases(draw):
    pool, stride = draw(int_or_pair(1, 3)), draw(int_or_pair(1, 3))
    if draw(st.booleans()):
        stride = pool  # the tiling fast path
    ph, pw = as_pair(pool)
    H, W = draw(st.integers(ph, ph + 5)), draw(st.integers(pw, pw + 5))
    return (draw(st.integers(1, 3)), draw(st.integers(1, 3)), H, W), pool, stride


@settings(max_examples=30, deadline=None)
@given(case=pool_cases(), layout=st.sampled_from(LAYOUTS), seed=seeds)
def test_max_pool_matches_torch_and_the_reference(case, layout, seed):
    shape, pool, stride = case
    x = random_distinct(np.random.default_rng(seed), shape)  # no ties: differentiable
    check_layer(
        lambda x: FL.max_pool_forward(in_layout(x, layout), pool=pool, stride=stride),
        FL.max_pool_backward,
        lambda x: F.max_pool2d(x, pool, stride),
        [x],
        seed=seed,
    )
    compare_layers(
        lambda x: FL.max_pool_forward(x, pool, stride),
        FL.max_pool_backward,
        lambda x: L.max_pool_forward(x, pool, stride),
        L.max_pool_backward,
        [x],
        seed=seed,
    )


@pytest.mark.parametrize(("pool", "stride"), [(2, 2), (2, 1), (3, 1), ((1, 3), (2, 1)), (3, 3)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_max_pool_sends_gradient_to_the_first_max_like_torch(pool, stride, layout):
    x = np.random.default_rng(0).integers(0, 2, size=(2, 2, 7, 7)).astype(np.float64)
    check_layer(
        lambda x: FL.max_pool_forward(in_layout(x, layout), pool, stride),
        FL.max_pool_backward,
        lambda x: F.max_pool2d(x, pool, stride),
        [x],
        numeric=False,  # ties are kinks
    )


def test_max_pool_sends_gradient_to_the_first_nan_like_torch():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = np.nan
    x[0, 0, 2, 2] = 5.0
    out, cache = FL.max_pool_forward(x)
    t = torch.tensor(x, requires_grad=True)
    t_out = F.max_pool2d(t, 2)
    t_out.backward(torch.ones_like(t_out))
    np.testing.assert_array_equal(out, t_out.detach().numpy())
    np.testing.assert_array_equal(FL.max_pool_backward(np.ones_like(out), cache), t.grad.numpy())


@pytest.mark.parametrize("x_layout", LAYOUTS)
@pytest.mark.parametrize("dout_layout", LAYOUTS)
@pytest.mark.parametrize(("pool", "stride"), [(2, 2), (3, 2)])
def test_pool_backward_takes_dout_in_any_memory_order(x_layout, dout_layout, pool, stride):
    """A gradient back through a flatten is NCHW while the pooled input may be channels-last."""
    rng = np.random.default_rng(3)
    x = random_distinct(rng, (3, 4, 9, 8))
    for fwd, bwd, ref_fwd, ref_bwd in [
        (FL.max_pool_forward, FL.max_pool_backward, L.max_pool_forward, L.max_pool_backward),
        (FL.avg_pool_forward, FL.avg_pool_backward, L.avg_pool_forward, L.avg_pool_backward),
    ]:
        out, cache = fwd(in_layout(x, x_layout), pool, stride)
        dout = rng.standard_normal(out.shape)
        _, ref_cache = ref_fwd(x, pool, stride)
        expected = ref_bwd(dout, ref_cache)
        np.testing.assert_allclose(bwd(in_layout(dout, dout_layout), cache), expected, rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(case=pool_cases(), layout=st.sampled_from(LAYOUTS), seed=seeds)
def test_avg_pool_matches_torch_and_the_reference(case, layout, seed):
    shape, pool, stride = case
    check_layer(
        lambda x: FL.avg_pool_forward(in_layout(x, layout), pool=pool, stride=stride),
        FL.avg_pool_backward,
        lambda x: F.avg_pool2d(x, pool, stride),
        [shape],
        seed=seed,
    )
    compare_layers(
        lambda x: FL.avg_pool_forward(x, pool, stride),
        FL.avg_pool_backward,
        lambda x: L.avg_pool_forward(x, pool, stride),
        L.avg_pool_backward,
        [shape],
        seed=seed,
    )


# ---------------------------------------------------------------- batch normalisation


def norm_params(seed: int, n: int) -> list[np.ndarray]:
    """gamma (around 1) and beta of shape (n,)."""
    rng = np.random.default_rng(seed + 1)
    return [1 + 0.5 * rng.standard_normal(n), rng.standard_normal(n)]


@settings(max_examples=20, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
    layout=st.sampled_from(LAYOUTS),
    chunk_bytes=st.sampled_from([1, WS.CHUNK_BYTES]),
    seed=seeds,
)
def test_spatial_batchnorm_train_matches_torch_and_the_reference(shape, layout, chunk_bytes, seed):
    if shape[0] * shape[2] * shape[3] < 3:  # two values per channel are a degenerate case
        shape = (3, *shape[1:])
    C = shape[1]
    with chunk_size(chunk_bytes):  # 1: one sample per chunk
        check_layer(
            lambda x, g, b: FL.spatial_batchnorm_forward(
                in_layout(x, layout), g, b, {"mode": "train"}
            ),
            FL.spatial_batchnorm_backward,
            lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True, eps=1e-5),
            [shape, *norm_params(seed, C)],
            seed=seed,
        )
    compare_layers(
        lambda x, g, b: FL.spatial_batchnorm_forward(x, g, b, {"mode": "train"}),
        FL.spatial_batchnorm_backward,
        lambda x, g, b: L.spatial_batchnorm_forward(x, g, b, {"mode": "train"}),
        L.spatial_batchnorm_backward,
        [shape, *norm_params(seed, C)],
        seed=seed,
    )


@pytest.mark.parametrize("offset", [0.0, 30.0])  # raw moments, then the centred fallback
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_spatial_batchnorm_both_moment_paths_match_torch(offset, layout, mode):
    C = 5
    rng = np.random.default_rng(4)
    mean, var = offset + rng.standard_normal(C), rng.uniform(0.5, 2, C)
    bn_param = {"mode": mode, "running_mean": mean, "running_var": var}
    x = offset + rng.standard_normal((6, C, 3, 4))
    check_layer(
        lambda x, g, b: FL.spatial_batchnorm_forward(in_layout(x, layout), g, b, dict(bn_param)),
        FL.spatial_batchnorm_backward,
        lambda x, g, b: F.batch_norm(
            x, torch.tensor(mean), torch.tensor(var), g, b, training=mode == "train"
        ),
        [x, *norm_params(1, C)],
        h=1e-4 if offset else 1e-5,
    )


@settings(max_examples=15, deadline=None)
@given(N=st.integers(2, 7), D=st.integers(1, 5), seed=seeds)
def test_batchnorm_train_matches_torch(N, D, seed):
    check_layer(
        lambda x, g, b: FL.batchnorm_forward(x, g, b, {"mode": "train", "eps": 1e-3}),
        FL.batchnorm_backward,
        lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True, eps=1e-3),
        [(N, D), *norm_params(seed, D)],
        seed=seed,
    )


@pytest.mark.parametrize("spatial", [False, True])
def test_batchnorm_eval_matches_torch(spatial):
    rng = np.random.default_rng(2)
    shape = (3, 4, 2, 3) if spatial else (3, 4)
    mean, var = rng.standard_normal(4), rng.uniform(0.5, 2, 4)
    bn_param = {"mode": "eval", "running_mean": mean, "running_var": var}
    forward = FL.spatial_batchnorm_forward if spatial else FL.batchnorm_forward
    check_layer(
        lambda x, g, b: forward(x, g, b, bn_param),
        FL.spatial_batchnorm_backward if spatial else FL.batchnorm_backward,
        lambda x, g, b: F.batch_norm(x, torch.tensor(mean), torch.tensor(var), g, b),
        [shape, *norm_params(0, 4)],
    )


@pytest.mark.parametrize("spatial", [False, True])
def test_batchnorm_running_statistics_equal_the_reference(spatial):
    rng = np.random.default_rng(0)
    shape = (4, 3, 2, 5) if spatial else (6, 3)
    fast, ref = (
        (FL.spatial_batchnorm_forward, L.spatial_batchnorm_forward)
        if spatial
        else (FL.batchnorm_forward, L.batchnorm_forward)
    )
    gamma, beta = norm_params(0, 3)
    fast_param, ref_param = {"mode": "train", "momentum": 0.3}, {"mode": "train", "momentum": 0.3}
    for step in range(4):
        x = 3 * rng.standard_normal(shape) + step
        fast(x, gamma, beta, fast_param)
        ref(x, gamma, beta, ref_param)
    for key in ("running_mean", "running_var"):
        np.testing.assert_allclose(fast_param[key], ref_param[key], rtol=1e-12)
    fast_param["mode"] = ref_param["mode"] = "eval"
    x = rng.standard_normal(shape)
    np.testing.assert_allclose(
        fast(x, gamma, beta, fast_param)[0], ref(x, gamma, beta, ref_param)[0], rtol=1e-12
    )


def test_batchnorm_in_float32_is_accurate_far_from_zero():
    # A large common offset is where E[x**2] - E[x]**2 would lose every digit in float32.
    rng = np.random.default_rng(0)
    x64 = 1000 + rng.standard_normal((64, 8, 6, 6))
    g, b = np.ones(8), np.zeros(8)
    out64, cache64 = FL.spatial_batchnorm_forward(x64, g, b, {"mode": "train"})
    out32, cache32 = FL.spatial_batchnorm_forward(
        x64.astype(np.float32), g.astype(np.float32), b.astype(np.float32), {"mode": "train"}
    )
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, atol=2e-3)
    dout = rng.standard_normal(x64.shape)
    for g32, g64 in zip(
        FL.spatial_batchnorm_backward(dout.astype(np.float32), cache32),
        FL.spatial_batchnorm_backward(dout, cache64),
        strict=True,
    ):
        assert g32.dtype == np.float32
        np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-2 * np.abs(g64).max())


@pytest.mark.parametrize(
    ("x", "bn_param", "message"),
    [
        (np.zeros((1, 3)), {"mode": "train"}, "more than 1 sample"),
        (np.zeros((2, 3)), {"mode": "test"}, r"must be 'train' or 'eval', got 'test'"),
        (np.zeros((2, 3)), {"mode": "train", "momentum": 1.9}, "momentum"),
        (np.zeros((2, 3)), {"mode": "train", "eps": -1.0}, "eps must be non-negative"),
        (
            np.zeros((2, 3)),
            {"mode": "eval", "running_mean": np.zeros(4)},
            r"running_mean'\] must have shape \(3,\)",
        ),
    ],
)
def test_batchnorm_rejects_bad_arguments(x, bn_param, message):
    with pytest.raises(ValueError, match=message):
        FL.batchnorm_forward(x, np.ones(3), np.zeros(3), bn_param)


# ---------------------------------------------------------------- sandwiches


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    ("x_shape", "w_shape"),
    [((3, 2, 8, 6), (4, 2, 3, 3)), ((5, 1, 8, 10), (4, 1, 3, 3))],
    ids=["channels-last-dx", "nchw-dx"],  # which of conv_backward's dx paths runs
)
@pytest.mark.parametrize("chunk_bytes", [None, 1], ids=["default-chunks", "chunk-per-sample"])
def test_sandwiches_equal_the_reference(layout, x_shape, w_shape, chunk_bytes):
    rng = np.random.default_rng(1)
    x = in_layout(random_away_from_zero(rng, x_shape), layout)
    shapes = [x, w_shape, w_shape[:1]]
    conv_param, pool_param = {"stride": 1, "pad": 1}, {"pool": 2, "stride": 2}
    with chunk_size(chunk_bytes or WS.CHUNK_BYTES):  # 1: several chunks on every thread
        _compare_sandwiches(shapes, conv_param, pool_param)


def _compare_sandwiches(shapes, conv_param, pool_param):
    compare_layers(
        lambda x, w, b: FL.conv_relu_forward(x, w, b, conv_param),
        FL.conv_relu_backward,
        lambda x, w, b: L.conv_relu_forward(x, w, b, conv_param),
        L.conv_relu_backward,
        shapes,
    )
    compare_layers(
        lambda x, w, b: FL.conv_relu_pool_forward(x, w, b, conv_param, pool_param),
        FL.conv_relu_pool_backward,
        lambda x, w, b: L.conv_relu_pool_forward(x, w, b, conv_param, pool_param),
        L.conv_relu_pool_backward,
        shapes,
    )


def test_conv_relu_rejects_an_unknown_conv_param_as_the_reference_does():
    x, w, b = np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), np.zeros(1)
    for module in (FL, L):
        with pytest.raises(
            TypeError, match="conv_forward\\(\\) got an unexpected keyword argument 'padding'"
        ):
            module.conv_relu_forward(x, w, b, {"padding": 1})


def test_conv_relu_backward_leaves_dout_alone():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    out, cache = FL.conv_relu_forward(x, w, np.zeros(5, np.float32), {"pad": 1})
    assert (out == 0).any() and (out > 0).any()
    dout = in_layout(rng.standard_normal(out.shape).astype(np.float32), "channels_last")
    before = dout.copy()
    FL.conv_relu_backward(dout, cache)
    np.testing.assert_array_equal(dout, before)


# ---------------------------------------------------------------- reused buffers


def test_held_outputs_and_caches_survive_later_calls():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((4, 3, 8, 8)), rng.standard_normal((5, 3, 3, 3)), np.ones(5)
    x2 = rng.standard_normal((2, 3, 6, 6))
    g, be = np.full(5, 2.0), np.zeros(5)

    def run(xi: np.ndarray) -> tuple[list[np.ndarray], object]:
        """Forward and backward through conv-relu-pool then batch norm; all results returned."""
        a, cache_a = FL.conv_relu_pool_forward(xi, w, b, {"pad": 1})
        y, cache_y = FL.spatial_batchnorm_forward(a, g, be, {"mode": "train"})
        da, dg, dbe = FL.spatial_batchnorm_backward(rng.standard_normal(y.shape), cache_y)
        return [a, y, da, dg, dbe, *FL.conv_relu_pool_backward(da, cache_a)], cache_a

    held, cache1 = run(x)
    kept = [h.copy() for h in held]
    # Calls of the same and of other shapes, whose buffers could collide with held ones.
    for xi in (x, x2, x):
        run(xi)
    for h, k in zip(held, kept, strict=True):
        np.testing.assert_array_equal(h, k)
    # The cache of call 1 still gives call 1's gradients.
    for got, k in zip(FL.conv_relu_pool_backward(held[2], cache1), kept[5:], strict=True):
        np.testing.assert_array_equal(got, k)


def test_workspace_reuses_only_buffers_nobody_holds():
    ws = WS.Workspace(max_bytes=1 << 20)
    a = ws.empty((10, 10), np.float32)
    view = a[2:]
    del a
    b = ws.empty((10, 10), np.float32)
    assert not np.shares_memory(b, view), "a buffer still viewed was handed out again"
    b_id = id(b)
    del b
    c = ws.empty((10, 10), np.float32)
    assert id(c) == b_id, "an idle buffer was not reused"
    assert ws.empty((10, 10), np.float64).dtype == np.float64


def test_workspace_stays_under_its_budget():
    ws = WS.Workspace(max_bytes=4000)
    for n in range(1, 20):
        ws.empty((n, 10), np.float32)
    assert ws.nbytes <= 4000
    held = ws.empty((200, 10), np.float32)  # over a quarter of the budget: never kept
    assert ws.nbytes <= 4000 and held.shape == (200, 10)
    ws.clear()
    assert ws.nbytes == 0


def test_results_do_not_depend_on_the_number_of_threads():
    rng = np.random.default_rng(5)
    x = in_layout(rng.standard_normal((7, 3, 10, 9)), "channels_last")
    w, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    g, be = np.ones(4), np.zeros(4)

    def run() -> list[np.ndarray]:
        out, c1 = FL.conv_relu_pool_forward(x, w, b, {"pad": 1}, {"pool": 2, "stride": 2})
        y, c2 = FL.spatial_batchnorm_forward(out, g, be, {"mode": "train"})
        dy = np.cos(y)
        dout, dg, dbe = FL.spatial_batchnorm_backward(dy, c2)
        return [y.copy(), dg, dbe, *(a.copy() for a in FL.conv_relu_pool_backward(dout, c1))]

    old = WS.get_num_threads()
    try:
        results = []
        for n in (1, 3):
            WS.set_num_threads(n)
            with chunk_size(1):  # a chunk per sample, so every thread gets several
                results.append(run())
    finally:
        WS.set_num_threads(old)
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_parallel_covers_the_range_in_order_and_checks_its_argument():
    parts = min(WS.get_num_threads(), 10)
    expected = [(10 * i // parts, 10 * (i + 1) // parts) for i in range(parts)]
    assert WS.parallel(lambda a, b: (a, b), 10) == expected
    with pytest.raises(ValueError, match="positive int, got 0"):
        WS.set_num_threads(0)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("held", [False, True])
def test_affine_equals_the_reference_split_or_not(threads, held):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 3, 4, 5))
    w, b = rng.standard_normal((60, 7)), rng.standard_normal(7)
    dout = rng.standard_normal((37, 7))
    before = WS.get_num_threads()
    WS.set_num_threads(threads)
    try:
        with WS.blas_one_thread() if held else contextlib.nullcontext():
            assert WS.blas_held() == (held and threads > 1)
            out, cache = FL.affine_relu_forward(x, w, b)
            grads = FL.affine_relu_backward(dout, cache)
    finally:
        WS.set_num_threads(before)
    ref_out, ref_cache = L.affine_relu_forward(x, w, b)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12)
    for got, ref in zip(grads, L.affine_relu_backward(dout, ref_cache), strict=True):
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="w has 59 rows but x"):
        FL.affine_forward(x, w[:59], b)


def test_worker_threads_follow_the_callers_errstate():
    # Only the second half of the output columns overflows: the half a worker computes.
    x = np.ones((8, 4), np.float32)
    w = np.ones((4, 64), np.float32)
    w[:, 32:] = 1e38
    b = np.zeros(64, np.float32)
    before = WS.get_num_threads()
    WS.set_num_threads(2)
    try:
        with WS.blas_one_thread():  # as in a model's pass: the rows go to two threads
            with np.errstate(over="raise"), pytest.raises(FloatingPointError, match="overflow"):
                FL.affine_forward(x, w, b)
            with np.errstate(over="ignore"), warnings.catch_warnings():
                warnings.simplefilter("error")
                out, _ = FL.affine_forward(x, w, b)
    finally:
        WS.set_num_threads(before)
    assert np.isinf(out[:, 32:]).all() and np.isfinite(out[:, :32]).all()
