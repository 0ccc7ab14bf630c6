import time

import numpy as np
import pytest

from pix2pred.data import DATASETS, Dataset, load_dataset
from pix2pred.data.synthetic import CLASSES, make_synthetic


def _ridge_accuracy(X_tr, y_tr, X_te, y_te, reg=10.0):
    """Test accuracy of a ridge-regression linear classifier on raw pixels."""
    A = X_tr.reshape(len(X_tr), -1) / 255.0
    B = X_te.reshape(len(X_te), -1) / 255.0
    mu = A.mean(axis=0)
    A, B = A - mu, B - mu
    W = np.linalg.solve(A.T @ A + reg * np.eye(A.shape[1]), A.T @ np.eye(10)[y_tr])
    return float(np.mean(np.argmax(B @ W, axis=1) == y_te))


def test_shapes_dtypes_and_balance():
    X_tr, y_tr, X_te, y_te, classes = make_synthetic(200, 50, seed=0)
    assert X_tr.shape == (200, 32, 32, 3) and X_tr.dtype == np.uint8
    assert X_te.shape == (50, 32, 32, 3) and y_te.shape == (50,)
    assert y_tr.dtype == np.int64 and y_tr.shape == (200,)
    assert np.bincount(y_tr).tolist() == [20] * 10
    assert classes == list(CLASSES) and len(set(classes)) == 10
    assert "spiral-0" in classes and "checker-fine" in classes
    assert X_tr.min() == 0 and X_tr.max() == 255  # noise clipped into the full range


def test_same_seed_same_arrays_and_test_set_independent_of_n_train():
    a = make_synthetic(100, 40, seed=5)
    b = make_synthetic(100, 40, seed=5)
    assert all(np.array_equal(u, v) for u, v in zip(a[:4], b[:4], strict=True))
    c = make_synthetic(100, 40, seed=6)
    assert not np.array_equal(a[0], c[0])
    d = make_synthetic(300, 40, seed=5)
    assert np.array_equal(a[2], d[2]) and np.array_equal(a[3], d[3])


def test_any_image_size():
    X, *_ = make_synthetic(20, 10, image_size=(12, 20))
    assert X.shape == (20, 12, 20, 3)
    X, *_ = make_synthetic(20, 10, image_size=64)
    assert X.shape == (20, 64, 64, 3)


def test_generation_is_vectorised():
    make_synthetic(100, 10)  # warm caches
    t = time.perf_counter()
    make_synthetic(10_000, 10)
    # about 0.4 s here; a per-image Python loop would take tens of seconds
    assert time.perf_counter() - t < 5.0


