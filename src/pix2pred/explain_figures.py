"""Explanation figures of a fitted estimator on uint8 images, as PNG files.

`pix2pred.explain` works on a model and preprocessed inputs; this module goes from what a user
has, a fitted estimator and ``uint8`` images ``(N, H, W, C)``, to labelled figures: maps beside
their images (`saliency_figure` for the report, `explanation_figure` for the CLI), conv
activations, class visualisations, fooling images and the learned weights. `ImageSpace` moves
between pixels and the model's input so that optimised images stay valid pictures.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from pix2pred import explain as E
from pix2pred.plots import filter_grid, save_figure, weight_templates

__all__ = [
    "METHODS",
    "ImageSpace",
    "activations_figure",
    "class_visualization_figure",
    "compute_map",
    "explanation_figure",
    "fooling_figure",
    "saliency_figure",
    "weights_figure",
]

METHODS = ("saliency", "smoothgrad", "integrated-gradients", "gradcam", "occlusion")
_CMAPS = {"saliency": "hot", "smoothgrad": "hot", "gradcam": "jet"}  # the rest: signed
_NOTES = {
    "saliency": "bright pixels change the class score most (max |d score / d pixel|)",
    "smoothgrad": "saliency averaged over noisy copies of the image",
    "integrated-gradients": "red pixels raise the class score, blue ones lower it",
    "gradcam": "where the last conv layer's class evidence lies",
    "occlusion": "red: hiding the place lowers the class probability, blue: raises it",
}


class ImageSpace:
    """Pixels in [0, 1] ``(N, H, W, C)`` to the model's input ``(N, C, H, W)`` and back.

    Parameters
    ----------
    est : a fitted pix2pred estimator (Softmax, LinearSVM, MLP, CNN); its preprocessing must
        keep the image's shape (none, mean_image, channel, zca: not pca). A resnet run's
        `ResNetClassifier` takes raw pixel values (0..255) and normalises them itself.
    """

    def __init__(self, est: Any) -> None:
        if not hasattr(est, "model_") or not (
            hasattr(est, "preprocessor_") or getattr(est.model_, "name", None) == "resnet"
        ):
            raise ValueError(
                f"explanations need a fitted pix2pred network estimator, got {type(est).__name__}"
            )
        self.est, self.model = est, est.model_
        self.pre = getattr(est, "preprocessor_", None)
        self.H, self.W, self.C = est.image_shape_
        if self.pre is not None and self.pre.name not in ("none", "mean_image", "channel", "zca"):
            raise ValueError(
                f"explanations need image-shaped model inputs; preprocessing {self.pre.name!r} "
                "gives flat features"
            )

    def to_input(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 images, or floats in [0, 1], (N, H, W, C) → the model's input (N, C, H, W)."""
        if self.pre is None:  # the resnet's pixel values, 0..255
            pixels = np.asarray(pixels)
            if pixels.dtype != np.uint8 and not np.issubdtype(pixels.dtype, np.floating):
                raise ValueError(f"images must be uint8 or floats in [0, 1], got {pixels.dtype}")
            X = pixels.astype(np.float32) * (1.0 if pixels.dtype == np.uint8 else 255.0)
            return np.ascontiguousarray(X.transpose(0, 3, 1, 2))
        X = self.pre.transform(np.asarray(pixels))
        return np.ascontiguousarray(X.reshape(len(X), self.C, self.H, self.W), self.est.dtype)

    def to_pixels(self, X: np.ndarray) -> np.ndarray:
        """The model's input (N, C, H, W) → pixel values (N, H, W, C) on the [0, 1] scale."""
        Z = np.asarray(X, np.float64).transpose(0, 2, 3, 1)  # (N, H, W, C)
        if self.pre is None:
            return Z / 255.0
        name = self.pre.name
        if name == "mean_image":
            Z = Z + self.pre.mean_
        elif name == "channel":
            Z = Z * self.pre.std_ + self.pre.mean_
        elif name == "zca":
            flat = np.linalg.solve(self.pre.W_.T.astype(np.float64), Z.reshape(len(Z), -1).T).T
            Z = (flat + self.pre.mean_).reshape(Z.shape)
        return Z

    def grey(self) -> float | np.ndarray:
        """The model input of the mean colour, occlusion's patch and integrated gradients'
        baseline: 0 for a course net's normalised input, the channel means for a resnet's."""
        if self.pre is not None:
            return 0.0
        mean = self.model.input_mean.detach().cpu().numpy().astype(np.float32)
        return mean.reshape(1, self.C, 1, 1)

    def project(self, X: np.ndarray) -> np.ndarray:
        """The nearest valid image: pixels clipped to [0, 1], back in the model's input."""
        return self.to_input(np.clip(self.to_pixels(X), 0, 1))

    def to_uint8(self, X: np.ndarray) -> np.ndarray:
        """The model's input as uint8 images (N, H, W, C), rounded and clipped."""
        return np.rint(np.clip(self.to_pixels(X), 0, 1) * 255).astype(np.uint8)


