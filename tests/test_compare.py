"""pix2pred compare: end to end on tiny synthetic data, resume after Ctrl-C, failed models."""

import json

import pytest

from pix2pred import compare
from pix2pred.cli import main
from pix2pred.compare import ModelSpec, run_compare
from pix2pred.compare_report import markdown_table
from pix2pred.solver import Solver

DATA = {
    "dataset": "synthetic",
    "root": None,
    "seed": 0,
    "image_size": 16,
    "n_train": 120,
    "n_test": 40,
    "device": "cpu",
}
KNN = ModelSpec("knn", "kNN", "knn", {"ks": "1,3", "folds": 2})
SOFTMAX = ModelSpec("softmax", "Softmax", "softmax", {"epochs": 1, "batch_size": 50})
MLP = ModelSpec("mlp", "TwoLayerNet", "mlp", {"epochs": 2, "hidden": "16", "batch_size": 50})
CNN = ModelSpec("cnn", "SimpleCNN", "cnn", {"epochs": 1, "batch_size": 60, "augment": "none"})


def run(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def _rows(run_dir):
    return json.loads((run_dir / "compare.json").read_text())["rows"]


def test_compare_end_to_end(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(compare.BUDGETS, "quick", (KNN, SOFTMAX, MLP, CNN))
    out = tmp_path / "cmp"
    args = ["compare", "-d", "synthetic", "--n-train", "120", "--n-test", "40"]
    code, stdout, err = run(capsys, *args, "--image-size", "16", "--out", str(out))
    assert code == 0, err
    rows = _rows(out)
    assert [r["folder"] for r in rows] == ["knn-numpy", "softmax-numpy", "mlp-numpy", "cnn-numpy"]
    for r in rows:
        assert r["status"] == "done" and 0.0 <= r["test_accuracy"] <= 1.0
        assert r["train_seconds"] > 0 and r["predict_seconds"] > 0
        assert (out / r["folder"] / "metrics.json").is_file()
    assert rows[0]["num_params"] is None and rows[0]["stored_images"] == 120
    assert rows[1]["num_params"] == 10 * (16 * 16 * 3 + 1)
    assert "[4/4] SimpleCNN (numpy)" in err
    page = (out / "compare.html").read_text()
    for label in ("kNN", "Softmax", "TwoLayerNet", "SimpleCNN", "training time", "test accuracy"):
        assert label in page
    assert page.count("data:image/png;base64,") >= 1 + 4  # the chart and each model's figures
    for r in rows:  # each model's own report is written and linked
        assert (out / r["folder"] / "report.html").is_file(), r["folder"]
        assert f'href="{r["folder"]}/report.html"' in page
    md = (out / "compare.md").read_text()
    assert len(md.strip().splitlines()) == 2 + 4 and md == markdown_table(rows)
    assert f"report: {out / 'compare.html'}" in stdout
    assert (out / "accuracy_vs_time.png").read_bytes().startswith(b"\x89PNG")
    # Running again on the same folder trains nothing.
    code, _, err = run(capsys, *args, "--image-size", "16", "--out", str(out))
    assert code == 0 and err.count("done earlier") == 4


def test_interrupted_compare_resumes_without_retraining(capsys, tmp_path, monkeypatch):
    run_dir = tmp_path / "cmp"
    run_dir.mkdir()
    config = {**DATA, "backend": "numpy", "budget": "quick"}
    original = Solver._train_iteration

    def interrupt_mlp(self):
        if type(self.model).__name__ == "TwoLayerNet" and self.epoch == 1:
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(Solver, "_train_iteration", interrupt_mlp)
    with pytest.raises(KeyboardInterrupt):
        run_compare(run_dir, config, specs=(KNN, SOFTMAX, MLP))
    rows = _rows(run_dir)
    assert [r["status"] for r in rows] == ["done", "done", "interrupted"]
    assert (run_dir / "mlp-numpy" / "checkpoint").is_dir()
    assert not (run_dir / "mlp-numpy" / "metrics.json").exists()
    assert (run_dir / "compare.html").is_file()  # a report of what finished
    finished = {f: (run_dir / f / "metrics.json").stat().st_mtime_ns for f in ("knn-numpy",)}
    finished["softmax-numpy"] = (run_dir / "softmax-numpy/metrics.json").stat().st_mtime_ns

    monkeypatch.setattr(Solver, "_train_iteration", original)
    capsys.readouterr()
    state = run_compare(run_dir, config, specs=(KNN, SOFTMAX, MLP))
    err = capsys.readouterr().err
    assert [r["status"] for r in state["rows"]] == ["done", "done", "done"]
    assert err.count("done earlier") == 2 and "resuming" in err
    for folder, mtime in finished.items():
        assert (run_dir / folder / "metrics.json").stat().st_mtime_ns == mtime
    metrics = json.loads((run_dir / "mlp-numpy" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2
    mlp = state["rows"][2]  # its time counts the part before the interruption
    assert mlp["resumed"] and mlp["train_seconds"] > metrics["train_seconds"]
    assert "TwoLayerNet (2 epochs, resumed)" in (run_dir / "compare.md").read_text()
    assert not list(run_dir.glob("*.incomplete-*"))


def test_interrupted_knn_is_moved_aside_and_redone(capsys, tmp_path):
    run_dir = tmp_path / "cmp"
    (run_dir / "knn-numpy").mkdir(parents=True)
    (run_dir / "knn-numpy" / "config.json").write_text("{}")  # what an interrupted kNN leaves
    config = {**DATA, "backend": "numpy", "budget": "quick"}
    state = run_compare(run_dir, config, specs=(KNN,))
    assert state["rows"][0]["status"] == "done"
    aside = run_dir / "knn-numpy.incomplete-1" / "config.json"
    assert aside.read_text() == "{}"  # kept, not deleted


def test_a_diverging_model_is_failed_and_the_others_run(capsys, tmp_path):
    run_dir = tmp_path / "cmp"
    run_dir.mkdir()
    config = {**DATA, "backend": "numpy", "budget": "quick"}
    boom = ModelSpec("mlp", "TwoLayerNet", "mlp", {**MLP.options, "lr": 1e12, "optimizer": "sgd"})
    state = run_compare(run_dir, config, specs=(boom, SOFTMAX))
    assert [r["status"] for r in state["rows"]] == ["failed", "done"]
    assert state["rows"][0]["error"] == "diverged"
    assert "failed" in (run_dir / "compare.md").read_text()
    assert "failed (diverged)" in (run_dir / "compare.html").read_text()
    capsys.readouterr()
    again = run_compare(run_dir, config, specs=(boom, SOFTMAX))  # not retried, still shown
    assert [r["status"] for r in again["rows"]] == ["failed", "done"]
    assert "failed earlier" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "jax"], "--backend must be numpy, torch or both, got 'jax'"),
        (["--budget", "huge"], "--budget must be quick or full, got 'huge'"),
        ([], "--dataset is required"),
    ],
)
def test_bad_options_get_a_clear_error(capsys, tmp_path, args, message):
    extra = [] if message.startswith("--dataset") else ["-d", "synthetic"]
    code, _, err = run(capsys, "compare", *extra, *args, "--out", str(tmp_path / "c"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_resume_and_out_refuse_other_folders(capsys, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "compare", "--resume", str(other))
    assert code == 2 and "not a compare run" in err
    code, _, err = run(capsys, "compare", "-d", "synthetic", "--out", str(other))
    assert code == 2 and "not a compare run" in err
    assert (other / "notes.txt").read_text() == "mine"
    code, _, err = run(capsys, "compare", "--resume", str(tmp_path / "missing"))
    assert code == 2 and "no such folder" in err
    code, _, err = run(capsys, "compare", "--resume", str(other), "-d", "synthetic")
    assert code == 2 and "drop --dataset" in err
    code, _, err = run(capsys, "compare", "--resume", str(other), "--budget", "full")
    assert code == 2 and "drop --budget" in err
    code, _, err = run(capsys, "compare", "--resume", str(other), "--seed", "3")
    assert code == 2 and "drop --seed" in err
    code, _, err = run(capsys, "compare", "--resume", str(other), "--device", "cpu")
    assert code == 2 and "drop --device" in err


def test_out_with_other_options_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "cmp"
    run_dir.mkdir()
    (run_dir / "compare.json").write_text(json.dumps({"config": {**DATA, "budget": "quick"}}))
    code, _, err = run(capsys, "compare", "-d", "synthetic", "--out", str(run_dir))
    assert code == 2 and "holds a compare with other options" in err


def test_plan_and_budgets():
    steps = compare.plan("full", "both")
    folders = [s.folder for s in steps]
    assert folders[:4] == ["knn-numpy", "knn-torch", "svm-numpy", "svm-torch"]
    assert "resnet-torch" in folders and "resnet-numpy" not in folders
    assert [s.spec.name for s in compare.plan("quick", "numpy")] == [
        "knn",
        "svm",
        "softmax",
        "mlp",
        "cnn",
    ]
    with pytest.raises(ValueError, match="--budget must be one of quick, full, got 'x'"):
        compare.plan("x", "numpy")


def test_both_backends_give_a_row_each(capsys, tmp_path):
    pytest.importorskip("torch")
    run_dir = tmp_path / "cmp"
    run_dir.mkdir()
    config = {**DATA, "backend": "both", "budget": "quick"}
    state = run_compare(run_dir, config, specs=(KNN, SOFTMAX))
    rows = state["rows"]
    assert [(r["name"], r["backend"]) for r in rows] == [
        ("knn", "numpy"),
        ("knn", "torch"),
        ("softmax", "numpy"),
        ("softmax", "torch"),
    ]
    assert all(r["status"] == "done" for r in rows)
    model = json.loads((run_dir / "softmax-torch" / "metrics.json").read_text())
    assert model["backend"] == "torch"
    knn = json.loads((run_dir / "knn-torch" / "config.json").read_text())
    assert knn["backend"] == "torch"
    # kNN is deterministic: both backends find the same neighbours
    assert rows[0]["test_accuracy"] == rows[1]["test_accuracy"]


def test_experiments_run_as_steps(capsys, tmp_path):
    run_dir = tmp_path / "cmp"
    run_dir.mkdir()
    config = {**DATA, "backend": "numpy", "budget": "full"}
    specs = (
        ModelSpec("ablate-lr", "Softmax: lr", "ablate-lr", {**SOFTMAX.options, "model": "softmax",
                  "values": "1e-2,1e-5"}),
    )  # fmt: skip
    row = run_compare(run_dir, config, specs=specs)["rows"][0]
    assert (
        row["status"] == "done" and row["experiment"] and row["best_run"] in ("lr=0.01", "lr=1e-05")
    )
    assert row["figures"] and row["summary"]
    page = (run_dir / "compare.html").read_text()
    assert row["summary"][0].split()[0] in page and "experiment: best" in page
    assert "No model has a test accuracy yet." in page  # no empty chart


def test_torch_experiments_run_on_the_chosen_device(capsys, tmp_path):
    pytest.importorskip("torch")
    run_dir = tmp_path / "cmp"
    run_dir.mkdir()
    config = {**DATA, "backend": "torch", "budget": "full"}
    options = {**SOFTMAX.options, "model": "softmax", "values": "1e-2"}
    specs = (ModelSpec("ablate-lr", "Softmax: lr", "ablate-lr", options),)
    row = run_compare(run_dir, config, specs=specs)["rows"][0]
    assert row["status"] == "done" and row["backend"] == "torch"
    params = json.loads((run_dir / row["folder"] / "config.json").read_text())["params"]
    assert params["backend"] == "torch" and params["device"] == "cpu"
