"""Layer outputs and input/layer gradients agree between the backends and with the model."""

from types import SimpleNamespace

import numpy as np
import pytest

from pix2pred.gradcheck import eval_numerical_gradient_array, rel_error
from pix2pred.introspect import (
    conv_layer_names,
    input_gradient,
    layer_gradient,
    layer_names,
    layer_outputs,
)
from pix2pred.nn_numpy.models import build_model
from pix2pred.nn_torch.transfer import to_torch

SHAPE = (3, 8, 8)
MODELS = {
    "linear": ("linear", {}),
    "svm": ("linear", {"loss": "svm"}),
    "twolayer": ("twolayer", {"hidden_dim": 7}),
    "fcnet-bn-dropout": (
        "fcnet",
        {"hidden_dims": [9, 6], "normalization": "batchnorm", "dropout": 0.3},
    ),
    "fcnet-ln": ("fcnet", {"hidden_dims": [5], "normalization": "layernorm"}),
    "simplecnn": ("simplecnn", {}),
    "convnet": ("convnet", {"spec": "4,M,6,M,M|5", "batchnorm": True, "dropout": 0.2}),
    "convnet-nobn": ("convnet", {"spec": "4,5,M|", "batchnorm": False}),
}


def make_model(key: str, seed: int = 0):
    """A float64 numpy model whose biases, norms and running statistics are not trivial."""
    name, config = MODELS[key]
    model = build_model(
        name, input_shape=SHAPE, num_classes=4, dtype=np.float64, seed=seed, **config
    )
    rng = np.random.default_rng(seed + 1)
    for k, p in model.params.items():
        if k.startswith("W"):
            p *= 1 + rng.random()  # larger scores, so the outputs are not all near 0
        elif k.startswith("gamma"):
            p[...] = rng.uniform(0.5, 1.5, p.shape)
        else:
            p[...] = rng.normal(0, 0.1, p.shape)
    for k, v in model.buffers.items():
        v[...] = rng.uniform(0.5, 2, v.shape) if "var" in k else rng.normal(0, 0.3, v.shape)
    return model


def data(n: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *SHAPE)), rng.standard_normal((n, 4))


@pytest.mark.parametrize("key", MODELS)
def test_input_gradient_is_the_same_in_both_backends(key):
    model = make_model(key)
    X, dscores = data()
    scores, dX = input_gradient(model, X, dscores)
    t_scores, t_dX = input_gradient(to_torch(model), X, dscores)
    assert dX.shape == X.shape
    assert np.abs(dX).max() > 0
    np.testing.assert_allclose(scores, model.loss(X), rtol=1e-12)
    np.testing.assert_allclose(t_scores, scores, rtol=1e-6, atol=1e-9)
    assert rel_error(t_dX, dX, eps=1e-8) < 1e-6


@pytest.mark.parametrize("key", ["simplecnn", "convnet", "fcnet-bn-dropout"])
def test_input_gradient_matches_central_differences(key):
    model = make_model(key)
    X, dscores = data(n=2)
    _, dX = input_gradient(model, X, dscores)
    numeric = eval_numerical_gradient_array(lambda x: model.loss(x), X.copy(), dscores)
    assert rel_error(dX, numeric, eps=1e-6) < 1e-6


def test_input_gradient_leaves_the_model_unchanged():
    model = make_model("convnet")
    before = {k: v.copy() for k, v in {**model.params, **model.buffers}.items()}
    rng_state = model.rng.bit_generator.state
    X, dscores = data()
    input_gradient(model, X, dscores)
    layer_outputs(model, X, train=True)
    for k, v in {**model.params, **model.buffers}.items():
        np.testing.assert_array_equal(v, before[k])
    assert model.rng.bit_generator.state == rng_state
    t = to_torch(model)
    t.train()
    input_gradient(t, X, dscores)
    layer_outputs(t, X, train=True)
    assert t.training
    assert all(p.grad is None for p in t.parameters())
    for k, v in t.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])


@pytest.mark.parametrize("key", MODELS)
def test_layer_outputs_are_the_same_in_both_backends_and_end_in_the_scores(key):
    model = make_model(key)
    X, _ = data()
    outputs = layer_outputs(model, X)
    t_outputs = layer_outputs(to_torch(model), X)
    assert list(outputs) == list(t_outputs) == layer_names(model)
    np.testing.assert_allclose(outputs[layer_names(model)[-1]], model.loss(X), rtol=1e-12)
    for name, out in outputs.items():
        assert out.shape[0] == len(X), name
        assert rel_error(t_outputs[name], out, eps=1e-8) < 1e-6, name


