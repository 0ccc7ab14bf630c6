"""The course's experiments on tiny synthetic data: same start, fair comparison, divergence kept."""

import json

import numpy as np
import pytest

from pix2pred.cli import main
from pix2pred.data import load_dataset
from pix2pred.experiments import (
    OPTIMIZERS,
    parse_values,
    run_ablation,
    run_optimizer_comparison,
)

FAST = {"epochs": 2, "batch_size": 50}


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", n_train=300, n_test=100, image_size=8, seed=0, noise=0.1)


def test_every_optimizer_runs_from_the_same_initialisation(data, tmp_path):
    result = run_optimizer_comparison(
        "mlp", data, params={**FAST, "hidden": [32]}, run_dir=tmp_path / "opt", progress=False
    )
    assert [r.name for r in result.runs] == list(OPTIMIZERS)
    first = [r.loss[0] for r in result.runs]
    assert np.allclose(first, first[0], rtol=0, atol=1e-6)  # same weights, same first batch
    after = {round(r.loss[-1], 5) for r in result.runs}
    assert len(after) == len(OPTIMIZERS)  # ... and then each rule took its own path
    for r in result.runs:
        assert not r.diverged and 0 <= r.test_acc <= 1
        assert len(r.history["train_acc"]) == len(r.history["val_acc"]) == 2
        assert r.lr_schedule == [r.params["lr"]] * (2 * r.history["iterations_per_epoch"])
    # sgd and rmsprop are the plain rules, the two momentum rules keep the estimator's momentum
    momenta = {r.name: (r.params["optimizer"], r.params["momentum"]) for r in result.runs}
    assert momenta["sgd"] == ("sgd", 0.0) and momenta["rmsprop"] == ("rmsprop", 0.0)
    assert momenta["momentum"] == ("sgd_momentum", 0.9) and momenta["nesterov"][1] == 0.9
    assert {r.name: r.params["lr"] for r in result.runs}["adam"] == 1e-3
    folder = tmp_path / "opt"
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "results.json", "summary.txt", "optimizers_loss.png"} <= names
    assert {"optimizers_accuracy.png", "optimizers_lr.png"} <= names
    saved = json.loads((folder / "results.json").read_text())
    assert [r["name"] for r in saved["runs"]] == list(OPTIMIZERS)
    assert saved["runs"][4]["history"]["loss"] == result.runs[4].loss
    summary = (folder / "summary.txt").read_text()
    assert "same initial loss" in summary and "best validation accuracy" in summary


def test_adam_beats_plain_sgd_at_the_same_small_lr(data, tmp_path):
    result = run_optimizer_comparison(
        "softmax",
        data,
        params={**FAST, "epochs": 5},
        optimizers=["sgd", "adam"],
        lrs={"sgd": 1e-3, "adam": 1e-3},
        run_dir=tmp_path / "run",
        progress=False,
    )
    sgd, adam = result.runs
    assert sgd.loss[0] == pytest.approx(adam.loss[0])
    assert adam.loss_change < sgd.loss_change - 0.03
    assert adam.final_train_acc > sgd.final_train_acc + 0.1
    assert abs(sgd.loss_change) < 0.01
    assert any(line.startswith("sgd barely moved the loss") for line in result.summary)


def test_a_diverging_lr_is_recorded_and_the_others_complete(data, tmp_path):
    result = run_ablation(
        "mlp",
        data,
        "lr",
        "1e4,1e-1,1e-2",
        params={**FAST, "optimizer": "sgd", "hidden": [32]},
        run_dir=tmp_path / "abl",
        progress=False,
    )
    big, *rest = result.runs
    assert big.params["optimizer"] == "sgd" and big.params["momentum"] == 0.0  # plain SGD
    assert big.diverged and big.diverged_epoch in (1, 2) and "diverged" in big.error
    assert big.test_acc is None and big.final_val_acc is None
    assert all(np.isfinite(big.loss))  # the history up to the last good step
    for r in rest:
        assert not r.diverged and r.test_acc is not None
        assert len(r.history["val_acc"]) == 2
    assert result.summary[0].startswith(f"lr=10000 diverged in epoch {big.diverged_epoch}")
    saved = json.loads((tmp_path / "abl" / "results.json").read_text())
    assert [r["diverged"] for r in saved["runs"]] == [True, False, False]
    assert {"ablation_loss.png", "ablation_sweep.png", "ablation_accuracy.png"} <= {
        p.name for p in (tmp_path / "abl").iterdir()
    }
    assert "diverged" in (tmp_path / "abl" / "summary.txt").read_text()


