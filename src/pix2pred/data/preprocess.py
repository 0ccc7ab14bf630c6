"""Preprocessing fitted on training images and applied to every split.

This is the one place where the layout changes: images arrive as ``uint8`` ``(N, H, W, C)`` (or
float in ``[0, 1]``, same shape) and leave as ``float32`` in the layout the model wants:
``"nchw"`` for conv nets, ``"nhwc"``, or ``"flat"`` ``(N, H*W*C)`` for kNN and linear models.

Each preprocessor is a small estimator: ``fit(X) -> self`` learns statistics (attributes ending
in ``_``), ``transform(X)`` applies them, and ``state_dict()`` / ``from_state(state)`` move the
learned state as NumPy arrays and plain values, so a model file can store it without pickle.
"""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "LAYOUTS",
    "PREPROCESSORS",
    "ChannelNorm",
    "Identity",
    "MeanImage",
    "PCAWhitening",
    "Preprocessor",
    "ZCAWhitening",
    "channel_mean_std",
    "make_preprocessor",
    "preprocessor_from_state",
    "to_float",
]

LAYOUTS = ("nchw", "nhwc", "flat")


def _check_images(X: np.ndarray, name: str = "X") -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 4:
        raise ValueError(f"{name} must be images of shape (N, H, W, C), got shape {X.shape}")
    if X.dtype != np.uint8 and not np.issubdtype(X.dtype, np.floating):
        raise ValueError(f"{name} must be uint8 or float images, got dtype {X.dtype}")
    return X


def _check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    return layout


def _relayout(X: np.ndarray, layout: str) -> np.ndarray:
    """``(N, H, W, C)`` float32 to ``layout``, contiguous."""
    if layout == "nchw":
        return np.ascontiguousarray(X.transpose(0, 3, 1, 2))  # (N, C, H, W)
    if layout == "flat":
        return X.reshape(len(X), -1)  # (N, H*W*C), pixel-major, channels fastest
    return X


def to_float(X: np.ndarray, layout: str = "nchw") -> np.ndarray:
    """Images as float32 in ``layout``.

    Parameters
    ----------
    X : ndarray of shape (N, H, W, C)
        ``uint8`` images (scaled by 1/255 into ``[0, 1]``) or float images (kept as they are).
    layout : {"nchw", "nhwc", "flat"}

    Returns
    -------
    ndarray, float32
        Shape ``(N, C, H, W)``, ``(N, H, W, C)`` or ``(N, H*W*C)``.
    """
    X = _check_images(X)
    _check_layout(layout)
    if X.dtype == np.uint8:
        Xf = X.astype(np.float32)
        Xf *= np.float32(1.0 / 255.0)
    else:
        Xf = X.astype(np.float32, copy=False)
    return _relayout(Xf, layout)


class Preprocessor:
    """Base class: stores ``layout``, checks fitted state and image shape, (de)serialises."""

    name: ClassVar[str] = ""
    _state_arrays: ClassVar[tuple[str, ...]] = ()
    _in_place: ClassVar[bool] = False  # whether _transform changes its argument

    def __init__(self, layout: str = "nchw") -> None:
        self.layout = layout

    def _params(self) -> dict[str, Any]:
        return {"layout": self.layout}

    def fit(self, X: np.ndarray) -> Preprocessor:
        """Learn statistics from training images ``X`` of shape (N, H, W, C); returns self."""
        _check_layout(self.layout)
        X = _check_images(X)
        if len(X) == 0:
            raise ValueError("cannot fit a preprocessor on 0 images")
        self.image_shape_ = tuple(int(s) for s in X.shape[1:])
        self._fit(to_float(X, "nhwc"))
        return self

    def _fit(self, X: np.ndarray) -> None:
        pass

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Apply the training statistics to images ``X`` of shape (N, H, W, C); float32 out."""
        if not hasattr(self, "image_shape_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(X_train) first")
        X = _check_images(X)
        if X.shape[1:] != self.image_shape_:
            raise ValueError(
                f"images of shape {X.shape[1:]} do not match the fitted shape {self.image_shape_}"
            )
        Xf = to_float(X, "nhwc")
        if self._in_place and np.may_share_memory(Xf, X):  # float32 input: work on a copy
            Xf = Xf.copy()
        out = self._transform(Xf)
        return out.copy() if np.may_share_memory(out, X) else out  # never the caller's array

    def _transform(self, X: np.ndarray) -> np.ndarray:
        """``X`` (N, H, W, C) float32; this call's own array where ``_in_place`` is set."""
        return _relayout(X, self.layout)

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        """``fit(X)`` then ``transform(X)``."""
        return self.fit(X).transform(X)

    def state_dict(self) -> dict[str, Any]:
        """Hyperparameters (plain values) and fitted statistics (ndarrays), with ``name``."""
        if not hasattr(self, "image_shape_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(X_train) first")
        state: dict[str, Any] = {"name": self.name, **self._params()}
        state["image_shape"] = list(self.image_shape_)
        for key in self._state_arrays:
            state[key] = getattr(self, f"{key}_")
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Preprocessor:
        """Rebuild a fitted preprocessor from :meth:`state_dict` output."""
        if state.get("name") != cls.name:
            raise ValueError(f"state is for {state.get('name')!r}, not {cls.name!r}")
        params = {k: state[k] for k in ("layout", "eps", "n_components") if k in state}
        self = cls(**params)
        _check_layout(self.layout)
        self.image_shape_ = tuple(int(s) for s in state["image_shape"])
        for key in self._state_arrays:
            setattr(self, f"{key}_", np.asarray(state[key], dtype=np.float32))
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"


