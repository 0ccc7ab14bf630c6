"""Matplotlib figures, written as PNG files.

Figures are built with ``matplotlib.figure.Figure`` rather than ``pyplot``: no global state, no
display needed, and each PNG is written atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from pix2pred.checkpoint import write_bytes


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Render ``fig`` to PNG and write it atomically to ``path``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    write_bytes(path, buf.getvalue())
    return Path(path)


def _as_display(img: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An ``(H, W, C)`` uint8 image as something ``imshow`` draws, with its colour map."""
    if img.ndim == 3 and img.shape[2] == 1:
        return img[:, :, 0], "gray"
    return img, None


def image_grid(
    X: np.ndarray,
    y: np.ndarray,
    classes: Sequence[str],
    path: str | os.PathLike[str],
    per_class: int = 8,
    seed: int = 0,
) -> Path:
    """A labelled grid: one row per class, ``per_class`` random samples of it.

    Parameters
    ----------
    X : ndarray of shape (N, H, W, C), uint8
    y : ndarray of shape (N,), int
    classes : class names, indexed by label
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    rng = np.random.default_rng(seed)
    n_cls = len(classes)
    fig = Figure(figsize=(per_class * 0.9 + 1.6, n_cls * 0.9 + 0.3))
    axes = fig.subplots(n_cls, per_class, squeeze=False)
    for c in range(n_cls):
        idx = np.flatnonzero(y == c)
        chosen = rng.choice(idx, size=min(per_class, idx.size), replace=False) if idx.size else []
        for j in range(per_class):
            ax = axes[c, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(chosen):
                img, cmap = _as_display(X[chosen[j]])
                ax.imshow(img, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
            if j == 0:
                ax.set_ylabel(classes[c], rotation=0, ha="right", va="center", fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return save_figure(fig, path)


def confusion_matrix_plot(
    cm: np.ndarray, classes: Sequence[str], path: str | os.PathLike[str], title: str = ""
) -> Path:
    """Row-normalised confusion matrix ``(C, C)`` with counts in the cells."""
    cm = np.asarray(cm)
    n = len(classes)
    totals = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, totals, out=np.zeros(cm.shape), where=totals > 0)
    size = max(4.0, 0.55 * n + 2)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                color = "white" if frac[i, j] > 0.5 else "black"
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7, color=color)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def k_sweep_plot(
    ks: Sequence[int],
    fold_accuracies: np.ndarray,
    path: str | os.PathLike[str],
    title: str = "",
) -> Path:
    """The course's cross-validation plot: accuracy of each fold against k, mean and std.

    Parameters
    ----------
    ks : the values of k, length K
    fold_accuracies : ndarray of shape (K, n_folds)
    """
    acc = np.asarray(fold_accuracies, dtype=np.float64)
    ks = np.asarray(ks)
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    for j in range(acc.shape[1]):
        ax.scatter(ks, acc[:, j], s=12, color="0.6", zorder=2)
    ax.errorbar(ks, acc.mean(axis=1), yerr=acc.std(axis=1), color="C0", capsize=3, zorder=3)
    best = int(np.argmax(acc.mean(axis=1)))
    ax.scatter([ks[best]], [acc.mean(axis=1)[best]], s=60, color="C3", zorder=4, label="best k")
    ax.set_xlabel("k")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title or f"Cross-validation on k ({acc.shape[1]} folds)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def bar_plot(values: Mapping[str, float], path: str | os.PathLike[str], ylabel: str) -> Path:
    """One bar per named value (e.g. per-class accuracy)."""
    fig = Figure(figsize=(max(4.0, 0.5 * len(values) + 1.5), 3.6))
    ax = fig.subplots()
    ax.bar(list(values), list(values.values()), color="C0")
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=45)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def training_curves(history: Mapping[str, Sequence[float]], path: str | os.PathLike[str]) -> Path:
    """Loss per iteration (with a moving average) beside train/val accuracy per epoch."""
    loss = np.asarray(history.get("loss", []), dtype=np.float64)
    train_acc = np.asarray(history.get("train_acc", []), dtype=np.float64)
    val_acc = np.asarray(history.get("val_acc", []), dtype=np.float64)
    fig = Figure(figsize=(10, 3.8))
    ax_loss, ax_acc = fig.subplots(1, 2)
    if loss.size:
        ax_loss.plot(loss, color="C0", alpha=0.35, lw=0.8, label="per iteration")
        w = max(1, loss.size // 50)
        if w > 1:
            smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
            ax_loss.plot(np.arange(w - 1, loss.size), smooth, color="C0", lw=1.8, label="average")
        ax_loss.legend()
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("training loss")
    ax_loss.grid(alpha=0.3)
    epochs = np.arange(1, max(train_acc.size, val_acc.size) + 1)
    if train_acc.size:
        ax_acc.plot(epochs[: train_acc.size], train_acc, "o-", label="train")
    if val_acc.size:
        ax_acc.plot(epochs[: val_acc.size], val_acc, "o-", label="validation")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.grid(alpha=0.3)
    if train_acc.size or val_acc.size:
        ax_acc.legend()
    return save_figure(fig, path)


def _to_unit(img: np.ndarray) -> np.ndarray:
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def weight_templates(
    W: np.ndarray, image_shape: Sequence[int], classes: Sequence[str], path: str | os.PathLike[str]
) -> Path:
    """A linear classifier's weights as one image per class, each rescaled to [0, 1].

    Parameters
    ----------
    W : ndarray of shape (C * H * W_, num_classes), rows in (C, H, W) order
    image_shape : (C, H, W_)
    """
    C, H, Wd = image_shape
    n = len(classes)
    fig = Figure(figsize=(1.3 * n, 1.7))
    axes = fig.subplots(1, n, squeeze=False)[0]
    for j, ax in enumerate(axes):
        img = _to_unit(W[:, j].reshape(C, H, Wd).transpose(1, 2, 0))
        ax.imshow(img[:, :, 0] if C == 1 else img, cmap="gray" if C == 1 else None)
        ax.set_title(classes[j], fontsize=8)
        ax.axis("off")
    return save_figure(fig, path)


def filter_grid(w: np.ndarray, path: str | os.PathLike[str], title: str = "") -> Path:
    """First-layer conv filters ``(F, C, HH, WW)`` as a grid of images, each rescaled."""
    F, C = w.shape[:2]
    cols = int(np.ceil(np.sqrt(F)))
    rows = int(np.ceil(F / cols))
    fig = Figure(figsize=(cols * 0.7, rows * 0.7 + (0.3 if title else 0)))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < F:
            img = _to_unit(w[i].transpose(1, 2, 0))
            shown = img[:, :, 0] if C != 3 else img
            ax.imshow(shown, cmap=None if C == 3 else "gray", interpolation="nearest")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# Experiments: several runs of one model on shared axes (pix2pred.experiments)


def _smoothed(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """``(x, moving average)`` of ``values`` over ``window`` points, x at each window's end."""
    if window <= 1 or values.size <= window:
        return np.arange(values.size), values
    smooth = np.convolve(values, np.ones(window) / window, mode="valid")
    return np.arange(window - 1, values.size), smooth


