"""The two backends behind one API: safetensors files, estimators fitted and loaded in either.

A model saved by one backend loads into the other and predicts the same (float64: to rounding;
float32: close); both backends fitted with the same keywords from the same seed reach the same
weights when nothing random differs between them (no augmentation, no dropout).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pix2pred.checkpoint import load_safetensors, read_safetensors_metadata, save_safetensors
from pix2pred.estimators import CNN, MLP, LinearSVM, NeuralClassifier, Softmax

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Tiny ops on a CPU shared with other jobs: OpenMP's spinning threads cost more than they give.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------- safetensors


def test_safetensors_round_trip_keeps_dtype_shape_and_metadata(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "W1": rng.standard_normal((3, 4)).astype(np.float32),
        "strided": np.arange(24.0).reshape(4, 6)[:, ::2],  # not contiguous
        "step": np.asarray(np.float32(7)),  # 0-d
        "perm": rng.permutation(5),
        "rng": np.arange(10, dtype=np.uint8),
        "flags": np.array([True, False]),
        "empty": np.zeros((0, 3)),
    }
    path = tmp_path / "w.safetensors"
    save_safetensors(path, arrays, metadata={"format": "test"})
    loaded = load_safetensors(path)
    assert set(loaded) == set(arrays)
    for name, value in arrays.items():
        assert loaded[name].dtype == value.dtype and loaded[name].shape == value.shape
        np.testing.assert_array_equal(loaded[name], value)
        assert loaded[name].flags.writeable
    assert read_safetensors_metadata(path) == {"format": "test"}


def test_safetensors_refuses_objects_and_foreign_files(tmp_path):
    with pytest.raises(TypeError, match="'bad' has dtype object"):
        save_safetensors(tmp_path / "w.safetensors", {"bad": np.array([{}], dtype=object)})
    assert not (tmp_path / "w.safetensors").exists()
    np.savez(tmp_path / "w.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match=r"w\.npz: not a safetensors file"):
        load_safetensors(tmp_path / "w.npz")
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors"):
        load_safetensors(tmp_path / "missing.safetensors")


# ----------------------------------------------------------------------------------- estimators


def images(n=90, size=8, seed=0):
    """Three classes of uint8 (size, size, 3) images: class k is bright in channel k."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.integers(0, 80, (n, size, size, 3))
    X[np.arange(n), :, :, y] += 150
    return X.astype(np.uint8), y


FAST = {"epochs": 2, "batch_size": 32, "val_size": 0.2}
ESTIMATORS = {
    "softmax": lambda **kw: Softmax(**FAST, **kw),
    "svm": lambda **kw: LinearSVM(**FAST, **kw),
    "mlp-batchnorm": lambda **kw: MLP(hidden=(12, 8), normalization="batchnorm", **FAST, **kw),
    "convnet": lambda **kw: CNN(spec="4,M|8", augment=None, **FAST, **kw),
    "simplecnn": lambda **kw: CNN(augment=None, **FAST, **kw),
}


@pytest.mark.parametrize("key", ESTIMATORS)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_saved_model_loads_in_the_other_backend_with_the_same_predictions(key, backend, tmp_path):
    X, y = images()
    X_new, _ = images(n=40, seed=1)
    other = "torch" if backend == "numpy" else "numpy"
    for dtype, rtol in (("float64", 1e-10), ("float32", 1e-4)):
        est = ESTIMATORS[key](backend=backend, dtype=dtype).fit(X, y)
        path = est.save(tmp_path / f"{key}-{dtype}")
        assert path.with_suffix(".safetensors").is_file()
        loaded = type(est).load(path, backend=other)  # e.g. CNN.load(path, backend="torch")
        assert type(loaded) is type(est) and loaded.backend == other
        assert type(NeuralClassifier.load(path, backend=other)) is type(est)
        expected = est.decision_function(X_new)
        np.testing.assert_allclose(loaded.decision_function(X_new), expected, rtol=rtol, atol=rtol)
        np.testing.assert_array_equal(loaded.predict(X_new), est.predict(X_new))
        for name, value in est.state_dict().items():
            np.testing.assert_array_equal(loaded.state_dict()[name], value)
        same = type(est).load(path)
        assert same.backend == backend
        if same.device_ == "cpu":
            np.testing.assert_array_equal(same.decision_function(X_new), expected)
        else:  # cuDNN may pick another convolution algorithm for the reloaded model
            np.testing.assert_allclose(same.decision_function(X_new), expected, rtol=1e-5)


