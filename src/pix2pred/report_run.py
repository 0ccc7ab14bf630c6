"""The report of one run folder: ``report.html`` from its config, metrics, figures and model.

The numbers and the figures the training command wrote come from the folder. The pictures of
test images (the worst mistakes, a kNN's neighbours, saliency) need the test set and the model:
a training command passes what it holds in memory, ``pix2pred report RUN`` loads them again.
When they cannot be had (the data moved away), the report says so and shows the rest.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pix2pred import report_pictures as pictures
from pix2pred.report import (
    REPORT_FILE,
    Markup,
    bar,
    cards,
    columns,
    duration,
    figure,
    image,
    page,
    section,
    table,
    write_html,
)
from pix2pred.report import percent as _pct


@dataclass
class RunView:
    """What a report shows of a run; the test-set fields are None when unavailable."""

    run_dir: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    classes: list[str]
    dataset: Any = None
    model: Any = None
    scores: np.ndarray | None = None  # (N_test, n_classes) decision scores or kNN vote shares
    why_no_images: str | None = None

    @property
    def kind(self) -> str:
        return str(self.config.get("model", "?"))


# ------------------------------------------------------------------------------- loading


def load_run_data(config: dict[str, Any], image_size: int | None = None, progress: bool = False):
    """The dataset a run was trained on, split as in training (from its ``config.json``)."""
    from pix2pred.data import load_dataset

    if config.get("model") == "knn":
        d, seed, val_size = config, config.get("seed", 0), 0
    elif config.get("model") == "resnet":  # its split seed is kept with the architecture
        d, seed = config["data"], config["architecture"]["seed"]
        val_size = d["val_size"]
    else:
        d, seed, val_size = config["data"], config["params"]["seed"], config["params"]["val_size"]
    kwargs = {k: d[k] for k in ("n_train", "n_test") if d.get(k) is not None}
    val_size = int(val_size) if val_size >= 1 else val_size
    return load_dataset(
        d["dataset"],
        root=d.get("root"),
        seed=seed,
        val_size=val_size,
        image_size=d.get("image_size") or image_size,
        progress=progress,
        **kwargs,
    )


def load_run_model(run_dir: Path, config: dict[str, Any], metrics: dict[str, Any], dataset=None):
    """The run's fitted model: a saved estimator, or a kNN fitted again on ``dataset``."""
    if config.get("model") == "knn":
        from pix2pred.knn import KNearestNeighbors

        knn = KNearestNeighbors(
            k=metrics["k"],
            metric=config["metric"],
            backend=config.get("backend", "numpy"),
            device=config.get("device", "auto"),
        )
        return knn.fit(dataset.X_train, dataset.y_train)
    from pix2pred.run_model import load_run_model as load_saved

    return load_saved(run_dir)


def test_scores(model: Any, X: np.ndarray) -> np.ndarray:
    """Scores ``(N, n_classes)``: a network's class scores, or a kNN's share of votes."""
    if hasattr(model, "decision_function"):
        return model.decision_function(X)
    return model.predict_proba(X)


def _reload(view: RunView, progress: bool) -> None:
    """Fill the view's model, dataset and scores from disk; record why if that fails."""
    try:
        if view.kind != "knn" and view.model is None:
            view.model = load_run_model(view.run_dir, view.config, view.metrics)
        if view.dataset is None:
            H, W, _ = getattr(view.model, "image_shape_", (None, None, None))
            view.dataset = load_run_data(view.config, H if H == W else None, progress)
        if list(view.dataset.classes) != list(view.classes):
            raise ValueError(
                f"the data now has classes {view.dataset.classes}, the run has {view.classes}"
            )
        if view.model is None:
            view.model = load_run_model(view.run_dir, view.config, view.metrics, view.dataset)
    except (OSError, ValueError, KeyError) as e:
        view.dataset = view.model = None
        view.why_no_images = f"the test images could not be loaded again ({e})"


# ------------------------------------------------------------------------------- sections


def _png(run_dir: Path, name: str, draw) -> Markup:
    """The run's figure ``name``, or one drawn now by ``draw(path)`` when the file is missing."""
    path = run_dir / name
    if path.is_file():
        return image(path, name)
    with tempfile.TemporaryDirectory() as tmp:
        draw(Path(tmp) / name)
        return image(Path(tmp) / name, name)