class Identity(Preprocessor):
    """Only :func:`to_float`: uint8 images to float32 in ``[0, 1]`` in ``layout``."""

    name = "none"


class MeanImage(Preprocessor):
    """Subtract the mean training image ``mean_`` of shape (H, W, C)."""

    name = "mean_image"
    _state_arrays = ("mean",)
    _in_place = True

    def _fit(self, X: np.ndarray) -> None:
        self.mean_ = X.mean(axis=0, dtype=np.float64).astype(np.float32)

    def _transform(self, X: np.ndarray) -> np.ndarray:
        X -= self.mean_
        return _relayout(X, self.layout)


class ChannelNorm(Preprocessor):
    """Standardise each channel with the training ``mean_`` and ``std_``, both of shape (C,).

    A channel that is constant in training (std 0) is only centred.
    """

    name = "channel"
    _state_arrays = ("mean", "std")
    _in_place = True

    def _fit(self, X: np.ndarray) -> None:
        mean, std = channel_mean_std(X)
        self.mean_ = mean.astype(np.float32)
        self.std_ = np.where(std > 0, std, 1.0).astype(np.float32)

    def _transform(self, X: np.ndarray) -> np.ndarray:
        X -= self.mean_
        X /= self.std_
        return _relayout(X, self.layout)