def test_weight_decay_summary_states_the_train_and_val_trade(data, tmp_path):
    result = run_ablation(
        "softmax",
        data,
        "weight_decay",
        [0.0, 1.0],
        params=FAST,
        run_dir=tmp_path / "wd",
        progress=False,
    )
    low, high = result.runs
    line = result.summary[-1]
    assert line.startswith("as weight_decay went from 0 to 1, training accuracy")
    assert f"{low.final_train_acc:.1%} to {high.final_train_acc:.1%}" in line
    assert f"validation went from {low.final_val_acc:.1%} to {high.final_val_acc:.1%}" in line


@pytest.mark.parametrize(
    ("param", "values", "message"),
    [
        ("lrate", "1e-3", "'lrate' is not a hyperparameter of MLP"),
        ("backend", "numpy,torch", "'backend' is not a hyperparameter"),
        ("lr", "1e-2,abc", "'abc' is not a valid lr (a number expected)"),
        ("epochs", "1,1.5", "'1.5' is not a valid epochs (an integer expected)"),
        ("hidden", "64,32-x", "'32-x' is not a valid hidden"),
        ("lr", "1e-2,,1e-3", "without blanks"),
        ("lr", "1e-2,0.01", "lr=0.01 more than once"),
    ],
)
def test_bad_param_or_values_name_the_culprit(param, values, message):
    with pytest.raises(ValueError) as e:
        parse_values("mlp", param, values)
    assert message in str(e.value)


def test_values_the_estimator_refuses_fail_before_any_training(data, tmp_path):
    with pytest.raises(ValueError, match=r"--values: lr=-1 is refused: lr must be > 0"):
        run_ablation("mlp", data, "lr", "1e-2,-1", run_dir=tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match=r"dropout=1.5 is refused: dropout must be"):
        run_ablation("mlp", data, "dropout", "0,1.5", run_dir=tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match=r"--lrs: unknown optimizer 'adagrad'"):
        run_optimizer_comparison("mlp", data, lrs={"adagrad": 1e-2}, run_dir=tmp_path / "c")
    assert not any(tmp_path.iterdir())  # nothing created for a refused experiment


def test_an_existing_run_folder_is_never_overwritten(data, tmp_path):
    folder = tmp_path / "taken"
    folder.mkdir()
    (folder / "results.json").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        run_ablation("softmax", data, "lr", "1e-3", params=FAST, run_dir=folder, progress=False)
    assert (folder / "results.json").read_text() == "mine"


