"""Why a model predicts what it does: attribution maps, class visualisations, fooling images.

Every function takes a numpy or torch pix2pred model (or a fitted estimator, whose ``model_``
is used) and images in the model's input layout, ``X`` float ``(N, C, H, W)`` (preprocessed;
flat models take the same layout). Gradients come from `pix2pred.introspect`: the numpy
backend's hand-written backward passes carried to the input, torch's autograd otherwise, never
finite differences. Both backends give the same maps on the same weights.

- `saliency`: ``max_c |d score_y / d x_c|`` per pixel (Simonyan et al., 2014).
- `smoothgrad`: saliency averaged over noisy copies of the image (Smilkov et al., 2017).
- `integrated_gradients`: ``(x - x') * mean gradient`` along the straight path from a baseline
  ``x'``; the attributions sum to ``score(x) - score(x')`` (Sundararajan et al., 2017).
- `gradcam`: the last conv layer's maps weighted by their mean gradient, rectified and
  upsampled to the image (Selvaraju et al., 2017); conv nets only.
- `occlusion`: how much the class probability drops when a grey patch hides each place
  (Zeiler and Fergus, 2014).
- `class_visualization`: an image that maximises one class's score, by gradient ascent with
  L2 decay, jitter and blur (seeded).
- `fooling_image`: a small change of an image that flips the prediction to a chosen class.
- `activation_maps`: every conv layer's rectified feature maps for an image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from pix2pred.estimators import softmax
from pix2pred.introspect import (
    conv_layer_names,
    input_gradient,
    layer_gradient,
    layer_outputs,
    scores,
    unwrap,
)

__all__ = [
    "Fooled",
    "activation_maps",
    "blur",
    "class_visualization",
    "fooling_image",
    "gradcam",
    "integrated_gradients",
    "occlusion",
    "resize_bilinear",
    "saliency",
    "smoothgrad",
    "softmax",
]

Projection = Callable[[np.ndarray], np.ndarray]


def _check(model: Any, X: Any, y: Any = None) -> tuple[Any, np.ndarray, np.ndarray | None]:
    """The backend model, ``X`` as (N, C, H, W) floats and ``y`` as int labels (N,)."""
    model = unwrap(model)
    X = np.asarray(X)
    if X.ndim != 4 or not np.issubdtype(X.dtype, np.floating):
        raise ValueError(
            f"X must be float images (N, C, H, W) in the model's input layout, got "
            f"{X.dtype} {X.shape}"
        )
    if y is None:
        return model, X, None
    y = np.broadcast_to(np.asarray(y), (len(X),))
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= model.num_classes:
        raise ValueError(f"y must hold class indices in [0, {model.num_classes}), got {y}")
    return model, X, y.astype(np.int64)


def _one_hot(y: np.ndarray, K: int) -> np.ndarray:
    d = np.zeros((len(y), K))
    d[np.arange(len(y)), y] = 1.0
    return d


def _class_gradient(model: Any, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores and ``d score_y / dX`` for each image's own class ``y``."""
    return input_gradient(model, X, _one_hot(y, model.num_classes))


def saliency(model: Any, X: Any, y: Any) -> np.ndarray:
    """Saliency maps ``max_c |d score_y / d X[:, c]|``, shape (N, H, W).

    ``y``: the class to explain per image, int (N,) or one int for all.
    """
    model, X, y = _check(model, X, y)
    return np.abs(_class_gradient(model, X, y)[1]).max(axis=1)


def smoothgrad(
    model: Any, X: Any, y: Any, *, samples: int = 25, noise: float = 0.15, seed: int = 0
) -> np.ndarray:
    """SmoothGrad: the mean saliency map of ``samples`` noisy copies of each image, (N, H, W).

    The noise is Gaussian with standard deviation ``noise`` times each image's value range
    (the paper's 10-20 %), drawn from ``seed``; the same seed gives the same maps in both
    backends.
    """
    model, X, y = _check(model, X, y)
    if samples < 1 or noise < 0:
        raise ValueError(f"samples must be >= 1 and noise >= 0, got {samples} and {noise}")
    rng = np.random.default_rng(seed)
    sigma = noise * (X.max(axis=(1, 2, 3)) - X.min(axis=(1, 2, 3)))  # (N,)
    total = np.zeros((X.shape[0], *X.shape[2:]))
    for _ in range(samples):
        Xn = (X + rng.standard_normal(X.shape) * sigma[:, None, None, None]).astype(X.dtype)
        total += np.abs(_class_gradient(model, Xn, y)[1]).max(axis=1)
    return total / samples


