"""The torch optimizers against the numpy update rules: same defaults, groups and trajectory."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from parity import assert_all_close
from pix2pred.nn_numpy import models as NM
from pix2pred.nn_numpy import optim as np_optim
from pix2pred.nn_torch import optim as th_optim
from pix2pred.nn_torch.transfer import state_dict_numpy, to_torch
from pix2pred.schedules import make_schedule

STEPS = 20

# Non-default hyperparameters for each rule, so every option the twins share is exercised.
CONFIGS: dict[str, list[dict]] = {
    "sgd": [{}, {"lr": 0.05, "weight_decay": 0.1}],
    "sgd_momentum": [
        {"lr": 0.05},
        {"lr": 0.02, "momentum": 0.5, "dampening": 0.3, "weight_decay": 0.05},
    ],
    "nesterov": [{"lr": 0.05}, {"lr": 0.02, "momentum": 0.8, "weight_decay": 0.05}],
    "rmsprop": [
        {},
        {"lr": 3e-3, "alpha": 0.9, "weight_decay": 0.1, "momentum": 0.5, "centered": True},
    ],
    "adam": [{"lr": 1e-2}, {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}],
    "adamw": [{"lr": 1e-2}, {"lr": 1e-2, "betas": (0.5, 0.9), "weight_decay": 0.3}],
}
CASES = [(name, config) for name, configs in CONFIGS.items() for config in configs]


def _problem(seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Initial weights ``W1 (3, 4)``, ``b1 (4,)``, ``gamma1 (4,)`` and data X (6, 3), T (6, 4)."""
    rng = np.random.default_rng(seed)
    params = {
        "W1": rng.standard_normal((3, 4)),
        "b1": rng.standard_normal(4),
        "gamma1": 1.0 + 0.1 * rng.standard_normal(4),
    }
    return params, rng.standard_normal((6, 3)), rng.standard_normal((6, 4))


def _numpy_grads(p: dict[str, np.ndarray], X: np.ndarray, T: np.ndarray) -> dict[str, np.ndarray]:
    """Gradients of ``mean over rows of 0.5 * ||tanh(X @ W1 + b1) * gamma1 - T||^2``."""
    h = np.tanh(X @ p["W1"] + p["b1"])  # (N, 4)
    r = (h * p["gamma1"] - T) / X.shape[0]  # (N, 4)
    dh = r * p["gamma1"] * (1 - h**2)  # (N, 4)
    return {"W1": X.T @ dh, "b1": dh.sum(axis=0), "gamma1": (r * h).sum(axis=0)}


def _torch_loss(p: dict[str, torch.Tensor], X: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    h = torch.tanh(X @ p["W1"] + p["b1"])
    return 0.5 * ((h * p["gamma1"] - T) ** 2).sum() / X.shape[0]


@pytest.mark.parametrize(("name", "config"), CASES)
@pytest.mark.parametrize("scheduled", [False, True], ids=["constant", "warmup-cosine"])
def test_trajectory_matches_numpy_rule(name: str, config: dict, scheduled: bool) -> None:
    params, X, T = _problem()
    th_params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in params.items()}
    optimizer = th_optim.make_optimizer(name, th_params, **config)
    rule = np_optim.get_update_rule(name)
    # The numpy Solver's convention: decay only the "W" arrays, one config per array.
    configs = {
        k: dict(config) if k.startswith("W") else {**config, "weight_decay": 0.0} for k in params
    }
    lr0 = optimizer.param_groups[0]["lr"]
    schedule = make_schedule("cosine", lr0, STEPS, warmup_steps=4) if scheduled else None
    X_t, T_t = torch.tensor(X), torch.tensor(T)
    for step in range(STEPS):
        if schedule is not None:
            th_optim.set_lr(optimizer, schedule(step))
            for c in configs.values():
                c["lr"] = schedule(step)
        grads = _numpy_grads(params, X, T)
        for k in params:
            params[k], configs[k] = rule(params[k], grads[k], configs[k])
        optimizer.zero_grad()
        _torch_loss(th_params, X_t, T_t).backward()
        optimizer.step()
    for k, v in params.items():
        np.testing.assert_allclose(th_params[k].detach().numpy(), v, rtol=1e-10, atol=1e-12)
    # The run moved the weights: the comparison is not between two untouched copies.
    assert not np.allclose(params["W1"], _problem()[0]["W1"])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_defaults_match_numpy(name: str) -> None:
    w = np.zeros(2)
    _, np_config = np_optim.get_update_rule(name)(w, np.ones(2), None)
    optimizer = th_optim.make_optimizer(name, {"W": torch.nn.Parameter(torch.zeros(2))})
    group = optimizer.param_groups[0]
    state_keys = {"velocity", "square_avg", "grad_avg", "m", "v", "t"}
    for key, value in np_config.items():
        if key in state_keys:
            continue
        expected = tuple(value) if isinstance(value, list) else value
        assert group[key] == expected, (name, key)


def test_weight_decay_only_on_weights() -> None:
    params = {
        "W1": torch.nn.Parameter(torch.ones(2, 2)),
        "b1": torch.nn.Parameter(torch.ones(2)),
        "gamma1": torch.nn.Parameter(torch.ones(2)),
    }
    optimizer = th_optim.sgd(params, lr=0.1, weight_decay=0.5)
    decay = {
        name: group["weight_decay"]
        for group in optimizer.param_groups
        for name in group["param_names"]
    }
    assert decay == {"W1": 0.5, "b1": 0.0, "gamma1": 0.0}
    # With zero gradients only the decayed weight moves: 1 - 0.1 * 0.5.
    for p in params.values():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    assert torch.equal(params["W1"].detach(), torch.full((2, 2), 0.95))
    assert torch.equal(params["b1"].detach(), torch.ones(2))


