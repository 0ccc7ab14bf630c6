"""The picture sections of a run report: worst mistakes, a kNN's neighbours, what a model learned,
and saliency maps. Each takes a :class:`pix2pred.report_run.RunView`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pix2pred.estimators import softmax
from pix2pred.report import Markup, bar, escape, figure, image, pixels, section, table

if TYPE_CHECKING:
    from pix2pred.report_run import RunView

N_MISTAKES = 16
N_NEIGHBOUR_ROWS = 6
MAX_NEIGHBOURS = 10
N_SALIENCY = 8


def confidences(view: RunView) -> tuple[np.ndarray, str]:
    """Per-class values shown beside a test image ``(N, n_classes)`` and what they are.

    Softmax probabilities for networks trained with a probabilistic loss, vote shares for a
    kNN, raw scores for the SVM (hinge-loss scores are not probabilities).
    """
    if view.kind == "knn":
        return view.scores, "votes"
    if getattr(view.model, "_has_proba", False):
        return softmax(view.scores), "probability"
    return view.scores, "score"


def worst_mistakes(y_true: np.ndarray, values: np.ndarray, n: int, what: str) -> np.ndarray:
    """Indices of up to ``n`` misclassified images, the most confident mistakes first.

    Confidence is the predicted class's probability (or vote share); for raw scores it is the
    margin of the predicted class's score over the true class's.
    """
    pred = np.argmax(values, axis=1)
    wrong = np.flatnonzero(pred != y_true)
    top = values[wrong, pred[wrong]]
    key = top - values[wrong, y_true[wrong]] if what == "score" else top
    return wrong[np.argsort(-key, kind="stable")[:n]]


def _fmt(value: float, what: str, k: int | None) -> str:
    if what == "votes" and k:
        return f"{round(value * k)}/{k}"
    if what == "score":
        return f"{value:.2f}"
    return "<0.1%" if value < 0.0005 else f"{value:.1%}"


def mistake_tile(view: RunView, i: int, values: np.ndarray, what: str) -> Markup:
    """One misclassified test image with its true and predicted classes and top values."""
    ds, classes = view.dataset, view.classes
    row = values[i]
    t, p = int(ds.y_test[i]), int(np.argmax(row))
    shown = [j for j in np.argsort(-row, kind="stable")[:3] if what != "votes" or row[j] > 0]
    if t not in shown:
        shown.append(t)
    k = view.metrics.get("k")
    lo, hi = float(row.min()), float(row.max())
    lines = []
    for j in shown:
        frac = row[j] if what != "score" else (row[j] - lo) / (hi - lo or 1.0)
        tone = "bad" if j == p else "good" if j == t else ""
        name = (
            Markup(f"<span class='tag-{tone}'>{escape(classes[j])}</span>") if tone else classes[j]
        )
        lines.append([name, bar(frac, _fmt(row[j], what, k), tone=tone)])
    head = Markup(
        f"<div>true: <span class='tag-true'>{escape(classes[t])}</span><br>"
        f"predicted: <span class='tag-pred'>{escape(classes[p])}</span><br>"
        f"<span class='muted'>test image {i}</span></div>"
    )
    img = pixels(ds.X_test[i], f"test image {i}: {classes[t]} taken for {classes[p]}")
    return Markup(f"<div class='tile'><div class='row'>{img}{head}</div>{table(lines)}</div>")


def mistakes_section(view: RunView) -> Markup:
    values, what = confidences(view)
    idx = worst_mistakes(view.dataset.y_test, values, N_MISTAKES, what)
    if idx.size == 0:
        return section("Worst mistakes", note="The model got every test image right.")
    tiles = Markup(
        "<div class='tiles'>"
        + "".join(mistake_tile(view, int(i), values, what) for i in idx)
        + "</div>"
    )
    how = {
        "probability": "with the highest predicted probability",
        "votes": "with the largest share of neighbours voting for the wrong class",
        "score": "with the largest score margin of the wrong class over the true one",
    }[what]
    return section(
        "Worst mistakes",
        tiles,
        note=f"The test images the model got wrong {how}. Bars: {what} of the top classes "
        "(red: the prediction, green: the true class).",
    )


def neighbours_section(view: RunView) -> Markup:
    """For a kNN's worst mistakes: the test image and its nearest training images."""
    values, what = confidences(view)
    idx = worst_mistakes(view.dataset.y_test, values, N_NEIGHBOUR_ROWS, what)
    k = min(int(view.model.k), MAX_NEIGHBOURS)
    dist, nn = view.model.kneighbors(view.dataset.X_test[idx], n_neighbors=k)
    classes, X_train, y_train = view.classes, view.dataset.X_train, view.dataset.y_train
    rows = []
    for i, near, d in zip(idx, nn, dist, strict=True):
        t = int(view.dataset.y_test[i])
        cells: list[Any] = [
            Markup(
                f"{pixels(view.dataset.X_test[i], f'test image {i}', size=64)}"
                f"<div class='tag-true'>{escape(classes[t])}</div>"
            )
        ]
        for j, dj in zip(near, d, strict=True):
            lab = int(y_train[j])
            tag = "tag-true" if lab == t else "tag-pred"
            cells.append(
                Markup(
                    f"{pixels(X_train[j], f'training image {j}', size=64)}"
                    f"<div class='{tag}'>{escape(classes[lab])}</div>"
                    f"<div class='muted'>{dj:,.0f}</div>"
                )
            )
        rows.append(cells)
    header = ["test image", *(f"#{n + 1}" for n in range(k))]
    return section(
        "Nearest neighbours of the worst mistakes",
        table(rows, header),
        note=f"Each row: a misclassified test image and its {k} nearest training images by "
        f"{str(view.metrics.get('metric', '')).upper()} distance (under each, its class and the "
        "distance; green: the test image's true class). kNN compares pixels, so neighbours "
        "share colours and layout rather than objects.",
    )