@pytest.mark.parametrize("key", ["svm", "mlp-batchnorm", "convnet"])
def test_both_backends_fit_to_the_same_model(key):
    """float64, no augmentation, no dropout: the same initial weights, batches and updates."""
    X, y = images()
    options = {"dtype": "float64", "optimizer": "sgd_momentum", "lr": 0.01}
    fitted = {b: ESTIMATORS[key](backend=b, **options).fit(X, y) for b in ("numpy", "torch")}
    np.testing.assert_allclose(
        fitted["torch"].history_["loss"], fitted["numpy"].history_["loss"], rtol=1e-9
    )
    expected = fitted["numpy"].decision_function(X)
    np.testing.assert_allclose(fitted["torch"].decision_function(X), expected, rtol=1e-8)
    assert fitted["torch"].device_ == ("cuda:0" if torch.cuda.is_available() else "cpu")


def test_torch_estimator_keeps_the_keywords_and_its_model_on_the_device():
    X, y = images()
    est = MLP(
        hidden=(6,), backend="torch", device="cpu", amp="bf16", deterministic=True, lr=0.01,
        **{**FAST, "epochs": 8},
    )  # fmt: skip
    assert est.get_params()["device"] == "cpu" and est.get_params()["amp"] == "bf16"
    est.fit(X, y)
    assert isinstance(est.model_, torch.nn.Module)
    assert next(est.model_.parameters()).device.type == "cpu"
    assert est.predict_proba(X).shape == (len(X), 3)
    assert est.score(X, y) > 0.5
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "jax"}, "backend must be one of numpy, torch, got 'jax'"),
        ({"device": "cuda"}, "device='cuda' needs backend='torch'"),
        ({"amp": "bf16"}, "amp='bf16' needs backend='torch'"),
        ({"backend": "torch", "amp": "half"}, "amp must be one of auto, bf16, fp16, none"),
        ({"backend": "torch", "device": "tpu"}, "device must be 'auto', 'cpu'"),
    ],
)
def test_backend_keywords_are_validated_at_fit(kwargs, message):
    X, y = images(n=20)
    with pytest.raises(ValueError, match=message):
        Softmax(**kwargs).fit(X, y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_missing_gpu_is_named():
    X, y = images(n=20)
    with pytest.raises(ValueError, match="device 'cuda': CUDA is not available here"):
        Softmax(backend="torch", device="cuda").fit(X, y)


def test_load_refuses_files_that_are_not_ours(tmp_path):
    X, y = images()
    path = Softmax(**FAST).fit(X, y).save(tmp_path / "model")
    weights = path.with_suffix(".safetensors")
    good = weights.read_bytes()
    # A safetensors file of someone else's: the right format, not our marker.
    save_safetensors(weights, {"W": np.zeros((2, 2))})
    with pytest.raises(ValueError, match=r"model\.safetensors: not a pix2pred model weights file"):
        Softmax.load(path)
    weights.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(ValueError, match=r"model\.safetensors: not a safetensors file"):
        Softmax.load(path)
    weights.write_bytes(good)
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "format_version": 1}))
    with pytest.raises(ValueError, match="model format version 1 is not supported"):
        Softmax.load(path)
    path.write_text(json.dumps({"format": "keras"}))
    with pytest.raises(ValueError, match=r"model\.json: not a pix2pred model file"):
        Softmax.load(path)


def test_load_names_a_weight_that_does_not_fit(tmp_path):
    X, y = images()
    path = MLP(hidden=(6,), **FAST).fit(X, y).save(tmp_path / "model")
    weights = path.with_suffix(".safetensors")
    arrays = load_safetensors(weights)
    arrays["param/W1"] = arrays["param/W1"][:, :5]
    save_safetensors(weights, arrays, metadata=read_safetensors_metadata(weights))
    for backend in ("numpy", "torch"):
        with pytest.raises(ValueError, match=r"model\.safetensors: .*W1.*shape"):
            MLP.load(path, backend=backend)
    with pytest.raises(ValueError, match="device='cuda' needs backend='torch'"):
        MLP.load(path, backend="numpy", device="cuda")
