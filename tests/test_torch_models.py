"""Each torch model against its numpy twin: weights, scores, loss, gradients, running statistics.

Float64, small shapes. The numpy gradients are hand-written; the torch ones come from autograd,
so every comparison here checks a whole model's backward pass as well as the forward.
"""

from __future__ import annotations

import copy
import inspect
import re

import numpy as np
import pytest
import torch

from parity import assert_all_close
from pix2pred.nn_numpy import models as NM
from pix2pred.nn_torch import layers as TL_layers
from pix2pred.nn_torch import models as TM
from pix2pred.nn_torch.transfer import (
    from_torch,
    load_state_dict_numpy,
    state_dict_numpy,
    to_torch,
)

RTOL = 1e-7
SHAPE = (3, 6, 6)
CLASSES = 4

# (model name, constructor keywords): every model and every option that changes the maths.
CASES = [
    ("linear", {"init": "xavier"}),
    ("linear", {"loss": "svm", "weight_scale": 0.5}),
    ("twolayer", {"hidden_dim": 7}),
    ("fcnet", {"hidden_dims": [6, 5]}),
    ("fcnet", {"hidden_dims": [6, 5], "normalization": "batchnorm"}),
    ("fcnet", {"hidden_dims": [6, 5], "normalization": "layernorm"}),
    ("simplecnn", {"init": "normal", "weight_scale": 0.1}),
    ("convnet", {"spec": "4,M,6|5"}),
    ("convnet", {"spec": "4,5,M", "batchnorm": False}),
]
IDS = [f"{name}-{'-'.join(map(str, kwargs.values()))}" for name, kwargs in CASES]


def _pair(name: str, kwargs: dict, seed: int = 0) -> tuple[NM.Model, TM.Model]:
    """The numpy and torch models built independently from the same arguments."""
    config = {"input_shape": SHAPE, "num_classes": CLASSES, "dtype": np.float64, "seed": seed}
    return NM.build_model(name, **config, **kwargs), TM.build_model(name, **config, **kwargs)