def integrated_gradients(
    model: Any,
    X: Any,
    y: Any,
    *,
    baseline: Any = None,
    steps: int = 64,
    batch_size: int = 256,
) -> np.ndarray:
    """Integrated gradients of ``score_y``, shape (N, C, H, W) like ``X``.

    ``(X - baseline) * mean_a grad score_y(baseline + a (X - baseline))``, the mean over
    ``a`` in [0, 1] by the trapezoidal rule with ``steps`` intervals. ``baseline`` (default
    zeros: the mean image under mean or channel preprocessing) broadcasts against ``X``. The
    attributions of an image sum to ``score_y(X) - score_y(baseline)`` up to the rule's error.
    """
    model, X, y = _check(model, X, y)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    base = np.broadcast_to(np.zeros(1) if baseline is None else np.asarray(baseline), X.shape)
    alphas = np.linspace(0.0, 1.0, steps + 1)
    weights = np.full(steps + 1, 1.0 / steps)
    weights[[0, -1]] /= 2  # trapezoid
    attributions = np.empty(X.shape)
    for i in range(len(X)):
        path = base[i] + alphas[:, None, None, None] * (X[i] - base[i])  # (steps + 1, C, H, W)
        path = path.astype(X.dtype)
        mean_grad = np.zeros(X.shape[1:])
        for lo in range(0, len(path), batch_size):
            chunk = path[lo : lo + batch_size]
            labels = np.full(len(chunk), y[i])
            grad = _class_gradient(model, chunk, labels)[1]
            mean_grad += np.tensordot(weights[lo : lo + len(chunk)], grad, axes=1)
        attributions[i] = (X[i] - base[i]) * mean_grad
    return attributions


def resize_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of maps (N, h, w) to (N, H, W), pixel centres aligned (as torch's
    ``interpolate(..., align_corners=False)``)."""

    def matrix(n_out: int, n_in: int) -> np.ndarray:
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        M = np.zeros((n_out, n_in))
        M[np.arange(n_out), lo] += 1 - (src - lo)
        M[np.arange(n_out), hi] += src - lo
        return M

    H, W = size
    return matrix(H, maps.shape[1]) @ maps @ matrix(W, maps.shape[2]).T


def gradcam(model: Any, X: Any, y: Any, *, layer: str | None = None) -> np.ndarray:
    """Grad-CAM maps (N, H, W), non-negative, upsampled bilinearly to the image.

    ``layer`` names a conv layer's output (default: the last conv layer's rectified maps, the
    last of `pix2pred.introspect.conv_layer_names`). Each of its F maps is weighted by the
    spatial mean of ``d score_y / d map``; the weighted sum is rectified.
    """
    model, X, y = _check(model, X, y)
    convs = conv_layer_names(model)
    if not convs:
        raise ValueError(
            f"Grad-CAM needs a convolutional layer and a {model.name!r} model has none; "
            "use saliency, smoothgrad, integrated-gradients or occlusion"
        )
    layer = convs[-1] if layer is None else layer
    _, A, dA = layer_gradient(model, X, _one_hot(y, model.num_classes), layer)
    if A.ndim != 4:
        raise ValueError(f"Grad-CAM needs a layer of feature maps; {layer!r} has shape {A.shape}")
    weights = dA.mean(axis=(2, 3))  # (N, F)
    cam = np.maximum(np.einsum("nf,nfhw->nhw", weights, A), 0)
    return resize_bilinear(cam.astype(np.float64), X.shape[2:])


def occlusion(
    model: Any,
    X: Any,
    y: Any,
    *,
    patch: int | None = None,
    stride: int | None = None,
    fill: float | np.ndarray = 0.0,
    batch_size: int = 256,
) -> np.ndarray:
    """Occlusion maps (N, H, W): the drop of ``P(y)`` when a square patch covers each pixel.

    A ``patch`` x ``patch`` square (default a fifth of the image side) of value ``fill``
    (0: the mean image under mean or channel preprocessing) slides with ``stride`` (default
    a third of the patch, the last row and column flush with the edges); each pixel gets the mean
    drop over the patches that cover it. Positive: hiding it lowers the class probability.
    """
    model, X, y = _check(model, X, y)
    H, W = X.shape[2:]
    patch = max(2, min(H, W) // 5) if patch is None else int(patch)
    stride = max(1, patch // 3) if stride is None else int(stride)
    if not 1 <= patch <= min(H, W) or stride < 1:
        raise ValueError(
            f"patch must be in [1, {min(H, W)}] and stride >= 1, got {patch}, {stride}"
        )

    def starts(n: int) -> list[int]:
        s = list(range(0, n - patch + 1, stride))
        return s if s[-1] == n - patch else [*s, n - patch]

    boxes = [(t, left) for t in starts(H) for left in starts(W)]
    base = softmax(scores(model, X))[np.arange(len(X)), y]
    maps = np.zeros((len(X), H, W))
    for i in range(len(X)):
        occluded = np.repeat(X[i : i + 1], len(boxes), axis=0)
        for b, (t, left) in enumerate(boxes):
            occluded[b, :, t : t + patch, left : left + patch] = fill
        prob = np.concatenate(
            [
                softmax(scores(model, occluded[lo : lo + batch_size]))[:, y[i]]
                for lo in range(0, len(boxes), batch_size)
            ]
        )
        total, count = np.zeros((H, W)), np.zeros((H, W))
        for (t, left), p in zip(boxes, prob, strict=True):
            total[t : t + patch, left : left + patch] += base[i] - p
            count[t : t + patch, left : left + patch] += 1
        maps[i] = total / count
    return maps


def blur(X: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of images (N, C, H, W) over H and W, reflecting at the edges."""
    if sigma <= 0:
        return X
    r = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    out = X
    for axis in (2, 3):
        pad = [(0, 0)] * 4
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode="reflect" if out.shape[axis] > r else "edge")
        n = out.shape[axis]
        out = sum(w * np.take(padded, np.arange(j, j + n), axis=axis) for j, w in enumerate(k))
    return out.astype(X.dtype)


