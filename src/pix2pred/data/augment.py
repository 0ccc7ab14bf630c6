"""Random data augmentation on float ``(N, C, H, W)`` batches, vectorised and seeded.

Each transform draws one set of random numbers per image from the ``numpy.random.Generator`` it
is given, so the same generator state gives the same batch. Inputs are never modified; the
output keeps the input's shape and dtype. :func:`make_augment` turns a short spec such as
``"flip,crop"`` into one ``augment(X, rng) -> X`` callable for the Solver.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "AUGMENT_TOKENS",
    "Augment",
    "color_jitter",
    "make_augment",
    "random_crop",
    "random_flip",
]

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]

# Grey-level weights of ITU-R 601-2, the ones torchvision's rgb_to_grayscale uses.
_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114])


def _check_batch(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 4:
        raise ValueError(f"expected a batch of shape (N, C, H, W), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.floating):
        raise ValueError(f"expected a floating-point batch, got dtype {X.dtype}")
    return X


def _check_rng(rng: np.random.Generator) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")


def random_flip(X: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror each image left-right with probability ``p``.

    Parameters
    ----------
    X : ndarray of shape (N, C, H, W)
        Float images.
    rng : numpy.random.Generator
        Source of the coin flips (one draw per image, whatever ``p``).
    p : float
        Probability of flipping an image, in [0, 1].

    Returns
    -------
    ndarray of shape (N, C, H, W)
        A new array; flipped images reversed along W.
    """
    X = _check_batch(X)
    _check_rng(rng)
    if not (isinstance(p, numbers.Real) and 0.0 <= p <= 1.0):
        raise ValueError(f"flip probability p must be in [0, 1], got {p!r}")
    flip = rng.random(X.shape[0]) < p  # (N,)
    return np.where(flip[:, None, None, None], X[..., ::-1], X)


def random_crop(
    X: np.ndarray, rng: np.random.Generator, padding: int = 4, mode: str = "constant"
) -> np.ndarray:
    """Pad each image by ``padding`` pixels and crop it back to ``(H, W)`` at a random offset.

    Parameters
    ----------
    X : ndarray of shape (N, C, H, W)
        Float images.
    rng : numpy.random.Generator
        Source of the offsets: one (row, column) pair per image, each in [0, 2 * padding].
    padding : int
        Pixels added on every side; 0 returns a copy of ``X``.
    mode : {"constant", "reflect"}
        Zero padding, or mirror padding without repeating the edge (``torch`` ``"reflect"``).

    Returns
    -------
    ndarray of shape (N, C, H, W)
        Each image shifted by up to ``padding`` pixels in each direction, with padding showing
        at the borders it uncovered.
    """
    X = _check_batch(X)
    _check_rng(rng)
    if isinstance(padding, bool) or not isinstance(padding, numbers.Integral) or padding < 0:
        raise ValueError(f"padding must be a non-negative integer, got {padding!r}")
    if mode not in ("constant", "reflect"):
        raise ValueError(f"padding mode must be 'constant' or 'reflect', got {mode!r}")
    N, _, H, W = X.shape
    if mode == "reflect" and padding >= min(H, W):
        raise ValueError(f"reflect padding {padding} must be smaller than the image ({H}x{W})")
    k = 2 * int(padding) + 1
    offsets = rng.integers(0, k, size=(2, N))  # (2, N): row and column offset of each image
    if padding == 0:
        return X.copy()
    pad = int(padding)
    padded = np.pad(X, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode=mode)
    # (N, C, k, k, H, W) view: every crop position of every image, without copying.
    windows = sliding_window_view(padded, (H, W), axis=(2, 3))
    # Advanced indices around a slice put the indexed axis first: (N, C, H, W).
    return windows[np.arange(N), :, offsets[0], offsets[1]]


def _gray(X: np.ndarray) -> np.ndarray:
    """Grey level of each pixel, ``(N, 1, H, W)``: ITU-R 601-2 for 3 channels, else the mean."""
    if X.shape[1] == 3:
        w = _GRAY_WEIGHTS.astype(X.dtype)
        return (w[0] * X[:, 0] + w[1] * X[:, 1] + w[2] * X[:, 2])[:, None]
    return X.mean(axis=1, keepdims=True)


def _factors(rng: np.random.Generator, strength: float, n: int, dtype: np.dtype) -> np.ndarray:
    low = max(0.0, 1.0 - strength)
    return rng.uniform(low, 1.0 + strength, size=n).astype(dtype)[:, None, None, None]


