"""Tests of pix2pred.solver: training, schedules, weight decay, checkpoints, resume, robustness.

The models here are tiny stand-ins of the contract (``params``, ``buffers``, ``rng``, ``loss``)
so that each test trains in milliseconds.
"""

import json
import os
import re
import signal

import numpy as np
import pytest

from pix2pred.checkpoint import load_safetensors, read_safetensors_metadata
from pix2pred.nn_numpy.models import ConvNet, FullyConnectedNet
from pix2pred.solver import STATE_FILE, Solver, TrainingDivergedError


class TinySoftmax:
    """Softmax regression with inverted dropout on its inputs and a running-mean buffer.

    Dropout draws from ``self.rng`` and the buffer changes in training, so a resumed run is only
    identical if the solver restores both.
    """

    def __init__(self, input_shape=(1, 4, 4), num_classes=3, dropout=0.0, seed=0):
        D = int(np.prod(input_shape))
        self.rng = np.random.default_rng(seed)
        self.params = {
            "W": 0.01 * self.rng.standard_normal((D, num_classes)),
            "b": np.zeros(num_classes),
        }
        self.buffers = {"running_mean": np.zeros(D)}
        self.dropout = dropout
        self.train_calls = 0
        self.eval_batches: list[int] = []

    def loss(self, X, y=None):
        X = X.reshape(len(X), -1)  # (N, D)
        W, b = self.params["W"], self.params["b"]
        if y is None:
            self.eval_batches.append(len(X))
            return X @ W + b
        self.train_calls += 1
        self.buffers["running_mean"] *= 0.9
        self.buffers["running_mean"] += 0.1 * X.mean(axis=0)
        if self.dropout:
            keep = self.rng.random(X.shape) >= self.dropout
            X = X * keep / (1 - self.dropout)
        scores = X @ W + b  # (N, C)
        shifted = scores - scores.max(axis=1, keepdims=True)
        probs = np.exp(shifted)
        probs /= probs.sum(axis=1, keepdims=True)
        N = len(X)
        loss = -np.log(probs[np.arange(N), y]).mean()
        dscores = probs
        dscores[np.arange(N), y] -= 1
        dscores /= N
        return loss, {"W": X.T @ dscores, "b": dscores.sum(axis=0)}


class Hooked(TinySoftmax):
    """TinySoftmax that passes every training result through ``hook(call_number, result)``.

    The hook runs after the forward pass has drawn dropout masks and moved the buffer, the
    state a failing iteration must roll back.
    """

    def __init__(self, hook, **kwargs):
        super().__init__(**kwargs)
        self.hook = hook

    def loss(self, X, y=None):
        result = super().loss(X, y)
        return result if y is None else self.hook(self.train_calls, result)


