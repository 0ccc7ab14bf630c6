"""The numpy models: the course's sanity checks, the contract and torch parity.

Gradients are checked in float64 on tiny inputs; training checks run in float32, the dtype the
models train in.
"""

import itertools
import json
import math

import numpy as np
import pytest

from parity import assert_all_close
from pix2pred.gradcheck import eval_numerical_gradient, grad_check_sparse
from pix2pred.nn_numpy import optim
from pix2pred.nn_numpy.init import fans, init_weight
from pix2pred.nn_numpy.models import (
    MODELS,
    ConvNet,
    FullyConnectedNet,
    LinearClassifier,
    Model,
    SimpleCNN,
    TwoLayerNet,
    build_model,
    parse_spec,
)

SMALL = (2, 4, 4)  # (C, H, W) of the gradient-check inputs

# Tiny configurations covering every model and option; name -> (class, keyword arguments).
TINY = {
    "linear-softmax": (LinearClassifier, {}),
    "linear-svm": (LinearClassifier, {"loss": "svm"}),
    "twolayer": (TwoLayerNet, {"hidden_dim": 6}),
    "fcnet": (FullyConnectedNet, {"hidden_dims": [6, 5]}),
    "fcnet-batchnorm-dropout": (
        FullyConnectedNet,
        {"hidden_dims": [6, 5], "normalization": "batchnorm", "dropout": 0.3},
    ),
    "fcnet-layernorm-dropout": (
        FullyConnectedNet,
        {"hidden_dims": [6, 5], "normalization": "layernorm", "dropout": 0.3},
    ),
    "simplecnn": (SimpleCNN, {}),
    "convnet-batchnorm-dropout": (ConvNet, {"spec": "3,M,4|5", "dropout": 0.2}),
    "convnet-plain": (ConvNet, {"spec": "3,3,M", "batchnorm": False}),
}


def tiny(name: str, input_shape=SMALL, num_classes=3, **overrides) -> Model:
    cls, kwargs = TINY[name]
    return cls(input_shape, num_classes, **{**kwargs, **overrides})


def data(shape, num_classes, N, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, *shape)).astype(dtype), rng.integers(0, num_classes, N)


def fixed_rng_loss(model: Model, X, y):
    """Train-mode loss with the model's generator reset, so dropout draws the same masks."""
    model.rng = np.random.default_rng(1234)
    return model.loss(X, y)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", [n for n in TINY if n != "simplecnn"])
def test_gradients_match_central_differences(name):
    model = tiny(name, dtype=np.float64)
    X, y = data(SMALL, 3, N=4, seed=1)
    _, grads = fixed_rng_loss(model, X, y)
    assert grads.keys() == model.params.keys()
    numeric = [
        eval_numerical_gradient(lambda _: fixed_rng_loss(model, X, y)[0], p)
        for p in model.params.values()
    ]
    # One shared scale: a conv bias before batch norm has a zero gradient, where both sides
    # are rounding noise.
    assert_all_close(name, list(grads.values()), numeric, rtol=1e-6, floor=1e-4)


def test_simplecnn_gradients_match_central_differences():
    model = tiny("simplecnn", dtype=np.float64)
    X, y = data(SMALL, 3, N=3, seed=2)
    _, grads = model.loss(X, y)
    assert grads.keys() == model.params.keys()
    for name, p in model.params.items():
        if p.size <= 1000:
            numeric = eval_numerical_gradient(lambda _: model.loss(X, y)[0], p)
            assert_all_close(name, [grads[name]], [numeric], rtol=1e-6, floor=1e-4)
        else:
            errors = grad_check_sparse(lambda _: model.loss(X, y)[0], p, grads[name], 20)
            assert errors.max() < 1e-6, f"{name}: relative errors {errors}"


