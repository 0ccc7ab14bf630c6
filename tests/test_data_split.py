import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pix2pred.data.split import (
    resolve_size,
    split_indices,
    stratified_indices,
    stratified_subsample,
    train_val_split,
)


def _data(counts, seed=0):
    y = np.repeat(np.arange(len(counts)), counts)
    y = np.random.default_rng(seed).permutation(y)
    X = np.arange(len(y) * 6, dtype=np.uint8).reshape(len(y), 1, 2, 3)
    X[:, 0, 0, 0] = np.arange(len(y))  # row id, to trace rows through the split
    return X, y


def test_train_val_split_is_a_stratified_partition():
    X, y = _data([50, 30, 20])
    X_tr, y_tr, X_val, y_val = train_val_split(X, y, 0.1, seed=3)
    assert np.bincount(y_val).tolist() == [5, 3, 2]
    assert np.bincount(y_tr).tolist() == [45, 27, 18]
    ids = np.concatenate([X_tr[:, 0, 0, 0], X_val[:, 0, 0, 0]])
    assert sorted(ids.tolist()) == list(range(100))
    # each row keeps its label, and the source order is preserved
    assert np.array_equal(y[X_tr[:, 0, 0, 0]], y_tr)
    assert np.all(np.diff(X_tr[:, 0, 0, 0].astype(int)) > 0)
    assert X_val.dtype == X.dtype and X_val.shape[1:] == X.shape[1:]


def test_train_val_split_count_and_zero():
    X, y = _data([10, 10])
    *_, X_val, y_val = train_val_split(X, y, 4, seed=0)
    assert np.bincount(y_val).tolist() == [2, 2]
    X_tr, y_tr, X_val, y_val = train_val_split(X, y, 0, seed=0)
    assert X_val.shape == (0, 1, 2, 3) and y_val.shape == (0,)
    assert np.array_equal(X_tr, X) and np.array_equal(y_tr, y)


def test_split_is_seeded():
    X, y = _data([40, 40, 40])
    a = train_val_split(X, y, 0.25, seed=7)
    b = train_val_split(X, y, 0.25, seed=7)
    c = train_val_split(X, y, 0.25, seed=8)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert not np.array_equal(a[2], c[2])


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, 100, -1, True, "0.1", None])
def test_bad_val_size_names_the_value(bad):
    X, y = _data([50, 50])
    with pytest.raises(ValueError, match="val_size") as e:
        train_val_split(X, y, bad, seed=0)
    assert repr(bad) in str(e.value) or str(bad) in str(e.value)


def test_mismatched_lengths():
    X, y = _data([5, 5])
    with pytest.raises(ValueError, match="10 rows vs 9 labels"):
        train_val_split(X, y[:-1], 0.2)


def test_stratified_subsample():
    X, y = _data([60, 30, 10])
    X_s, y_s = stratified_subsample(X, y, 20, seed=1)
    assert np.bincount(y_s).tolist() == [12, 6, 2]
    assert np.array_equal(y[X_s[:, 0, 0, 0]], y_s)
    with pytest.raises(ValueError, match="n=101"):
        stratified_subsample(X, y, 101)
    with pytest.raises(ValueError, match="n=0"):
        stratified_subsample(X, y, 0)


def test_resolve_size():
    assert resolve_size(0.1, 1000) == 100
    assert resolve_size(7, 1000) == 7
    with pytest.raises(ValueError, match="test_size"):
        resolve_size(1000, 1000, name="test_size")


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(0, 30), min_size=1, max_size=6).filter(lambda c: sum(c) > 0),
    frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_stratified_indices_are_proportional(counts, frac, seed):
    _, y = _data(counts, seed)
    n = int(frac * len(y))
    idx = stratified_indices(y, n, seed)
    assert len(idx) == n == len(np.unique(idx))
    got = np.bincount(y[idx], minlength=len(counts))
    assert np.all(np.abs(got - n * np.asarray(counts) / len(y)) < 1.0)
    if n == len(y):
        return  # a split must leave rows to keep
    keep, out = split_indices(y, n, seed)
    assert np.array_equal(out, idx)
    assert len(np.intersect1d(keep, out)) == 0 and len(keep) + len(out) == len(y)