def summary_section(view: RunView) -> Markup:
    m = view.metrics
    n_test = int(np.sum(m.get("confusion_matrix", [[0]])))
    items = [("test accuracy", _pct(m.get("test_accuracy")))]
    if view.kind == "knn":
        cv = m.get("cv", {})
        how = "chosen by cross-validation" if view.config.get("k") is None else "given"
        items += [
            ("k", f"{m.get('k')} ({how})"),
            ("distance", str(m.get("metric", "")).upper()),
            ("train images", f"{view.config.get('n_train', 0):,}"),
            ("best k in CV", f"{cv.get('best_k')} · {_pct(max(cv.get('mean', [np.nan])))}"),
            ("cross-validation", duration(m.get("cv_seconds"))),
        ]
    else:
        best = m.get("best_val_accuracy")
        items += [
            ("best validation", f"{_pct(best)} · epoch {m.get('best_epoch')}" if best else "–"),
            ("parameters", f"{m.get('num_params', 0):,}"),
            ("training time", f"{duration(m.get('train_seconds'))} · {m.get('epochs_run')} ep"),
        ]
    predict = m.get("predict_seconds")
    per_image = f" · {1e3 * predict / n_test:.2g} ms/img" if predict and n_test else ""
    items.append(("prediction", f"{duration(predict)}{per_image}"))
    backend = view.config.get("backend") or view.config.get("params", {}).get("backend")
    items.append(("backend · device", f"{m.get('backend', backend)} · {m.get('device', 'cpu')}"))
    return section(
        "Summary",
        cards(items),
        note=f"{n_test:,} test images in {len(view.classes)} classes; "
        f"chance is {1 / max(1, len(view.classes)):.0%}.",
    )


def curves_section(view: RunView) -> Markup:
    from pix2pred.plots import training_curves

    history = view.metrics.get("history", {})
    img = _png(view.run_dir, "training_curves.png", lambda p: training_curves(history, p))
    return section(
        "Training curves",
        figure(img),
        note="Left: the training loss per iteration and its moving average. Right: accuracy on "
        "the training and validation images after each epoch; a widening gap is overfitting, "
        "two low curves underfitting.",
    )


def k_sweep_section(view: RunView) -> Markup:
    from pix2pred.plots import k_sweep_plot

    cv = view.metrics["cv"]
    img = _png(
        view.run_dir,
        "knn_k_sweep.png",
        lambda p: k_sweep_plot(cv["ks"], np.asarray(cv["fold_accuracies"]), p),
    )
    rows = [
        [k, bar(mu, f"{mu:.1%} ± {sd:.1%}", tone="good" if k == cv["best_k"] else "")]
        for k, mu, sd in zip(cv["ks"], cv["mean"], cv["std"], strict=True)
    ]
    n_folds = len(cv["fold_accuracies"][0]) if cv["fold_accuracies"] else 0
    return section(
        "Choosing k",
        figure(img),
        table(rows, ["k", "mean validation accuracy ± std"], numeric=[0]),
        note=f"{n_folds}-fold cross-validation on the training images: each grey point is one "
        "fold, the line their mean. Small k follows noise, large k blurs the classes.",
    )


def confusion_section(view: RunView) -> Markup:
    from pix2pred.plots import confusion_matrix_plot

    cm = np.asarray(view.metrics["confusion_matrix"], dtype=np.int64)
    img = _png(
        view.run_dir,
        "confusion_matrix.png",
        lambda p: confusion_matrix_plot(cm, view.classes, p),
    )
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:8]
    totals = cm.sum(axis=1)
    rows = []
    for flat in order:
        i, j = divmod(int(flat), len(view.classes))
        if off[i, j] == 0:
            break
        rows.append([view.classes[i], view.classes[j], int(off[i, j]), bar(off[i, j] / totals[i])])
    confusions = [
        Markup("<h3>Most frequent confusions</h3>"),
        table(rows, ["true class", "predicted as", "images", "share of the class"], numeric=[2]),
    ]
    return section(
        "Confusion matrix",
        columns(figure(img), confusions if rows else None),
        note="Row = true class, column = predicted class; each row is coloured by the fraction "
        "of that class, and the cells count images.",
    )