def _cli(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


DATA_ARGS = ("--dataset", "synthetic", "--n-train", "200", "--n-test", "50", "--image-size", "8")


def test_cli_optimizers_writes_its_folder(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = _cli(
        capsys,
        "experiment",
        "optimizers",
        "--model",
        "softmax",
        *DATA_ARGS,
        "--epochs",
        "1",
        "--optimizers",
        "sgd,adam",
        "--lrs",
        "sgd=5e-2",
        "--out",
        str(out),
    )
    assert code == 0, stdout
    assert str(out) in stdout and "best validation accuracy" in stdout
    config = json.loads((out / "config.json").read_text())
    assert config["optimizers"] == {
        "sgd": {"rule": "sgd", "lr": 5e-2},
        "adam": {"rule": "adam", "lr": 1e-3},
    }
    assert config["params"]["epochs"] == 1 and config["params"]["schedule"] == "constant"
    assert (out / "optimizers_loss.png").stat().st_size > 0


def test_cli_ablate_writes_its_folder_and_refuses_bad_values(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = _cli(
        capsys,
        "experiment",
        "ablate",
        "--model",
        "mlp",
        "--param",
        "hidden",
        "--values",
        "8,16-8",
        *DATA_ARGS,
        "--epochs",
        "1",
        "--out",
        str(out),
    )
    assert code == 0, stdout
    assert json.loads((out / "config.json").read_text())["values"] == [[8], [16, 8]]
    assert "hidden=16-8" in (out / "summary.txt").read_text()
    code, _, err = _cli(
        capsys,
        "experiment",
        "ablate",
        "--model",
        "mlp",
        "--param",
        "lr",
        "--values",
        "1,x",
        *DATA_ARGS,
        "--out",
        str(tmp_path / "bad"),
    )
    assert code == 2 and err.strip().splitlines() == [
        "Error: --values: 'x' is not a valid lr (a number expected)"
    ]
    assert not (tmp_path / "bad").exists()


def test_the_torch_backend_runs_the_same_experiments(data, tmp_path):
    pytest.importorskip("torch")
    torch_params = {**FAST, "hidden": [32], "backend": "torch", "device": "cpu"}
    result = run_optimizer_comparison(
        "mlp",
        data,
        params=torch_params,
        optimizers=["sgd", "adam"],
        run_dir=tmp_path / "opt",
        progress=False,
    )
    sgd, adam = result.runs
    assert sgd.loss[0] == pytest.approx(adam.loss[0], abs=1e-6) and sgd.loss != adam.loss
    assert not sgd.diverged and adam.test_acc is not None
    result = run_ablation(
        "mlp",
        data,
        "lr",
        [1e4, 1e-2],
        params={**torch_params, "optimizer": "sgd"},
        run_dir=tmp_path / "abl",
        progress=False,
    )
    assert [r.diverged for r in result.runs] == [True, False]


def test_a_momentum_ablation_parses_its_values_and_runs(data, tmp_path):
    # momentum defaults to None (the rule's own), so its values must still be typed as numbers
    assert parse_values("mlp", "momentum", "0,0.5,none") == [0.0, 0.5, None]
    result = run_ablation(
        "softmax",
        data,
        "momentum",
        "0,0.9",
        params={**FAST, "epochs": 1},
        run_dir=tmp_path / "mom",
        progress=False,
    )
    assert [r.params["momentum"] for r in result.runs] == [0.0, 0.9]
    assert all(not r.diverged for r in result.runs)
    assert result.runs[0].loss[0] == pytest.approx(result.runs[1].loss[0])
    assert result.runs[0].loss[-1] != pytest.approx(result.runs[1].loss[-1])


def test_a_batch_size_ablation_draws_each_run_against_its_own_epochs(data, tmp_path, monkeypatch):
    from pathlib import Path

    from pix2pred import plots

    figures = {}
    save = plots.save_figure

    def keep(fig, path, **kw):
        figures[Path(path).name] = fig
        return save(fig, path, **kw)

    monkeypatch.setattr(plots, "save_figure", keep)
    result = run_ablation(
        "softmax",
        data,
        "batch_size",
        "100,25",
        params={"epochs": 2},
        run_dir=tmp_path / "bs",
        progress=False,
    )
    steps = [r.history["iterations_per_epoch"] for r in result.runs]
    assert steps[1] > steps[0]  # smaller batches, more steps per epoch
    # every curve ends at the last epoch, whatever its batch size
    ends = [max(line.get_xdata()) for line in figures["ablation_loss.png"].axes[0].lines]
    assert ends and np.allclose(ends, 2.0, atol=0.5 / steps[0])


@pytest.mark.parametrize(("param", "values"), [("dropout", ["0", "0.5"]), ("hidden", ["8", "32"])])
def test_a_dropout_or_hidden_ablation_states_the_train_and_val_trade(data, tmp_path, param, values):
    result = run_ablation(
        "mlp",
        data,
        param,
        values,
        params={**FAST, "epochs": 1},
        run_dir=tmp_path / param,
        progress=False,
    )
    line = result.summary[-1]
    assert line.startswith(f"as {param} went from {values[0]} to {values[1]}, training accuracy")
    assert "validation went from" in line and "train − val gap" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model", "resnet"), "unknown model 'resnet'"),
        (("--model", "mlp", "--optimizers", "sgd,adagrad"), "optimizers must be distinct names"),
        (("--model", "mlp", "--lrs", "adagrad=1e-2"), "--lrs: unknown optimizer 'adagrad'"),
    ],
)
def test_cli_optimizers_checks_its_options_before_loading_data(capsys, monkeypatch, args, message):
    from pix2pred import cli_experiment

    def no_data(*a, **k):
        raise AssertionError("the data was loaded before the options were checked")

    monkeypatch.setattr(cli_experiment, "load_data", no_data)
    code, _, err = _cli(capsys, "experiment", "optimizers", *args, *DATA_ARGS)
    assert code == 2 and message in err, err