def test_dropout_masks_come_from_the_model_rng():
    model = tiny("fcnet-batchnorm-dropout", dtype=np.float64)
    X, y = data(SMALL, 3, N=6)
    state = model.rng.bit_generator.state
    first = model.loss(X, y)[0]
    assert model.loss(X, y)[0] != first  # a fresh mask on every train step
    model.rng.bit_generator.state = state  # what a checkpoint restores
    assert model.loss(X, y)[0] == first
    before = model.rng.bit_generator.state
    model.loss(X)  # eval mode draws nothing
    assert model.rng.bit_generator.state == before


# ---------------------------------------------------------------- initial loss, overfitting


@pytest.mark.parametrize("name", [n for n in TINY if n != "linear-svm"])
def test_initial_softmax_loss_is_log_num_classes(name):
    model = tiny(name, input_shape=(3, 8, 8), num_classes=10, init="normal", weight_scale=1e-4)
    X, y = data((3, 8, 8), 10, N=40, dtype=np.float32)
    loss, _ = model.loss(X, y)
    assert loss == pytest.approx(math.log(10), abs=1e-3)


def test_initial_svm_loss_is_num_classes_minus_one():
    model = tiny("linear-svm", input_shape=(3, 8, 8), num_classes=10, weight_scale=1e-6)
    X, y = data((3, 8, 8), 10, N=40, dtype=np.float32)
    assert model.loss(X, y)[0] == pytest.approx(9, abs=1e-2)


OVERFIT = {
    "linear-softmax": 1e-2,
    "linear-svm": 1e-2,
    "twolayer": 1e-2,
    "fcnet-batchnorm-dropout": 1e-2,
    "fcnet-layernorm-dropout": 1e-2,
    "simplecnn": 1e-3,
    "convnet-batchnorm-dropout": 1e-2,
}


@pytest.mark.parametrize("name", list(OVERFIT))
def test_overfits_50_samples(name):
    shape = (3, 8, 8)
    overrides = {"twolayer": {"hidden_dim": 64}, "convnet": {"spec": "8,M,16,M|32"}}
    overrides["fcnet"] = {"hidden_dims": [64, 64]}
    model = tiny(name, input_shape=shape, num_classes=10, **overrides.get(name.split("-")[0], {}))
    X, y = data(shape, 10, N=50, seed=3, dtype=np.float32)
    configs = {k: {"lr": OVERFIT[name]} for k in model.params}
    for _ in range(300):
        _, grads = model.loss(X, y)
        for k, w in model.params.items():
            model.params[k], configs[k] = optim.adam(w, grads[k], configs[k])
        if np.mean(model.loss(X).argmax(axis=1) == y) == 1.0:
            break
    assert np.mean(model.loss(X).argmax(axis=1) == y) == 1.0


# ---------------------------------------------------------------- dtypes, modes, buffers


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(TINY))
def test_dtype_is_kept(name, dtype):
    model = tiny(name, dtype=dtype)
    other = np.float64 if dtype == np.float32 else np.float32
    X, y = data(SMALL, 3, N=4, dtype=other)
    assert all(a.dtype == dtype for a in [*model.params.values(), *model.buffers.values()])
    assert model.loss(X).dtype == dtype
    loss, grads = model.loss(X, y)
    assert isinstance(loss, float)
    assert all(
        grads[k].dtype == dtype and grads[k].shape == p.shape for k, p in model.params.items()
    )
    assert all(a.dtype == dtype for a in model.buffers.values())


def test_same_seed_same_weights_in_both_dtypes():
    m32, m64 = (
        tiny("convnet-batchnorm-dropout", dtype=d, seed=5) for d in (np.float32, np.float64)
    )
    for k in m64.params:
        np.testing.assert_array_equal(m32.params[k], m64.params[k].astype(np.float32))
    assert (
        tiny("fcnet", seed=6).params["W1"].tolist() != tiny("fcnet", seed=5).params["W1"].tolist()
    )


