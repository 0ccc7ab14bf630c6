import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pix2pred.checkpoint import load_arrays, read_json, save_arrays, write_json
from pix2pred.data.preprocess import (
    PREPROCESSORS,
    ChannelNorm,
    MeanImage,
    PCAWhitening,
    ZCAWhitening,
    make_preprocessor,
    preprocessor_from_state,
    to_float,
)


def _images(n, seed, h=4, w=4, c=3):
    """Correlated uint8 images ``(n, h, w, c)``: smooth random mixtures, like real pixels."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(6, h * w * c))
    z = rng.normal(size=(n, 6)) @ basis + 0.3 * rng.normal(size=(n, h * w * c))
    return np.clip(128 + 20 * z, 0, 255).astype(np.uint8).reshape(n, h, w, c)


def _cov(Z):
    Z = Z.reshape(len(Z), -1).astype(np.float64)
    Z = Z - Z.mean(axis=0)
    return Z.T @ Z / len(Z)


def test_to_float_layouts():
    X = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    nchw = to_float(X)
    assert nchw.dtype == np.float32 and nchw.shape == (2, 3, 3, 4)
    assert nchw.flags.c_contiguous
    assert nchw[1, 2, 0, 3] == pytest.approx(X[1, 0, 3, 2] / 255)
    assert to_float(X, "nhwc").shape == (2, 3, 4, 3)
    flat = to_float(X, "flat")
    assert flat.shape == (2, 36) and np.allclose(flat * 255, X.reshape(2, -1))
    f = np.full((1, 2, 2, 1), 0.25, dtype=np.float64)  # float input keeps its values
    assert to_float(f, "flat").tolist() == [[0.25] * 4]
    with pytest.raises(ValueError, match="layout must be one of nchw, nhwc, flat, got 'chw'"):
        to_float(X, "chw")
    with pytest.raises(ValueError, match=r"shape \(N, H, W, C\), got shape \(3, 4\)"):
        to_float(np.zeros((3, 4), np.uint8))
    with pytest.raises(ValueError, match="dtype int32"):
        to_float(np.zeros((1, 2, 2, 3), np.int32))


def test_mean_image_uses_training_statistics():
    X_tr, X_val = _images(200, 0), _images(50, 1)
    p = MeanImage(layout="nhwc").fit(X_tr)
    assert p.mean_.shape == (4, 4, 3)
    assert np.allclose(p.transform(X_tr).mean(axis=0), 0, atol=1e-5)
    expected = X_val / 255.0 - X_tr.mean(axis=0) / 255.0
    assert np.allclose(p.transform(X_val), expected, atol=1e-5)
    assert p.transform(X_val).dtype == np.float32


def test_channel_norm():
    X_tr, X_val = _images(200, 0), _images(50, 1)
    p = ChannelNorm(layout="nchw")
    Z = p.fit_transform(X_tr)
    assert Z.shape == (200, 3, 4, 4)
    assert np.allclose(Z.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    assert np.allclose(Z.std(axis=(0, 2, 3)), 1, atol=1e-4)
    Xf = X_tr / 255.0
    mean, std = Xf.mean(axis=(0, 1, 2)), Xf.std(axis=(0, 1, 2))
    expected = ((X_val / 255.0 - mean) / std).transpose(0, 3, 1, 2)
    assert np.allclose(p.transform(X_val), expected, atol=1e-5)
    const = np.full((5, 2, 2, 1), 7, np.uint8)  # zero variance: centred, not divided by 0
    assert np.all(ChannelNorm().fit_transform(const) == 0)


@pytest.mark.parametrize("name", ["none", "mean_image", "channel"])
def test_transform_leaves_float32_input_alone(name):
    X = _images(20, 0).astype(np.float32) / 255
    before = X.copy()
    p = make_preprocessor(name, layout="nhwc").fit(X)
    out = p.transform(X)
    np.testing.assert_array_equal(X, before)
    assert not np.shares_memory(out, X)


def test_channel_statistics_in_chunks_equal_numpy_float64():
    from pix2pred.data.preprocess import channel_mean_std

    rng = np.random.default_rng(0)
    X = (1e3 + rng.standard_normal((50, 5, 4, 3)) * [1.0, 1e-2, 30.0]).astype(np.float32)
    images = rng.integers(0, 256, (50, 5, 4, 3), dtype=np.uint8)  # the fast resnet's input
    for data in (X, images):
        mean, std = channel_mean_std(data, chunk=2)  # chunks (of 2, uint8: 16) not dividing 50
        X64 = data.astype(np.float64)
        np.testing.assert_allclose(mean, X64.mean(axis=(0, 1, 2)), rtol=1e-14)
        np.testing.assert_allclose(std, X64.std(axis=(0, 1, 2)), rtol=1e-10)


@pytest.mark.parametrize("cls", [PCAWhitening, ZCAWhitening])
def test_whitened_training_data_has_identity_covariance(cls):
    X_tr = _images(500, 0)
    Z = cls(eps=1e-8).fit_transform(X_tr)
    D = 48
    assert Z.shape == ((500, D) if cls is PCAWhitening else (500, 3, 4, 4))
    assert np.allclose(_cov(Z), np.eye(D), atol=1e-3)
    # with a larger eps each principal variance S becomes exactly S / (S + eps)
    S = np.linalg.eigvalsh(_cov(X_tr / 255.0))
    got = np.linalg.eigvalsh(_cov(cls(eps=1e-3).fit_transform(X_tr)))
    assert np.allclose(got, np.sort(S / (S + 1e-3)), atol=1e-4)


def test_zca_stays_close_to_the_image_and_pca_keeps_top_components():
    X_tr, X_val = _images(500, 0), _images(100, 1)
    zca = ZCAWhitening(layout="nhwc", eps=1e-2).fit(X_tr)
    assert np.allclose(zca.W_, zca.W_.T, atol=1e-5)  # symmetric: no rotation away from pixels
    pca = PCAWhitening(n_components=6, eps=1e-6).fit(X_tr)
    Z = pca.transform(X_val)
    assert Z.shape == (100, 6)
    assert np.allclose(pca.transform(X_tr).var(axis=0), 1, atol=1e-3)
    # val is projected with the training mean and axes, not its own
    Xv = X_val.reshape(100, -1) / 255.0 - X_tr.reshape(500, -1).mean(axis=0) / 255.0
    assert np.allclose(Z, Xv @ pca.components_, atol=1e-4)


@pytest.mark.parametrize("name", list(PREPROCESSORS))
def test_state_dict_round_trip_without_pickle(tmp_path, name):
    X_tr, X_val = _images(120, 0), _images(30, 1)
    kwargs = {"layout": "flat"} if name == "pca" else {"layout": "nchw"}
    p = make_preprocessor(name, **kwargs).fit(X_tr)
    state = p.state_dict()
    assert state["name"] == name
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    plain = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    save_arrays(tmp_path / "prep.npz", arrays)
    write_json(tmp_path / "prep.json", plain)
    restored = preprocessor_from_state(
        {**read_json(tmp_path / "prep.json"), **load_arrays(tmp_path / "prep.npz")}
    )
    assert type(restored) is type(p) and repr(restored) == repr(p)
    assert np.array_equal(restored.transform(X_val), p.transform(X_val))


def test_errors():
    X = _images(10, 0)
    with pytest.raises(ValueError, match="unknown preprocessor 'whiten'; choose one of none, "):
        make_preprocessor("whiten")
    with pytest.raises(ValueError, match="bad arguments for preprocessor 'channel'"):
        make_preprocessor("channel", eps=0.1)
    with pytest.raises(RuntimeError, match="ZCAWhitening is not fitted"):
        ZCAWhitening().transform(X)
    with pytest.raises(RuntimeError, match="MeanImage is not fitted"):
        MeanImage().state_dict()
    p = MeanImage().fit(X)
    with pytest.raises(ValueError, match=r"\(8, 8, 3\) do not match the fitted shape \(4, 4, 3\)"):
        p.transform(_images(2, 0, h=8, w=8))
    with pytest.raises(ValueError, match="layout must be 'flat', got 'nchw'"):
        PCAWhitening(layout="nchw").fit(X)
    with pytest.raises(ValueError, match=r"n_components must be an int in \[1, 48\].*got 49"):
        PCAWhitening(n_components=49).fit(X)
    with pytest.raises(ValueError, match="eps must be a positive float, got 0"):
        ZCAWhitening(eps=0).fit(X)
    with pytest.raises(ValueError, match="state is for 'zca', not 'pca'"):
        PCAWhitening.from_state(ZCAWhitening().fit(X).state_dict())
    with pytest.raises(ValueError, match="cannot fit a preprocessor on 0 images"):
        MeanImage().fit(X[:0])


@settings(max_examples=25, deadline=None)
@given(
    X=hnp.arrays(
        np.uint8,
        st.tuples(st.integers(2, 6), st.integers(1, 3), st.integers(1, 3), st.sampled_from([1, 3])),
    ),
    layout=st.sampled_from(["nchw", "nhwc", "flat"]),
)
def test_layouts_hold_the_same_values(X, layout):
    """Every preprocessor's layouts are transposes of one another."""
    for name in ("none", "mean_image", "channel"):
        nhwc = make_preprocessor(name, layout="nhwc").fit_transform(X)
        out = make_preprocessor(name, layout=layout).fit_transform(X)
        if layout == "nchw":
            out = out.transpose(0, 2, 3, 1)
        assert np.array_equal(out.reshape(nhwc.shape), nhwc)