def per_class_section(view: RunView) -> Markup:
    cm = np.asarray(view.metrics["confusion_matrix"], dtype=np.int64)
    totals = cm.sum(axis=1)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    mean = float(np.trace(cm) / max(1, totals.sum()))
    rows = []
    for i, name in enumerate(view.classes):
        acc = cm[i, i] / totals[i] if totals[i] else float("nan")
        worst = int(np.argmax(off[i]))
        confused = f"{view.classes[worst]} ({off[i, worst]})" if off[i, worst] else "–"
        tone = "good" if acc >= mean else "bad"
        rows.append([name, bar(acc, tone=tone), f"{cm[i, i]} / {totals[i]}", confused])
    return section(
        "Per-class accuracy",
        table(rows, ["class", "accuracy", "correct", "most often taken for"], numeric=[2]),
        note=f"Green: at or above the overall accuracy ({mean:.1%}); red: below it.",
    )


def config_section(view: RunView) -> Markup:
    cfg = view.config
    if "params" in cfg:
        data = {k: v for k, v in cfg.get("data", {}).items() if v is not None}
        options = {**data, **cfg["params"]}
    else:
        skip = ("model", "classes", "environment")
        options = {k: v for k, v in cfg.items() if k not in skip and v is not None}
    rows = [[k, v if isinstance(v, str) else repr(v)] for k, v in options.items()]
    third = -(-len(rows) // 3)
    parts = [table(rows[i : i + third], ["option", "value"]) for i in range(0, len(rows), third)]
    env = cfg.get("environment", {})
    env_table = table([[k, v] for k, v in env.items()], ["", ""])
    details = Markup(f"<details><summary>environment</summary>{env_table}</details>")
    files = sorted(p.name for p in view.run_dir.iterdir() if p.name != REPORT_FILE)
    return section(
        "Configuration",
        columns(*parts),
        details,
        Markup("<p class='muted'>Files in this run folder: ") + ", ".join(files) + Markup("</p>"),
        note=f"Every option of this run, defaults included (from config.json). "
        f"Classes: {', '.join(view.classes)}.",
    )


# ------------------------------------------------------------------------------- the page


def build_sections(view: RunView) -> list[Markup]:
    """The report's sections, in reading order; picture sections only where data allows."""
    out = [summary_section(view)]
    if view.kind == "knn":
        if view.metrics.get("cv"):
            out.append(k_sweep_section(view))
    elif view.metrics.get("history"):
        out.append(curves_section(view))
    if view.metrics.get("confusion_matrix"):
        out += [confusion_section(view), per_class_section(view)]
    out += pictures.picture_sections(view)
    out.append(config_section(view))
    return out


def write_run_report(
    run_dir: Path,
    *,
    dataset: Any = None,
    model: Any = None,
    scores: np.ndarray | None = None,
    reload: bool = True,
    progress: bool = False,
) -> Path:
    """Write ``run_dir/report.html``; returns its path.

    Parameters
    ----------
    run_dir : a finished run folder (``config.json`` and ``metrics.json``)
    dataset : the run's dataset (``pix2pred.data.Dataset``), if in memory
    model : the fitted estimator or ``KNearestNeighbors``, if in memory
    scores : ndarray of shape (n_test, n_classes), optional
        The model's scores on ``dataset.X_test`` (vote shares for a kNN), if already computed.
    reload : load what is missing of the data and model from the run's files
    progress : show the data loader's progress bar
    """
    from pix2pred.runs import read_run

    run_dir = Path(run_dir)
    config, metrics = read_run(run_dir)
    if not metrics:
        raise FileNotFoundError(f"{run_dir}: no metrics.json (the run did not finish)")
    classes = [str(c) for c in config.get("classes", [])]
    view = RunView(run_dir, config, metrics, classes, dataset, model, scores)
    if reload and (view.dataset is None or view.model is None):
        _reload(view, progress)
    elif view.dataset is None or view.model is None:
        view.why_no_images = "the test images were not given"
    if view.dataset is not None and view.model is not None and view.scores is None:
        view.scores = test_scores(view.model, view.dataset.X_test)
    when = str(config.get("environment", {}).get("time", "")).replace("T", " ")
    subtitle = f"{metrics.get('dataset', '')} · {os.path.abspath(run_dir)} · {when}"
    title = f"{view.kind} on {metrics.get('dataset', '?')}: {_pct(metrics.get('test_accuracy'))}"
    return write_html(run_dir / REPORT_FILE, page(title, build_sections(view), subtitle=subtitle))