def channel_mean_std(X: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (biased) standard deviation (C,) of images ``X`` (N, H, W, C), float64.

    Any dtype (uint8 or float); ChannelNorm and the fast resnet's input normalisation share it.

    uint8 images are counted into a 256-bin histogram per channel, which gives both moments
    exactly (6x faster than the float path). Other input takes two passes over chunks of images
    in float64: the mean, then the squared deviations from it. ``X.std`` would build a float64
    copy of all of ``X`` (1.2 GB for CIFAR-10) and take three times as long.
    """
    if X.dtype == np.uint8:
        return _uint8_mean_std(X, chunk * 8)
    C = X.shape[-1]
    count = X[..., 0].size
    total = np.zeros(C)
    for i in range(0, len(X), chunk):
        total += X[i : i + chunk].reshape(-1, C).astype(np.float64).sum(axis=0)
    mean = total / count
    squares = np.zeros(C)
    for i in range(0, len(X), chunk):
        d = X[i : i + chunk].reshape(-1, C).astype(np.float64)
        d -= mean
        squares += np.einsum("ij,ij->j", d, d)
    return mean, np.sqrt(squares / count)


def _uint8_mean_std(X: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    C = X.shape[-1]
    counts = np.zeros((C, 256), dtype=np.int64)
    for i in range(0, len(X), chunk):
        pixels = X[i : i + chunk].reshape(-1, C)
        for c in range(C):
            counts[c] += np.bincount(pixels[:, c], minlength=256)
    values = np.arange(256.0)
    n = counts.sum(axis=1)
    mean = counts @ values / n
    return mean, np.sqrt(np.einsum("cv,cv->c", counts, (values - mean[:, None]) ** 2) / n)


class _Whitening(Preprocessor):
    """Shared fit: eigen-decomposition of the training pixel covariance, in float64."""

    def __init__(self, layout: str = "nchw", eps: float = 1e-2) -> None:
        super().__init__(layout)
        self.eps = eps

    def _params(self) -> dict[str, Any]:
        return {"layout": self.layout, "eps": self.eps}

    def _eig(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean ``(D,)``, eigenvalues ``(D,)`` descending and eigenvectors ``(D, D)`` as columns."""
        if isinstance(self.eps, bool) or not isinstance(self.eps, numbers.Real) or self.eps <= 0:
            raise ValueError(f"eps must be a positive float, got {self.eps!r}")
        Xf = X.reshape(len(X), -1).astype(np.float64)  # (N, D)
        mean = Xf.mean(axis=0)
        Xf -= mean
        cov = Xf.T @ Xf / len(Xf)  # (D, D), the 1/N covariance the whitened data will match
        S, U = np.linalg.eigh(cov)
        S, U = np.clip(S[::-1], 0.0, None), U[:, ::-1]  # descending; clip round-off negatives
        return mean, S, U


class PCAWhitening(_Whitening):
    """Project on the top ``n_components`` principal axes and scale each to unit variance.

    ``z = (x - mean_) @ components_`` with ``components_ = U_k / sqrt(S_k + eps)``; the output
    is always flat ``(N, n_components)`` (``layout`` must be ``"flat"``).
    """

    name = "pca"
    _state_arrays = ("mean", "components")

    def __init__(
        self, layout: str = "flat", eps: float = 1e-2, n_components: int | None = None
    ) -> None:
        super().__init__(layout, eps)
        self.n_components = n_components

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "n_components": self.n_components}

    def _fit(self, X: np.ndarray) -> None:
        if self.layout != "flat":
            raise ValueError(
                f"PCA whitening outputs flat features; layout must be 'flat', got {self.layout!r}"
            )
        D = int(np.prod(X.shape[1:]))
        k = self.n_components
        if k is not None and (
            isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= D
        ):
            raise ValueError(f"n_components must be an int in [1, {D}] or None, got {k!r}")
        mean, S, U = self._eig(X)
        k = D if k is None else int(k)
        self.mean_ = mean.astype(np.float32)
        self.components_ = (U[:, :k] / np.sqrt(S[:k] + self.eps)).astype(np.float32)  # (D, k)

    def _transform(self, X: np.ndarray) -> np.ndarray:
        return (X.reshape(len(X), -1) - self.mean_) @ self.components_  # (N, k)


class ZCAWhitening(_Whitening):
    """Whiten, then rotate back to pixel space: ``z = (x - mean_) @ W_``.

    ``W_ = U diag(1 / sqrt(S + eps)) U^T`` of shape (D, D), D = H*W*C; the output keeps the
    image shape, in ``layout``.
    """

    name = "zca"
    _state_arrays = ("mean", "W")

    def _fit(self, X: np.ndarray) -> None:
        mean, S, U = self._eig(X)
        self.mean_ = mean.astype(np.float32)
        self.W_ = ((U / np.sqrt(S + self.eps)) @ U.T).astype(np.float32)  # (D, D)

    def _transform(self, X: np.ndarray) -> np.ndarray:
        Z = (X.reshape(len(X), -1) - self.mean_) @ self.W_  # (N, D)
        return _relayout(Z.reshape(X.shape), self.layout)


PREPROCESSORS: dict[str, type[Preprocessor]] = {
    cls.name: cls for cls in (Identity, MeanImage, ChannelNorm, PCAWhitening, ZCAWhitening)
}


def make_preprocessor(name: str, **kwargs: Any) -> Preprocessor:
    """A preprocessor by name: ``"none"``, ``"mean_image"``, ``"channel"``, ``"pca"``, ``"zca"``.

    ``kwargs`` go to the class: ``layout`` for all; ``eps`` for ``"pca"`` and ``"zca"``;
    ``n_components`` for ``"pca"``.
    """
    if name not in PREPROCESSORS:
        raise ValueError(f"unknown preprocessor {name!r}; choose one of {', '.join(PREPROCESSORS)}")
    cls = PREPROCESSORS[name]
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"bad arguments for preprocessor {name!r}: {e}") from None


def preprocessor_from_state(state: dict[str, Any]) -> Preprocessor:
    """Rebuild any fitted preprocessor from its :meth:`Preprocessor.state_dict`."""
    name = state.get("name")
    if name not in PREPROCESSORS:
        raise ValueError(f"unknown preprocessor {name!r}; choose one of {', '.join(PREPROCESSORS)}")
    return PREPROCESSORS[name].from_state(state)
