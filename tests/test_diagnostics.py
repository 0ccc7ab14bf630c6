"""Babysitting checks: each passes on a healthy model and warns on a broken one."""

import json

import numpy as np
import pytest

from pix2pred import diagnostics as D
from pix2pred import diagnostics_model as dm
from pix2pred.cli import main
from pix2pred.data import load_dataset
from pix2pred.data.preprocess import make_preprocessor
from pix2pred.lr_range import analyse_lr_curve, lr_range_test, smooth
from pix2pred.nn_numpy import models as npm


@pytest.fixture(scope="module")
def data():
    ds = load_dataset("synthetic", n_train=300, n_test=10, image_size=8, seed=0)
    X = make_preprocessor("channel").fit(ds.X_train).transform(ds.X_train)
    return X, ds.y_train


@pytest.fixture
def torch_one_thread():
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


def twolayer(**kw):
    return npm.TwoLayerNet((3, 8, 8), 10, hidden_dim=32, seed=0, **kw)


def run(check, model, X, y, **settings):
    return D.CHECKS[check](model, X, y, D.DiagnosticSettings(**settings))


def test_initial_loss_is_ln_c_for_softmax_and_c_minus_1_for_the_svm(data):
    X, y = data
    small_init = twolayer(init="normal", weight_scale=1e-2)
    healthy = run("initial_loss", small_init, X, y)
    assert healthy.status == "pass" and abs(healthy.value - np.log(10)) < 0.23
    svm = npm.LinearClassifier((3, 8, 8), 10, loss="svm")
    result = run("initial_loss", svm, X, y)
    assert result.status == "pass" and result.details["expected"] == 9.0
    broken = small_init
    for k in ("W1", "W2"):
        broken.params[k] *= 100
    result = run("initial_loss", broken, X, y)
    assert result.status == "warn" and result.value > 20
    assert "init scale or loss wrong" in result.why


def test_a_he_initialised_conv_net_warns_but_says_it_is_not_a_bug(data):
    X, y = data
    result = run("initial_loss", npm.SimpleCNN((3, 8, 8), 10, seed=0), X, y)
    assert result.status == "warn" and 3.0 < result.value < 6.0
    assert "He init" in result.why and "not a bug" in result.why
    assert "loss wrong" not in result.why


def test_overfit_reaches_100_percent_and_warns_at_lr_0(data):
    X, y = data
    model = twolayer()
    before = {k: v.copy() for k, v in model.params.items()}
    healthy = run("overfit", model, X, y, optimizer="adam", lr=1e-2, overfit_steps=100)
    assert healthy.status == "pass" and healthy.value == 1.0
    assert len(healthy.details["train_acc"]) < 100
    assert healthy.details["loss"][-1] <= 0.1 * healthy.details["loss"][0]
    for k, v in model.params.items():  # the checks train a copy
        np.testing.assert_array_equal(v, before[k])
    stuck = run("overfit", model, X, y, optimizer="adam", lr=0.0, overfit_steps=20)
    assert stuck.status == "warn" and stuck.value < 0.5
    assert len(stuck.details["loss"]) == 20


def test_gradcheck_passes_with_batchnorm_and_dropout_and_catches_a_wrong_backward(
    data, monkeypatch
):
    X, y = data
    convnet = npm.ConvNet((3, 8, 8), 10, spec="4,M,6|8", dropout=0.3, seed=1)
    result = run("gradcheck", convnet, X, y)
    assert result.status == "pass", result.details
    assert set(result.details["rel_error"]) == set(convnet.params)

    def wrong_backward(dout, cache):
        dx, dw, db = npm.layers.affine_backward(dout, cache)
        return dx, 1.1 * dw, db

    monkeypatch.setattr(npm, "AFFINE", npm.Layer(npm.layers.affine_forward, wrong_backward))
    result = run("gradcheck", twolayer(), X, y)
    assert result.status == "warn"
    assert result.details["rel_error"]["W2"] > 1e-2 and result.details["rel_error"]["W1"] < 1e-5


def test_update_ratio_near_1e_3_passes_and_extreme_rates_warn(data):
    X, y = data
    model = twolayer()
    # Adam moves each weight by about lr: the ratio is about lr / std(W1) = 1e-4 / 0.1.
    healthy = run("update_ratio", model, X, y, optimizer="adam", lr=1e-4, batch_size=32)
    assert healthy.status == "pass", healthy.measured
    assert set(healthy.details["median"]) == {"W1", "W2"}
    assert all(1e-4 < v < 1e-2 for v in healthy.details["median"].values())
    assert len(healthy.details["ratios"]["W1"]) == 25  # 5 not counted, 20 counted
    for lr in (0.0, 1.0):
        result = run("update_ratio", model, X, y, optimizer="adam", lr=lr, batch_size=32)
        assert result.status == "warn", (lr, result.measured)


