"""scikit-learn style classifiers over the models: ``Softmax``, ``LinearSVM``, ``MLP``, ``CNN``.

Each estimator takes ``uint8`` images ``(N, H, W, C)`` (or ``(N, H, W)`` grayscale), fits a
preprocessing on the training images, trains a model with the :class:`~pix2pred.solver.Solver`
and keeps what it learned in attributes ending in ``_``. ``__init__`` stores its keywords
unchanged; they carry the same names as the command-line options. ``momentum=None`` leaves each
update rule its own: 0.9 for "sgd_momentum" and "nesterov", none for "sgd" and "rmsprop" (so
"sgd" stays plain SGD unless a momentum is asked for, as in ``torch.optim.SGD``).

``backend="numpy"`` trains the hand-written models of `pix2pred.nn_numpy`; ``backend="torch"``
their `pix2pred.nn_torch` twins with `pix2pred.nn_torch.train.TorchSolver`, on ``device``
(``"auto"``: CUDA, then MPS, then the CPU), with mixed precision on CUDA (``amp``) and an
optional ``deterministic`` mode. Same keywords, same preprocessing, same Solver options; from
the same weights both backends predict the same.

``save(path)`` writes ``path.safetensors`` (parameters and buffers under the numpy names and
layout, plus the preprocessing arrays; no pickle) beside ``path.json`` (architecture, classes,
preprocessing, training history). The file does not depend on the backend that trained it:
``Class.load(path, backend=...)`` rebuilds an estimator in either backend that predicts the same.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from pix2pred.checkpoint import (
    load_safetensors,
    read_json,
    read_safetensors_metadata,
    save_safetensors,
    write_json,
)

FORMAT = "pix2pred-model"
FORMAT_VERSION = 2
BACKENDS = ("numpy", "torch")
WEIGHTS_SUFFIX = ".safetensors"


class NotFittedError(RuntimeError):
    """An estimator was used before ``fit``."""


def model_files(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(weights .safetensors, metadata .json)`` for a model path with or without a suffix."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (WEIGHTS_SUFFIX, ".json") else path
    return stem.with_name(stem.name + WEIGHTS_SUFFIX), stem.with_name(stem.name + ".json")


def _torch_train() -> Any:
    """`pix2pred.nn_torch.train`, or a clear error when PyTorch is not installed."""
    try:
        from pix2pred.nn_torch import train
    except ImportError as e:
        raise ImportError(f"backend='torch' needs PyTorch ({e}); install torch") from e
    return train


def _check_images(X: Any, name: str = "X") -> np.ndarray:
    X = np.asarray(X)
    if X.ndim == 3:
        X = X[..., None]
    if X.ndim != 4:
        raise ValueError(
            f"{name} must be images of shape (N, H, W, C) or (N, H, W), got shape {X.shape}"
        )
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if X.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 images (0..255), got dtype {X.dtype}")
    return X


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, C)`` scores, computed stably in float64."""
    z = scores.astype(np.float64) - scores.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


