"""The torch training loop: devices, AMP and channels-last notes, the TorchSolver against the
numpy Solver, resume, NaN stops, deterministic mode and the on-device augmentation.

Tiny models and data on the CPU; float64 where the two backends are compared.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pix2pred.data import augment as numpy_augment  # noqa: E402
from pix2pred.nn_numpy import models as NM  # noqa: E402
from pix2pred.nn_torch import augment as TA  # noqa: E402
from pix2pred.nn_torch import models as TM  # noqa: E402
from pix2pred.nn_torch import train as T  # noqa: E402
from pix2pred.nn_torch.transfer import state_dict_numpy, to_torch  # noqa: E402
from pix2pred.solver import STATE_FILE, Solver, TrainingDivergedError  # noqa: E402

QUIET = {"progress": False, "verbose": False}
SHAPE = (3, 8, 8)


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Tiny ops on a CPU shared with other jobs: OpenMP's spinning threads cost more than they
    # give (a 32x4x8x8 batch norm step takes 17 ms on 2 busy threads, 0.15 ms on one).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_data(n_train=48, n_val=16, seed=0, dtype=np.float64):
    """Three classes of (3, 8, 8) images: class k is bright in the top half of channel k."""
    rng = np.random.default_rng(seed)
    n = n_train + n_val
    y = rng.integers(0, 3, n)
    X = 0.5 * rng.standard_normal((n, *SHAPE))
    X[np.arange(n), y, :4, :] += 1.5
    X = X.astype(dtype)
    return {
        "X_train": X[:n_train],
        "y_train": y[:n_train],
        "X_val": X[n_train:],
        "y_val": y[n_train:],
    }


MODELS = {
    "fcnet-batchnorm": ("fcnet", {"hidden_dims": [12, 10], "normalization": "batchnorm"}),
    "convnet": ("convnet", {"spec": "4,M,6,M|10", "batchnorm": True}),
    "linear-svm": ("linear", {"loss": "svm", "weight_scale": 0.1}),
}


def numpy_model(key, dtype=np.float64, seed=1, **overrides):
    name, kwargs = MODELS[key]
    return NM.build_model(
        name, input_shape=SHAPE, num_classes=3, dtype=dtype, seed=seed, **{**kwargs, **overrides}
    )


def torch_model(key, dtype=np.float64, seed=1, **overrides):
    name, kwargs = MODELS[key]
    return TM.build_model(
        name, input_shape=SHAPE, num_classes=3, dtype=dtype, seed=seed, **{**kwargs, **overrides}
    )


# ----------------------------------------------------------------------------------- devices


def test_auto_device_falls_back_to_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(T, "_mps_available", lambda: False)
    assert T.choose_device("auto") == T.choose_device(None) == torch.device("cpu")
    monkeypatch.setattr(T, "_mps_available", lambda: True)
    assert T.choose_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert T.choose_device("auto") == torch.device("cuda")
    assert T.choose_device("cpu") == torch.device("cpu")


def test_unknown_or_missing_devices_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(T, "_mps_available", lambda: False)
    with pytest.raises(ValueError, match=r"device must be 'auto', 'cpu'.*got 'tpu'"):
        T.choose_device("tpu")
    with pytest.raises(ValueError, match="device 'cuda:1': CUDA is not available here"):
        T.choose_device("cuda:1")
    with pytest.raises(ValueError, match="device 'mps': MPS is not available"):
        T.choose_device("mps")


def test_amp_and_channels_last_resolve_per_device(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    f32, f64 = torch.float32, torch.float64
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert T.resolve_amp("auto", cuda, f32) == (torch.bfloat16, None)
    assert T.resolve_amp("fp16", cuda, f32) == (torch.float16, None)
    assert T.resolve_amp("auto", cpu, f32) == (None, None)  # nothing asked, nothing to say
    assert T.resolve_amp(None, cuda, f32) == (None, None)
    dtype, note = T.resolve_amp("bf16", cpu, f32)
    assert dtype is None and note == "amp='bf16' runs on CUDA only: training in float32 on cpu"
    dtype, note = T.resolve_amp("fp16", cuda, f64)
    assert dtype is None and "float32 models" in note
    with pytest.raises(ValueError, match=r"amp must be one of auto, bf16, fp16, none.*'half'"):
        T.resolve_amp("half", cpu, f32)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert T.resolve_amp("auto", cuda, f32) == (None, None)
    with pytest.raises(ValueError, match="no bfloat16 support; use amp='fp16'"):
        T.resolve_amp("bf16", cuda, f32)

    conv, flat = torch_model("convnet"), torch_model("fcnet-batchnorm")
    assert T.resolve_channels_last(None, cuda, conv) == (True, None)
    assert T.resolve_channels_last(None, cuda, flat) == (False, None)
    assert T.resolve_channels_last(None, cpu, conv) == (False, None)
    assert T.resolve_channels_last(True, cpu, conv) == (
        False,
        "channels_last applies on CUDA only: ignored on cpu",
    )
    assert T.resolve_channels_last(True, cuda, flat)[0] is False


@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16])
def test_mixed_precision_step_path_trains(amp_dtype, monkeypatch):
    """The autocast (and, for fp16, gradient-scaler) step, run on the CPU by forcing the mode
    that ``resolve_amp`` grants only on CUDA: float32 weights, a falling loss."""
    monkeypatch.setattr(T, "resolve_amp", lambda amp, device, dtype: (amp_dtype, None))
    data = make_data(dtype=np.float32)
    model = torch_model("convnet", dtype=np.float32)
    solver = T.TorchSolver(
        model, data, device="cpu", optimizer="adam", lr=1e-2, batch_size=16, epochs=4, **QUIET
    )
    assert (solver.scaler is not None) == (amp_dtype == torch.float16)
    seen = set()
    model.register_forward_hook(lambda m, args, out: seen.add(out.dtype) if m.training else None)
    solver.train()
    assert amp_dtype in seen, f"no training step ran under autocast: {seen}"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert np.mean(solver.loss_history[-6:]) < 0.6 * np.mean(solver.loss_history[:6])
    if solver.scaler is not None:
        assert solver.scaler.get_scale() > 0


def test_cpu_notes_are_printed_when_training_starts(capsys):
    solver = T.TorchSolver(
        torch_model("convnet"), make_data(), device="cpu", amp="bf16", channels_last=True,
        epochs=1, batch_size=16, progress=False, verbose=True,
    )  # fmt: skip
    assert solver.device == torch.device("cpu") and solver.amp_dtype is None
    assert not solver.channels_last
    assert len(solver.notes) == 2
    solver.train()
    out = capsys.readouterr().out
    for note in solver.notes:
        assert note in out


# ----------------------------------------------------------------------------------- training


def test_torch_training_reduces_the_loss_and_records_history():
    data = make_data(n_train=96)
    solver = T.TorchSolver(
        torch_model("convnet"), data, optimizer="adam", lr=1e-2, batch_size=16, epochs=4, **QUIET
    ).train()
    assert len(solver.loss_history) == 4 * 6
    assert np.mean(solver.loss_history[-6:]) < 0.5 * np.mean(solver.loss_history[:6])
    assert solver.val_acc_history[-1] > 0.8
    assert solver.best_val_acc == max(solver.val_acc_history)
    assert all(isinstance(v, float) for v in solver.loss_history)


@pytest.mark.parametrize("optimizer", ["sgd", "sgd_momentum", "adam"])
@pytest.mark.parametrize("key", ["fcnet-batchnorm", "convnet", "linear-svm"])
def test_same_trajectory_as_numpy_from_the_same_weights(key, optimizer):
    """float64, no augmentation, no dropout: the same batches, losses, updates and accuracies."""
    data = make_data()
    settings = {
        "optimizer": optimizer, "lr": 0.05, "weight_decay": 1e-3, "schedule": "cosine",
        "batch_size": 16, "epochs": 3, "seed": 5, "num_train_samples": 20, **QUIET,
    }  # fmt: skip
    np_model = numpy_model(key)
    twin = to_torch(np_model)
    expected = Solver(np_model, data, **settings).train()
    actual = T.TorchSolver(twin, data, device="cpu", **settings).train()
    np.testing.assert_allclose(actual.loss_history, expected.loss_history, rtol=1e-10)
    assert actual.train_acc_history == expected.train_acc_history
    assert actual.val_acc_history == expected.val_acc_history
    assert actual.lr_history == expected.lr_history
    assert actual.best_epoch == expected.best_epoch
    # atol: biases before a batch norm have a zero gradient up to rounding, which Adam scales up.
    for name, value in state_dict_numpy(expected.model).items():
        np.testing.assert_allclose(state_dict_numpy(twin)[name], value, rtol=1e-8, atol=1e-8)
    assert actual.loss_history[-1] < actual.loss_history[0]


def test_torch_solver_stops_early_and_restores_the_best_parameters():
    data = make_data()
    solver = T.TorchSolver(
        torch_model("linear-svm"), data, optimizer="sgd", lr=0.0, batch_size=16, epochs=10,
        early_stopping=2, **QUIET,
    ).train()  # fmt: skip
    # lr 0: the accuracy never improves on epoch 1, so epochs 2 and 3 exhaust the patience.
    assert solver.stopped_early
    assert len(solver.val_acc_history) == 3 and solver.best_epoch == 1

    snapshots = []
    solver = T.TorchSolver(
        torch_model("fcnet-batchnorm", dropout=0.5), make_data(seed=1), optimizer="sgd", lr=1.0,
        batch_size=8, epochs=6, **QUIET,
        epoch_callback=lambda s: snapshots.append(state_dict_numpy(s.model)),
    ).train()  # fmt: skip
    best = int(np.argmax(solver.val_acc_history))
    assert solver.best_epoch == best + 1
    assert best < len(snapshots) - 1, "the test needs a best epoch before the last"
    for name, value in snapshots[best].items():
        np.testing.assert_array_equal(state_dict_numpy(solver.model)[name], value)


def test_torch_solver_progress_bar_and_verbose_lines(capsys):
    model = torch_model("linear-svm")
    T.TorchSolver(model, make_data(), batch_size=16, epochs=2, progress=True, verbose=True).train()
    out = capsys.readouterr().out
    assert "epoch 1/2" in out and "epoch 2/2" in out and "val acc" in out


def resume_settings(**overrides):
    return {
        "optimizer": "adamw", "lr": 3e-3, "schedule": "cosine", "warmup_epochs": 1,
        "batch_size": 16, "epochs": 3, "augment": "flip,crop=1,jitter=0.2", "seed": 3,
        "num_train_samples": 20, **QUIET, **overrides,
    }  # fmt: skip


@pytest.mark.parametrize(
    "key_kwargs",
    [("fcnet-batchnorm", {"dropout": 0.3}), ("convnet", {"dropout": 0.2})],
    ids=["fcnet-batchnorm-dropout", "convnet-batchnorm-dropout"],
)
def test_resume_mid_epoch_is_bit_identical(key_kwargs, tmp_path):
    key, kwargs = key_kwargs
    data = make_data(dtype=np.float32)
    make = lambda: torch_model(key, dtype=np.float32, **kwargs)  # noqa: E731
    straight = T.TorchSolver(make(), data, **resume_settings()).train()

    def stop(solver):
        if solver.step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        T.TorchSolver(
            make(), data, checkpoint_dir=tmp_path, callback=stop, **resume_settings()
        ).train()
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert (state["backend"], state["step"], state["batch"]) == ("torch", 5, 2)
    resumed = T.TorchSolver.resume(tmp_path, make(), data, **QUIET)
    assert resumed.step == 5
    resumed.train()
    assert resumed.loss_history == straight.loss_history
    assert resumed.val_acc_history == straight.val_acc_history
    for name, value in state_dict_numpy(straight.model).items():
        np.testing.assert_array_equal(state_dict_numpy(resumed.model)[name], value, err_msg=name)
    assert torch.equal(resumed.model.rng.get_state(), straight.model.rng.get_state())


def test_checkpoints_resume_only_in_their_backend(tmp_path):
    data = make_data()
    T.TorchSolver(
        torch_model("linear-svm"), data, epochs=1, checkpoint_dir=tmp_path / "t", **QUIET
    ).train()
    Solver(
        numpy_model("linear-svm"), data, epochs=1, checkpoint_dir=tmp_path / "n", **QUIET
    ).train()
    with pytest.raises(
        ValueError, match="written by the torch backend; resume it with backend='torch'"
    ):
        Solver.resume(tmp_path / "t", numpy_model("linear-svm"), data)
    with pytest.raises(
        ValueError, match="written by the numpy backend; resume it with backend='numpy'"
    ):
        T.TorchSolver(
            torch_model("linear-svm"), data, checkpoint_dir=tmp_path / "n", resume=True, **QUIET
        )


class Hooked:
    """Replace a torch model's training loss by ``hook(call_number, loss)``."""

    def __init__(self, model, hook):
        self.calls, self.hook, self.loss = 0, hook, model.loss
        model.loss = self

    def __call__(self, X, y=None):
        loss = self.loss(X, y)
        if y is None:
            return loss
        self.calls += 1
        return self.hook(self.calls, loss)