def color_jitter(
    X: np.ndarray,
    rng: np.random.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
) -> np.ndarray:
    """Scale brightness, contrast and saturation of each image by random factors.

    Each factor is drawn uniformly from ``[max(0, 1 - s), 1 + s]`` per image, as torchvision's
    ``ColorJitter``; the three are applied in that fixed order (torchvision shuffles it). A
    strength of 0 leaves that property unchanged.

    - brightness: ``x * b``
    - contrast: ``c * x + (1 - c) * mean(gray(x))``, the image's mean grey level
    - saturation: ``s * x + (1 - s) * gray(x)``, per pixel

    NOTE: values are not clipped, since the batch is usually already normalised; on a
    mean-subtracted batch the brightness factor scales contrast around the mean image.

    Parameters
    ----------
    X : ndarray of shape (N, C, H, W)
        Float images. Grey level: ITU-R 601-2 weights for C = 3, the channel mean otherwise.
    rng : numpy.random.Generator
        Source of the factors: three draws per image, in the order above.
    brightness, contrast, saturation : float
        Non-negative strengths.

    Returns
    -------
    ndarray of shape (N, C, H, W)
    """
    X = _check_batch(X)
    _check_rng(rng)
    strengths = {"brightness": brightness, "contrast": contrast, "saturation": saturation}
    for name, value in strengths.items():
        if not (isinstance(value, numbers.Real) and value >= 0.0):
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    N = X.shape[0]
    b = _factors(rng, brightness, N, X.dtype)  # (N, 1, 1, 1)
    c = _factors(rng, contrast, N, X.dtype)
    s = _factors(rng, saturation, N, X.dtype)
    out = X * b
    # The mean grey level is the grey level of the channel means: no full grey image needed.
    mean = _gray(out.mean(axis=(2, 3), keepdims=True))  # (N, 1, 1, 1)
    out *= c
    out += (1 - c) * mean
    gray = _gray(out)  # (N, 1, H, W)
    out *= s
    out += (1 - s) * gray
    return out.astype(X.dtype, copy=False)


def _flip_transform(value: float | None) -> Augment:
    p = 0.5 if value is None else value
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"flip probability must be in [0, 1], got {p!r} in the augment spec")
    return lambda X, rng: random_flip(X, rng, p=p)


def _crop_transform(value: float | None) -> Augment:
    padding = 4 if value is None else value
    if not (math.isfinite(padding) and padding >= 0 and padding == int(padding)):
        raise ValueError(
            f"crop padding must be a non-negative integer, got {padding!r} in the augment spec"
        )
    padding = int(padding)
    return lambda X, rng: random_crop(X, rng, padding=padding)


def _jitter_transform(value: float | None) -> Augment:
    s = 0.4 if value is None else value
    if not s >= 0:
        raise ValueError(f"jitter strength must be non-negative, got {s!r} in the augment spec")
    return lambda X, rng: color_jitter(X, rng, brightness=s, contrast=s, saturation=s)


_TRANSFORMS: dict[str, Callable[[float | None], Augment]] = {
    "flip": _flip_transform,
    "crop": _crop_transform,
    "jitter": _jitter_transform,
}

AUGMENT_TOKENS: tuple[str, ...] = tuple(_TRANSFORMS)


def make_augment(spec: str | None) -> Augment | None:
    """Parse an augmentation spec into one ``augment(X, rng) -> X`` callable.

    Parameters
    ----------
    spec : str or None
        Comma-separated tokens applied in the order written: ``"flip"`` (p = 0.5), ``"crop"``
        (zero padding 4), ``"jitter"`` (brightness, contrast and saturation 0.4). A token may
        carry its parameter after ``=``: ``"flip=0.3"``, ``"crop=2"``, ``"jitter=0.2"``.
        ``None``, ``""`` and ``"none"`` mean no augmentation.

    Returns
    -------
    callable or None
        ``augment(X, rng)`` mapping ``(N, C, H, W)`` to ``(N, C, H, W)``, or ``None`` when the
        spec asks for nothing.

    Raises
    ------
    ValueError
        On an unknown or repeated token, or a malformed parameter; the message names it.
    """
    if spec is None:
        return None
    if not isinstance(spec, str):
        raise TypeError(f"augment spec must be a string or None, got {type(spec).__name__}")
    if spec.strip().lower() in ("", "none"):
        return None
    transforms: list[Augment] = []
    seen: set[str] = set()
    for raw in spec.split(","):
        token = raw.strip().lower()
        name, sep, arg = token.partition("=")
        name = name.strip()
        if name not in _TRANSFORMS:
            raise ValueError(
                f"Unknown augmentation {raw.strip()!r} in {spec!r}; "
                f"expected comma-separated {', '.join(AUGMENT_TOKENS)}"
            )
        if name in seen:
            raise ValueError(f"Augmentation {name!r} appears twice in {spec!r}")
        seen.add(name)
        value: float | None = None
        if sep:
            try:
                value = float(arg)
            except ValueError:
                raise ValueError(
                    f"Augmentation {raw.strip()!r} in {spec!r}: {arg.strip()!r} is not a number"
                ) from None
        transforms.append(_TRANSFORMS[name](value))

    def augment(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for transform in transforms:
            X = transform(X, rng)
        return X

    return augment