def _space(est: Any) -> ImageSpace:
    return est if isinstance(est, ImageSpace) else ImageSpace(est)


def compute_map(est: Any, images: np.ndarray, method: str, y: Sequence[int]) -> np.ndarray:
    """The ``method`` map (N, H, W) of each image for class ``y[i]`` (see `METHODS`)."""
    space = _space(est)
    X, y = space.to_input(images), np.asarray(y)
    model = space.model
    grey = space.grey()
    if method == "saliency":
        return E.saliency(model, X, y)
    if method == "smoothgrad":
        return E.smoothgrad(model, X, y)
    if method == "integrated-gradients":
        return E.integrated_gradients(model, X, y, baseline=grey).sum(axis=1)
    if method == "gradcam":
        return E.gradcam(model, X, y)
    if method == "occlusion":
        return E.occlusion(model, X, y, fill=grey)
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def _show_image(ax: Any, img: np.ndarray, title: str = "") -> None:
    ax.imshow(
        img[:, :, 0] if img.shape[2] == 1 else img, cmap="gray" if img.shape[2] == 1 else None
    )
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def _show_map(ax: Any, m: np.ndarray, method: str, image: np.ndarray | None = None) -> Any:
    """Draw one map; unsigned ones from 0 to their max, signed ones symmetric around 0."""
    ax.set_xticks([])
    ax.set_yticks([])
    if method in _CMAPS:
        if image is not None:
            _show_image(ax, image)
        top = float(m.max()) or 1.0
        alpha = 0.5 if image is not None else 1.0
        return ax.imshow(m, cmap=_CMAPS[method], vmin=0, vmax=top, alpha=alpha)
    top = float(np.abs(m).max()) or 1.0
    return ax.imshow(m, cmap="RdBu_r", vmin=-top, vmax=top)


def _guess(est: Any, images: np.ndarray, classes: Sequence[str]) -> list[tuple[int, str]]:
    """Each image's predicted class and a label such as "cat 63%" (or "cat (score 2.1)")."""
    s = est.decision_function(images)
    top = s.argmax(axis=1)
    if est._has_proba:
        p = E.softmax(s)
        return [(int(j), f"{classes[j]} {p[i, j]:.0%}") for i, j in enumerate(top)]
    return [(int(j), f"{classes[j]} (score {s[i, j]:.1f})") for i, j in enumerate(top)]