def test_nan_loss_stops_and_leaves_the_model_as_before_the_step(tmp_path):
    model = torch_model("fcnet-batchnorm", dropout=0.3)
    Hooked(model, lambda call, loss: loss * float("nan") if call == 6 else loss)
    seen = {}

    def remember(solver):
        if solver.step == 5:
            seen["state"] = state_dict_numpy(solver.model)
            seen["optim"] = solver._optimizer_state()
            seen["rng"] = solver.model.rng.get_state()

    solver = T.TorchSolver(
        model, make_data(), optimizer="adam", lr=0.01, batch_size=16, epochs=3,
        checkpoint_dir=tmp_path, callback=remember, **QUIET,
    )  # fmt: skip
    with pytest.raises(TrainingDivergedError) as info:
        solver.train()
    message = str(info.value)
    assert "epoch 2/3, iteration 3/3 (step 6): the loss is nan" in message
    assert str(tmp_path) in message
    assert solver.step == 5 and len(solver.loss_history) == 5
    for name, value in seen["state"].items():
        np.testing.assert_array_equal(state_dict_numpy(solver.model)[name], value, err_msg=name)
    after = solver._optimizer_state()
    for name, values in seen["optim"].items():
        for key, value in values.items():
            np.testing.assert_array_equal(after[name][key], value)
    assert torch.equal(solver.model.rng.get_state(), seen["rng"])
    assert json.loads((tmp_path / STATE_FILE).read_text())["step"] == 3