def test_dead_relus_from_a_large_negative_bias_warn(data):
    X, y = data
    healthy = run("activations", twolayer(), X, y)
    assert healthy.status == "pass"
    layers = healthy.details["layers"]
    assert list(layers) == ["fc1", "relu1", "fc2"]
    assert layers["relu1"]["dead_fraction"] < 0.1 and layers["relu1"]["std"] > 0
    broken = twolayer()
    broken.params["b1"][:20] = -100.0  # 20 of 32 hidden units never fire
    result = run("activations", broken, X, y)
    assert result.status == "warn"
    assert result.details["layers"]["relu1"]["dead_fraction"] == pytest.approx(20 / 32)


def test_dead_conv_maps_count_per_feature_map(data):
    X, y = data
    cnn = npm.SimpleCNN((3, 8, 8), 10, seed=0)
    cnn.params["b2"][:40] = -1e3
    result = run("activations", cnn, X, y)
    assert result.details["layers"]["relu2"]["dead_fraction"] == pytest.approx(40 / 64)
    assert result.status == "warn"


def test_smoothing_has_no_lag_and_the_reading_finds_the_steepest_fall():
    t = np.linspace(-3, 3, 200)
    lrs = 10.0 ** np.linspace(-6, 0, 200)
    losses = 2 - np.tanh(t) + 0.5 * np.maximum(t - 2, 0) ** 2  # steepest at t = 0
    assert np.abs(smooth(losses, 5) - losses).max() < 0.02
    noisy = losses + np.random.default_rng(0).normal(0, 0.1, 200)
    assert np.abs(smooth(noisy, 5) - losses)[5:-5].std() < 0.05
    r = analyse_lr_curve(lrs, losses)
    assert r["suggested_lr"] == pytest.approx(1e-3, rel=0.2)
    assert r["start_lr"] < r["suggested_lr"] < r["min_loss_lr"] < 1.0
    flat = analyse_lr_curve(lrs, np.full(200, 2.3))
    assert flat["suggested_lr"] is None


def test_a_curve_that_only_rose_before_diverging_gives_no_range():
    rose = [2.3, 2.3, 2.31, 2.3, 2.32, 2.4, 3.0, np.inf]
    r = analyse_lr_curve(10.0 ** np.linspace(-6, 0, 8), rose, half_width=4)
    assert r["suggested_lr"] is None and r["min_loss_lr"] is None
    assert np.isfinite(r["smoothed"]).all() and len(r["smoothed"]) == 7
    # the same on a 200-step test that blew up at its 8th step (a window of 11 by default)
    long = np.r_[rose, np.full(192, np.inf)]
    assert analyse_lr_curve(10.0 ** np.linspace(-6, 0, 200), long)["suggested_lr"] is None


def test_lr_range_test_finds_a_sensible_range_on_synthetic_data(data):
    X, y = data
    model = twolayer()
    r = lr_range_test(model, X, y, optimizer="sgd_momentum", momentum=0.9, steps=120)
    assert r.found_range and r.diverged_lr is not None
    assert 1e-4 < r.suggested_lr < 1.0
    assert r.start_lr <= r.suggested_lr <= r.min_loss_lr < r.diverged_lr
    assert r.lrs[0] == pytest.approx(1e-7) and len(r.lrs) == len(r.losses) < 120
    result = run("lr_range", model, X, y, optimizer="sgd_momentum", lr=r.suggested_lr)
    assert result.status == "pass"
    too_high = run("lr_range", model, X, y, optimizer="sgd_momentum", lr=5.0)
    assert too_high.status == "warn"


def test_run_diagnostics_on_the_torch_backend_leaves_the_model_alone(data, torch_one_thread):
    from pix2pred.nn_torch.transfer import state_dict_numpy, to_torch

    X, y = data
    model = to_torch(twolayer(init="normal", weight_scale=1e-2))
    before = state_dict_numpy(model)
    results = D.run_diagnostics(model, X, y, optimizer="adam", lr=1e-3, lr_range_steps=40)
    assert [r.key for r in results] == list(D.CHECKS)
    by_key = {r.key: r for r in results}
    for key in ("initial_loss", "overfit", "gradcheck", "activations"):
        assert by_key[key].status == "pass", (key, by_key[key].measured)
    for k, v in state_dict_numpy(model).items():
        np.testing.assert_array_equal(v, before[k])
    assert dm.is_torch(dm.clone(model))