@pytest.mark.parametrize("key", ["fcnet-ln", "convnet-nobn", "simplecnn"])
def test_train_mode_outputs_use_batch_statistics_in_both_backends(key):
    model = make_model(key)
    X, _ = data(n=4)
    outputs = layer_outputs(model, X, train=True)
    t_outputs = layer_outputs(to_torch(model), X, train=True)
    for name, out in outputs.items():
        assert rel_error(t_outputs[name], out, eps=1e-8) < 1e-6, name


def test_train_mode_batch_norm_normalises_the_batch_and_dropout_drops():
    model = make_model("fcnet-bn-dropout")
    X, _ = data(n=64)
    train = layer_outputs(model, X, train=True, seed=3)
    gamma, beta = model.params["gamma1"], model.params["beta1"]
    xhat = (train["bn1"] - beta) / gamma
    np.testing.assert_allclose(xhat.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(xhat.std(axis=0), 1, atol=1e-3)
    dropped = (train["dropout1"] == 0) & (train["relu1"] != 0)
    assert 0.15 < dropped.sum() / (train["relu1"] != 0).sum() < 0.45
    kept = train["dropout1"] != 0
    np.testing.assert_allclose(train["dropout1"][kept], train["relu1"][kept] / 0.7)
    again = layer_outputs(model, X, train=True, seed=3)
    np.testing.assert_array_equal(again["dropout1"], train["dropout1"])
    evals = layer_outputs(model, X)
    assert "dropout1" in evals
    np.testing.assert_array_equal(evals["dropout1"], evals["relu1"])


def test_layer_names_are_clear_and_conv_layers_are_found():
    assert layer_names(make_model("simplecnn")) == [
        "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "fc3", "relu3", "fc4",
    ]  # fmt: skip
    convnet = make_model("convnet")
    assert layer_names(convnet) == [
        "conv1", "bn1", "relu1", "pool1", "conv2", "bn2", "relu2", "pool2", "pool2_2",
        "fc3", "relu3", "dropout3", "fc4",
    ]  # fmt: skip
    assert conv_layer_names(convnet) == ["relu1", "relu2"]
    assert layer_names(make_model("linear")) == ["fc1"]
    assert layer_names(make_model("fcnet-ln")) == ["fc1", "ln1", "relu1", "fc2"]
    assert conv_layer_names(make_model("twolayer")) == []


@pytest.mark.parametrize("key, layer", [("simplecnn", "relu2"), ("convnet", "relu1")])
def test_layer_gradient_is_the_same_in_both_backends_and_numerically(key, layer):
    model = make_model(key)
    X, dscores = data(n=2)
    scores, act, grad = layer_gradient(model, X, dscores, layer)
    t_scores, t_act, t_grad = layer_gradient(to_torch(model), X, dscores, layer)
    assert act.shape == grad.shape == layer_outputs(model, X)[layer].shape
    assert rel_error(t_act, act, eps=1e-8) < 1e-6
    assert rel_error(t_grad, grad, eps=1e-8) < 1e-6
    np.testing.assert_allclose(t_scores, scores, rtol=1e-6, atol=1e-9)
    assert np.abs(grad).max() > 0
    # The gradient of the scores themselves is dscores.
    _, _, dlast = layer_gradient(model, X, dscores, layer_names(model)[-1])
    np.testing.assert_allclose(dlast, dscores)


def test_an_estimator_is_unwrapped_and_bad_arguments_are_named():
    model = make_model("twolayer")
    est = SimpleNamespace(model_=model)
    X, dscores = data()
    expected = model.backward_to_input(X, dscores)[1]
    np.testing.assert_array_equal(input_gradient(est, X, dscores)[1], expected)
    with pytest.raises(ValueError, match="no layer 'conv9'"):
        layer_gradient(model, X, dscores, "conv9")
    with pytest.raises(ValueError, match=r"dscores must have shape \(3, 4\)"):
        input_gradient(model, X, dscores[:, :2])
    with pytest.raises(ValueError, match=r"dscores must have shape \(3, 4\)"):
        input_gradient(to_torch(model), X, dscores[:, :2])
    with pytest.raises(ValueError, match="expects X of shape"):
        layer_outputs(model, X[:, :, :4])
    with pytest.raises(TypeError, match="expected a pix2pred"):
        layer_outputs(object(), X)