def test_non_finite_update_is_not_committed():
    model = torch_model("linear-svm")
    Hooked(model, lambda call, loss: loss * 1e300)  # finite, with gradients near 1e300
    before = state_dict_numpy(model)
    solver = T.TorchSolver(
        model, make_data(), optimizer="sgd", lr=1e10, batch_size=16, epochs=1, **QUIET
    )
    with pytest.raises(TrainingDivergedError, match="the update of 'W' is not finite"):
        solver.train()
    for name, value in before.items():
        np.testing.assert_array_equal(state_dict_numpy(model)[name], value)
    assert solver.step == 0 and solver.loss_history == []


def test_deterministic_mode_gives_identical_runs_and_restores_the_flags():
    flags = []

    def run():
        model = torch_model("convnet", dtype=np.float32, dropout=0.2)
        callback = lambda s: flags.append(torch.are_deterministic_algorithms_enabled())  # noqa: E731
        return T.TorchSolver(
            model, make_data(dtype=np.float32), deterministic=True, callback=callback,
            **resume_settings(epochs=2),
        ).train()  # fmt: skip

    global_rng = torch.random.get_rng_state()
    first, second = run(), run()
    assert first.loss_history == second.loss_history
    for name, value in state_dict_numpy(first.model).items():
        np.testing.assert_array_equal(state_dict_numpy(second.model)[name], value)
    assert flags and all(flags)
    assert not torch.are_deterministic_algorithms_enabled()
    # Every draw came from the solver's and the model's own generators.
    assert torch.equal(torch.random.get_rng_state(), global_rng)