def test_diagnose_estimator_builds_the_model_fit_would_train(torch_one_thread):
    from pix2pred.estimators import CNN, MLP

    ds = load_dataset("synthetic", n_train=120, n_test=10, image_size=8, seed=1)
    est = MLP(hidden=[16], lr=1e-3, optimizer="adam")
    results = D.diagnose_estimator(est, ds.X_train, ds.y_train, checks=["gradcheck", "overfit"])
    assert [r.status for r in results] == ["pass", "pass"]
    assert set(results[0].details["rel_error"]) == {"W1", "b1", "W2", "b2"}
    model, X, y = D.prepare_estimator(CNN(backend="torch"), ds.X_train, ds.y_train, 10)
    assert dm.is_torch(model) and X.shape == (len(y), 3, 8, 8) and model.num_classes == 10
    (act,) = D.diagnose_estimator(
        CNN(backend="torch"), ds.X_train, ds.y_train, checks=["activations"]
    )
    assert list(act.details["layers"])[:3] == ["conv1", "relu1", "pool1"]
    with pytest.raises(ValueError, match="uint8"):
        D.prepare_estimator(est, X, y)


def test_bad_arguments_are_refused(data):
    X, y = data
    with pytest.raises(ValueError, match="unknown checks"):
        D.run_diagnostics(twolayer(), X, y, checks=["nope"])
    with pytest.raises(ValueError, match="overfit_size"):
        D.run_diagnostics(twolayer(), X, y, overfit_size=1)
    with pytest.raises(ValueError, match="lr_min"):
        lr_range_test(twolayer(), X, y, lr_min=1.0, lr_max=0.1)


def cli(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


TINY = ["--dataset", "synthetic", "--n-train", "200", "--n-test", "20", "--image-size", "8"]


def test_cli_diagnose_writes_a_run_folder_and_never_overwrites(capsys, tmp_path):
    out = tmp_path / "diag"
    args = ["diagnose", "mlp", *TINY, "--hidden", "16", "--lr-range-steps", "30", "--out", out]
    code, stdout, _ = cli(capsys, *map(str, args))
    assert code == 0, stdout
    assert "initial" in stdout and "checks passed" in stdout
    for name in ("config.json", "diagnostics.json", "lr_range.png", "update_ratios.png"):
        assert (out / name).is_file(), name
    for name in ("overfit.png", "activations.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    report = json.loads((out / "diagnostics.json").read_text())
    assert [c["key"] for c in report["checks"]] == list(D.CHECKS)
    assert all(c["status"] in ("pass", "warn") for c in report["checks"])
    config = json.loads((out / "config.json").read_text())
    assert config["command"] == "diagnose" and config["params"]["hidden"] == [16]
    written = (out / "diagnostics.json").read_bytes()
    code, _, err = cli(capsys, *map(str, args))
    assert code == 2 and "not empty" in err
    assert (out / "diagnostics.json").read_bytes() == written


def test_cli_diagnose_default_folder_and_checks_option(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, _ = cli(capsys, "diagnose", "softmax", *TINY, "--checks", "initial_loss")
    assert code == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("diagnose-softmax-synthetic-")
    report = json.loads((run_dir / "diagnostics.json").read_text())
    assert [c["key"] for c in report["checks"]] == ["initial_loss"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["diagnose", "resnet", *TINY], "MODEL must be one of softmax, svm, mlp"),
        (["diagnose", "mlp", *TINY, "--checks", "speed"], "--checks"),
        (["diagnose", "mlp", *TINY, "--overfit-size", "1"], "overfit_size"),
        (["diagnose", "mlp", *TINY, "--lr-range-steps", "5"], "lr_range_steps must be"),
        (["diagnose", "mlp", *TINY, "--lr-min", "1", "--lr-max", "0.1"], "0 < lr_min < lr_max"),
        (["diagnose", "mlp", *TINY, "--lr-min", "0"], "got lr_min=0.0"),
        (["diagnose", "mlp"], "--dataset"),
    ],
)
def test_cli_diagnose_bad_input_gets_a_one_line_error(capsys, tmp_path, monkeypatch, args, message):
    from pix2pred import cli_options

    def no_data(*a, **k):
        raise AssertionError("the data was read before the options were checked")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_options, "load_data", no_data)
    code, _, err = cli(capsys, *args)
    assert code == 2
    assert err.strip().startswith("Error:") and message in err, err
    assert not (tmp_path / "runs").exists()