def _batch(seed: int, N: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return 1.0 + 2.0 * rng.standard_normal((N, *SHAPE)), rng.integers(0, CLASSES, N)


def _assert_state_equal(numpy_model: NM.Model, torch_model: TM.Model, rtol: float) -> None:
    expected, actual = state_dict_numpy(numpy_model), state_dict_numpy(torch_model)
    assert list(actual) == list(expected)
    for key in expected:
        assert_all_close(key, [actual[key]], [expected[key]], rtol, 1e-4)


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
def test_same_seed_same_initial_state(name: str, kwargs: dict) -> None:
    numpy_model, torch_model = _pair(name, kwargs, seed=3)
    assert [k for k, _ in torch_model.named_parameters()] == list(numpy_model.params)
    assert [k for k, _ in torch_model.named_buffers()] == list(numpy_model.buffers)
    expected = state_dict_numpy(numpy_model)
    for key, value in state_dict_numpy(torch_model).items():
        assert value.dtype == np.float64
        np.testing.assert_array_equal(value, expected[key], err_msg=key)
    assert torch_model.config() == numpy_model.config()
    assert torch_model.num_params() == numpy_model.num_params()


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
def test_scores_loss_and_gradients_match(name: str, kwargs: dict) -> None:
    numpy_model, _ = _pair(name, kwargs)
    torch_model = to_torch(numpy_model)
    X, y = _batch(1)

    # Eval mode: scores.
    assert_all_close(
        "scores", [torch_model.loss(X).detach().numpy()], [numpy_model.loss(X)], RTOL, 1e-4
    )

    # Train mode: loss, every gradient, and the running statistics it recorded.
    loss, grads = numpy_model.loss(X, y)
    torch_loss = torch_model.loss(X, torch.from_numpy(y))
    torch_loss.backward()
    assert torch_loss.item() == pytest.approx(loss, rel=RTOL)
    torch_grads = {k: p.grad.numpy() for k, p in torch_model.named_parameters()}
    assert list(torch_grads) == list(grads)
    assert_all_close("gradient", list(torch_grads.values()), list(grads.values()), RTOL, 1e-4)
    _assert_state_equal(numpy_model, torch_model, RTOL)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("fcnet", {"hidden_dims": [6, 5], "normalization": "batchnorm"}),
        ("convnet", {"spec": "4,M,6|5"}),
    ],
    ids=["fcnet-batchnorm", "convnet"],
)
def test_running_statistics_after_train_steps_then_eval(name: str, kwargs: dict) -> None:
    numpy_model, torch_model = _pair(name, kwargs)
    for step in range(4):
        X, y = _batch(10 + step, N=3 + step)
        numpy_model.loss(X, y)
        torch_model.loss(X, y)
    # The statistics moved away from their (0, 1) start and agree.
    assert not np.allclose(numpy_model.buffers["running_mean1"], 0.0)
    _assert_state_equal(numpy_model, torch_model, RTOL)
    X, _ = _batch(20)
    scores = torch_model.loss(X).detach().numpy()
    assert_all_close("eval scores", [scores], [numpy_model.loss(X)], RTOL, 1e-4)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("fcnet", {"hidden_dims": [6], "dropout": 0.5}),
        ("convnet", {"spec": "3,M|4", "dropout": 0.5}),
    ],
    ids=["fcnet", "convnet"],
)
def test_dropout_models(name: str, kwargs: dict) -> None:
    numpy_model, torch_model = _pair(name, kwargs)
    X, _ = _batch(2)
    # Eval mode has no dropout: the backends agree.
    assert_all_close(
        "scores", [torch_model.loss(X).detach().numpy()], [numpy_model.loss(X)], RTOL, 1e-4
    )
    # Train mode draws fresh masks from model.rng, the same sequence for the same seed.
    torch_model.train()
    first, second = torch_model(X), torch_model(X)
    assert not torch.equal(first, second)
    again = TM.build_model(name, **torch_model.config())
    again.train()
    torch.testing.assert_close(again(X), first)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("fcnet", {"hidden_dims": [6, 5], "normalization": "batchnorm", "dropout": 0.4}),
        ("convnet", {"spec": "3,M|5,4", "dropout": 0.5}),
    ],
    ids=["fcnet", "convnet"],
)
def test_train_parity_with_identical_dropout_masks(
    name: str, kwargs: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dropout in the same places with the same scaling: the torch model, fed the numpy masks
    (drawn from a copy of the numpy model's rng, in the same order), gives the same loss and
    gradients."""
    numpy_model, torch_model = _pair(name, kwargs)
    masks_rng = copy.deepcopy(numpy_model.rng)
    drawn: list[np.ndarray] = []

    def numpy_mask_dropout(x: torch.Tensor, dropout_param: dict) -> torch.Tensor:
        p = dropout_param["p"]
        keep = masks_rng.random(tuple(x.shape)) >= p
        drawn.append(keep)
        return x * torch.from_numpy(keep.astype(np.float64) / (1 - p))

    monkeypatch.setattr(TL_layers, "dropout_forward", numpy_mask_dropout)
    X, y = _batch(6)
    loss, grads = numpy_model.loss(X, y)
    torch_loss = torch_model.loss(X, y)
    torch_loss.backward()
    assert torch_loss.item() == pytest.approx(loss, rel=RTOL)
    torch_grads = [p.grad.numpy() for p in torch_model.parameters()]
    assert_all_close("gradient", torch_grads, list(grads.values()), RTOL, 1e-4)
    # One mask per hidden layer, each dropping some units: the masks mattered.
    assert len(drawn) == 2 and not any(keep.all() for keep in drawn)


def test_forward_follows_mode_and_loss_restores_it() -> None:
    _, torch_model = _pair("fcnet", {"hidden_dims": [6], "normalization": "batchnorm"})
    X, y = _batch(3)
    torch_model.eval()
    before = torch_model.running_mean1.clone()
    torch_model(X)
    assert torch.equal(torch_model.running_mean1, before)
    torch_model.loss(X, y)
    assert not torch_model.training
    assert not torch.equal(torch_model.running_mean1, before)
    torch_model.train()
    torch_model.loss(X)
    assert torch_model.training


def test_flat_models_take_flat_inputs() -> None:
    numpy_model, torch_model = _pair("twolayer", {"hidden_dim": 5})
    X, _ = _batch(4)
    flat = X.reshape(len(X), -1)
    torch.testing.assert_close(torch_model.loss(flat), torch_model.loss(X))
    np.testing.assert_allclose(torch_model.loss(flat).detach().numpy(), numpy_model.loss(flat))


@pytest.mark.parametrize(
    ("name", "X"),
    [
        ("twolayer", np.zeros((2, 3, 6, 5))),
        ("convnet", np.zeros((2, 108))),
        ("linear", np.zeros((2, *SHAPE), dtype=np.int64)),
    ],
)
def test_rejects_inputs_as_numpy_does(name: str, X: np.ndarray) -> None:
    numpy_model, torch_model = _pair(name, {"spec": "4,M"} if name == "convnet" else {})
    with pytest.raises(ValueError) as numpy_error:
        numpy_model.loss(X)
    with pytest.raises(ValueError, match=re.escape(str(numpy_error.value))):
        torch_model.loss(X)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("fcnet", {"normalization": "groupnorm"}),
        ("convnet", {"spec": "4,,M"}),
        ("simplecnn", {"input_shape": (3, 2, 8)}),
        ("linear", {"num_classes": 1}),
        ("twolayer", {"dtype": np.int32}),
    ],
)
def test_constructor_rejects_as_numpy_does(name: str, kwargs: dict) -> None:
    with pytest.raises(ValueError) as numpy_error:
        NM.build_model(name, **kwargs)
    with pytest.raises(ValueError, match=re.escape(str(numpy_error.value))):
        TM.build_model(name, **kwargs)


def test_registry_signatures_and_config_round_trip() -> None:
    assert list(TM.MODELS) == list(NM.MODELS)
    for name, cls in TM.MODELS.items():
        assert cls.__name__ == NM.MODELS[name].__name__
        assert inspect.signature(cls.__init__) == inspect.signature(NM.MODELS[name].__init__)
        model = cls(input_shape=(3, 8, 8), num_classes=CLASSES, seed=5)  # the default spec pools 3x
        rebuilt = TM.build_model(name, **model.config())
        assert rebuilt.config() == model.config()
        np.testing.assert_equal(state_dict_numpy(rebuilt), state_dict_numpy(model))
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        TM.build_model("resnet")
    assert TM.parse_spec is NM.parse_spec


def test_torch_dtype_and_default_float32() -> None:
    model = TM.TwoLayerNet(SHAPE, CLASSES, dtype=torch.float64)
    assert model.dtype == torch.float64 and model.config()["dtype"] == "float64"
    model = TM.TwoLayerNet(SHAPE, CLASSES)
    assert model.W1.dtype == torch.float32 and model.config()["dtype"] == "float32"
    assert model.loss(np.zeros((1, *SHAPE))).dtype == torch.float32


def test_simplecnn_parameter_count_matches_numpy() -> None:
    assert TM.SimpleCNN().num_params() == NM.SimpleCNN().num_params() == 1_072_330


# ---------------------------------------------------------------- transfer


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_keeps_weights_buffers_and_dtype(dtype: type) -> None:
    torch_model = TM.ConvNet(SHAPE, CLASSES, spec="4,M|5", dtype=dtype, seed=1)
    with torch.no_grad():
        for tensor in torch_model.state_dict().values():
            tensor.add_(torch.rand(tensor.shape, dtype=tensor.dtype))
    numpy_model = from_torch(torch_model)
    assert type(numpy_model) is NM.ConvNet and numpy_model.dtype == np.dtype(dtype)
    assert numpy_model.config() == torch_model.config()
    state = state_dict_numpy(torch_model)
    np.testing.assert_equal(state_dict_numpy(numpy_model), state)
    back = to_torch(numpy_model)
    assert type(back) is TM.ConvNet and back.dtype == torch_model.dtype
    np.testing.assert_equal(state_dict_numpy(back), state)
    # Copies, not views: training one does not move the other.
    numpy_model.params["W1"] += 1.0
    np.testing.assert_equal(state_dict_numpy(back)["W1"], state["W1"])


def test_load_rejects_mismatched_state_and_leaves_model_untouched() -> None:
    numpy_model, torch_model = _pair("fcnet", {"hidden_dims": [6], "normalization": "batchnorm"})
    state = state_dict_numpy(numpy_model)
    before = state_dict_numpy(torch_model)
    missing = {k: v for k, v in state.items() if k != "running_var1"}
    with pytest.raises(ValueError, match=re.escape("missing ['running_var1'], unexpected []")):
        load_state_dict_numpy(torch_model, missing)
    with pytest.raises(ValueError, match=re.escape("unexpected ['W9']")):
        load_state_dict_numpy(numpy_model, {**state, "W9": np.zeros(1)})
    wrong = {**state, "b1": np.zeros(7)}
    with pytest.raises(ValueError, match=re.escape("state['b1'] has shape (7,)")):
        load_state_dict_numpy(torch_model, wrong)
    np.testing.assert_equal(state_dict_numpy(torch_model), before)
    with pytest.raises(TypeError, match="to_torch expects a numpy model"):
        to_torch(torch_model)
    with pytest.raises(TypeError, match="from_torch expects a torch model"):
        from_torch(numpy_model)


def test_load_casts_to_the_model_dtype() -> None:
    numpy_model = NM.TwoLayerNet(SHAPE, CLASSES, hidden_dim=4, dtype=np.float64)
    torch_model = TM.TwoLayerNet(SHAPE, CLASSES, hidden_dim=4, dtype=np.float32, seed=9)
    load_state_dict_numpy(torch_model, state_dict_numpy(numpy_model))
    assert torch_model.W1.dtype == torch.float32
    np.testing.assert_allclose(torch_model.W1.detach().numpy(), numpy_model.params["W1"], rtol=1e-6)
    W1 = numpy_model.params["W1"]
    load_state_dict_numpy(numpy_model, state_dict_numpy(torch_model))
    assert numpy_model.params["W1"] is W1 and W1.dtype == np.float64  # in place, as copy_