def _drawn(name: str, draw) -> Markup:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        draw(path)
        return image(path, name)


def learned_section(view: RunView) -> Markup | None:
    """Weight templates (linear), first-layer filters (conv) or first-layer units (MLP)."""
    from pix2pred import plots

    kind, run_dir, model = view.kind, view.run_dir, view.model
    if kind in ("softmax", "svm"):
        name = "weight_templates.png"
        note = (
            "Each class's row of weights shown as an image: the linear classifier scores an image "
            "by its match with these templates."
        )
    elif kind in ("cnn", "convnet"):
        name = "first_layer_filters.png"
        note = (
            "The first convolution layer's filters, each rescaled to its own range. Well-trained "
            "filters tend to look like oriented edges and colour blobs; noise-like ones point to "
            "short training, a small network or strong regularisation."
        )
    elif kind in ("mlp", "fcnet") and model is not None:
        name = "first_layer_weights.png"
        note = "The first hidden layer's weights of the first units, each shown as an image."
    else:
        return None
    if (run_dir / name).is_file():
        img = image(run_dir / name, name)
    elif model is None:
        return None
    else:
        state = model.state_dict()
        H, W, C = model.image_shape_
        if kind in ("softmax", "svm"):
            img = _drawn(
                name, lambda p: plots.weight_templates(state["W"], (C, H, W), view.classes, p)
            )
        elif kind in ("cnn", "convnet"):
            img = _drawn(name, lambda p: plots.filter_grid(state["W1"], p))
        else:
            units = state["W1"][:, :64].T.reshape(-1, C, H, W)  # (M, C, H, W)
            img = _drawn(name, lambda p: plots.filter_grid(units, p))
    return section("What the model learned", figure(img), note=note)