def test_batchnorm_running_stats_are_torch_s_and_eval_uses_them():
    model = FullyConnectedNet(SMALL, 3, hidden_dims=[5], normalization="batchnorm", dtype="float64")
    X, y = data(SMALL, 3, N=8)
    a = X.reshape(8, -1) @ model.params["W1"] + model.params["b1"]  # (N, 5) pre-norm
    running_mean = model.buffers["running_mean1"]
    train_loss, _ = model.loss(X, y)
    assert model.buffers["running_mean1"] is running_mean  # updated in place
    np.testing.assert_allclose(running_mean, 0.1 * a.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(
        model.buffers["running_var1"], 0.9 + 0.1 * a.var(axis=0, ddof=1), rtol=1e-12
    )
    # With the running statistics set to the batch's, eval mode computes the train-mode loss.
    model.buffers["running_mean1"][...] = a.mean(axis=0)
    model.buffers["running_var1"][...] = a.var(axis=0)
    from pix2pred.nn_numpy.losses import softmax_loss

    assert softmax_loss(model.loss(X), y)[0] == pytest.approx(train_loss, rel=1e-12)


def test_eval_mode_is_per_sample_and_leaves_buffers_alone():
    model = tiny("convnet-batchnorm-dropout", dtype=np.float64)
    X, y = data(SMALL, 3, N=6)
    for _ in range(3):
        model.loss(X, y)
    buffers = {k: v.copy() for k, v in model.buffers.items()}
    assert not np.allclose(buffers["running_mean1"], 0)
    scores = model.loss(X)
    np.testing.assert_allclose(model.loss(X[:1]), scores[:1], rtol=1e-12)
    np.testing.assert_allclose(model.loss(X), scores, rtol=0)
    for k, v in model.buffers.items():
        np.testing.assert_array_equal(v, buffers[k])


# ---------------------------------------------------------------- torch parity


def torch_convnet_scores(model: ConvNet | SimpleCNN, X, train: bool):
    """The model's forward pass in torch.nn.functional, on leaf tensors of its params."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    p = {k: torch.tensor(v, requires_grad=True) for k, v in model.params.items()}
    running = {k: torch.tensor(v) for k, v in model.buffers.items()}
    if isinstance(model, SimpleCNN):
        features, hidden, bn = [32, "M", 64, "M"], [256], False
    else:
        features, hidden, bn = model.spec.features, model.spec.hidden, model.batchnorm
    h, i = torch.tensor(X), 0
    for token in features:
        if token == "M":
            h = F.max_pool2d(h, 2)
            continue
        i += 1
        h = F.conv2d(h, p[f"W{i}"], p[f"b{i}"], padding=p[f"W{i}"].shape[-1] // 2)
        if bn:
            h = F.batch_norm(
                h, running[f"running_mean{i}"], running[f"running_var{i}"],
                p[f"gamma{i}"], p[f"beta{i}"], training=train, momentum=0.1, eps=1e-5,
            )  # fmt: skip
        h = F.relu(h)
    h = h.flatten(1)
    for _ in hidden:
        i += 1
        h = F.relu(h @ p[f"W{i}"] + p[f"b{i}"])
    return h @ p[f"W{i + 1}"] + p[f"b{i + 1}"], p, running


@pytest.mark.parametrize(
    "model",
    [
        SimpleCNN((3, 9, 10), 4, dtype=np.float64),
        ConvNet((3, 9, 10), 4, spec="4,M,5,6,M,3|7,5", dtype=np.float64),
    ],
    ids=["simplecnn", "convnet"],
)
def test_matches_torch_autograd(model):
    torch = pytest.importorskip("torch")
    X, y = data(model.input_shape, 4, N=5, seed=4)
    scores, p, running = torch_convnet_scores(model, X, train=True)  # before the buffers move
    loss, grads = model.loss(X, y)
    t_loss = torch.nn.functional.cross_entropy(scores, torch.tensor(y))
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=1e-10)
    assert_all_close("grads", list(grads.values()), [p[k].grad.numpy() for k in grads], 1e-8, 1e-6)
    assert_all_close(
        "buffers", list(model.buffers.values()), [running[k].numpy() for k in model.buffers],
        1e-10, 0.0,
    )  # fmt: skip
    t_scores, _, _ = torch_convnet_scores(model, X, train=False)
    assert_all_close("eval scores", [model.loss(X)], [t_scores.detach().numpy()], 1e-10, 1e-6)


# ---------------------------------------------------------------- architecture and contract


def test_simplecnn_has_1_07_m_parameters():
    model = SimpleCNN((3, 32, 32), 10)
    assert model.num_params() == 1_072_330
    assert model.params["W1"].shape == (32, 3, 5, 5)
    assert model.params["W3"].shape == (64 * 8 * 8, 256)
    assert SimpleCNN((1, 28, 28), 10).params["W3"].shape == (64 * 7 * 7, 256)


def test_convnet_parameter_names_and_count():
    model = ConvNet((3, 32, 32), 10)  # "64,64,M,128,128,M,256,M|256"
    convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256)]
    conv_count = sum(F * C * 9 + F + 2 * F for C, F in convs)
    fc_count = 256 * 4 * 4 * 256 + 256 + 256 * 10 + 10
    assert model.num_params() == conv_count + fc_count
    conv_names = [(f"W{i}", f"b{i}", f"gamma{i}", f"beta{i}") for i in range(1, 6)]
    assert list(model.params) == [*itertools.chain(*conv_names), "W6", "b6", "W7", "b7"]
    assert list(model.buffers) == [
        *itertools.chain.from_iterable((f"running_mean{i}", f"running_var{i}") for i in range(1, 6))
    ]
    assert model.params["W3"].shape == (128, 64, 3, 3)
    assert model.params["W6"].shape == (256 * 4 * 4, 256)
    # Any input size and channel count; pools round down.
    assert ConvNet((1, 7, 9), 2, spec="4,M,M").params["W2"].shape == (4 * 1 * 2, 2)


def test_fcnet_parameter_names_and_count():
    model = FullyConnectedNet((1, 2, 3), 4, hidden_dims=[5, 7], normalization="layernorm")
    assert list(model.params) == [
        "W1",
        "b1",
        "gamma1",
        "beta1",
        "W2",
        "b2",
        "gamma2",
        "beta2",
        "W3",
        "b3",
    ]
    assert model.num_params() == (6 * 5 + 5 + 10) + (5 * 7 + 7 + 14) + (7 * 4 + 4)
    assert model.buffers == {}
    assert LinearClassifier((3, 32, 32), 10).num_params() == 3072 * 10 + 10
    assert TwoLayerNet((3, 32, 32), 10).num_params() == 3072 * 100 + 100 + 100 * 10 + 10


def test_flat_models_take_flat_input():
    model = tiny("fcnet", dtype=np.float64)
    X, _ = data(SMALL, 3, N=3)
    np.testing.assert_array_equal(model.loss(X.reshape(3, -1)), model.loss(X))


@pytest.mark.parametrize("name", list(TINY))
def test_config_is_json_and_rebuilds_the_model(name):
    model = tiny(name, seed=7)
    config = model.config()
    assert json.loads(json.dumps(config)) == config
    rebuilt = build_model(model.name, **json.loads(json.dumps(config)))
    assert type(rebuilt) is type(model) and rebuilt.config() == config
    assert rebuilt.params.keys() == model.params.keys()
    assert rebuilt.buffers.keys() == model.buffers.keys()
    for k, p in model.params.items():
        np.testing.assert_array_equal(rebuilt.params[k], p)


def test_registry():
    assert {n: c.__name__ for n, c in MODELS.items()} == {
        "linear": "LinearClassifier",
        "twolayer": "TwoLayerNet",
        "fcnet": "FullyConnectedNet",
        "simplecnn": "SimpleCNN",
        "convnet": "ConvNet",
    }
    with pytest.raises(ValueError, match=r"unknown model 'resnet'.*'convnet'"):
        build_model("resnet")


@pytest.mark.parametrize(
    ("init", "std"), [("he", math.sqrt(2 / 400)), ("xavier", math.sqrt(2 / 700)), ("normal", 0.05)]
)
def test_init_scales(init, std):
    w = init_weight(np.random.default_rng(0), (400, 300), init, 0.05, np.float32)
    assert w.dtype == np.float32
    assert w.std() == pytest.approx(std, rel=0.02)
    assert fans((8, 3, 5, 5)) == (75, 200)
    conv = init_weight(np.random.default_rng(0), (64, 32, 3, 3), "he", 1.0, np.float64)
    assert conv.std() == pytest.approx(math.sqrt(2 / 288), rel=0.03)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("64,X,M|256", "bad conv token 'X'"),
        ("64,-3|256", "bad conv token '-3'"),
        ("64,M|M", "bad fc token 'M'"),
        ("64,M|2.5", "bad fc token '2.5'"),
        ("64,,M", "empty conv token"),
        ("64|256,", "empty fc token"),
        ("M|256", "no conv layer"),
        ("64|2|3", "more than one '|'"),
    ],
)
def test_parse_spec_errors_name_the_bad_token(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(spec)
    with pytest.raises(ValueError, match=message):
        ConvNet(spec=spec)


def test_parse_spec_reads_and_writes_the_canonical_form():
    spec = parse_spec(" 64, 64, m ,128|256, 10")
    assert spec.features == (64, 64, "M", 128) and spec.hidden == (256, 10)
    assert str(spec) == "64,64,M,128|256,10" and parse_spec(str(spec)) == spec
    assert parse_spec("8,M").hidden == () and str(parse_spec("8,M|")) == "8,M"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ConvNet((3, 4, 4), 10, spec="8,M,M,M"), "below 1x1"),
        (lambda: SimpleCNN((3, 3, 8), 10), "at least 4, got 3x8"),
        (lambda: FullyConnectedNet(normalization="groupnorm"), "'groupnorm'"),
        (lambda: FullyConnectedNet(dropout=1.0), r"\[0, 1\), got 1.0"),
        (
            lambda: FullyConnectedNet(hidden_dims=[10, 0]),
            "hidden_dims must be a positive int, got 0",
        ),
        (lambda: FullyConnectedNet(hidden_dims="100"), "list of positive ints, got '100'"),
        (lambda: TwoLayerNet(init="kaiming"), "init must be one of .*'kaiming'"),
        (lambda: TwoLayerNet(weight_scale=-1), "weight_scale .* got -1"),
        (lambda: TwoLayerNet(dtype="float16"), "float32 or float64, got 'float16'"),
        (lambda: TwoLayerNet((3, 32), 10), r"input_shape must be \(C, H, W\), got \(3, 32\)"),
        (lambda: TwoLayerNet(num_classes=1), "at least 2, got 1"),
        (lambda: LinearClassifier(loss="hinge"), "'hinge'"),
        (lambda: ConvNet(batchnorm="yes"), "'yes'"),
        (lambda: ConvNet(seed=1.5), "seed must be an int, got 1.5"),
    ],
)
def test_constructor_validation(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_loss_validates_its_input():
    model = tiny("convnet-plain")
    with pytest.raises(ValueError, match=r"expects X of shape \(N, 2, 4, 4\), got \(3, 2, 4, 5\)"):
        model.loss(np.zeros((3, 2, 4, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"expects X of shape .*got \(3, 32\)"):
        model.loss(np.zeros((3, 32), dtype=np.float32))  # flat input is for flat models only
    with pytest.raises(ValueError, match=r"floats .* got dtype uint8"):
        model.loss(np.zeros((3, *SMALL), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\]"):
        model.loss(np.zeros((2, *SMALL), dtype=np.float32), np.array([0, 3]))