def blobs(n_train=60, n_val=30, seed=0):
    """Three separable classes of (1, 4, 4) images: class k is bright in row k."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, 3, n)
        X = 0.3 * rng.standard_normal((n, 1, 4, 4))
        X[np.arange(n), 0, y, :] += 2.0
        return X, y

    X_train, y_train = make(n_train)
    X_val, y_val = make(n_val)
    return {"X_train": X_train, "y_train": y_train, "X_val": X_val, "y_val": y_val}


QUIET = {"progress": False, "verbose": False}


def run_settings(**overrides):
    settings = {
        "optimizer": "adam",
        "lr": 0.05,
        "weight_decay": 1e-3,
        "batch_size": 16,
        "epochs": 4,
        "augment": "flip,crop=1",
        "seed": 3,
        "num_train_samples": 20,
        **QUIET,
    }
    settings.update(overrides)
    return settings


def assert_same_run(a, b):
    assert a.loss_history == b.loss_history
    assert a.train_acc_history == b.train_acc_history
    assert a.val_acc_history == b.val_acc_history
    assert a.lr_history == b.lr_history
    assert (a.best_val_acc, a.best_epoch, a.step, a.epoch) == (
        b.best_val_acc,
        b.best_epoch,
        b.step,
        b.epoch,
    )
    for name in a.model.params:
        np.testing.assert_array_equal(a.model.params[name], b.model.params[name])
        np.testing.assert_array_equal(a.best_params[name], b.best_params[name])
    np.testing.assert_array_equal(a.model.buffers["running_mean"], b.model.buffers["running_mean"])
    assert a.model.rng.bit_generator.state == b.model.rng.bit_generator.state
    assert a.rng.bit_generator.state == b.rng.bit_generator.state


def straight_run(data, **settings):
    solver = Solver(TinySoftmax(dropout=0.2), data, **run_settings(**settings))
    return solver.train()


# ------------------------------------------------------------------------------------ training


def test_training_learns_and_records_history():
    data = blobs()
    solver = Solver(
        TinySoftmax(), data, optimizer="sgd_momentum", lr=0.1, batch_size=16, epochs=5, **QUIET
    )
    assert solver.train() is solver
    assert solver.iterations_per_epoch == 4  # 60 samples, the last batch has 12
    assert len(solver.loss_history) == 20
    assert len(solver.train_acc_history) == len(solver.val_acc_history) == 5
    assert solver.lr_history == [0.1] * 5
    assert solver.loss_history[-1] < 0.5 * solver.loss_history[0]
    assert solver.val_acc_history[-1] > 0.9
    assert solver.best_val_acc == max(solver.val_acc_history)
    assert solver.check_accuracy(data["X_val"], data["y_val"]) == solver.best_val_acc


def test_drop_last_skips_the_incomplete_batch():
    solver = Solver(TinySoftmax(), blobs(), batch_size=16, epochs=1, drop_last=True, **QUIET)
    solver.train()
    assert solver.iterations_per_epoch == 3
    assert solver.model.train_calls == 3


def test_schedule_is_stepped_every_iteration_after_warmup():
    lrs = []
    solver = Solver(
        TinySoftmax(),
        blobs(n_train=32),
        optimizer="sgd",
        lr=0.8,
        schedule="step",
        schedule_kwargs={"step_size": 1, "gamma": 0.5},
        warmup_epochs=1,
        batch_size=16,
        epochs=3,
        callback=lambda s: lrs.append(s.optim_configs["W"]["lr"]),
        **QUIET,
    )
    solver.train()
    # Warm-up over 2 iterations from lr/3, then halving at every iteration.
    np.testing.assert_allclose(lrs, [0.8 / 3, 0.8 * 2 / 3, 0.8, 0.4, 0.2, 0.1])
    assert solver.lr_history == pytest.approx([0.8 * 2 / 3, 0.4, 0.1])


def test_weight_decay_applies_to_W_only_with_torch_meaning():
    class ZeroGrad(TinySoftmax):
        def loss(self, X, y=None):
            if y is None:
                return super().loss(X)
            return 1.0, {k: np.zeros_like(v) for k, v in self.params.items()}

    model = ZeroGrad()
    model.params["b"] += 1.0
    W0, b0 = model.params["W"].copy(), model.params["b"].copy()
    solver = Solver(
        model,
        blobs(n_train=16),
        optimizer="sgd",
        lr=0.1,
        weight_decay=0.5,
        batch_size=16,
        epochs=1,
        restore_best=False,
        **QUIET,
    )
    assert solver.optim_configs["W"]["weight_decay"] == 0.5
    assert solver.optim_configs["b"]["weight_decay"] == 0.0
    solver.train()
    # torch: w -= lr * (grad + weight_decay * w)
    np.testing.assert_allclose(model.params["W"], W0 * (1 - 0.1 * 0.5))
    np.testing.assert_array_equal(model.params["b"], b0)


def test_optim_config_reaches_every_parameter_and_keeps_state_per_parameter():
    solver = Solver(
        TinySoftmax(),
        blobs(),
        optimizer="sgd_momentum",
        optim_config={"momentum": 0.5},
        lr=0.1,
        batch_size=16,
        epochs=1,
        **QUIET,
    )
    solver.train()
    assert {c["momentum"] for c in solver.optim_configs.values()} == {0.5}
    assert solver.optim_configs["W"]["velocity"].shape == (16, 3)
    assert solver.optim_configs["b"]["velocity"].shape == (3,)


def test_momentum_keyword_follows_torch_and_is_ignored_by_adam():
    data = blobs()
    configs = Solver(TinySoftmax(), data, optimizer="sgd", momentum=0.5, **QUIET).optim_configs
    assert configs["W"]["momentum"] == configs["b"]["momentum"] == 0.5
    configs = Solver(
        TinySoftmax(),
        data,
        optimizer="rmsprop",
        momentum=0.5,
        optim_config={"momentum": 0.1},
        **QUIET,
    ).optim_configs
    assert configs["W"]["momentum"] == 0.1
    configs = Solver(TinySoftmax(), data, optimizer="adam", momentum=0.9, **QUIET).optim_configs
    assert "momentum" not in configs["W"]


def test_without_validation_data_the_last_epoch_is_kept():
    data = {**blobs(), "X_val": None, "y_val": None}
    snapshots = []
    solver = Solver(
        TinySoftmax(),
        data,
        lr=0.05,
        batch_size=16,
        epochs=3,
        epoch_callback=lambda s: snapshots.append(s.model.params["W"].copy()),
        **QUIET,
    ).train()
    assert solver.val_acc_history == [] and len(solver.train_acc_history) == 3
    assert solver.best_params is None and solver.best_epoch == 0
    np.testing.assert_array_equal(solver.model.params["W"], snapshots[-1])
    history = solver.history()
    assert json.loads(json.dumps(history)) == history
    assert history["best_val_acc"] is None and history["epochs"] == 3
    assert history["loss"] == solver.loss_history
    empty = {**blobs(), "X_val": np.zeros((0, 1, 4, 4)), "y_val": np.zeros(0, dtype=np.int64)}
    assert Solver(TinySoftmax(), empty, **QUIET).X_val is None
    with pytest.raises(ValueError, match="early_stopping=2 needs validation data"):
        Solver(TinySoftmax(), data, early_stopping=2, **QUIET)


def test_check_accuracy_predicts_in_batches_and_subsamples_with_a_seed():
    data = blobs()
    model = TinySoftmax()
    solver = Solver(model, data, batch_size=16, **QUIET)
    X, y = data["X_val"][:10], data["y_val"][:10]
    expected = np.mean(np.argmax(model.loss(X), axis=1) == y)
    model.eval_batches.clear()
    assert solver.check_accuracy(X, y, batch_size=4) == expected
    assert model.eval_batches == [4, 4, 2]
    a = solver.check_accuracy(data["X_val"], data["y_val"], 7, rng=np.random.default_rng(1))
    b = solver.check_accuracy(data["X_val"], data["y_val"], 7, rng=np.random.default_rng(1))
    assert a == b and a * 7 == round(a * 7)
    assert model.eval_batches[-1] == 7


def test_best_parameters_are_restored_and_early_stopping_counts_epochs():
    snapshots = []
    solver = Solver(
        TinySoftmax(),
        blobs(),
        optimizer="sgd",
        lr=0.0,
        batch_size=16,
        epochs=10,
        early_stopping=2,
        epoch_callback=lambda s: snapshots.append({k: v.copy() for k, v in s.model.params.items()}),
        **QUIET,
    )
    solver.train()
    # lr 0: the accuracy never improves on epoch 1, so epochs 2 and 3 exhaust the patience.
    assert solver.stopped_early
    assert len(solver.val_acc_history) == 3 and solver.best_epoch == 1

    data = blobs(seed=1)
    snapshots.clear()
    solver = Solver(
        TinySoftmax(dropout=0.5),
        data,
        optimizer="sgd",
        lr=3.0,
        batch_size=8,
        epochs=6,
        epoch_callback=lambda s: snapshots.append({k: v.copy() for k, v in s.model.params.items()}),
        **QUIET,
    )
    solver.train()
    best = int(np.argmax(solver.val_acc_history))
    assert solver.best_epoch == best + 1
    for name, value in snapshots[best].items():
        np.testing.assert_array_equal(solver.model.params[name], value)


def test_progress_bar_and_verbose_lines(capsys):
    Solver(TinySoftmax(), blobs(), batch_size=16, epochs=2, progress=True, verbose=True).train()
    out = capsys.readouterr().out
    assert "epoch 1/2" in out and "epoch 2/2" in out and "val acc" in out


# ------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"lr": -0.1}, "Invalid learning rate: -0.1"),
        ({"optim_config": {"lr": -2.0}}, "Invalid learning rate: -2.0"),
        ({"optimizer": "adamx"}, "Unknown update rule 'adamx'"),
        (
            {"optimizer": "adam", "optim_config": {"momentum": 0.9}},
            "unknown config key(s) 'momentum'",
        ),
        ({"schedule": "bogus"}, "Unknown schedule 'bogus'"),
        ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
        ({"epochs": 2, "warmup_epochs": 2}, "warmup_epochs (2) must be smaller than epochs (2)"),
        ({"early_stopping": 0}, "early_stopping must be an integer >= 1, got 0"),
        ({"augment": "flip,spin"}, "Unknown augmentation 'spin'"),
        ({"resume": True}, "resume=True needs a checkpoint_dir"),
        ({"momentum": 1.5, "optimizer": "sgd_momentum"}, "Invalid momentum value: 1.5"),
        ({"batch_size": 100, "drop_last": True}, "drop_last with batch_size 100"),
    ],
)
def test_bad_arguments_are_refused_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Solver(TinySoftmax(), blobs(), **QUIET, **kwargs)


def test_bad_data_is_refused_with_the_lengths():
    data = blobs()
    with pytest.raises(ValueError, match="X_train has 60 samples but y_train has 59 labels"):
        Solver(TinySoftmax(), {**data, "y_train": data["y_train"][:-1]}, **QUIET)
    with pytest.raises(ValueError, match="data is missing y_train"):
        Solver(TinySoftmax(), {k: v for k, v in data.items() if k != "y_train"}, **QUIET)
    with pytest.raises(ValueError, match="one of X_val and y_val but not the other"):
        Solver(TinySoftmax(), {k: v for k, v in data.items() if k != "y_val"}, **QUIET)
    with pytest.raises(ValueError, match="y_val must be integer labels"):
        Solver(TinySoftmax(), {**data, "y_val": data["y_val"].astype(float)}, **QUIET)


# ------------------------------------------------------------------------------------ robustness


def test_nan_loss_stops_with_the_step_and_lr_and_keeps_the_checkpoint(tmp_path):
    def poison(call, result):
        return (np.nan, result[1]) if call == 6 else result

    model = Hooked(poison)
    solver = Solver(
        model, blobs(), optimizer="sgd", lr=0.1, batch_size=16, epochs=3,
        checkpoint_dir=tmp_path, **QUIET,
    )  # fmt: skip
    with pytest.raises(TrainingDivergedError) as info:
        solver.train()
    message = str(info.value)
    assert "epoch 2/3, iteration 2/4 (step 6)" in message
    assert "the loss is nan" in message
    assert "learning rate 0.1 is probably too high; try 0.01" in message
    assert str(tmp_path) in message
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert (state["epoch"], state["step"]) == (1, 4)
    saved = load_safetensors(tmp_path / state["arrays"])
    assert np.isfinite(saved["params/W"]).all()
    assert solver.step == 5 and len(solver.loss_history) == 5


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_non_finite_update_is_not_committed():
    class HugeGrad(TinySoftmax):
        def loss(self, X, y=None):
            if y is None:
                return super().loss(X)
            return 1.0, {k: np.full_like(v, 1e300) for k, v in self.params.items()}

    model = HugeGrad()
    W0 = model.params["W"].copy()
    solver = Solver(model, blobs(), optimizer="sgd", lr=1e10, batch_size=16, epochs=1, **QUIET)
    with pytest.raises(TrainingDivergedError, match=r"the update of 'W' is not finite"):
        solver.train()
    np.testing.assert_array_equal(model.params["W"], W0)
    assert solver.step == 0 and solver.loss_history == []


def test_existing_checkpoint_is_not_overwritten_without_resume(tmp_path):
    Solver(TinySoftmax(), blobs(), epochs=1, checkpoint_dir=tmp_path, **QUIET).train()
    with pytest.raises(ValueError, match="already holds a checkpoint; pass resume=True"):
        Solver(TinySoftmax(), blobs(), epochs=1, checkpoint_dir=tmp_path, **QUIET)


def test_checkpoint_is_pickle_free_json_and_safetensors(tmp_path):
    solver = straight_run(blobs(), epochs=2, checkpoint_dir=tmp_path)
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert (state["epoch"], state["batch"], state["step"]) == (2, 0, 8)
    assert state["history"]["loss"] == solver.loss_history
    assert state["rng"]["bit_generator"] == "PCG64"
    assert state["optimizer_state"]["W"]["scalars"]["t"] == 8
    assert state["backend"] == "numpy"
    assert read_safetensors_metadata(tmp_path / state["arrays"]) == {"format": "pix2pred.solver"}
    names = set(load_safetensors(tmp_path / state["arrays"]))
    assert {"params/W", "params/b", "buffers/running_mean", "best_params/W"} <= names
    assert {"optim/W/m", "optim/W/v", "optim/b/m"} <= names
    # Saves alternate between two array files; the state names the current one.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [STATE_FILE, "solver_arrays_a.safetensors", "solver_arrays_b.safetensors"]
    )


# ------------------------------------------------------------------------------------ resume


def test_resume_after_two_epochs_matches_a_straight_run(tmp_path):
    data = blobs()
    straight = straight_run(data)

    def stop_after_two(solver):
        if solver.epoch == 2:
            raise KeyboardInterrupt

    first = Solver(
        TinySoftmax(dropout=0.2), data, checkpoint_dir=tmp_path,
        **run_settings(), epoch_callback=stop_after_two,
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        first.train()
    resumed = Solver.resume(tmp_path, TinySoftmax(dropout=0.2, seed=99), data)
    assert resumed.epoch == 2 and resumed.step == 8
    resumed.train()
    assert_same_run(resumed, straight)


def test_resume_with_more_epochs_continues_a_finished_run(tmp_path):
    data = blobs()
    straight = straight_run(data)
    straight_run(data, epochs=2, checkpoint_dir=tmp_path)
    resumed = Solver.resume(tmp_path, TinySoftmax(dropout=0.2), data, epochs=4).train()
    assert_same_run(resumed, straight)


def test_keyboard_interrupt_mid_epoch_leaves_a_resumable_checkpoint(tmp_path):
    data = blobs()
    straight = straight_run(data)

    def interrupt(call, result):
        if call == 7:
            raise KeyboardInterrupt
        return result

    interrupted = Hooked(interrupt, dropout=0.2)
    with pytest.raises(KeyboardInterrupt):
        Solver(interrupted, data, checkpoint_dir=tmp_path, **run_settings()).train()
    state = json.loads((tmp_path / STATE_FILE).read_text())
    # Iteration 7 was cut short: the checkpoint holds the 6 that completed.
    assert (state["epoch"], state["batch"], state["step"]) == (1, 2, 6)
    resumed = Solver(
        TinySoftmax(dropout=0.2), data, checkpoint_dir=tmp_path, resume=True, **run_settings()
    ).train()
    assert_same_run(resumed, straight)


def test_ctrl_c_finishes_the_iteration_before_stopping(tmp_path):
    data = blobs()
    straight = straight_run(data)

    def press_ctrl_c(call, result):
        if call == 7:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    with pytest.raises(KeyboardInterrupt):
        Solver(
            Hooked(press_ctrl_c, dropout=0.2), data, checkpoint_dir=tmp_path, **run_settings()
        ).train()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert (state["epoch"], state["batch"], state["step"]) == (1, 3, 7)
    resumed = Solver.resume(tmp_path, TinySoftmax(dropout=0.2), data).train()
    assert_same_run(resumed, straight)


def test_resume_refuses_a_model_of_another_shape(tmp_path):
    straight_run(blobs(), epochs=1, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"parameter 'W' is float64 \(16, 3\) in the checkpoint"):
        Solver.resume(tmp_path, TinySoftmax(num_classes=4), blobs())


def test_resume_keeps_optimizer_state_and_applies_new_hyperparameters(tmp_path):
    straight_run(blobs(), epochs=1, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="the run used optimizer 'adam', not 'sgd'"):
        Solver.resume(tmp_path, TinySoftmax(dropout=0.2), blobs(), optimizer="sgd")
    resumed = Solver.resume(tmp_path, TinySoftmax(dropout=0.2), blobs(), weight_decay=0.25)
    assert resumed.optim_configs["W"]["weight_decay"] == 0.25
    assert resumed.optim_configs["b"]["weight_decay"] == 0.0
    assert resumed.optim_configs["W"]["t"] == 4


def test_resume_needs_a_callable_schedule_again(tmp_path):
    straight_run(blobs(), epochs=1, schedule=lambda step: 0.01, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="schedule was a callable; pass schedule="):
        Solver.resume(tmp_path, TinySoftmax(dropout=0.2), blobs())


@pytest.mark.parametrize(
    "make_model",
    [
        lambda: FullyConnectedNet(
            (3, 8, 8), 3, hidden_dims=[12, 12], normalization="batchnorm", dropout=0.3, seed=1
        ),
        lambda: ConvNet((3, 8, 8), 3, spec="4,M,8,M|16", batchnorm=True, dropout=0.2, seed=1),
    ],
    ids=["fcnet-batchnorm-dropout", "convnet-batchnorm-dropout"],
)
def test_real_models_resume_mid_epoch_bit_identically(make_model, tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 64)
    X = (0.5 * rng.standard_normal((64, 3, 8, 8))).astype(np.float32)
    X[np.arange(64), y, :4, :] += 1.5  # class k is bright in the top half of channel k
    data = {"X_train": X[:48], "y_train": y[:48], "X_val": X[48:], "y_val": y[48:]}
    settings = run_settings(
        optimizer="adamw", lr=3e-3, schedule="cosine", warmup_epochs=1, epochs=3
    )
    straight = Solver(make_model(), data, **settings).train()

    def stop(solver):
        if solver.step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Solver(make_model(), data, checkpoint_dir=tmp_path, callback=stop, **settings).train()
    resumed = Solver.resume(tmp_path, make_model(), data, **QUIET).train()
    assert resumed.loss_history == straight.loss_history
    assert resumed.val_acc_history == straight.val_acc_history
    for name, value in straight.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[name], value)
    for name, value in straight.model.buffers.items():
        np.testing.assert_array_equal(resumed.model.buffers[name], value)
    assert straight.model.buffers  # batch norm's running statistics took part
