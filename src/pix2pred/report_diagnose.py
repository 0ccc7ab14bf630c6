"""The report of a ``pix2pred diagnose`` run folder: ``report.html`` from ``diagnostics.json``.

The page holds the table of checks (a pass/warn badge, the number measured, the one expected and
why it matters), then each check's figure with a line on how to read it, then the options the
checks ran with. Everything comes from the folder's files; a figure that is missing is drawn
again from the check's JSON details, so ``pix2pred report RUN`` always rebuilds the whole page.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pix2pred.report import (
    REPORT_FILE,
    Markup,
    cards,
    figure,
    image,
    page,
    section,
    table,
    write_html,
)

DIAGNOSTICS_FILE = "diagnostics.json"


def is_diagnose_run(config: dict[str, Any]) -> bool:
    """Whether a run folder's ``config.json`` is that of ``pix2pred diagnose``."""
    return config.get("command") == "diagnose"


def _draw(name: str) -> Callable[..., Path]:
    from pix2pred import plots_diagnostics

    return getattr(plots_diagnostics, name)


# check key -> (figure file, function of plots_diagnostics that draws it, how to read it)
FIGURES: dict[str, tuple[str, str, str]] = {
    "overfit": (
        "overfit.png",
        "overfit_plot",
        "Left: the loss on the few images, log scale, should fall steadily by a decade or more; "
        "right: their training accuracy, which should reach the dashed line at 100%.",
    ),
    "update_ratio": (
        "update_ratios.png",
        "update_ratio_plot",
        "One line per weight: ||update|| / ||W|| at each step (log scale); healthy lines stay "
        "inside the green band around the dashed 1e-3; the grey warm-up steps are not counted.",
    ),
    "activations": (
        "activations.png",
        "activation_histograms",
        "One histogram per layer output (log counts): spreads that shrink layer after layer "
        "vanish, and a ReLU's tall bar at 0 with a high 'dead' share means units that never fire.",
    ),
    "lr_range": (
        "lr_range.png",
        "lr_range_plot",
        "Loss while the learning rate grows step by step (log x): a good rate lies where the "
        "smoothed curve falls fastest, left of its lowest point and well left of the divergence; "
        "the dash-dotted line is the rate in use.",
    ),
}


def badge(status: str) -> Markup:
    """A check's verdict as a coloured word: green ``pass``, red ``warn``."""
    tone = "good" if status == "pass" else "bad"
    return Markup(f'<span class="tag-{tone}">') + status + Markup("</span>")


def _figure_png(run_dir: Path, check: dict[str, Any], title: str) -> Markup:
    """The check's figure from the folder, or drawn now from its details when the file is gone."""
    name, draw, _ = FIGURES[check["key"]]
    path = run_dir / name
    if path.is_file():
        return image(path, f"{check['title']}: {name}")
    with tempfile.TemporaryDirectory() as tmp:
        drawn = _draw(draw)(check["details"], Path(tmp) / name, title=title)
        return image(drawn, f"{check['title']}: {name}")


def summary_section(checks: list[dict[str, Any]], config: dict[str, Any]) -> Markup:
    params = config.get("params", {})
    passed = sum(c["status"] == "pass" for c in checks)
    warned = [c["title"] for c in checks if c["status"] != "pass"]
    items = [
        ("checks passed", f"{passed} of {len(checks)}"),
        ("model", str(config.get("model", "?"))),
        ("optimizer · lr", f"{params.get('optimizer', '?')} · {params.get('lr', '?')}"),
        ("backend", str(params.get("backend", "?"))),
    ]
    look = f"Look first at: {', '.join(warned)}." if warned else "Every check passed."
    return section(
        "Summary",
        cards(items),
        note="The course's babysitting checks, run on the freshly initialised model with the "
        f"training options below, before any long training. {look}",
    )


def checks_section(checks: list[dict[str, Any]]) -> Markup:
    rows = [
        [c["title"], badge(c["status"]), c["measured"], c["expected"], c["why"]] for c in checks
    ]
    return section(
        "Checks",
        table(rows, ["check", "result", "measured", "expected", "why it matters"]),
        note="A warning is a reason to look before training, not a verdict: each line says what "
        "was measured and what a healthy model shows.",
    )


def figures_section(run_dir: Path, checks: list[dict[str, Any]], title: str) -> Markup | None:
    parts = []
    for c in checks:
        if c["key"] not in FIGURES:
            continue
        how = FIGURES[c["key"]][2]
        parts += [
            Markup("<h3>") + f"{c['title']} " + badge(c["status"]) + Markup("</h3>"),
            figure(_figure_png(run_dir, c, title), how),
        ]
    if not parts:
        return None
    return section("Figures", parts, note="One figure per check that draws one, in the same order.")


def config_section(run_dir: Path, config: dict[str, Any]) -> Markup:
    """The run's options (reusing the training report's section), with the checks' budgets."""
    from pix2pred.diagnostics_checks import DiagnosticSettings
    from pix2pred.report_run import RunView
    from pix2pred.report_run import config_section as run_config_section

    params = dict(config.get("params", {}))
    try:
        settings = dataclasses.asdict(DiagnosticSettings(**config.get("diagnostics", {})))
    except (TypeError, ValueError):  # settings of another version: show them as written
        settings = dict(config.get("diagnostics", {}))
    params.update({k: v for k, v in settings.items() if k not in params})
    view_config = {**config, "params": params}
    classes = [str(c) for c in config.get("classes", [])]
    return run_config_section(RunView(run_dir, view_config, {}, classes))


def build_sections(run_dir: Path, config: dict[str, Any], diagnostics: dict[str, Any]):
    checks = list(diagnostics.get("checks", []))
    title = f"{diagnostics.get('model', config.get('model', '?'))} on "
    title += str(diagnostics.get("dataset", config.get("data", {}).get("dataset", "?")))
    out = [summary_section(checks, config), checks_section(checks)]
    figures = figures_section(run_dir, checks, title)
    if figures is not None:
        out.append(figures)
    out.append(config_section(run_dir, config))
    return out


def write_diagnose_report(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``run_dir/report.html`` for a ``pix2pred diagnose`` folder; returns its path."""
    from pix2pred.checkpoint import read_json
    from pix2pred.runs import read_run

    run_dir = Path(run_dir)
    config, _ = read_run(run_dir)
    path = run_dir / DIAGNOSTICS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir}: no {DIAGNOSTICS_FILE} (the diagnose run did not finish)"
        )
    diagnostics = read_json(path)
    if not diagnostics.get("checks"):
        raise ValueError(f"{path}: holds no checks")
    passed = sum(c["status"] == "pass" for c in diagnostics["checks"])
    model = diagnostics.get("model", config.get("model", "?"))
    dataset = diagnostics.get("dataset", "?")
    title = f"Diagnostics of {model} on {dataset}: {passed}/{len(diagnostics['checks'])} passed"
    when = str(config.get("environment", {}).get("time", "")).replace("T", " ")
    subtitle = f"pix2pred diagnose · {os.path.abspath(run_dir)} · {when}"
    document = page(title, build_sections(run_dir, config, diagnostics), subtitle=subtitle)
    return write_html(run_dir / REPORT_FILE, document)
