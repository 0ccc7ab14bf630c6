import numpy as np
import pytest
from PIL import Image

from pix2pred import plots
from pix2pred.runs import create_run_dir, read_run, write_config, write_metrics


def test_run_dir_refuses_to_reuse_a_non_empty_folder(tmp_path):
    run = create_run_dir(tmp_path / "run")
    write_config(run, {"model": "knn"})
    write_metrics(run, {"test_accuracy": 0.5})
    config, metrics = read_run(run)
    assert config["model"] == "knn" and "environment" in config
    assert metrics == {"test_accuracy": 0.5}
    with pytest.raises(FileExistsError, match="not empty"):
        create_run_dir(run)
    assert read_run(run)[1] == {"test_accuracy": 0.5}
    with pytest.raises(FileNotFoundError, match="not a pix2pred run"):
        read_run(tmp_path)


def _png_size(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_figures_are_written_as_png(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(30, 8, 8, 3), dtype=np.uint8)
    y = np.repeat(np.arange(3), 10)
    w, h = _png_size(plots.image_grid(X, y, ["a", "b", "c"], tmp_path / "grid.png", per_class=4))
    assert w > h > 50
    gray = X[:, :, :, :1]
    assert _png_size(plots.image_grid(gray, y, ["a", "b", "c"], tmp_path / "g.png", per_class=2))
    cm = np.array([[5, 1], [2, 4]])
    assert _png_size(plots.confusion_matrix_plot(cm, ["cat", "dog"], tmp_path / "cm.png"))
    accs = rng.uniform(0.2, 0.4, size=(4, 5))
    assert _png_size(plots.k_sweep_plot([1, 3, 5, 7], accs, tmp_path / "k.png"))
    with pytest.raises(ValueError, match="per_class"):
        plots.image_grid(X, y, ["a", "b", "c"], tmp_path / "x.png", per_class=0)
