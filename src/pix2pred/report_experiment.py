"""The report of a ``pix2pred experiment optimizers|ablate`` run folder: ``report.html``.

The page says in sentences what the plots show (the summary `pix2pred.experiments_summary`
computed from the numbers), then gives the table of runs (final training, validation and test
accuracy, time; a diverged run marked in red with where it diverged), the figures with a line on
how to read each, and the options. Everything comes from ``config.json`` and ``results.json``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pix2pred.report import (
    REPORT_FILE,
    Markup,
    bar,
    cards,
    duration,
    escape,
    figure,
    image,
    page,
    section,
    table,
    write_html,
)
from pix2pred.report import percent as _pct

RESULTS_FILE = "results.json"

# experiment -> figure key -> how to read it ({param} is the ablated hyperparameter)
CAPTIONS: dict[str, dict[str, str]] = {
    "optimizers": {
        "loss": "Training loss of each update rule against epochs (log scale; faint per "
        "iteration, solid the moving average). Lower sooner is faster learning; a cross marks "
        "where a rule diverged.",
        "accuracy": "Training (left) and validation (right) accuracy after each epoch; a wide "
        "gap between the two panels is overfitting, a dashed line a rule that diverged.",
        "lr": "The learning rate each rule used at every iteration (log scale); rules on the same "
        "schedule share one line.",
    },
    "ablation": {
        "loss": "Training loss for each value of {param} against epochs (log scale; faint per "
        "iteration, solid the moving average). A curve that climbs or ends in a cross diverged, "
        "a flat one barely learns.",
        "accuracy": "Training (left) and validation (right) accuracy after each epoch for each "
        "value of {param}; a dashed line is a value that diverged.",
        "sweep": "Final training (squares) and validation (circles) accuracy against {param}: "
        "the best value has the highest validation point, the gap above it is overfitting; red "
        "crosses are values that diverged, the dotted line is chance.",
    },
}


def is_experiment_run(config: dict[str, Any]) -> bool:
    """Whether a run folder's ``config.json`` is that of ``pix2pred experiment``."""
    return config.get("experiment") in CAPTIONS


def _run_label(run: dict[str, Any], ablation: bool) -> str:
    return run["name"].split("=", 1)[1] if ablation else run["name"]


def _status(run: dict[str, Any]) -> Markup:
    if not run.get("diverged"):
        return Markup('<span class="tag-good">ok</span>')
    where = f"diverged in epoch {run.get('diverged_epoch')}, step {run.get('diverged_step')}"
    return Markup('<span class="tag-bad">') + where + Markup("</span>")


def summary_section(config: dict[str, Any], results: dict[str, Any]) -> Markup:
    runs = results["runs"]
    done = [r for r in runs if not r.get("diverged")]
    best = max(done, key=lambda r: r.get("best_val_acc") or 0.0) if done else None
    data = config.get("dataset", {})
    items = [
        ("runs", str(len(runs))),
        ("best validation", f"{_pct(best['best_val_acc'])} · {best['name']}" if best else "–"),
        ("its test accuracy", _pct(best.get("test_acc")) if best else "–"),
        ("diverged", str(len(runs) - len(done))),
        ("training time", duration(sum(r.get("seconds", 0.0) for r in runs))),
        ("images", f"{data.get('n_train', 0):,} train · {data.get('n_val', 0):,} val"),
    ]
    lines = results.get("summary", [])
    what = Markup("<h3>What the plots show</h3><ul>")
    what += Markup("".join(f"<li>{escape(line)}</li>" for line in lines)) + Markup("</ul>")
    return section(
        "Summary",
        cards(items),
        what if lines else None,
        note="The sentences under “What the plots show” are computed from this run's numbers, "
        "not written in advance.",
    )


