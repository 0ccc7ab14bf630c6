"""The figures of `pix2pred.diagnostics`: overfitting a few images, the learning-rate range
test, update/weight ratios and activation histograms, drawn from the JSON ``details`` of each
check (so a saved ``diagnostics.json`` can be drawn again)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from pix2pred.plots import save_figure


def lr_range_plot(d: Mapping[str, Any], path: str | os.PathLike[str], title: str = "") -> Path:
    """Loss against learning rate (log x): raw and smoothed, with the suggested rate, where the
    loss is lowest, where it diverged and the rate in use marked.

    ``d`` holds ``lrs``, ``losses`` (None where not finite), ``smoothed``, ``suggested_lr``,
    ``start_lr``, ``min_loss_lr``, ``diverged_lr`` and ``lr`` (the configured rate).
    """
    lrs = np.asarray(d["lrs"], dtype=np.float64)
    losses = np.array([np.nan if v is None else v for v in d["losses"]], dtype=np.float64)
    smoothed = np.asarray(d["smoothed"], dtype=np.float64)
    fig = Figure(figsize=(7.2, 4.4))
    ax = fig.subplots()
    ax.plot(lrs, losses, color="C0", alpha=0.3, lw=0.8, label="loss per step")
    ax.plot(lrs[: smoothed.size], smoothed, color="C0", lw=2, label="smoothed")
    marks = [
        ("start_lr", "C2", ":", "loss starts to fall"),
        ("suggested_lr", "C2", "-", "fastest fall (suggested)"),
        ("min_loss_lr", "C1", "--", "lowest loss"),
        ("diverged_lr", "C3", "-", "diverged"),
        ("lr", "k", "-.", "lr in use"),
    ]
    for key, color, style, label in marks:
        value = d.get(key)
        if value is not None and value > 0:
            ax.axvline(value, color=color, ls=style, lw=1.3, label=f"{label}: {value:.2g}")
    ax.set_xscale("log")
    finite = smoothed[np.isfinite(smoothed)]
    if finite.size:
        lo, hi = float(finite.min()), float(max(finite[0], finite.min()))
        span = max(hi - lo, 1e-3 * max(abs(hi), 1.0))
        ax.set_ylim(lo - 0.3 * span, hi + 1.5 * span)  # the divergence runs off the top
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(title or "Learning-rate range test", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    return save_figure(fig, path)


def update_ratio_plot(d: Mapping[str, Any], path: str | os.PathLike[str], title: str = "") -> Path:
    """``||update|| / ||W||`` per step for each weight (log y), with the healthy band shaded.

    ``d`` holds ``ratios`` (name → list per step), ``band`` ``[low, high]`` and ``warmup``
    (the first steps, shaded: not counted in the verdict).
    """
    fig = Figure(figsize=(7.2, 4.2))
    ax = fig.subplots()
    lo, hi = d.get("band", (1e-4, 1e-2))
    ax.axhspan(lo, hi, color="C2", alpha=0.12, label=f"healthy band {lo:.0e}…{hi:.0e}")
    ax.axhline(1e-3, color="C2", lw=1, ls="--")
    warmup = int(d.get("warmup", 0))
    if warmup:
        ax.axvspan(0.5, warmup + 0.5, color="0.5", alpha=0.12, label="warm-up (not counted)")
    for i, (name, values) in enumerate(d["ratios"].items()):
        v = np.asarray(values, dtype=np.float64)
        v = np.where(np.isfinite(v) & (v > 0), v, np.nan)
        ax.plot(np.arange(1, v.size + 1), v, "o-", ms=3, color=f"C{i % 10}", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("||update|| / ||W||")
    ax.set_title(title or "Update/weight ratio per layer", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2)
    return save_figure(fig, path)


def activation_histograms(
    d: Mapping[str, Any], path: str | os.PathLike[str], title: str = ""
) -> Path:
    """One histogram per layer output (the course's activation plots), titled with its mean,
    std and dead-ReLU fraction.

    ``d["layers"]`` maps a layer name to ``mean``, ``std``, optional ``dead_fraction`` and
    ``histogram`` (``counts``, ``edges``).
    """
    layers = d["layers"]
    n = len(layers)
    cols = min(n, 5)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(2.6 * cols, 2.3 * rows + 0.4))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (name, stats) in zip(axes, layers.items(), strict=False):
        counts = np.asarray(stats["histogram"]["counts"], dtype=np.float64)
        edges = np.asarray(stats["histogram"]["edges"], dtype=np.float64)
        dead = stats.get("dead_fraction")
        color = "C3" if dead is not None and dead > 0.1 else "C0"
        ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=color)
        ax.set_yscale("log")
        head = f"{name}\nmean {stats['mean']:.2g}  std {stats['std']:.2g}"
        if dead is not None:
            head += f"\ndead {dead:.0%}"
        ax.set_title(head, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title or "Layer outputs (train mode, one batch)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def overfit_plot(d: Mapping[str, Any], path: str | os.PathLike[str], title: str = "") -> Path:
    """Loss (log y) and training accuracy per step while overfitting a few images.

    ``d`` holds ``loss`` and ``train_acc`` (one value per step) and ``images``.
    """
    loss = np.asarray(d["loss"], dtype=np.float64)
    acc = np.asarray(d["train_acc"], dtype=np.float64)
    fig = Figure(figsize=(9, 3.6))
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(np.arange(1, loss.size + 1), loss, color="C0")
    if loss.size and np.all(loss > 0):
        ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss")
    ax_acc.plot(np.arange(1, acc.size + 1), acc, color="C1")
    ax_acc.axhline(1.0, color="0.5", ls="--", lw=1)
    ax_acc.set_ylim(-0.02, 1.05)
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("training accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title or f"Overfitting {d.get('images', '')} images", fontsize=10)
    return save_figure(fig, path)