class NeuralClassifier:
    """Shared machinery of the trained classifiers; use a subclass."""

    _has_proba: ClassVar[bool] = True

    # ------------------------------------------------------------------ scikit-learn contract
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor keywords and their current values."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Self:
        """Set constructor keywords; unknown names raise ``ValueError``."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"{type(self).__name__} has no parameter {name!r}; valid: {', '.join(valid)}"
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {
            k: p.default for k, p in inspect.signature(type(self).__init__).parameters.items()
        }
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if defaults.get(k) != v]
        return f"{type(self).__name__}({', '.join(changed)})"

    # ------------------------------------------------------------------ what subclasses define
    def _model_config(self) -> tuple[str, dict[str, Any]]:
        """``(registry name, architecture keywords)`` of the model to build."""
        raise NotImplementedError

    # ------------------------------------------------------------------ training
    def _validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "numpy" and self.device not in ("auto", "cpu"):
            raise ValueError(
                f"device={self.device!r} needs backend='torch' (numpy runs on the cpu)"
            )
        if self.backend == "numpy" and self.amp not in ("auto", "none", None):
            raise ValueError(f"amp={self.amp!r} needs backend='torch'")
        if self.backend == "torch":
            train = _torch_train()
            if self.amp not in (*train.AMP_MODES, None):
                raise ValueError(
                    f"amp must be one of {', '.join(train.AMP_MODES)}, got {self.amp!r}"
                )
            train.choose_device(self.device)  # refuses a device this machine does not have
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.momentum is not None and not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1) or None, got {self.momentum!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")

    def _build_model(self, input_shape: tuple[int, int, int], num_classes: int) -> Any:
        name, arch = self._model_config()
        config = {"input_shape": input_shape, "num_classes": num_classes, "init": self.init}
        config |= {"dtype": self.dtype, "seed": self.seed, **arch}
        return _build(self.backend, name, config, self.device)

    def _to_model_input(self, X: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, C)`` → the model's float ``(N, C, H, W)`` after preprocessing."""
        Xf = self.preprocessor_.transform(X)
        return np.ascontiguousarray(Xf, dtype=self.dtype)

    def fit(
        self,
        X: Any,
        y: Any,
        X_val: Any | None = None,
        y_val: Any | None = None,
        *,
        resume: bool = False,
    ) -> Self:
        """Train on images ``X`` ``(N, H, W, C)`` uint8 with labels ``y`` ``(N,)``.

        Without ``X_val``/``y_val``, a stratified ``val_size`` share of ``X`` is held out to pick
        the best epoch (``val_size=0`` trains on everything and keeps the last epoch).
        ``resume=True`` continues from the checkpoint in ``checkpoint_dir`` (same data, same
        keywords) to the same result as an uninterrupted run.
        """
        from pix2pred.data.split import train_val_split

        self._validate()
        X = _check_images(X)
        y = np.asarray(y)
        if y.shape != (X.shape[0],):
            raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got {y.shape}")
        self.classes_ = np.unique(y)
        if self.classes_.size < 2:
            raise ValueError(f"y must hold at least 2 classes, got {self.classes_.tolist()}")
        y_enc = np.searchsorted(self.classes_, y).astype(np.int64)
        if X_val is None:
            if y_val is not None:
                raise ValueError("y_val given without X_val")
            if self.val_size:
                X, y_enc, X_val, yv = train_val_split(X, y_enc, self.val_size, self.seed)
            else:
                X_val, yv = X[:0], y_enc[:0]
        else:
            X_val = _check_images(X_val, "X_val")
            yv = np.asarray(y_val)
            unknown = np.setdiff1d(yv, self.classes_)
            if unknown.size:
                raise ValueError(f"y_val has labels not seen in y: {unknown[:5].tolist()}")
            yv = np.searchsorted(self.classes_, yv).astype(np.int64)

        data = self._prepare(X, y_enc, X_val, yv, len(self.classes_))
        solver = self._solver(data, resume=resume)
        solver.train()
        self.history_ = solver.history()
        self.device_ = str(getattr(solver, "device", "cpu"))
        return self

    def _prepare(
        self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, n_classes: int
    ) -> dict[str, Any]:
        """Fit the preprocessing on X, build a fresh model, and return the Solver's arrays.

        ``y`` and ``y_val`` are class indices; an empty ``X_val`` means no validation set.
        """
        from pix2pred.data.preprocess import make_preprocessor

        self.preprocessor_ = make_preprocessor(self.preprocessing).fit(X)
        self.image_shape_ = tuple(int(s) for s in X.shape[1:])
        H, W, C = self.image_shape_
        self.model_ = self._build_model((C, H, W), n_classes)
        return {
            "X_train": self._to_model_input(X),
            "y_train": y.astype(np.int64),
            "X_val": self._to_model_input(X_val) if len(X_val) else None,
            "y_val": y_val.astype(np.int64) if len(X_val) else None,
        }

    def _solver(self, data: dict[str, Any], **overrides: Any) -> Any:
        """The backend's Solver over ``data`` with this estimator's options (``overrides`` win)."""
        from pix2pred.solver import Solver

        solver_class, options = Solver, {}
        if self.backend == "torch":
            solver_class = _torch_train().TorchSolver
            options = {"amp": self.amp, "deterministic": self.deterministic}
        options |= {
            "optimizer": self.optimizer,
            "lr": self.lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "schedule": self.schedule,
            "warmup_epochs": self.warmup_epochs,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "augment": self.augment,
            "early_stopping": self.early_stopping,
            "seed": self.seed,
            "checkpoint_dir": self.checkpoint_dir,
            "progress": self.progress,
            "verbose": self.progress,
        }
        return solver_class(self.model_, data, **(options | overrides))

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(X, y) or load(path) first"
            )

    def decision_function(self, X: Any, batch_size: int = 256) -> np.ndarray:
        """Class scores ``(N, n_classes)`` of images ``X`` ``(N, H, W, C)``."""
        self._check_fitted()
        X = _check_images(X)
        if X.shape[1:] != self.image_shape_:
            raise ValueError(
                f"X has images of shape {X.shape[1:]}, the model was trained on {self.image_shape_}"
            )
        chunks = [
            _scores(self.model_, self._to_model_input(X[i : i + batch_size]))
            for i in range(0, len(X), batch_size)
        ]
        return np.concatenate(chunks).astype(np.float64)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(N, n_classes)``, columns ordered as ``classes_``."""
        if not self._has_proba:
            raise AttributeError(
                f"{type(self).__name__} has no predict_proba: hinge-loss scores are not "
                "probabilities; use decision_function"
            )
        return softmax(self.decision_function(X))

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels ``(N,)``."""
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def score(self, X: Any, y: Any) -> float:
        """Accuracy on images ``X`` with labels ``y``."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the fitted model's parameters then buffers as numpy arrays, by name.

        The numpy layout (``W1 (D, M)`` for affine weights) whatever the backend: the arrays
        that `save` writes and that either backend's model loads.
        """
        self._check_fitted()
        if self.backend == "torch":
            from pix2pred.nn_torch.transfer import state_dict_numpy

            return state_dict_numpy(self.model_)
        return {k: v.copy() for k, v in {**self.model_.params, **self.model_.buffers}.items()}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path.safetensors`` (weights) and ``path.json`` (metadata); return the JSON.

        The weights are ``param/<name>`` and ``buffer/<name>`` (see `state_dict`) and the
        preprocessing's arrays ``pre/<name>``; the backend that trained them does not matter.
        """
        self._check_fitted()
        weights, meta = model_files(path)
        state = self.state_dict()
        params = set(self._model_params())
        arrays = {f"param/{k}" if k in params else f"buffer/{k}": v for k, v in state.items()}
        pre_arrays, pre_values = _split_state(self.preprocessor_.state_dict())
        arrays |= {f"pre/{k}": v for k, v in pre_arrays.items()}
        name, _ = self._model_config()
        metadata = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "estimator": type(self).__name__,
            "params": self.get_params(),
            "model": {"name": name, "config": self.model_.config()},
            "classes": self.classes_.tolist(),
            "image_shape": list(self.image_shape_),
            "preprocessing": {"name": self.preprocessing, "values": pre_values},
            "history": getattr(self, "history_", {}),
        }
        save_safetensors(weights, arrays, metadata={"format": FORMAT})
        write_json(meta, metadata)
        return meta

    def _model_params(self) -> list[str]:
        """Names of the fitted model's trainable parameters."""
        if self.backend == "torch":
            return [name for name, _ in self.model_.named_parameters()]
        return list(self.model_.params)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        backend: str | None = None,
        device: str | None = None,
    ) -> NeuralClassifier:
        """Rebuild a saved estimator; refuses files that are not pix2pred models.

        Parameters
        ----------
        path : the path given to `save` (with or without ``.json``/``.safetensors``)
        backend : {"numpy", "torch"}, optional
            The backend of the rebuilt model (default: the one that trained it); the saved
            weights load into either.
        device : str, optional
            Where a torch model goes (default ``"auto"``: CUDA, then MPS, then the CPU; the
            device it was trained on is not reused, as this machine may not have it).
        """
        from pix2pred.data.preprocess import preprocessor_from_state

        weights, meta_path = model_files(path)
        meta = read_json(meta_path)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: not a pix2pred model file")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{meta_path}: model format version {meta.get('format_version')!r} is not "
                f"supported (expected {FORMAT_VERSION})"
            )
        target = _ESTIMATORS.get(meta["estimator"])
        if target is None or (cls is not NeuralClassifier and not issubclass(target, cls)):
            raise ValueError(
                f"{meta_path}: holds a {meta['estimator']}, not a {cls.__name__}; "
                f"use pix2pred.{meta['estimator']}.load"
            )
        if read_safetensors_metadata(weights).get("format") != FORMAT:
            raise ValueError(f"{weights}: not a pix2pred model weights file")
        arrays = load_safetensors(weights)
        params = dict(meta["params"])
        if backend is not None:
            params["backend"] = backend
        if device is not None:
            params["device"] = device
        est = target(**params)
        if est.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {est.backend!r}")
        if est.backend == "numpy" and device not in (None, "auto", "cpu"):
            raise ValueError(f"device={device!r} needs backend='torch' (numpy runs on the cpu)")
        est.classes_ = np.asarray(meta["classes"])
        est.image_shape_ = tuple(meta["image_shape"])
        est.history_ = meta.get("history", {})
        pre_state = dict(meta["preprocessing"]["values"])
        pre_state |= {k[4:]: v for k, v in arrays.items() if k.startswith("pre/")}
        est.preprocessor_ = preprocessor_from_state(pre_state)
        state = {
            k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(("param/", "buffer/"))
        }
        model = _build(
            est.backend, meta["model"]["name"], meta["model"]["config"], device or "auto"
        )
        _load_state(model, state, weights)
        est.model_ = model
        est.device_ = _device_of(model)
        return est


