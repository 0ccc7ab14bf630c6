"""Numpy update rules: torch.optim as the oracle, dtype, purity, defaults, validation."""

from __future__ import annotations

import numpy as np
import pytest

from pix2pred.nn_numpy import optim
from pix2pred.schedules import make_schedule

torch = pytest.importorskip("torch")

STEPS = 20
SHAPE = (4, 5)

# (numpy rule, its config, the torch optimizer with the same hyperparameters)
CASES = {
    "sgd": ("sgd", {}, lambda p: torch.optim.SGD(p)),
    "sgd_weight_decay": (
        "sgd",
        {"weight_decay": 0.05},
        lambda p: torch.optim.SGD(p, weight_decay=0.05),
    ),
    "momentum": ("sgd_momentum", {}, lambda p: torch.optim.SGD(p, momentum=0.9)),
    "momentum_dampening_weight_decay": (
        "sgd_momentum",
        {"momentum": 0.7, "dampening": 0.3, "weight_decay": 0.01},
        lambda p: torch.optim.SGD(p, momentum=0.7, dampening=0.3, weight_decay=0.01),
    ),
    "sgd_with_momentum_key": (
        "sgd",
        {"momentum": 0.5},
        lambda p: torch.optim.SGD(p, momentum=0.5),
    ),
    "nesterov": ("nesterov", {}, lambda p: torch.optim.SGD(p, momentum=0.9, nesterov=True)),
    "nesterov_weight_decay": (
        "nesterov",
        {"momentum": 0.8, "weight_decay": 0.02},
        lambda p: torch.optim.SGD(p, momentum=0.8, nesterov=True, weight_decay=0.02),
    ),
    "rmsprop": ("rmsprop", {}, lambda p: torch.optim.RMSprop(p)),
    "rmsprop_options": (
        "rmsprop",
        {"alpha": 0.9, "eps": 1e-6, "weight_decay": 0.01, "momentum": 0.5, "centered": True},
        lambda p: torch.optim.RMSprop(
            p, alpha=0.9, eps=1e-6, weight_decay=0.01, momentum=0.5, centered=True
        ),
    ),
    "adam": ("adam", {}, lambda p: torch.optim.Adam(p)),
    "adam_options": (
        "adam",
        {"betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.03},
        lambda p: torch.optim.Adam(p, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.03),
    ),
    "adamw": ("adamw", {}, lambda p: torch.optim.AdamW(p)),
    "adamw_strong_decay": (
        "adamw",
        {"weight_decay": 0.5, "betas": (0.5, 0.9)},
        lambda p: torch.optim.AdamW(p, weight_decay=0.5, betas=(0.5, 0.9)),
    ),
}

SCHEDULES = {
    "warmup_cosine": make_schedule("cosine", 0.05, STEPS, warmup_steps=4, min_lr=1e-3),
    "step": make_schedule("step", 0.1, STEPS, step_size=6, gamma=0.3),
}


def gradients(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Start weights (4, 5) and gradients (STEPS, 4, 5) of mixed sign and magnitude."""
    rng = np.random.default_rng(seed)
    w0 = rng.uniform(0.5, 2.0, SHAPE) * rng.choice([-1.0, 1.0], SHAPE)
    scale = np.exp(rng.uniform(-3.0, 2.0, SHAPE))
    grads = rng.standard_normal((STEPS, *SHAPE)) * scale + 0.3 * scale
    return w0, grads


@pytest.mark.parametrize("schedule_name", SCHEDULES)
@pytest.mark.parametrize("case", CASES)
def test_rule_matches_torch_optim(case, schedule_name):
    rule_name, hyperparameters, make_optimizer = CASES[case]
    schedule = SCHEDULES[schedule_name]
    rule = optim.get_update_rule(rule_name)
    w0, grads = gradients()

    param = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    optimizer = make_optimizer([param])
    w, config = w0.copy(), dict(hyperparameters)
    for t, dw in enumerate(grads):
        config["lr"] = schedule(t)
        w, config = rule(w, dw, config)
        optimizer.param_groups[0]["lr"] = schedule(t)
        param.grad = torch.from_numpy(dw.copy())
        optimizer.step()
        np.testing.assert_allclose(w, param.detach().numpy(), rtol=1e-10, atol=0, err_msg=f"{t}")
    assert w.dtype == np.float64
    assert not np.allclose(w, w0, rtol=1e-3)


@pytest.mark.parametrize("name", optim.UPDATE_RULES)
def test_float32_in_float32_out(name):
    rule = optim.get_update_rule(name)
    w0, grads = gradients(seed=1)
    w = w0.astype(np.float32)
    config = {"lr": 0.01, "weight_decay": 0.01}
    for dw in grads[:5]:
        # A float64 gradient is cast, not allowed to promote the weights.
        w, config = rule(w, dw, config)
    assert w.dtype == np.float32
    assert all(value.dtype == np.float32 for value in config.values() if hasattr(value, "dtype"))

    w64, config64 = w0.copy(), {"lr": 0.01, "weight_decay": 0.01}
    for dw in grads[:5]:
        w64, config64 = rule(w64, dw, config64)
    np.testing.assert_allclose(w, w64, rtol=1e-5)


@pytest.mark.parametrize("name", optim.UPDATE_RULES)
def test_rules_leave_inputs_untouched_and_fill_the_given_config(name):
    rule = optim.get_update_rule(name)
    w0, grads = gradients(seed=2)
    w, dw = w0.copy(), grads[0].copy()
    config = {"weight_decay": 0.1}
    next_w, returned = rule(w, dw, config)
    assert returned is config
    assert next_w is not w
    np.testing.assert_array_equal(w, w0)
    np.testing.assert_array_equal(dw, grads[0])
    again, _ = rule(w, dw, config)
    np.testing.assert_array_equal(w, w0)
    # Only plain SGD is stateless; the others carry buffers in config from call to call.
    assert np.array_equal(again, next_w) == (name == "sgd")

    _, fresh = rule(w, dw, None)
    assert fresh is not config
    assert "lr" in fresh


TORCH_DEFAULTS = {
    "sgd": (lambda p: torch.optim.SGD(p), ("lr", "momentum", "dampening", "weight_decay")),
    "sgd_momentum": (lambda p: torch.optim.SGD(p, momentum=0.9), ("lr", "dampening")),
    "nesterov": (
        lambda p: torch.optim.SGD(p, momentum=0.9, nesterov=True),
        ("lr", "momentum", "dampening", "weight_decay", "nesterov"),
    ),
    "rmsprop": (
        lambda p: torch.optim.RMSprop(p),
        ("lr", "alpha", "eps", "weight_decay", "momentum", "centered"),
    ),
    "adam": (lambda p: torch.optim.Adam(p), ("lr", "betas", "eps", "weight_decay")),
    "adamw": (lambda p: torch.optim.AdamW(p), ("lr", "betas", "eps", "weight_decay")),
}


@pytest.mark.parametrize("name", optim.UPDATE_RULES)
def test_defaults_are_torch_defaults(name):
    make_optimizer, keys = TORCH_DEFAULTS[name]
    torch_defaults = make_optimizer([torch.nn.Parameter(torch.zeros(1))]).defaults
    _, config = optim.get_update_rule(name)(np.zeros(3), np.ones(3), None)
    assert {key: config[key] for key in keys} == {key: torch_defaults[key] for key in keys}
    if name in ("sgd_momentum", "nesterov"):
        assert config["momentum"] == 0.9


def test_momentum_equals_course_form_at_constant_lr():
    w0, grads = gradients(seed=3)
    lr, mu = 0.05, 0.9
    w, config = w0.copy(), {"lr": lr, "momentum": mu}
    w_course, v = w0.copy(), np.zeros_like(w0)
    for dw in grads:
        w, config = optim.sgd_momentum(w, dw, config)
        v = mu * v - lr * dw
        w_course = w_course + v
    np.testing.assert_allclose(w, w_course, rtol=1e-12)


def test_nesterov_equals_course_form_at_constant_lr():
    w0, grads = gradients(seed=4)
    lr, mu = 0.05, 0.9
    w, config = w0.copy(), {"lr": lr, "momentum": mu}
    w_course, v = w0.copy(), np.zeros_like(w0)
    for dw in grads:
        w, config = optim.nesterov(w, dw, config)
        v_prev = v
        v = mu * v - lr * dw
        w_course = w_course - mu * v_prev + (1 + mu) * v
    np.testing.assert_allclose(w, w_course, rtol=1e-12)


def test_adam_keeps_step_count_and_moments_in_config():
    w0, grads = gradients(seed=5)
    config = None
    w = w0
    for dw in grads[:3]:
        w, config = optim.adam(w, dw, config)
    assert config["t"] == 3
    assert config["m"].shape == config["v"].shape == SHAPE


def test_get_update_rule_names_every_rule_and_rejects_unknown():
    assert {name: optim.get_update_rule(name) for name in optim.UPDATE_RULES} == {
        "sgd": optim.sgd,
        "sgd_momentum": optim.sgd_momentum,
        "nesterov": optim.nesterov,
        "rmsprop": optim.rmsprop,
        "adam": optim.adam,
        "adamw": optim.adamw,
    }
    with pytest.raises(ValueError, match="Unknown update rule 'adagrad'; expected one of sgd, "):
        optim.get_update_rule("adagrad")


@pytest.mark.parametrize(
    ("name", "config", "message"),
    [
        ("sgd", {"lr": -1}, "Invalid learning rate: -1"),
        ("adam", {"lr": float("nan")}, "Invalid learning rate: nan"),
        ("sgd_momentum", {"momentum": 1.0}, r"Invalid momentum value: 1.0 \(expected 0 <="),
        ("sgd", {"momentum": -0.1}, "Invalid momentum value: -0.1"),
        ("rmsprop", {"momentum": 1.5}, "Invalid momentum value: 1.5"),
        ("sgd_momentum", {"dampening": 2.0}, "Invalid dampening value: 2.0"),
        ("sgd", {"weight_decay": -0.01}, "Invalid weight_decay value: -0.01"),
        ("adamw", {"weight_decay": -1.0}, "Invalid weight_decay value: -1.0"),
        ("nesterov", {"dampening": 0.1}, "Nesterov momentum requires .* dampening=0.1"),
        ("nesterov", {"momentum": 0.0}, "Nesterov momentum requires .* momentum=0.0"),
        ("rmsprop", {"alpha": 1.5}, "Invalid alpha value: 1.5"),
        ("rmsprop", {"eps": -1e-8}, "Invalid epsilon value: -1e-08"),
        ("adam", {"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0: 1.0"),
        ("adamw", {"betas": (0.9, -0.5)}, "Invalid beta parameter at index 1: -0.5"),
        ("adam", {"betas": 0.9}, r"Invalid betas: 0.9 \(expected a pair"),
        ("adam", {"eps": -1.0}, "Invalid epsilon value: -1.0"),
        (
            "sgd",
            {"learning_rate": 0.1},
            "sgd: unknown config key.* 'learning_rate'; expected hyperparameters lr, ",
        ),
        ("adam", {"beta1": 0.9}, "adam: unknown config key.* 'beta1'"),
    ],
)
def test_invalid_hyperparameters_raise_with_the_value(name, config, message):
    with pytest.raises(ValueError, match=message):
        optim.get_update_rule(name)(np.ones(3), np.ones(3), config)


def test_lr_is_checked_on_every_call():
    w, config = optim.adam(np.ones(3), np.ones(3), {"lr": 0.1})
    config["lr"] = -0.5
    with pytest.raises(ValueError, match=r"Invalid learning rate: -0\.5"):
        optim.adam(w, np.ones(3), config)


def test_bad_arrays_and_foreign_state_raise():
    with pytest.raises(ValueError, match=r"sgd: dw has shape \(2,\), w has shape \(3,\)"):
        optim.sgd(np.ones(3), np.ones(2))
    with pytest.raises(TypeError, match="w must be a floating-point ndarray, got ndarray of dtype"):
        optim.sgd(np.ones(3, dtype=np.int64), np.ones(3))
    with pytest.raises(TypeError, match="w must be a floating-point ndarray, got list"):
        optim.sgd([1.0, 2.0], np.ones(2))
    with pytest.raises(TypeError, match="config must be a dict or None, got float"):
        optim.sgd(np.ones(3), np.ones(3), 0.1)
    _, config = optim.adam(np.ones(3), np.ones(3))
    with pytest.raises(
        ValueError, match=r"config\['m'\] is float64 \(3,\) but w is float64 \(4,\)"
    ):
        optim.adam(np.ones(4), np.ones(4), config)