def test_adamw_default_decay_spares_biases() -> None:
    params = {"W": torch.nn.Parameter(torch.ones(2)), "b": torch.nn.Parameter(torch.ones(2))}
    optimizer = th_optim.adamw(params)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-2, 0.0]


def test_accepts_module_and_pairs() -> None:
    module = torch.nn.Module()
    module.register_parameter("W1", torch.nn.Parameter(torch.ones(2)))
    module.register_parameter("b1", torch.nn.Parameter(torch.ones(2)))
    for params in (module, list(module.named_parameters())):
        optimizer = th_optim.adam(params, weight_decay=0.1)
        assert [g["param_names"] for g in optimizer.param_groups] == [["W1"], ["b1"]]


def test_update_rule_names_match_numpy() -> None:
    assert list(th_optim.UPDATE_RULES) == list(np_optim.UPDATE_RULES)


BAD_CONFIGS = [
    ("sgd", {"lr": -1.0}, "Invalid learning rate: -1.0"),
    ("sgd", {"weight_decay": -0.1}, "Invalid weight_decay value: -0.1"),
    ("sgd", {"learning_rate": 0.1}, "unknown config key(s) 'learning_rate'"),
    ("sgd_momentum", {"momentum": 1.0}, "Invalid momentum value: 1.0"),
    ("nesterov", {"momentum": 0.0}, "Nesterov momentum requires a momentum"),
    ("rmsprop", {"alpha": 1.0}, "Invalid alpha value: 1.0"),
    ("rmsprop", {"eps": -1.0}, "Invalid epsilon value: -1.0"),
    ("adam", {"betas": (0.9, 1.0)}, "Invalid beta parameter at index 1: 1.0"),
    ("adamw", {"betas": 0.9}, "Invalid betas: 0.9"),
]


@pytest.mark.parametrize(("name", "config", "message"), BAD_CONFIGS)
def test_rejects_what_numpy_rejects(name: str, config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        np_optim.get_update_rule(name)(np.zeros(2), np.zeros(2), dict(config))
    with pytest.raises(ValueError, match=re.escape(message)):
        th_optim.make_optimizer(name, {"W": torch.nn.Parameter(torch.zeros(2))}, **config)


def test_unknown_rule_and_bad_params() -> None:
    with pytest.raises(ValueError, match="Unknown update rule 'lbfgs'"):
        th_optim.make_optimizer("lbfgs", {"W": torch.nn.Parameter(torch.zeros(2))})
    with pytest.raises(ValueError, match="params is empty"):
        th_optim.sgd({})
    with pytest.raises(TypeError, match="parameter 'W' is a ndarray"):
        th_optim.sgd({"W": np.zeros(2)})
    with pytest.raises(ValueError, match=r"Invalid learning rate: -0\.5"):
        th_optim.set_lr(th_optim.sgd({"W": torch.nn.Parameter(torch.zeros(2))}), -0.5)


# Rates that move a small batch-norm net visibly in 20 steps without diverging.
MODEL_LR = {
    "sgd": 0.1,
    "sgd_momentum": 0.05,
    "nesterov": 0.05,
    "rmsprop": 3e-3,
    "adam": 1e-2,
    "adamw": 1e-2,
}


@pytest.mark.parametrize("name", list(MODEL_LR))
def test_model_trajectory_matches_numpy(name: str) -> None:
    """20 scheduled steps of a batch-norm net in both backends: losses, weights, statistics."""
    numpy_model = NM.FullyConnectedNet(
        (2, 3, 3), 4, hidden_dims=[6, 5], normalization="batchnorm", dtype=np.float64, seed=0
    )
    torch_model = to_torch(numpy_model)
    config = {"lr": MODEL_LR[name], "weight_decay": 0.05}
    optimizer = th_optim.make_optimizer(name, torch_model, **config)
    rule = np_optim.get_update_rule(name)
    configs = {
        k: dict(config) if k.startswith("W") else {**config, "weight_decay": 0.0}
        for k in numpy_model.params
    }
    schedule = make_schedule("step", MODEL_LR[name], STEPS, step_size=6, gamma=0.5, warmup_steps=3)
    rng = np.random.default_rng(1)
    X_all, y_all = rng.standard_normal((16, 2, 3, 3)), rng.integers(0, 4, 16)
    numpy_losses, torch_losses = [], []
    for step in range(STEPS):
        X, y = X_all[step % 2 :: 2], y_all[step % 2 :: 2]  # two alternating batches of 8
        lr = schedule(step)
        loss, grads = numpy_model.loss(X, y)
        for k, c in configs.items():
            c["lr"] = lr
            numpy_model.params[k], configs[k] = rule(numpy_model.params[k], grads[k], c)
        numpy_losses.append(loss)
        th_optim.set_lr(optimizer, lr)
        optimizer.zero_grad()
        torch_loss = torch_model.loss(X, y)
        torch_loss.backward()
        optimizer.step()
        torch_losses.append(torch_loss.item())
    np.testing.assert_allclose(torch_losses, numpy_losses, rtol=1e-9)
    assert numpy_losses[-2] < numpy_losses[0]  # it learned: the comparison is not trivial
    expected, actual = state_dict_numpy(numpy_model), state_dict_numpy(torch_model)
    assert list(actual) == list(expected)
    # NOTE: a bias before batch norm has a zero gradient up to rounding, which Adam's scaling
    # turns into steps of noise; one scale over the whole state judges such entries absolutely.
    assert_all_close("state", list(actual.values()), list(expected.values()), 1e-6, 1e-3)