def class_visualization(
    model: Any,
    target: int | Sequence[int],
    *,
    steps: int = 400,
    lr: float = 2.0,
    l2: float = 1e-3,
    jitter: int = 3,
    blur_every: int = 10,
    blur_sigma: float = 0.6,
    seed: int = 0,
    project: Projection | None = None,
) -> np.ndarray:
    """Inputs (T, C, H, W) that maximise ``score_target - l2 * ||x||^2`` by gradient ascent.

    ``target``: one class index, or several (optimised together as one batch, one image
    each). From small random noise (``seed``), each step shifts the images by a random jitter
    of up to ``jitter`` pixels, moves each by ``lr`` along its normalised gradient, and shifts
    them back; ``project`` (e.g. a clip to the valid pixel range) follows each step, and
    every ``blur_every`` steps a Gaussian blur of ``blur_sigma`` pixels smooths the noise.
    The defaults were tuned on the SimpleCNN trained on CIFAR-10 (32x32, channel-normalised).
    """
    model = unwrap(model)
    if not hasattr(model, "input_shape"):
        raise ValueError(
            f"class_visualization needs one of the course's networks; a {model.name!r} model "
            "has no fixed input shape"
        )
    targets = [_check_target(model, t) for t in np.atleast_1d(np.asarray(target, dtype=object))]
    if steps < 0 or jitter < 0:
        raise ValueError(f"steps and jitter must be >= 0, got {steps} and {jitter}")
    rng = np.random.default_rng(seed)
    dtype = _dtype(model)
    X = (0.1 * rng.standard_normal((len(targets), *model.input_shape))).astype(dtype)
    d = _one_hot(np.array(targets), model.num_classes)
    for t in range(steps):
        dy, dx = (int(v) for v in rng.integers(-jitter, jitter + 1, size=2))
        X = np.roll(X, (dy, dx), axis=(2, 3))
        _, g = input_gradient(model, X, d)
        g = g - 2 * l2 * X
        norms = np.sqrt((g.astype(np.float64) ** 2).sum(axis=(1, 2, 3)))[:, None, None, None]
        X = X + (lr * g / (norms + 1e-12)).astype(dtype)
        X = np.roll(X, (-dy, -dx), axis=(2, 3))
        if project is not None:
            X = project(X).astype(dtype)
        if blur_every and (t + 1) % blur_every == 0:
            X = blur(X, blur_sigma)
    return X


class Fooled(NamedTuple):
    """A fooling image: ``x`` (1, C, H, W), the ``steps`` it took, and whether it worked."""

    x: np.ndarray
    steps: int
    fooled: bool


def fooling_image(
    model: Any,
    X: Any,
    target: int,
    *,
    lr: float = 0.5,
    max_steps: int = 200,
    project: Projection | None = None,
) -> Fooled:
    """Change one image (1, C, H, W) a little until the model predicts ``target``.

    Gradient ascent on ``score_target`` with normalised steps of ``lr`` (the course's recipe),
    each followed by ``project``; stops as soon as ``target`` is the top class.
    """
    model, X, _ = _check(model, X)
    if len(X) != 1:
        raise ValueError(f"fooling_image takes one image (1, C, H, W), got {X.shape}")
    target = _check_target(model, target)
    d = _one_hot(np.array([target]), model.num_classes)
    x = X.copy()
    for step in range(max_steps + 1):
        s, g = input_gradient(model, x, d)
        if int(np.argmax(s[0])) == target:
            return Fooled(x, step, True)
        if step == max_steps:
            break
        x = x + (lr * g / (np.linalg.norm(g) + 1e-12)).astype(x.dtype)
        if project is not None:
            x = project(x).astype(X.dtype)
    return Fooled(x, max_steps, False)


def activation_maps(model: Any, X: Any) -> dict[str, np.ndarray]:
    """The rectified maps of every conv layer, ``{relu{i}: (N, F, H', W')}``, in order."""
    model, X, _ = _check(model, X)
    names = conv_layer_names(model)
    if not names:
        raise ValueError(f"a {model.name!r} model has no conv layer to show activations of")
    outputs = layer_outputs(model, X)
    return {name: outputs[name] for name in names}


def _check_target(model: Any, target: Any) -> int:
    if isinstance(target, bool) or not isinstance(target, int | np.integer):
        raise ValueError(f"target must be a class index, got {target!r}")
    if not 0 <= target < model.num_classes:
        raise ValueError(f"target must be in [0, {model.num_classes}), got {target}")
    return int(target)


def _dtype(model: Any) -> np.dtype:
    dtype = model.dtype
    return np.dtype(str(dtype).removeprefix("torch."))