def _build(backend: str, name: str, config: dict[str, Any], device: str) -> Any:
    """The model ``name`` of ``backend`` built from ``config``; a torch one put on ``device``."""
    if backend == "torch":
        device = _torch_train().choose_device(device)
        from pix2pred.nn_torch.models import build_model

        return build_model(name, **config).to(device)
    from pix2pred.nn_numpy.models import build_model

    return build_model(name, **config)


def _is_torch(model: Any) -> bool:
    return hasattr(model, "named_parameters")


def _load_state(model: Any, state: dict[str, np.ndarray], source: Path) -> None:
    """Load a numpy state dict into a model of either backend, naming ``source`` on a mismatch."""
    if _is_torch(model):
        from pix2pred.nn_torch.transfer import load_state_dict_numpy

        try:
            load_state_dict_numpy(model, state)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None
        return
    stores = {
        **dict.fromkeys(model.params, model.params),
        **dict.fromkeys(model.buffers, model.buffers),
    }
    for name, store in stores.items():
        if name not in state:
            raise ValueError(f"{source}: missing array {name!r} of {type(model).__name__}")
        if state[name].shape != store[name].shape:
            raise ValueError(
                f"{source}: array {name!r} has shape {state[name].shape}, "
                f"{type(model).__name__} expects {store[name].shape}"
            )
    for name, store in stores.items():
        np.copyto(store[name], state[name], casting="unsafe")  # in place, cast to the model's dtype