def saliency_figure(
    est: Any,
    images: np.ndarray,
    labels: Sequence[int] | None,
    classes: Sequence[str],
    path: str | os.PathLike[str],
    method: str = "saliency",
) -> Path:
    """A few images (top row) above their ``method`` maps (bottom row), one PNG.

    Parameters
    ----------
    est : fitted estimator of any network kind (linear and fully-connected ones included)
    images : uint8 (N, H, W, C), at most 12 are shown
    labels : true labels (N,) whose class is explained, or None to explain the prediction
    classes : class names by label
    """
    images = np.asarray(images)[:12]
    guesses = _guess(est, images, classes)
    y = [g[0] for g in guesses] if labels is None else [int(v) for v in labels[: len(images)]]
    maps = compute_map(est, images, method, y)
    n = len(images)
    fig = Figure(figsize=(1.45 * n + 0.4, 3.3), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        truth = f"true {classes[y[i]]}\n" if labels is not None else ""
        _show_image(axes[0, i], images[i], f"{truth}pred {guesses[i][1]}")
        _show_map(axes[1, i], maps[i], method, images[i] if method == "gradcam" else None)
    axes[1, 0].set_ylabel(method, fontsize=9)
    which = "true class" if labels is not None else "predicted class"
    fig.suptitle(f"{method} of the {which}: {_NOTES[method]}", fontsize=10)
    return save_figure(fig, path)


def explanation_figure(
    est: Any,
    image: np.ndarray,
    method: str,
    classes: Sequence[str],
    path: str | os.PathLike[str],
    target: int | None = None,
    name: str = "",
) -> Path:
    """One image, its ``method`` map for ``target`` (default: the prediction), and an overlay."""
    image = np.asarray(image)[None] if np.ndim(image) == 3 else np.asarray(image)
    (pred, guess), *_ = _guess(est, image, classes)
    target = pred if target is None else target
    m = compute_map(est, image, method, [target])[0]
    fig = Figure(figsize=(8.2, 3.1))
    axes = fig.subplots(1, 3)
    _show_image(axes[0], image[0], f"{name}\npredicted: {guess}".strip())
    mappable = _show_map(axes[1], m, method)
    fig.colorbar(mappable, ax=axes[1], fraction=0.046, pad=0.04)
    axes[1].set_title(f"{method} for '{classes[target]}'", fontsize=9)
    _show_image(axes[2], image[0], "overlay")
    if method in _CMAPS:
        axes[2].imshow(m, cmap=_CMAPS[method], alpha=0.5, vmin=0, vmax=float(m.max()) or 1.0)
    else:
        top = float(np.abs(m).max()) or 1.0
        axes[2].imshow(m, cmap="RdBu_r", alpha=0.55, vmin=-top, vmax=top)
    fig.suptitle(f"{method}: {_NOTES[method]}", fontsize=10)
    return save_figure(fig, path)


def activations_figure(
    est: Any, image: np.ndarray, classes: Sequence[str], path: str | os.PathLike[str], per_layer=16
) -> Path:
    """The first ``per_layer`` rectified feature maps of every conv layer for one image."""
    space = _space(est)
    image = np.asarray(image)[None] if np.ndim(image) == 3 else np.asarray(image)
    acts = E.activation_maps(space.model, space.to_input(image))
    (_, guess), *_ = _guess(space.est, image, classes)
    cols = min(per_layer, 8)
    rows_per = [int(np.ceil(min(per_layer, a.shape[1]) / cols)) for a in acts.values()]
    fig = Figure(figsize=(1.0 * (cols + 1.6), 1.05 * sum(rows_per) + 0.9))
    grid = fig.add_gridspec(sum(rows_per), cols + 2)
    ax = fig.add_subplot(grid[: min(2, sum(rows_per)), :2])
    _show_image(ax, image[0], f"input\npredicted: {guess}")
    row = 0
    for (name, a), n_rows in zip(acts.items(), rows_per, strict=True):
        maps = a[0, :per_layer]
        top = max(float(maps.max()), 0.0) or 1.0  # GELU maps can be all negative
        for k in range(n_rows * cols):
            axk = fig.add_subplot(grid[row + k // cols, 2 + k % cols])
            axk.axis("off")
            if k < len(maps):
                axk.imshow(maps[k], cmap="viridis", vmin=0, vmax=top, interpolation="nearest")
                if k == 0:
                    axk.set_title(f"{name} ({a.shape[1]} maps, {a.shape[2]}x{a.shape[3]})",
                                  fontsize=8, loc="left")  # fmt: skip
        row += n_rows
    fig.suptitle(
        f"conv activations after {'GELU' if space.model.name == 'resnet' else 'ReLU'}: "
        f"the first {per_layer} maps of each layer, "
        "one colour scale per layer",
        fontsize=10,
    )
    return save_figure(fig, path)


def class_visualization_figure(
    est: Any,
    targets: Sequence[int],
    classes: Sequence[str],
    path: str | os.PathLike[str],
    **options: Any,
) -> Path:
    """One synthesised image per class of ``targets`` (`explain.class_visualization`)."""
    space = _space(est)
    n = len(targets)
    fig = Figure(figsize=(max(1.7 * n + 0.3, 4.8), 2.6), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    X = E.class_visualization(
        space.model, [int(t) for t in targets], project=space.project, **options
    )
    imgs = space.to_uint8(X)
    guesses = _guess(space.est, imgs, classes)
    for ax, t, img, (_, guess) in zip(axes, targets, imgs, guesses, strict=True):
        _show_image(ax, img, f"{classes[t]}\n→ {guess}")
    what = "for each class" if n > 1 else f"for '{classes[targets[0]]}'"
    fig.suptitle(f"class visualisation: an image the model scores highest {what}", fontsize=10)
    return save_figure(fig, path)


def fooling_figure(
    est: Any,
    image: np.ndarray,
    target: int,
    classes: Sequence[str],
    path: str | os.PathLike[str],
    *,
    lr: float = 0.5,
    max_steps: int = 200,
) -> tuple[Path, bool, np.ndarray]:
    """Original, fooled image (as uint8) and the change magnified; returns the path, whether
    the saved uint8 image is classified as ``target``, and the fooled uint8 image."""
    space = _space(est)
    image = np.asarray(image)[None] if np.ndim(image) == 3 else np.asarray(image)
    (pred0, guess0), *_ = _guess(space.est, image, classes)
    if pred0 == target:
        raise ValueError(f"the image is already predicted as {classes[target]!r} ({guess0})")
    x = space.to_input(image)
    if space.pre is None:  # raw pixels in: a step of lr in normalised units, as for the others
        lr *= float(space.model.input_std.mean())
    fooled_img = image
    for _ in range(5):  # rounding to uint8 can undo a change that was just enough
        result = E.fooling_image(
            space.model, x, target, lr=lr, max_steps=max_steps, project=space.project
        )
        fooled_img = space.to_uint8(result.x)
        if int(space.est.decision_function(fooled_img).argmax()) == target:
            break
        x = space.to_input(fooled_img)  # go on from the rounded image
    (pred0, guess0), (pred1, guess1) = _guess(
        space.est, np.concatenate([image, fooled_img]), classes
    )
    ok = pred1 == target
    diff = fooled_img.astype(np.float64) - image
    change = np.abs(diff).max()
    scale = 0.5 / max(change / 255, 1e-12)
    fig = Figure(figsize=(7.6, 3.0))
    axes = fig.subplots(1, 3)
    _show_image(axes[0], image[0], f"original\npredicted: {guess0}")
    _show_image(axes[1], fooled_img[0], f"{'fooled' if ok else 'not fooled'}\npredicted: {guess1}")
    shown = np.clip(0.5 + diff[0] / 255 * scale, 0, 1)
    _show_image(axes[2], shown, f"change x{scale:.0f}\n(max {change:.0f}/255 per pixel)")
    fig.suptitle(
        f"fooling image: '{classes[pred0]}' made '{classes[target]}' by a small change",
        fontsize=10,
    )
    return save_figure(fig, path), ok, fooled_img[0]


def weights_figure(est: Any, classes: Sequence[str], path: str | os.PathLike[str]) -> Path:
    """What the first layer learned: class templates (linear), filters (conv), or the first 64
    hidden units' input weights as images (fully connected)."""
    params = est.state_dict()
    H, W, C = est.image_shape_
    name = est.model_.name
    if name == "linear":
        return weight_templates(params["W"], (C, H, W), classes, path)
    w = params["W1"]
    if w.ndim == 4:
        return filter_grid(
            w, path, title=f"first-layer filters ({w.shape[0]}, {w.shape[2]}x{w.shape[3]})"
        )
    units = w[:, :64].T.reshape(-1, C, H, W)  # (units, C, H, W): each hidden unit's template
    return filter_grid(units, path, title=f"input weights of the first {len(units)} hidden units")