def _heat(maps: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """Maps ``(N, H, W)``, each scaled to its own maximum, as uint8 RGB ``(N, H, W, 3)``."""
    from matplotlib import colormaps

    peak = maps.reshape(len(maps), -1).max(axis=1)[:, None, None]
    unit = np.divide(maps, peak, out=np.zeros_like(maps, dtype=np.float64), where=peak > 0)
    return (colormaps[cmap](unit)[..., :3] * 255).round().astype(np.uint8)


def _overlay(img: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """A uint8 image ``(H, W, C)`` with a heat map ``(H, W, 3)`` blended over it."""
    rgb = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img
    return (0.45 * rgb + 0.55 * cam).round().astype(np.uint8)


def saliency_section(view: RunView, n: int = N_SALIENCY) -> Markup:
    """Saliency (and Grad-CAM for conv nets) of one test image per class, for its true class."""
    from pix2pred import explain
    from pix2pred.explain_figures import ImageSpace

    ds, est, classes = view.dataset, view.model, view.classes
    idx = [
        int(np.flatnonzero(ds.y_test == c)[0])
        for c in range(len(classes))
        if np.any(ds.y_test == c)
    ][:n]
    X = ds.X_test[idx]  # (n, H, W, C) uint8
    X_in = ImageSpace(est).to_input(X)  # (n, C, H, W) as the model sees it
    y = ds.y_test[idx]
    sal = _heat(explain.saliency(est, X_in, y))
    cam = None
    if view.kind in ("cnn", "convnet", "resnet"):
        cam = _heat(explain.gradcam(est, X_in, y), "jet")
    values, what = confidences(view)
    cells = []
    for r, i in enumerate(idx):
        t, p = int(y[r]), int(np.argmax(values[i]))
        tag = "tag-true" if p == t else "tag-pred"
        parts = [pixels(X[r], f"test image {i}", size=80), pixels(sal[r], "saliency", size=80)]
        if cam is not None:
            parts.append(pixels(_overlay(X[r], cam[r]), "Grad-CAM", size=80))
        cells.append(
            Markup(
                f"<div class='tile{' wide' if cam is not None else ''}'><div class='row'>"
                + "".join(parts)
                + "</div>"
                f"<div>true: <span class='tag-true'>{escape(classes[t])}</span> · predicted: "
                f"<span class='{tag}'>{escape(classes[p])}</span> "
                f"<span class='muted'>({_fmt(values[i, p], what, None)})</span></div></div>"
            )
        )
    maps = "image, saliency and Grad-CAM" if cam is not None else "image and saliency map"
    note = (
        f"One test image per class: {maps}. Saliency is the largest absolute gradient of the "
        "true class's score with respect to each pixel (over the colour channels): bright "
        "pixels are those whose change would move the score most."
    )
    if cam is not None:
        note += (
            " Grad-CAM weights the last conv layer's feature maps by their mean gradient for "
            "the true class: warm regions are where the net found that class."
        )
    return section("Saliency", Markup("<div class='tiles'>" + "".join(cells) + "</div>"), note=note)


def _isolated(
    title: str, build: Callable[[RunView], Markup | None], view: RunView
) -> Markup | None:
    """``build(view)``, or a one-line note if it fails: one broken picture keeps the report."""
    try:
        return build(view)
    except Exception as e:  # any failure of one picture becomes a note
        return section(title, note=f"Not shown: it could not be drawn ({type(e).__name__}: {e}).")


def picture_sections(view: RunView) -> list[Markup]:
    """The sections that need the test images and the model, in reading order.

    Each is built on its own: a section that fails becomes a note saying why, not a lost report.
    """
    out: list[Markup | None] = []
    has_images = view.dataset is not None and view.scores is not None
    if has_images:
        out.append(_isolated("Worst mistakes", mistakes_section, view))
        if view.kind == "knn":
            out.append(
                _isolated("Nearest neighbours of the worst mistakes", neighbours_section, view)
            )
    elif view.why_no_images:
        out.append(section("Worst mistakes", note=f"Not shown: {view.why_no_images}."))
    out.append(_isolated("What the model learned", learned_section, view))
    if has_images and view.kind != "knn":
        if getattr(view.model, "preprocessing", None) == "pca":
            note = "Not shown: the model was trained on PCA features, not on pixels."
            out.append(section("Saliency", note=note))
        else:
            out.append(_isolated("Saliency", saliency_section, view))
    return [s for s in out if s is not None]