def _plain_log_ticks(axis: Any) -> None:
    """Label a log axis with plain numbers (1.5, 2, 3), also between powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    lo, hi = axis.get_view_interval()
    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(fmt)
    if hi / max(lo, 1e-300) < 20:
        axis.set_minor_locator(LogLocator(subs=(1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)))
        axis.set_minor_formatter(fmt)


def _per_epoch(iterations_per_epoch: int | Mapping[str, int], name: str) -> int:
    """The steps per epoch of run ``name``: a shared number or the run's own."""
    if isinstance(iterations_per_epoch, Mapping):
        return max(1, int(iterations_per_epoch[name]))
    return max(1, int(iterations_per_epoch))


def loss_curves_plot(
    curves: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    *,
    iterations_per_epoch: int | Mapping[str, int],
    diverged: Sequence[str] = (),
    title: str = "",
) -> Path:
    """Training loss of several runs on one log-scale axis, against epochs.

    ``iterations_per_epoch`` is one number for all runs or one per run name (runs with different
    batch sizes take different numbers of steps per epoch).

    Each run is drawn faint per iteration and solid as a moving average. A run named in
    ``diverged`` ends with a large cross where its last finite loss was (at the top edge when
    that is off the chart) and says "diverged" in the legend; the y range follows the runs that
    did not diverge, so one explosion does not flatten the others.
    """
    fig = Figure(figsize=(7.5, 4.6))
    ax = fig.subplots()
    finite = [np.asarray(c, np.float64) for n, c in curves.items() if n not in diverged and len(c)]
    finite = [c[np.isfinite(c) & (c > 0)] for c in finite]
    finite = [c for c in finite if c.size]
    top = max((c.max() for c in finite), default=None)
    bottom = min((c.min() for c in finite), default=None)
    for i, (name, values) in enumerate(curves.items()):
        color = f"C{i % 10}"
        loss = np.asarray(values, np.float64)
        is_diverged = name in diverged
        label = f"{name} (diverged)" if is_diverged else name
        if loss.size == 0:
            ax.plot([], [], color=color, marker="x", ls="none", label=f"{label}, no step")
            continue
        per_epoch = _per_epoch(iterations_per_epoch, name)
        x_raw = (np.arange(loss.size) + 1) / per_epoch
        ax.plot(x_raw, loss, color=color, alpha=0.2, lw=0.7)
        idx, smooth = _smoothed(loss, max(1, per_epoch // 4))
        style = ("-", "--")[i % 2]  # runs that nearly coincide stay visible
        ax.plot(
            (idx + 1) / per_epoch,
            smooth,
            color=color,
            ls=style,
            lw=1.8,
            label=label,
            zorder=2 + i % 2,
        )
        if is_diverged:
            y_end = loss[-1] if top is None else min(loss[-1], top * 1.4)
            ax.plot([x_raw[-1]], [y_end], color=color, marker="X", ms=12, mec="black", ls="none")
            off_chart = top is not None and loss.max() > top * 1.6
            ax.annotate(
                f"diverged (loss up to {loss.max():.2g})" if off_chart else "diverged",
                (x_raw[-1], y_end),
                xytext=(6, 4),
                textcoords="offset points",
                color=color,
                fontsize=9,
                fontweight="bold",
            )
    ax.set_yscale("log")
    if top is not None and bottom is not None:
        ax.set_ylim(bottom / 1.1, top * 1.6 if diverged else top * 1.1)
    _plain_log_ticks(ax.yaxis)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def accuracy_curves_plot(
    train: Mapping[str, Sequence[float]],
    val: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    *,
    diverged: Sequence[str] = (),
    title: str = "",
) -> Path:
    """Training and validation accuracy per epoch of several runs, side by side.

    A run named in ``diverged`` is drawn dashed up to its last complete epoch (it may have
    none) and labelled as diverged.
    """
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, curves, split in ((axes[0], train, "training"), (axes[1], val, "validation")):
        for i, (name, values) in enumerate(curves.items()):
            acc = np.asarray(values, np.float64)
            is_diverged = name in diverged
            label = f"{name} (diverged)" if is_diverged else name
            style = "x--" if is_diverged else "o-"
            ax.plot(np.arange(1, acc.size + 1), acc, style, color=f"C{i % 10}", ms=4, label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{split} accuracy", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[1].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


def lr_schedules_plot(
    schedules: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    *,
    iterations_per_epoch: int | Mapping[str, int],
    title: str = "",
) -> Path:
    """The learning rate of each run at every iteration (log scale), against epochs.

    ``iterations_per_epoch``: one number for all runs or one per run name.
    """
    fig = Figure(figsize=(7.5, 3.8))
    ax = fig.subplots()
    groups: dict[tuple[tuple[float, ...], int], list[str]] = {}
    for name, rates in schedules.items():
        key = (
            tuple(np.asarray(rates, np.float64).tolist()),
            _per_epoch(iterations_per_epoch, name),
        )
        groups.setdefault(key, []).append(name)
    # Runs on the same schedule share one line (and one legend entry) rather than hide each other.
    order = list(schedules)
    peaks = []
    for (rates, per_epoch), names in groups.items():
        lr = np.asarray(rates, np.float64)
        x = (np.arange(lr.size) + 1) / per_epoch
        color = f"C{order.index(names[0]) % 10}"  # the colour of the first run in the other plots
        ax.plot(x, lr, color=color, lw=1.8, label=", ".join(names))
        peaks.append(lr.max(initial=0.0))
    ax.set_yscale("log")
    if min(peaks, default=0.0) > 0:
        ax.set_ylim(bottom=min(peaks) / 1e3)  # a schedule that anneals to 0 would stretch the axis
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate (log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def value_sweep_plot(
    values: Sequence[float | str],
    train_acc: Sequence[float | None],
    val_acc: Sequence[float | None],
    path: str | os.PathLike[str],
    *,
    param: str,
    logx: bool = False,
    chance: float | None = None,
    title: str = "",
) -> Path:
    """Final training and validation accuracy against a hyperparameter's value.

    A value whose accuracy is None (its run diverged) is a red cross on the x axis labelled
    "diverged". Numbers go on a linear or log axis (``logx``; a 0 among them makes it symlog);
    anything else is categorical, in the order given.
    """
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    x = np.asarray(values, np.float64) if numeric else np.arange(len(values), dtype=np.float64)
    order = np.argsort(x, kind="stable")
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    done = np.array([v is not None for v in val_acc])
    for accs, label, style in ((train_acc, "train", "s--"), (val_acc, "validation", "o-")):
        keep = [i for i in order if accs[i] is not None]
        ax.plot(x[keep], [accs[i] for i in keep], style, ms=6, label=label)
    if chance is not None:
        ax.axhline(chance, color="0.5", ls=":", lw=1, label="chance")
    if (~done).any():
        bad = np.flatnonzero(~done)
        ax.plot(x[bad], np.zeros(bad.size), "X", color="red", ms=12, mec="black", label="diverged")
        for i in bad:
            ax.annotate(
                "diverged",
                (x[i], 0.0),
                xytext=(0, 10),
                textcoords="offset points",
                ha="center",
                color="red",
                fontsize=9,
                fontweight="bold",
            )
    scale = "linear"
    if numeric and logx and (x > 0).any():
        lo, hi = float(x[x > 0].min()), float(x.max())
        if (x <= 0).any():  # a 0 (no decay, no dropout) sits left of the log part, linearly
            scale = "symlog"
            ax.set_xscale("symlog", linthresh=lo)
            ax.set_xlim(-0.15 * lo, hi * 1.6)
        else:
            scale = "log"
            ax.set_xscale("log")
            ax.set_xlim(lo / 1.6, hi * 1.6)
    if not numeric:
        ax.set_xticks(x, [str(v) for v in values])
    elif x.size <= 12:
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.minorticks_off()
    ax.set_ylim(bottom=-0.05, top=max(1e-3, *(a for a in [*train_acc, *val_acc] if a)) * 1.15)
    notes = {"log": " (log scale)", "symlog": " (log scale, 0 at the left)", "linear": ""}
    ax.set_xlabel(param + notes[scale])
    ax.set_ylabel("final accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)