def results_section(config: dict[str, Any], results: dict[str, Any]) -> Markup:
    ablation = config["experiment"] == "ablation"
    runs = results["runs"]
    done = [r for r in runs if not r.get("diverged")]
    best = max((r.get("best_val_acc") or 0.0 for r in done), default=None)
    first = config.get("param", "value") if ablation else "update rule"
    header = [first, *(() if ablation else ("lr", "momentum"))]
    header += ["final train", "final val", "best val", "test", "time", "status"]
    rows = []
    for r in runs:
        p = r.get("params", {})
        cells: list[Any] = [_run_label(r, ablation)]
        if not ablation:
            momentum = p.get("momentum")
            cells += [f"{p.get('lr', float('nan')):g}", "–" if momentum is None else momentum]
        if r.get("diverged"):
            cells += ["–", "–", "–", "–"]
        else:
            tone = "good" if r.get("best_val_acc") == best else ""
            cells += [
                _pct(r.get("final_train_acc")),
                bar(r.get("final_val_acc") or 0.0, _pct(r.get("final_val_acc"))),
                bar(r.get("best_val_acc") or 0.0, _pct(r.get("best_val_acc")), tone=tone),
                _pct(r.get("test_acc")),
            ]
        cells += [duration(r.get("seconds")), _status(r)]
        rows.append(cells)
    numbers = [1, 2] if not ablation else []
    numbers += [len(header) - k for k in (6, 3, 2)]  # final train, test, time
    errors = [
        Markup("<p class='muted'>") + f"{r['name']}: {r['error']}" + Markup("</p>")
        for r in runs
        if r.get("diverged") and r.get("error")
    ]
    return section(
        "Results",
        table(rows, header, numeric=numbers),
        errors,
        note="Final train and val: the last epoch's accuracy. Best val: the best epoch's; test: "
        "the test accuracy of that best epoch's weights. Green: the best validation accuracy. "
        "A diverged run has no accuracy: its loss or an update stopped being finite.",
    )


def figures_section(run_dir: Path, config: dict[str, Any], results: dict[str, Any]) -> Markup:
    captions = CAPTIONS[config["experiment"]]
    param = config.get("param", "the value")
    parts, missing = [], []
    for key, name in results.get("figures", {}).items():
        path = run_dir / name
        if not path.is_file():
            missing.append(name)
            continue
        parts.append(figure(image(path, name), captions.get(key, "").format(param=param)))
    if missing:
        text = "Missing from the folder: " + ", ".join(missing)
        parts.append(Markup("<p class='muted'>") + text + Markup("</p>"))
    return section("Figures", parts or "No figures were written.")


def config_section(run_dir: Path, config: dict[str, Any]) -> Markup:
    """The experiment's options, laid out by the training report's configuration section."""
    from pix2pred.report_run import RunView
    from pix2pred.report_run import config_section as run_config_section

    dataset = config.get("dataset", {})
    data = {"dataset": dataset.get("title", dataset.get("name"))}
    data.update({k: dataset[k] for k in ("n_train", "n_val", "n_test") if k in dataset})
    if dataset.get("info", {}).get("image_shape"):
        data["image_shape"] = dataset["info"]["image_shape"]
    params = {"experiment": config["experiment"], "model": config.get("model")}
    base = dict(config.get("params", {}))
    if config["experiment"] == "ablation":
        param = config.get("param")
        params[f"{param} (ablated)"] = config.get("values")
        base.pop(param, None)
    else:
        for name, o in config.get("optimizers", {}).items():
            params[f"optimizer {name}"] = f"{o.get('rule')}, lr {o.get('lr'):g}"
        for key in ("optimizer", "lr", "momentum"):  # each rule has its own: see the results
            base.pop(key, None)
    view_config = {
        "data": data,
        "params": {**params, **base},
        "environment": config.get("environment", {}),
    }
    classes = [str(c) for c in config.get("dataset", {}).get("classes", [])]
    return run_config_section(RunView(run_dir, view_config, {}, classes))


def write_experiment_report(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``run_dir/report.html`` for a ``pix2pred experiment`` folder; returns its path."""
    from pix2pred.checkpoint import read_json
    from pix2pred.runs import read_run

    run_dir = Path(run_dir)
    config, _ = read_run(run_dir)
    if not is_experiment_run(config):
        raise ValueError(f"{run_dir}: config.json names no experiment ({config.get('experiment')})")
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {RESULTS_FILE} (the experiment did not finish)")
    results = read_json(path)
    if not results.get("runs"):
        raise ValueError(f"{path}: holds no runs")
    where = f"{config.get('model', '?')} on {config.get('dataset', {}).get('title', '?')}"
    if config["experiment"] == "ablation":
        title = f"Ablation of {config.get('param')}: {where}"
    else:
        title = f"Update rules compared: {where}"
    when = str(config.get("environment", {}).get("time", "")).replace("T", " ")
    command = "optimizers" if config["experiment"] == "optimizers" else "ablate"
    subtitle = f"pix2pred experiment {command} · {os.path.abspath(run_dir)} · {when}"
    sections = [
        summary_section(config, results),
        results_section(config, results),
        figures_section(run_dir, config, results),
        config_section(run_dir, config),
    ]
    return write_html(run_dir / REPORT_FILE, page(title, sections, subtitle=subtitle))
