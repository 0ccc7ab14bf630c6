"""The command line as a user meets it: help everywhere, one-line errors, run folders."""

import json

import pytest
from PIL import Image

from pix2pred.cli import app, main


def run(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def _command_paths(typer_app, prefix=()):
    for cmd in typer_app.registered_commands:
        yield (*prefix, cmd.name)
    for group in typer_app.registered_groups:
        yield (*prefix, group.name)
        yield from _command_paths(group.typer_instance, (*prefix, group.name))


@pytest.mark.parametrize("path", [(), *_command_paths(app)], ids=lambda p: " ".join(p) or "root")
def test_every_command_has_help(capsys, path):
    code, out, _ = run(capsys, *path, "--help")
    assert code == 0
    assert "Usage" in out


def test_version_names_pix2pred_numpy_and_torch(capsys):
    import numpy as np
    import torch

    from pix2pred import __version__

    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert (
        out.strip() == f"pix2pred {__version__} (numpy {np.__version__}, torch {torch.__version__})"
    )


def test_command_summaries_are_one_line_and_paragraphs_unbroken():
    """Rich keeps a docstring's line breaks after the first paragraph and in command lists."""
    import inspect

    import typer

    def walk(cmd, path):
        yield path, inspect.cleandoc(cmd.help or "")
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, (*path, name))

    for path, text in walk(typer.main.get_command(app), ("pix2pred",)):
        first, *rest = text.split("\n\n")
        assert "\n" not in first, f"{' '.join(path)}: summary wraps: {first!r}"
        for line in "\n".join(rest).splitlines():
            assert len(line) <= 80, f"{' '.join(path)}: help line wider than a terminal: {line!r}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "knn", "--dataset", "synthetic", "--metric", "l3"], "--metric must be l1 or l2"),
        (["train", "knn", "--dataset", "synthetic", "--k", "0"], "--k"),
        (["train", "knn", "--dataset", "synthetic", "--ks", "1,x"], "--ks"),
        (["train", "knn", "--dataset", "nope"], "nope"),
        (["train", "knn"], "--dataset"),
        (["data", "download", "mnist"], "mnist"),
        (["data", "info", "folder", "--root", "/no/such/folder"], "/no/such/folder"),
    ],
)
def test_bad_arguments_get_a_one_line_error_and_exit_2(
    capsys, tmp_path, monkeypatch, args, message
):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("Error:") and message in lines[0]


def test_train_knn_writes_a_run_folder(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = run(
        capsys,
        "train",
        "knn",
        "--dataset",
        "synthetic",
        "--n-train",
        "300",
        "--n-test",
        "100",
        "--ks",
        "1,3,5",
        "--folds",
        "3",
        "--out",
        str(out),
    )
    assert code == 0
    assert str(out) in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["ks"] == [1, 3, 5] and config["metric"] == "l2"
    assert metrics["k"] == metrics["cv"]["best_k"] in (1, 3, 5)
    assert 0.1 < metrics["test_accuracy"] <= 1.0
    assert len(metrics["confusion_matrix"]) == 10
    for png in ("confusion_matrix.png", "knn_k_sweep.png"):
        with Image.open(out / png) as im:
            assert im.format == "PNG"
    # A second run into the same folder is refused and leaves the first one intact.
    before = (out / "metrics.json").read_bytes()
    code, _, err = run(capsys, "train", "knn", "--dataset", "synthetic", "--out", str(out))
    assert code == 2 and "not empty" in err
    assert (out / "metrics.json").read_bytes() == before


def test_data_info_and_preview(capsys, tmp_path):
    code, out, _ = run(capsys, "data", "info", "synthetic", "--n-train", "200", "--n-test", "50")
    assert code == 0 and "total" in out
    png = tmp_path / "grid.png"
    code, _, _ = run(
        capsys,
        "data",
        "preview",
        "synthetic",
        "--n-train",
        "200",
        "--n-test",
        "50",
        "--per-class",
        "3",
        "--out",
        str(png),
    )
    assert code == 0
    with Image.open(png) as im:
        assert im.format == "PNG"


# ---------------------------------------------------------------------------------------------
# the torch backend writes the same run folder


@pytest.fixture
def torch_one_thread():
    torch = pytest.importorskip("torch")
    # Tiny ops on a CPU shared with other jobs: OpenMP's spinning threads cost more than they give.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = ["--dataset", "synthetic", "--n-train", "200", "--n-test", "60", "--image-size", "16"]


def test_train_backend_torch_writes_the_same_run_folder(capsys, tmp_path, torch_one_thread):
    runs = {}
    for backend in ("numpy", "torch"):
        runs[backend] = tmp_path / backend
        args = ["train", "softmax", *TINY, "--epochs", "2", "--backend", backend]
        code, stdout, _ = run(capsys, *args, "--device", "cpu", "--out", str(runs[backend]))
        assert code == 0 and str(runs[backend]) in stdout
    names = {b: sorted(p.name for p in run_dir.iterdir()) for b, run_dir in runs.items()}
    assert names["torch"] == names["numpy"]
    assert {"model.safetensors", "model.json", "weight_templates.png"} <= set(names["torch"])
    metrics = json.loads((runs["torch"] / "metrics.json").read_text())
    config = json.loads((runs["torch"] / "config.json").read_text())
    assert (metrics["backend"], metrics["device"]) == ("torch", "cpu")
    assert config["params"]["backend"] == "torch" and config["params"]["device"] == "cpu"
    assert metrics["num_params"] == 16 * 16 * 3 * 10 + 10
    # From the same seed, without augmentation: the same training in both backends.
    numpy_metrics = json.loads((runs["numpy"] / "metrics.json").read_text())
    assert metrics["history"]["loss"] == pytest.approx(numpy_metrics["history"]["loss"], rel=1e-4)

    code, stdout, _ = run(capsys, "evaluate", str(runs["torch"]), "--device", "cpu")
    assert code == 0 and f"accuracy {metrics['test_accuracy']:.2%}" in stdout
    image = tmp_path / "image.png"
    Image.new("RGB", (20, 20), (200, 40, 40)).save(image)
    code, stdout, _ = run(capsys, "predict", str(runs["torch"]), str(image), "--top", "2")
    assert code == 0 and stdout.startswith(str(image)) and stdout.count("%") == 2


def test_train_convnet_with_torch_and_deterministic_mode(capsys, tmp_path, torch_one_thread):
    out = tmp_path / "run"
    args = ["train", "convnet", *TINY, "--epochs", "1", "--spec", "4,M|8", "--backend", "torch"]
    code, _, _ = run(capsys, *args, "--deterministic", "--amp", "bf16", "--out", str(out))
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["params"]["deterministic"] is True and config["params"]["amp"] == "bf16"
    with Image.open(out / "first_layer_filters.png") as im:
        assert im.format == "PNG"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "jax"], "backend must be one of numpy, torch, got 'jax'"),
        (["--device", "cuda:7", "--backend", "torch"], "device 'cuda:7'"),
        (["--device", "cuda"], "device='cuda' needs backend='torch'"),
        (["--amp", "half", "--backend", "torch"], "amp must be one of auto, bf16, fp16, none"),
    ],
)
def test_bad_backend_options_get_a_one_line_error(capsys, tmp_path, args, message):
    pytest.importorskip("torch")
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "mlp", *TINY, *args, "--out", str(out))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0]
    assert not out.exists()  # refused before the run folder was made
