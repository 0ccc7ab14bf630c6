"""The report of a ``pix2pred compare`` folder: the table, a chart and each model's pictures.

:func:`write_reports` writes ``compare.md`` (the table as Markdown), ``accuracy_vs_time.png``
(test accuracy against training time, log-x, one labelled point per model) and
``compare.html``, a self-contained page (:mod:`pix2pred.report`) with the table, the chart,
each model's figures and a link to each model's own ``report.html``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pix2pred.report import duration as _duration

__all__ = [
    "CHART_FILE",
    "HTML_FILE",
    "MARKDOWN_FILE",
    "accuracy_chart",
    "markdown_table",
    "table_rows",
    "write_reports",
]

HTML_FILE = "compare.html"
MARKDOWN_FILE = "compare.md"
CHART_FILE = "accuracy_vs_time.png"
HEADER = ("model", "parameters", "training time", "prediction time", "test accuracy", "backend")
_PICTURES = (
    ("knn_k_sweep.png", "cross-validation over k"),
    ("weight_templates.png", "weight templates (one per class)"),
    ("first_layer_filters.png", "first-layer filters"),
    ("training_curves.png", "loss and accuracy during training"),
    ("confusion_matrix.png", "confusion matrix on the test set"),
)


def _params(row: dict[str, Any]) -> str:
    if row.get("num_params") is not None:
        return f"{row['num_params']:,}"
    if row.get("stored_images") is not None:
        return f"0 (keeps {row['stored_images']:,} images)"
    return "—"


def _accuracy(row: dict[str, Any]) -> str:
    status = row.get("status")
    if status == "failed":
        return f"failed ({row.get('error', '')})".replace(" ()", "")
    if status in ("pending", "interrupted"):
        return status
    if row.get("experiment"):
        best = row.get("best_val_accuracy")
        if best is None:
            return "experiment"
        return f"experiment: best {row['best_run']}, val {best:.1%}"
    acc = row.get("test_accuracy")
    return "—" if acc is None else f"{acc:.1%}"


def _label(row: dict[str, Any]) -> str:
    extra = f", k={row['k']}" if row.get("k") else ""
    extra += f", {row['epochs']:g} epochs" if row.get("epochs") else ""
    extra += ", resumed" if row.get("resumed") else ""
    return f"{row['label']}{extra}" if not extra else f"{row['label']} ({extra[2:]})"


def table_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    """The course's table as text cells, one list per model (see ``HEADER``)."""
    return [
        [
            _label(r),
            _params(r),
            _duration(r.get("train_seconds")),
            _duration(r.get("predict_seconds")),
            _accuracy(r),
            r["backend"] if r.get("device", "cpu") == "cpu" else f"{r['backend']} ({r['device']})",
        ]
        for r in rows
    ]


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The table in Markdown (for the README and ``compare.md``)."""
    lines = ["| " + " | ".join(HEADER) + " |", "|---|---:|---:|---:|---:|---|"]
    for cells in table_rows(rows):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _scored(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        r
        for r in rows
        if r.get("status") == "done"
        and r.get("test_accuracy") is not None
        and (r.get("train_seconds") or 0) > 0
    ]


def accuracy_chart(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str], title: str):
    """Test accuracy against training time (log-x), one labelled point per finished model."""
    from matplotlib.figure import Figure

    from pix2pred.plots import save_figure

    scored = _scored(rows)
    # A bare Figure (no pyplot) is freed with its last reference: compare draws this often.
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    markers = {"numpy": ("o", "tab:blue"), "torch": ("s", "tab:orange")}
    for backend, (marker, colour) in markers.items():
        pts = [r for r in scored if r["backend"] == backend]
        if pts:
            ax.scatter(
                [r["train_seconds"] for r in pts],
                [100 * r["test_accuracy"] for r in pts],
                marker=marker,
                color=colour,
                s=46,
                label=backend,
                zorder=3,
            )
    ax.set_xscale("log")
    if scored:
        t = [r["train_seconds"] for r in scored]
        ax.set_xlim(min(t) / 2.5, max(t) * 4)
        acc = [100 * r["test_accuracy"] for r in scored]
        lo, hi = max(0.0, min(acc) - 8), min(100.0, max(acc) + 8)
        ax.set_ylim(lo, hi)
        _label_points(ax, scored, gap=(hi - lo) / 22)
    ax.set_xlabel("training time (s, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    if len({r["backend"] for r in scored}) > 1:
        ax.legend(loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def _label_points(ax: Any, rows: Sequence[dict[str, Any]], gap: float) -> None:
    """Name each point; a label that would sit on a nearby one is moved up, with a leader."""
    placed: list[tuple[float, float]] = []  # (log10 time, label height)
    mixed = len({r["backend"] for r in rows}) > 1
    for r in sorted(rows, key=lambda r: r["test_accuracy"]):
        x, y = r["train_seconds"], 100 * r["test_accuracy"]
        text_y = y
        for px, py in sorted(placed, key=lambda p: p[1]):
            if abs(math.log10(x) - px) < 0.45 and abs(text_y - py) < gap:
                text_y = py + gap
        placed.append((math.log10(x), text_y))
        moved = text_y - y > gap / 4
        ax.annotate(
            f"{r['label']} ({r['backend']})" if mixed else r["label"],
            (x, y),
            xytext=(x * 1.15, text_y),
            fontsize=9,
            va="center",
            arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6} if moved else None,
        )


def _model_section(run_dir: Path, row: dict[str, Any]) -> Any:
    from pix2pred import report as R

    folder = run_dir / row["folder"]
    title = f"{row['label']} ({row['backend']})"
    if not folder.is_dir():
        return R.section(title, R.escape("not trained yet"))
    links = [f'<a href="{R.escape(row["folder"])}/">{R.escape(row["folder"])}/</a>']
    if (folder / "report.html").is_file():
        links.append(
            f'<a href="{R.escape(row["folder"])}/report.html">its report (report.html)</a>'
        )
    if (folder / "summary.txt").is_file():
        links.append(f'<a href="{R.escape(row["folder"])}/summary.txt">summary.txt</a>')
    named = row.get("figures") or []  # an experiment lists its own figures
    pictures = [(n, n.removesuffix(".png").replace("_", " ")) for n in named] or _PICTURES
    figures = [
        R.figure(R.image(folder / name, caption, width=320), caption)
        for name, caption in pictures
        if (folder / name).is_file()
    ]
    note = f"{_accuracy(row)}; trained in {_duration(row.get('train_seconds'))}"
    if row.get("error"):
        note += f"; {row['error']}"
    summary = [R.Markup(f"<p>{R.escape(line)}</p>") for line in row.get("summary", [])]
    body = (R.Markup(" · ".join(links)), *summary, R.columns(*figures))
    return R.section(title, *body, note=note)


def write_reports(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``compare.md``, ``accuracy_vs_time.png`` and ``compare.html``; returns the HTML."""
    from pix2pred import report as R
    from pix2pred.checkpoint import write_bytes

    rows, config = state["rows"], state["config"]
    dataset = config.get("title") or config["dataset"]
    title = f"kNN to CNN on {dataset}"
    write_bytes(run_dir / MARKDOWN_FILE, markdown_table(rows).encode("utf-8"))
    chart = None
    if _scored(rows):  # an experiment has no test accuracy of its own to plot
        chart = accuracy_chart(rows, run_dir / CHART_FILE, f"{title} ({config['budget']} budget)")
    done = [r for r in rows if r.get("status") == "done" and r.get("test_accuracy") is not None]
    best = max(done, key=lambda r: r["test_accuracy"], default=None)
    headline = [
        ("models done", f"{sum(r.get('status') == 'done' for r in rows)} of {len(rows)}"),
        ("best", f"{best['label']} {best['test_accuracy']:.1%}" if best else "—"),
        ("elapsed", _duration(state.get("elapsed_seconds"))),
    ]
    failed = [r for r in rows if r.get("status") == "failed"]
    if failed:
        headline.append(("failed", ", ".join(r["label"] for r in failed)))
    sizes = ", ".join(
        f"{k.replace('_', ' ')} {config[k]}" for k in ("n_train", "n_test") if config.get(k)
    )
    table = R.table(table_rows(rows), HEADER, numeric=(1, 2, 3, 4))
    sections = [
        R.section(
            "Results",
            R.cards(headline),
            table,
            note=(
                "Each model trained on the same training images and scored on the same test "
                "images. kNN only memorises the training set: its training time is the time "
                "taken to choose k by cross-validation, and all its work is at prediction time."
            ),
        ),
        R.section(
            "Accuracy against training time",
            R.figure(R.image(chart, "test accuracy against training time"), None)
            if chart is not None
            else R.escape("No model has a test accuracy yet."),
            note="Training time on a log scale: each step up the course costs more compute.",
        ),
        *(_model_section(run_dir, r) for r in rows),
    ]
    command = config.get("command")
    subtitle = f"budget {config['budget']}, backend {config['backend']}"
    subtitle += f", {sizes}" if sizes else ""
    if command:
        subtitle += f" — {command}"
    return R.write_html(run_dir / HTML_FILE, R.page(title, sections, subtitle=subtitle))
