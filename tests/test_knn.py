"""k-nearest neighbours: distance matrices, exact top-k search, estimator, cross-validation.

scipy's ``cdist`` and scikit-learn's brute-force ``KNeighborsClassifier`` are the oracles.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist
from sklearn.neighbors import KNeighborsClassifier

from pix2pred import _knn_kernels, knn_search
from pix2pred.knn import (
    CrossValidationResult,
    KNearestNeighbors,
    cross_validate_k,
    distances_no_loops,
    distances_one_loop,
    distances_two_loops,
    kneighbors,
    majority_vote,
    pairwise_distances,
)

SCIPY_METRIC = {"l1": "cityblock", "l2": "euclidean"}
SKLEARN_METRIC = {"l1": "manhattan", "l2": "euclidean"}
METHODS = [distances_two_loops, distances_one_loop, distances_no_loops, pairwise_distances]


def images(rng: np.random.Generator, n: int, shape=(6, 5, 3)) -> np.ndarray:
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8)


def reference(X_test, X_train, metric):
    """cdist on flattened float64 rows."""
    a = np.asarray(X_test, np.float64).reshape(len(X_test), -1)
    b = np.asarray(X_train, np.float64).reshape(len(X_train), -1)
    return cdist(a, b, SCIPY_METRIC[metric])


def stable_topk(dists, k):
    """Reference neighbours: by distance, equal distances by index."""
    idx = np.argsort(dists, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dists, idx, axis=1), idx


# ---------------------------------------------------------------------------------------------
# distance matrices


@pytest.mark.parametrize("metric", ["l1", "l2"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float64, np.float32])
def test_every_distance_method_equals_cdist(metric, dtype):
    rng = np.random.default_rng(0)
    X_test = images(rng, 7).astype(dtype)
    X_train = images(rng, 13).astype(dtype)
    expected = reference(X_test, X_train, metric)
    for method in METHODS:
        got = method(X_test, X_train, metric=metric)
        assert got.shape == (7, 13) and got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-9, err_msg=method.__name__)


@pytest.mark.parametrize("metric", ["l1", "l2"])
def test_fast_distances_are_exact_on_uint8_and_independent_of_chunk_size(metric):
    rng = np.random.default_rng(1)
    X_test, X_train = images(rng, 11, (8, 8, 3)), images(rng, 29, (8, 8, 3))
    expected = distances_two_loops(X_test, X_train, metric)
    for chunk_size in (1, 4, 11, 100):
        got = pairwise_distances(X_test, X_train, metric, chunk_size=chunk_size)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("width", ["host", 64, 32, 16, None])
def test_l1_uint8_kernel_every_vector_width_and_tail(width):
    needs = {64: "avx512bw", 32: "avx2", 16: "sse2"}.get(width)
    if needs is not None and needs not in _knn_kernels._host_features():
        pytest.skip(f"this CPU lacks {needs}")
    if _knn_kernels._SAD is not None and width == _knn_kernels._SAD[0]:
        pytest.skip("the host kernel is this width (tested as 'host')")
    rng = np.random.default_rng(2)
    # D = 2 * 64 + 9: whole vectors plus a tail; 9 x 7 rows: whole 4 x 4 tiles plus edges
    a = rng.integers(0, 256, (9, 137), dtype=np.uint8)
    b = rng.integers(0, 256, (7, 137), dtype=np.uint8)
    b[3] = 255 - a[2]  # large differences in both directions
    out = np.empty((9, 7), np.int32)
    kernel = _knn_kernels.l1_uint8 if width == "host" else _knn_kernels.l1_uint8_variant(width)
    kernel(a, b, out)
    expected = np.abs(a[:, None, :].astype(np.int64) - b[None, :, :]).sum(axis=2)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.skipif(not _knn_kernels.HAS_VNNI, reason="this CPU lacks AVX-512 VNNI")
def test_l2_uint8_vnni_kernel_is_exact_with_tail():
    rng = np.random.default_rng(12)
    a = rng.integers(0, 256, (9, 137), dtype=np.uint8)  # 2 whole vectors of 64 bytes + tail
    b = rng.integers(0, 256, (7, 137), dtype=np.uint8)
    b[3], b[4] = 255 - a[2], a[5]  # the largest distance, and zero
    out = np.empty((9, 7), np.int32)
    sq_b = (b.astype(np.int64) ** 2).sum(axis=1)
    _knn_kernels.l2_uint8(a, (b ^ 0x80).view(np.int8), sq_b, out)
    expected = ((a[:, None, :].astype(np.int64) - b[None, :, :]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(out, expected)


def test_distance_validation_messages():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(2, 5)), rng.normal(size=(3, 4))
    with pytest.raises(ValueError, match="5 features per row but X_train has 4"):
        pairwise_distances(a, b)
    with pytest.raises(ValueError, match="'cosine'"):
        distances_two_loops(a, a, metric="cosine")
    with pytest.raises(ValueError, match=r"got shape \(5,\)"):
        kneighbors(a[0], a, 1)
    with pytest.raises(ValueError, match="NaN or infinite"):
        pairwise_distances(np.full((1, 5), np.nan), a)
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        kneighbors(a, a, 1, chunk_size=0)
    with pytest.raises(ValueError, match=r"n_neighbors=3 exceeds the number of training .* \(2\)"):
        kneighbors(a, a, 3)


# ---------------------------------------------------------------------------------------------
# exact top-k search


@pytest.mark.parametrize("metric", ["l1", "l2"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_kneighbors_equals_stable_reference_for_any_chunk_size(metric, dtype):
    rng = np.random.default_rng(4)
    # few distinct values, so many distances tie and the order among them is tested
    X_train = rng.integers(0, 3, (60, 10)).astype(dtype)
    X_test = rng.integers(0, 3, (17, 10)).astype(dtype)
    want_d, want_i = stable_topk(reference(X_test, X_train, metric), 9)
    for chunk_size in (None, 1, 5, 17):
        d, i = kneighbors(X_test, X_train, 9, metric, chunk_size=chunk_size)
        np.testing.assert_array_equal(i, want_i)
        np.testing.assert_allclose(d, want_d, rtol=1e-14)


@pytest.mark.parametrize("metric", ["l1", "l2"])
def test_large_k_sorts_instead_of_inserting_with_the_same_order(metric, monkeypatch):
    rng = np.random.default_rng(14)
    X_train, X_test = images(rng, 90, (2, 2, 3)) // 64, images(rng, 6, (2, 2, 3)) // 64
    want_d, want_i = stable_topk(reference(X_test, X_train, metric), 30)
    monkeypatch.setattr(knn_search, "_INSERTION_MAX_K", 10)
    d, i = kneighbors(X_test, X_train, 30, metric, chunk_size=4)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(d, want_d, rtol=1e-14)


@pytest.mark.parametrize("metric", ["l1", "l2"])
def test_equal_distances_are_ordered_by_train_index(metric):
    rng = np.random.default_rng(5)
    X_train = images(rng, 12, (4, 4, 3))
    X_test = images(rng, 1, (4, 4, 3))
    X_train[[9, 2, 6]] = X_test[0]  # three exact copies: distance 0
    d, i = kneighbors(X_test, X_train, 4, metric)
    np.testing.assert_array_equal(i[0, :3], [2, 6, 9])
    np.testing.assert_array_equal(d[0, :3], 0.0)


@pytest.mark.parametrize("path", ["default", "gemm"])
def test_l2_is_exact_where_float32_cannot_tell_neighbours_apart(path):
    """Squared norms near 2e8 put float32's spacing at 16, so squared distances 1, 2, ...
    look alike in a float32 GEMM expansion; the search must still order them exactly, both
    on the default path (integer VNNI where the CPU has it) and the float32 GEMM path."""
    rng = np.random.default_rng(6)
    query = rng.integers(200, 250, 3072, dtype=np.uint8)
    n = 40
    X_train = np.tile(query, (n, 1))
    sq_dist = rng.permutation(np.arange(1, n + 1))
    for row, s in enumerate(sq_dist):  # s pixels differ by 1: squared distance s
        X_train[row, rng.choice(3072, s, replace=False)] += 1
    if path == "gemm":
        d, i = knn_search._l2_kneighbors_gemm(query[None], X_train, 10, chunk=1)
    else:
        d, i = kneighbors(query[None], X_train, 10, "l2")
    np.testing.assert_array_equal(i[0], np.argsort(sq_dist)[:10])
    np.testing.assert_array_equal(d[0], np.sqrt(np.arange(1, 11)))


@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_l2_gemm_path_equals_reference_with_ties(dtype):
    """The float32 GEMM + exact re-rank path, which uint8 input takes on CPUs without VNNI."""
    rng = np.random.default_rng(13)
    X_train = rng.integers(0, 3, (80, 24)).astype(dtype)
    X_test = rng.integers(0, 3, (9, 24)).astype(dtype)
    want_d, want_i = stable_topk(reference(X_test, X_train, "l2"), 12)
    d, i = knn_search._l2_kneighbors_gemm(X_test, X_train, 12, chunk=4)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(d, want_d, rtol=1e-14)


@pytest.mark.parametrize("metric", ["l1", "l2"])
def test_empty_test_set(metric):
    X_train = np.zeros((5, 4, 4, 3), np.uint8)
    d, i = kneighbors(np.zeros((0, 4, 4, 3), np.uint8), X_train, 2, metric)
    assert d.shape == (0, 2) and i.shape == (0, 2)
    assert pairwise_distances(np.zeros((0, 48)), X_train, metric).shape == (0, 5)
    model = KNearestNeighbors(metric=metric).fit(X_train, np.arange(5))
    assert model.predict(np.zeros((0, 4, 4, 3), np.uint8)).shape == (0,)


@settings(max_examples=25, deadline=None)
@given(
    n_test=st.integers(1, 9),
    n_train=st.integers(1, 30),
    D=st.integers(1, 70),
    metric=st.sampled_from(["l1", "l2"]),
    uint8=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_kneighbors_property(n_test, n_train, D, metric, uint8, seed, data):
    rng = np.random.default_rng(seed)
    k = data.draw(st.integers(1, n_train))
    chunk_size = data.draw(st.integers(1, n_test + 2))
    high = 256 if uint8 else 4  # floats from few values: ties
    X_train = rng.integers(0, high, (n_train, D)).astype(np.uint8 if uint8 else np.float64)
    X_test = rng.integers(0, high, (n_test, D)).astype(X_train.dtype)
    want_d, want_i = stable_topk(reference(X_test, X_train, metric), k)
    d, i = kneighbors(X_test, X_train, k, metric, chunk_size=chunk_size)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(d, want_d, rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# votes and the estimator against scikit-learn


def test_vote_ties_go_to_the_smaller_label():
    np.testing.assert_array_equal(
        majority_vote(np.array([[2, 0, 0, 2], [3, 1, 1, 3], [1, 2, 2, 2]]), 4), [0, 1, 2]
    )
    # 1-D points: the query 1.0 is at distance 1 from both 0.0 (label 7) and 2.0 (label 3)
    X = np.array([[0.0], [2.0], [10.0], [11.0]])
    model = KNearestNeighbors(k=2).fit(X, np.array([7, 3, -5, -5]))
    np.testing.assert_array_equal(model.kneighbors(np.array([[1.0]]))[1], [[0, 1]])
    np.testing.assert_array_equal(model.predict(np.array([[1.0], [10.4]])), [3, -5])
    np.testing.assert_array_equal(model.predict_proba(np.array([[1.0]])), [[0.0, 0.5, 0.5]])


@pytest.mark.parametrize("metric", ["l1", "l2"])
@pytest.mark.parametrize("k", [1, 2, 4, 7])
def test_predictions_equal_sklearn_brute(metric, k):
    rng = np.random.default_rng(7)
    X_train, X_test = rng.normal(size=(120, 12)), rng.normal(size=(50, 12))
    y_train = rng.integers(0, 5, 120) * 10 - 20  # labels -20, -10, ..., 20
    ours = KNearestNeighbors(k=k, metric=metric).fit(X_train, y_train)
    sk = KNeighborsClassifier(k, algorithm="brute", metric=SKLEARN_METRIC[metric])
    sk.fit(X_train, y_train)
    np.testing.assert_array_equal(ours.predict(X_test), sk.predict(X_test))
    np.testing.assert_allclose(ours.predict_proba(X_test), sk.predict_proba(X_test))
    d, i = ours.kneighbors(X_test)
    sk_d, sk_i = sk.kneighbors(X_test)
    np.testing.assert_array_equal(i, sk_i)
    np.testing.assert_allclose(d, sk_d, rtol=1e-10)
    assert ours.score(X_test, y_train[:50]) == sk.score(X_test, y_train[:50])
    if k in (2, 4):  # the vote ties really happened
        votes = np.sort(ours.predict_proba(X_test), axis=1)
        assert np.any(votes[:, -1] == votes[:, -2])


@pytest.mark.parametrize("metric", ["l1", "l2"])
def test_uint8_images_predict_like_sklearn_and_stay_uint8(metric):
    rng = np.random.default_rng(8)
    X_train, X_test = images(rng, 200, (8, 8, 3)), images(rng, 40, (8, 8, 3))
    y_train = rng.integers(0, 4, 200)
    model = KNearestNeighbors(k=3, metric=metric, chunk_size=16).fit(X_train, y_train)
    assert model.X_.dtype == np.uint8 and np.shares_memory(model.X_, X_train)
    sk = KNeighborsClassifier(3, algorithm="brute", metric=SKLEARN_METRIC[metric])
    sk.fit(X_train.reshape(200, -1), y_train)
    np.testing.assert_array_equal(model.predict(X_test), sk.predict(X_test.reshape(40, -1)))


def test_estimator_contract():
    rng = np.random.default_rng(9)
    X, y = rng.normal(size=(20, 3)), rng.integers(0, 3, 20)
    model = KNearestNeighbors(k=3, metric="l1")
    assert model.get_params() == {
        "k": 3, "metric": "l1", "chunk_size": None, "backend": "numpy", "device": "auto"
    }  # fmt: skip
    with pytest.raises(RuntimeError, match="not fitted yet; call fit"):
        model.predict(X)
    assert model.fit(X, y) is model
    np.testing.assert_array_equal(model.classes_, np.unique(y))
    np.testing.assert_array_equal(model.y_, y)
    assert model.set_params(k=5, chunk_size=4) is model and model.k == 5
    assert model.fit(X, y).predict(X).shape == (20,)
    with pytest.raises(ValueError, match="invalid parameter 'p'"):
        model.set_params(p=1)
    assert repr(model) == (
        "KNearestNeighbors(k=5, metric='l1', chunk_size=4, backend='numpy', device='auto')"
    )


@pytest.mark.parametrize(
    ("params", "X_shape", "y", "message"),
    [
        ({"k": 0}, (5, 2), np.zeros(5, int), "k must be >= 1, got 0"),
        ({"k": 2.5}, (5, 2), np.zeros(5, int), "k must be an int, got 2.5"),
        ({"k": 6}, (5, 2), np.zeros(5, int), r"k=6 exceeds the number of training .* \(5\)"),
        ({"metric": "cosine"}, (5, 2), np.zeros(5, int), "got 'cosine'"),
        ({"chunk_size": -1}, (5, 2), np.zeros(5, int), "chunk_size must be >= 1, got -1"),
        ({}, (5, 2), np.zeros(4, int), "5 rows vs 4 labels"),
        ({}, (5, 2), np.zeros((5, 1), int), r"y must have shape \(n_samples,\)"),
        ({}, (5, 2), np.zeros(5), "integer labels, got dtype float64"),
        ({}, (5,), np.zeros(5, int), r"got shape \(5,\)"),
        ({"backend": "jax"}, (5, 2), np.zeros(5, int), "backend must be one of .*got 'jax'"),
        ({"device": "cuda"}, (5, 2), np.zeros(5, int), "device='cuda' needs backend='torch'"),
    ],
)
def test_fit_validation_names_the_value(params, X_shape, y, message):
    with pytest.raises(ValueError, match=message):
        KNearestNeighbors(**params).fit(np.zeros(X_shape), y)


# ---------------------------------------------------------------------------------------------
# cross-validation


@pytest.mark.parametrize("metric", ["l1", "l2"])
def test_cross_validate_k_equals_refitting_each_fold(metric):
    rng = np.random.default_rng(10)
    X, y = images(rng, 53, (4, 4, 3)), rng.integers(0, 3, 53)
    ks = [1, 4, 2, 9]
    result = cross_validate_k(X, y, ks, n_folds=4, metric=metric, seed=3)
    assert isinstance(result, CrossValidationResult)
    folds = np.array_split(np.random.default_rng(3).permutation(53), 4)
    expected = np.empty((4, 4))
    for f, val in enumerate(folds):
        train = np.setdiff1d(np.arange(53), val)
        for t, k in enumerate(ks):
            model = KNearestNeighbors(k=k, metric=metric).fit(X[train], y[train])
            expected[t, f] = model.score(X[val], y[val])
    np.testing.assert_array_equal(result.ks, ks)
    np.testing.assert_allclose(result.fold_accuracies, expected)
    np.testing.assert_allclose(result.mean, expected.mean(axis=1))
    np.testing.assert_allclose(result.std, expected.std(axis=1))
    best = result.mean == result.mean.max()
    assert result.best_k == min(np.asarray(ks)[best])
    assert result.to_dict()["fold_accuracies"] == expected.tolist()


def test_cross_validate_k_validation():
    X, y = np.zeros((10, 2)), np.zeros(10, int)
    with pytest.raises(ValueError, match=r"n_folds must be in \[2, 10\].*got 1"):
        cross_validate_k(X, y, [1], n_folds=1)
    with pytest.raises(ValueError, match=r"k=9 in ks exceeds the smallest training split \(8"):
        cross_validate_k(X, y, [1, 9], n_folds=5)
    with pytest.raises(ValueError, match="every k in ks must be >= 1, got 0"):
        cross_validate_k(X, y, [0, 1])
    with pytest.raises(ValueError, match="non-empty sequence of ints"):
        cross_validate_k(X, y, [])
    with pytest.raises(ValueError, match=r"y must have shape \(10,\)"):
        cross_validate_k(X, y[:9], [1])


# ---------------------------------------------------------------------------------------------
# the torch backend: torch.cdist + topk, the same neighbours


@settings(max_examples=20, deadline=None)
@given(
    n_test=st.integers(1, 9),
    n_train=st.integers(1, 30),
    D=st.integers(1, 40),
    metric=st.sampled_from(["l1", "l2"]),
    uint8=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_torch_kneighbors_property(n_test, n_train, D, metric, uint8, seed, data):
    pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    k = data.draw(st.integers(1, n_train))
    chunk_size = data.draw(st.integers(1, n_test + 2))
    high = 256 if uint8 else 4  # floats from few values: ties, also at the k-th neighbour
    X_train = rng.integers(0, high, (n_train, D)).astype(np.uint8 if uint8 else np.float64)
    X_test = rng.integers(0, high, (n_test, D)).astype(X_train.dtype)
    want_d, want_i = stable_topk(reference(X_test, X_train, metric), k)
    d, i = kneighbors(X_test, X_train, k, metric, chunk_size, backend="torch", device="cpu")
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(d, want_d, rtol=1e-14)


@pytest.mark.parametrize("metric", ["l1", "l2"])
@pytest.mark.parametrize("k", [1, 4, 7])
def test_torch_backend_predicts_like_numpy(metric, k):
    pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    X_train, X_test = images(rng, 150, (8, 8, 3)), images(rng, 40, (8, 8, 3))
    y_train = rng.integers(0, 4, 150)
    ours = KNearestNeighbors(k=k, metric=metric).fit(X_train, y_train)
    torch_knn = KNearestNeighbors(k=k, metric=metric, chunk_size=16, backend="torch")
    torch_knn.fit(X_train, y_train)
    np.testing.assert_array_equal(torch_knn.predict(X_test), ours.predict(X_test))
    np.testing.assert_array_equal(torch_knn.predict_proba(X_test), ours.predict_proba(X_test))
    for got, want in zip(torch_knn.kneighbors(X_test), ours.kneighbors(X_test), strict=True):
        np.testing.assert_array_equal(got, want)  # uint8: exact distances in both
    floats = rng.normal(size=(60, 10)), rng.normal(size=(20, 10))
    y = rng.integers(0, 3, 60)
    want = KNearestNeighbors(k=k, metric=metric).fit(floats[0], y).predict(floats[1])
    got = KNearestNeighbors(k=k, metric=metric, backend="torch").fit(floats[0], y)
    np.testing.assert_array_equal(got.predict(floats[1]), want)


def test_torch_cross_validation_equals_numpy():
    pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    X, y = images(rng, 90, (4, 4, 3)), rng.integers(0, 3, 90)
    want = cross_validate_k(X, y, [1, 3, 5], n_folds=3, metric="l1", seed=2)
    got = cross_validate_k(X, y, [1, 3, 5], n_folds=3, metric="l1", seed=2, backend="torch")
    np.testing.assert_array_equal(got.fold_accuracies, want.fold_accuracies)


def test_save_and_load_reproduce_predictions_and_refuse_other_files(tmp_path):
    from pix2pred.knn import KNearestNeighbors

    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(60, 4, 4, 3), dtype=np.uint8)
    y = rng.integers(0, 3, size=60) * 7
    knn = KNearestNeighbors(k=3, metric="l1").fit(X, y)
    knn.save(tmp_path / "knn")
    loaded = KNearestNeighbors.load(tmp_path / "knn")
    assert loaded.get_params() == knn.get_params()
    X_new = rng.integers(0, 256, size=(20, 4, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(loaded.predict(X_new), knn.predict(X_new))
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not a pix2pred model"):
        KNearestNeighbors.load(tmp_path / "other")