def test_deterministic_mode_restores_what_was_set_before():
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with T.deterministic_mode(True):
            assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


# ----------------------------------------------------------------------------------- augmentation


def batch(N=6, C=3, H=5, W=7, dtype=torch.float32):
    return torch.arange(N * C * H * W, dtype=dtype).reshape(N, C, H, W) / 10


def generator(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("spec", ["flip", "crop", "jitter", "flip=0.3,crop=2,jitter=0.1", "crop=0"])
def test_augment_keeps_shape_dtype_and_input_and_repeats_with_the_seed(spec):
    augment = TA.make_augment(spec)
    x = batch(dtype=torch.float64)
    original = x.clone()
    out = augment(x, generator(1))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.equal(x, original)
    assert torch.equal(augment(x, generator(1)), out)
    if spec != "crop=0":
        assert not torch.equal(augment(x, generator(2)), out)


def test_crop_takes_a_window_of_the_zero_padded_image():
    x = batch(N=8, H=5, W=6)
    out = TA.random_crop(x, generator(0), padding=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets = set()
    for n in range(len(x)):
        found = [
            (r, c) for r in range(5) for c in range(5)
            if torch.equal(padded[n, :, r : r + 5, c : c + 6], out[n])
        ]  # fmt: skip
        assert found, f"image {n} is not a crop"
        offsets.add(found[0])
    assert len(offsets) > 1
    assert torch.equal(TA.random_crop(x, generator(0), padding=0), x)
    reflect = TA.random_crop(x, generator(0), padding=2, mode="reflect")
    assert (reflect != 0).all()  # mirrored borders, no zeros


def test_flip_and_jitter_extremes():
    x = batch()
    assert torch.equal(TA.random_flip(x, generator(0), p=1.0), x.flip(3))
    assert torch.equal(TA.random_flip(x, generator(0), p=0.0), x)
    flipped = TA.random_flip(x, generator(0), p=0.5)
    same = [torch.equal(flipped[n], x[n]) for n in range(len(x))]
    assert any(same) and not all(same)
    zero = TA.color_jitter(x, generator(0), brightness=0, contrast=0, saturation=0)
    torch.testing.assert_close(zero, x)
    # Brightness alone scales each image by one factor in [0.5, 1.5].
    scaled = TA.color_jitter(x[:, :, 1:], generator(0), brightness=0.5, contrast=0, saturation=0)
    ratio = scaled / x[:, :, 1:]
    assert torch.allclose(ratio, ratio[:, :1, :1, :1].expand_as(ratio))
    assert ((ratio >= 0.5) & (ratio <= 1.5)).all()


def test_jitter_matches_numpy_given_the_same_factors(monkeypatch):
    """The same formula as the numpy twin: feed both the same per-image factors."""
    x = np.random.default_rng(0).standard_normal((4, 3, 5, 5))
    factors = iter(np.random.default_rng(1).uniform(0.6, 1.4, (3, 4)))
    draws = [next(factors) for _ in range(3)]
    monkeypatch.setattr(
        TA, "_factors", lambda g, s, t: torch.from_numpy(draws.pop(0))[:, None, None, None]
    )
    numpy_draws = iter(np.asarray(d)[:, None, None, None] for d in list(draws))
    monkeypatch.setattr(numpy_augment, "_factors", lambda rng, s, n, dtype: next(numpy_draws))
    expected = numpy_augment.color_jitter(x, np.random.default_rng(0))
    actual = TA.color_jitter(torch.from_numpy(x), generator(0))
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("spec", ["flip,flip", "rotate", "crop=x", "crop=-1", "flip=2"])
def test_bad_specs_get_the_numpy_messages(spec):
    with pytest.raises(ValueError) as numpy_error:
        numpy_augment.make_augment(spec)
    with pytest.raises(ValueError) as torch_error:
        TA.make_augment(spec)
    assert str(torch_error.value) == str(numpy_error.value)
    assert TA.make_augment("none") is None and TA.make_augment(None) is None