def test_learnable_by_a_linear_classifier_but_not_trivially():
    X_tr, y_tr, X_te, y_te, _ = make_synthetic(2000, 500, image_size=16, seed=0)
    acc = _ridge_accuracy(X_tr, y_tr, X_te, y_te)
    assert 0.35 < acc < 0.9
    # more noise makes it harder, none makes it easier
    noisy = _ridge_accuracy(*make_synthetic(2000, 500, image_size=16, seed=0, noise=1.0)[:4])
    clean = _ridge_accuracy(*make_synthetic(2000, 500, image_size=16, seed=0, noise=0.0)[:4])
    assert noisy < acc < clean


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_train": 0}, "n_train must be a positive int, got 0"),
        ({"n_test": 2.5}, "n_test must be a positive int, got 2.5"),
        ({"image_size": 2}, "at least 4"),
        ({"image_size": (8, 8, 3)}, r"image_size must be .*\(8, 8, 3\)"),
        ({"noise": -0.1}, "noise must be a non-negative float, got -0.1"),
        ({"seed": -1}, "seed must be a non-negative int, got -1"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic(**{"n_train": 10, "n_test": 10, **kwargs})


def test_load_dataset_synthetic():
    ds = load_dataset("synthetic", n_train=200, n_test=50, val_size=0.1, seed=1)
    assert isinstance(ds, Dataset) and ds.name == "synthetic"
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (180, 20, 50)
    assert np.bincount(ds.y_val).tolist() == [2] * 10
    assert ds.X_val.shape[1:] == (32, 32, 3) and ds.X_val.dtype == np.uint8
    assert ds.classes == list(CLASSES) and ds.num_classes == 10
    assert ds.image_shape == (32, 32, 3)
    assert ds.info["counts"] == {"train": 180, "val": 20, "test": 50}
    assert ds.info["image_shape"] == [32, 32, 3] and ds.info["source"] == "generated"
    assert "train=180" in repr(ds)
    again = load_dataset("synthetic", n_train=200, n_test=50, val_size=0.1, seed=1)
    assert np.array_equal(ds.X_train, again.X_train) and np.array_equal(ds.X_val, again.X_val)


def test_load_dataset_options_and_sizes():
    ds = load_dataset("synthetic", n_train=40, n_test=10, val_size=0, image_size=8, noise=0.0)
    assert ds.X_train.shape == (40, 8, 8, 3) and ds.X_val.shape == (0, 8, 8, 3)
    assert ds.info["noise"] == 0.0
    ds = load_dataset("synthetic", n_train=40, n_test=10, val_size=10)
    assert len(ds.y_val) == 10 and len(ds.y_train) == 30


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("mnist",), {}, "unknown dataset 'mnist'; choose one of synthetic, cifar10, folder"),
        (("synthetic",), {"colour": 1}, "unknown option.*colour.*allowed: noise"),
        (("synthetic",), {"val_size": 1.0}, "val_size .*got 1.0"),
        (("synthetic",), {"val_size": -3}, "val_size .*got -3"),
        (("synthetic",), {"n_train": 10, "val_size": 10}, "val_size=10"),
        (("synthetic",), {"seed": -2}, "seed must be a non-negative int, got -2"),
        (("synthetic",), {"n_train": -5}, "n_train must be a positive int or None, got -5"),
        (("synthetic",), {"image_size": "big"}, "image_size .*'big'"),
        (("synthetic",), {"root": "somewhere"}, "takes no root"),
        (("folder",), {}, "needs root"),
    ],
)
def test_load_dataset_rejects_bad_values(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset(*args, **kwargs)


def test_datasets_tuple():
    assert DATASETS == ("synthetic", "cifar10", "folder")


def test_difficulty_hurts_nearest_neighbours_more_than_a_linear_classifier():
    from pix2pred.knn import KNearestNeighbors

    def accuracies(difficulty):
        X_tr, y_tr, X_te, y_te, _ = make_synthetic(
            1000, 300, image_size=16, seed=0, difficulty=difficulty
        )
        knn = KNearestNeighbors(k=5).fit(X_tr, y_tr).score(X_te, y_te)
        return knn, _ridge_accuracy(X_tr, y_tr, X_te, y_te)

    knn_easy, linear_easy = accuracies(0.0)
    knn_hard, linear_hard = accuracies(1.0)
    assert knn_easy > 0.9 and knn_hard < knn_easy - 0.3  # lighting and clutter move distances
    assert linear_hard > 0.25 and knn_easy - knn_hard > linear_easy - linear_hard


@pytest.mark.parametrize("difficulty", [-0.5, 2.5, "hard", True])
def test_bad_difficulty(difficulty):
    with pytest.raises(ValueError, match="difficulty must be a float in"):
        make_synthetic(10, 10, difficulty=difficulty)


def test_load_dataset_passes_difficulty_on():
    ds = load_dataset("synthetic", n_train=40, n_test=10, val_size=0, difficulty=0.0)
    assert ds.info["difficulty"] == 0.0
    easy = make_synthetic(40, 10, difficulty=0.0)
    assert np.array_equal(ds.X_test, easy[2]) and not np.array_equal(
        ds.X_test, make_synthetic(40, 10)[2]
    )
    assert load_dataset("synthetic", n_train=40, n_test=10).info["difficulty"] == 1.0