def _scores(model: Any, X: np.ndarray) -> np.ndarray:
    """Eval-mode class scores ``(N, C)`` of a model of either backend for inputs ``X``."""
    if not _is_torch(model):
        return model.loss(X)
    import torch

    reference = next(model.parameters())
    with torch.no_grad():
        x = torch.as_tensor(X).to(reference.device, reference.dtype)
        return model.loss(x).cpu().numpy()


def _device_of(model: Any) -> str:
    return str(next(model.parameters()).device) if _is_torch(model) else "cpu"


def _store(est: NeuralClassifier, values: dict[str, Any]) -> None:
    """Store constructor keywords unchanged, as scikit-learn's contract asks."""
    for name in est._param_names():
        setattr(est, name, values[name])


def _split_state(state: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Separate a state dict into arrays (for the .npz) and plain values (for the JSON)."""
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    values = {k: v for k, v in state.items() if k not in arrays}
    return arrays, values


class Softmax(NeuralClassifier):
    """Linear classifier with the softmax (cross-entropy) loss: one template per class."""

    def __init__(
        self,
        *,
        epochs: int = 20,
        batch_size: int = 200,
        lr: float = 1e-3,
        weight_decay: float = 1e-3,
        optimizer: str = "sgd_momentum",
        momentum: float | None = None,
        schedule: str = "cosine",
        warmup_epochs: int = 0,
        augment: str | None = None,
        preprocessing: str = "mean_image",
        val_size: float | int = 0.1,
        early_stopping: int | None = None,
        init: str = "normal",
        dtype: str = "float32",
        seed: int = 0,
        backend: str = "numpy",
        device: str = "auto",
        amp: str | None = "auto",
        deterministic: bool = False,
        progress: bool = False,
        checkpoint_dir: str | None = None,
    ) -> None:
        _store(self, locals())

    def _model_config(self) -> tuple[str, dict[str, Any]]:
        return "linear", {"loss": "softmax"}


class LinearSVM(Softmax):
    """Linear classifier with the multiclass SVM (hinge) loss; no probabilities."""

    _has_proba = False

    def _model_config(self) -> tuple[str, dict[str, Any]]:
        return "linear", {"loss": "svm"}


class MLP(NeuralClassifier):
    """Fully-connected network: affine-(norm)-relu-(dropout) per hidden layer, then affine.

    One hidden layer without normalisation or dropout is the course's ``TwoLayerNet``.
    """

    def __init__(
        self,
        *,
        hidden: tuple[int, ...] | list[int] = (100,),
        normalization: str | None = None,
        dropout: float = 0.0,
        epochs: int = 20,
        batch_size: int = 200,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        optimizer: str = "adam",
        momentum: float | None = None,
        schedule: str = "cosine",
        warmup_epochs: int = 0,
        augment: str | None = None,
        preprocessing: str = "mean_image",
        val_size: float | int = 0.1,
        early_stopping: int | None = None,
        init: str = "he",
        dtype: str = "float32",
        seed: int = 0,
        backend: str = "numpy",
        device: str = "auto",
        amp: str | None = "auto",
        deterministic: bool = False,
        progress: bool = False,
        checkpoint_dir: str | None = None,
    ) -> None:
        _store(self, locals())

    def _model_config(self) -> tuple[str, dict[str, Any]]:
        hidden = [int(h) for h in np.atleast_1d(self.hidden)]
        if len(hidden) == 1 and self.normalization is None and not self.dropout:
            return "twolayer", {"hidden_dim": hidden[0]}
        return "fcnet", {
            "hidden_dims": hidden,
            "normalization": self.normalization,
            "dropout": self.dropout,
        }


class CNN(NeuralClassifier):
    """Convolutional network: the course's ``SimpleCNN`` by default, or a ``ConvNet`` spec.

    ``spec`` such as ``"64,64,M,128,128,M,256,M|256"`` builds a ConvNet: conv 3x3 blocks
    (with batch norm when ``batchnorm``), ``M`` max-pools, and after ``|`` the hidden fc layers.
    """

    def __init__(
        self,
        *,
        spec: str | None = None,
        batchnorm: bool = True,
        dropout: float = 0.0,
        epochs: int = 10,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 5e-4,
        optimizer: str = "adam",
        momentum: float | None = None,
        schedule: str = "cosine",
        warmup_epochs: int = 0,
        augment: str | None = "flip,crop",
        preprocessing: str = "channel",
        val_size: float | int = 0.1,
        early_stopping: int | None = None,
        init: str = "he",
        dtype: str = "float32",
        seed: int = 0,
        backend: str = "numpy",
        device: str = "auto",
        amp: str | None = "auto",
        deterministic: bool = False,
        progress: bool = False,
        checkpoint_dir: str | None = None,
    ) -> None:
        _store(self, locals())

    def _validate(self) -> None:
        super()._validate()
        if self.preprocessing == "pca":
            raise ValueError(
                "preprocessing='pca' gives flat features, which a CNN cannot take; "
                "use 'channel', 'mean_image' or 'zca'"
            )

    def _model_config(self) -> tuple[str, dict[str, Any]]:
        if self.spec is None:
            return "simplecnn", {}
        return "convnet", {"spec": self.spec, "batchnorm": self.batchnorm, "dropout": self.dropout}


_ESTIMATORS: dict[str, type[NeuralClassifier]] = {
    c.__name__: c for c in (Softmax, LinearSVM, MLP, CNN)
}
