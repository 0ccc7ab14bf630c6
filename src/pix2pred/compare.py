"""``pix2pred compare``: the course's story in one run, kNN → linear → MLP → CNN on one dataset.

Each model trains into its own subfolder of the compare folder with the same code as
``pix2pred train`` (:func:`pix2pred.cli_train.train_run`, the kNN command, the resnet command,
:mod:`pix2pred.experiments`), so every subfolder is an ordinary run folder with its own
``report.html``. After each model, ``compare.json`` records where the comparison stands and the
report (:mod:`pix2pred.compare_report`) is written again, so a Ctrl-C or a crash leaves the
finished models and a report of them. Running again on the same folder skips the finished
models, continues the interrupted one from its checkpoint, and leaves failed ones as failed
(delete a model's subfolder to train it again).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pix2pred.checkpoint import read_json, write_json
from pix2pred.compare_budgets import BACKENDS, BUDGETS, ModelSpec, Step, budget_help, plan
from pix2pred.report import duration

__all__ = [
    "BACKENDS",
    "BUDGETS",
    "STATE_FILE",
    "ModelSpec",
    "budget_help",
    "plan",
    "run_compare",
]

STATE_FILE = "compare.json"
_DONE, _FAILED, _INTERRUPTED, _PENDING = "done", "failed", "interrupted", "pending"


# ----------------------------------------------------------------------------- the trainers


def _is_exit(e: BaseException) -> int | None:
    """The exit code of a typer/click ``Exit`` raised by a training command, else None."""
    code = getattr(e, "exit_code", None)
    return code if type(e).__name__ == "Exit" and isinstance(code, int) else None


def _train_knn(step: Step, data: dict[str, Any], run_dir: Path) -> None:
    from pix2pred import cli

    o = step.spec.options
    cli.train_knn(
        dataset=data["dataset"],
        root=Path(data["root"]) if data["root"] else None,
        k=o.get("k"),
        ks=o.get("ks", "1,3,5,8,10,12,15,20"),
        metric=o.get("metric", "l2"),
        folds=o.get("folds", 5),
        backend=step.backend,
        device=data["device"],
        seed=data["seed"],
        image_size=data["image_size"],
        n_train=data["n_train"],
        n_test=data["n_test"],
        out_dir=run_dir,
    )


def _train_neural(step: Step, data: dict[str, Any], run_dir: Path, resume: bool) -> None:
    from pix2pred import cli_train

    if resume:
        cli_train.train_run(step.spec.kind, {}, None, None, run_dir)
        return
    cli = {k: data[k] for k in ("dataset", "root", "seed", "image_size", "n_train", "n_test")}
    cli.update(step.spec.options, backend=step.backend)
    if step.backend == "torch":
        cli["device"] = data["device"]
    cli_train.train_run(step.spec.kind, cli, None, run_dir, None)


def _train_resnet(step: Step, data: dict[str, Any], run_dir: Path, resume: bool) -> None:
    from pix2pred import cli_resnet

    if resume:
        cli_resnet.train_resnet(resume=run_dir)
        return
    cli_resnet.train_resnet(
        dataset=data["dataset"],
        root=Path(data["root"]) if data["root"] else None,
        seed=data["seed"],
        image_size=data["image_size"],
        n_train=data["n_train"],
        n_test=data["n_test"],
        device=data["device"],
        out_dir=run_dir,
        **step.spec.options,
    )


def _train_experiment(step: Step, data: dict[str, Any], run_dir: Path, ds: Any) -> None:
    from pix2pred import experiments
    from pix2pred.cli_options import console

    o = dict(step.spec.options)
    model = o.pop("model")
    values = o.pop("values", None)
    params = {**o, "backend": step.backend, "seed": data["seed"]}
    if step.backend == "torch":
        params["device"] = data["device"]
    if step.spec.kind == "optimizers":
        experiments.run_optimizer_comparison(
            model, ds, params=params, run_dir=run_dir, console=console
        )
    else:
        experiments.run_ablation(
            model, ds, "lr", values, params=params, run_dir=run_dir, console=console
        )


# ----------------------------------------------------------------------------- a row per step


def _row(step: Step, run_dir: Path) -> dict[str, Any]:
    """The table row of a step from what its folder holds."""
    row: dict[str, Any] = {
        "name": step.spec.name,
        "label": step.spec.label,
        "kind": step.spec.kind,
        "backend": step.backend,
        "folder": step.folder,
        "note": step.spec.note,
        "status": _PENDING,
    }
    folder = run_dir / step.folder
    if step.spec.kind in ("optimizers", "ablate-lr"):
        results = folder / "results.json"
        if results.is_file():
            results = read_json(results)
            runs = [r for r in results.get("runs", []) if r.get("best_val_acc") is not None]
            best = max(runs, key=lambda r: r["best_val_acc"], default=None)
            row.update(
                status=_DONE,
                experiment=True,
                train_seconds=sum(r.get("seconds") or 0.0 for r in results.get("runs", [])),
                best_run=best["name"] if best else None,
                best_val_accuracy=best["best_val_acc"] if best else None,
                figures=list(results.get("figures", {}).values()),
                summary=results.get("summary", []),
            )
        return row
    metrics_path = folder / "metrics.json"
    if not metrics_path.is_file():
        return row
    m = read_json(metrics_path)
    row.update(
        status=_DONE,
        test_accuracy=m.get("test_accuracy"),
        num_params=m.get("num_params"),
        # kNN only memorises: its "training" is choosing k by cross-validation
        train_seconds=m.get("train_seconds", m.get("cv_seconds")),
        predict_seconds=m.get("predict_seconds"),
        epochs=m.get("epochs_run"),
        device=m.get("device", "cpu"),
    )
    if step.spec.kind == "knn":
        row["k"] = m.get("k")
        config_path = folder / "config.json"
        if config_path.is_file():  # its "parameters" are the training images it keeps
            row["stored_images"] = read_json(config_path).get("n_train")
    return row


def _start_folder(folder: Path) -> bool:
    """Prepare a step's folder; True when it holds a run to resume from its checkpoint.

    A folder holding something other than a resumable run is moved aside (never deleted), so
    the step starts clean and nothing it held is lost.
    """
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        return False
    resumable = (folder / "config.json").is_file() and (folder / "checkpoint").is_dir()
    if resumable:
        return True
    n = 1
    while folder.with_name(f"{folder.name}.incomplete-{n}").exists():
        n += 1
    aside = folder.with_name(f"{folder.name}.incomplete-{n}")
    shutil.move(str(folder), str(aside))
    return False


def run_compare(
    run_dir: Path,
    config: dict[str, Any],
    *,
    specs: Sequence[ModelSpec] | None = None,
    load: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Train every step of ``config`` not yet done in ``run_dir`` and write the report.

    ``config`` holds ``dataset, root, seed, image_size, n_train, n_test, device`` (the data and
    where torch runs), ``backend`` and ``budget``. ``specs`` replaces the budget's models (tests
    use tiny ones). ``load`` returns the Dataset, for the experiments (loaded once, when first
    needed). A KeyboardInterrupt is re-raised after the state and report are written; any other
    error in a step marks that step failed and the next one starts.
    """
    from pix2pred.cli_options import console
    from pix2pred.compare_report import write_reports

    steps = plan(config["budget"], config["backend"], specs)
    state_path = run_dir / STATE_FILE
    previous = read_json(state_path) if state_path.is_file() else {}
    earlier = {r["folder"]: r for r in previous.get("rows", [])}
    state: dict[str, Any] = {
        "config": config,
        "rows": [],
        "elapsed_seconds": previous.get("elapsed_seconds", 0.0),
    }
    t_start = time.perf_counter()
    dataset_cache: list[Any] = []

    def save(rows: list[dict[str, Any]]) -> None:
        state["rows"] = rows + [_row(s, run_dir) for s in steps[len(rows) :]]
        state["elapsed_seconds"] = previous.get("elapsed_seconds", 0.0) + (
            time.perf_counter() - t_start
        )
        write_json(state_path, state)
        write_reports(run_dir, state)

    rows: list[dict[str, Any]] = []
    for i, step in enumerate(steps, 1):
        row = _row(step, run_dir)
        folder = run_dir / step.folder
        before = earlier.get(step.folder, {})
        if row["status"] == _DONE:
            console.print(f"[{i}/{len(steps)}] {step.spec.label} ({step.backend}): done earlier")
            if before.get("resumed"):  # its time before the interruption is in compare.json
                row.update(train_seconds=before["train_seconds"], resumed=True)
            rows.append(row)
            continue
        if before.get("status") == _FAILED and folder.exists():
            console.print(f"[{i}/{len(steps)}] {step.spec.label} ({step.backend}): failed earlier")
            rows.append(before)
            continue
        elapsed = previous.get("elapsed_seconds", 0.0) + time.perf_counter() - t_start
        console.rule(
            f"[{i}/{len(steps)}] {step.spec.label} ({step.backend}), {duration(elapsed)} elapsed"
        )
        resume = _start_folder(folder)
        # training time spent before an interruption counts towards a resumed model's time
        carried = before.get("interrupted_seconds", 0.0) if resume else 0.0
        if resume:
            console.print(f"resuming {folder} from its checkpoint")
        t0 = time.perf_counter()
        try:
            kind = step.spec.kind
            if kind == "knn":
                _train_knn(step, config, folder)
            elif kind == "resnet":
                _train_resnet(step, config, folder, resume)
            elif kind in ("optimizers", "ablate-lr"):
                if not dataset_cache:
                    dataset_cache.append(load() if load is not None else _load(config))
                _train_experiment(step, config, folder, dataset_cache[0])
            else:
                _train_neural(step, config, folder, resume)
        except BaseException as e:
            interrupted = isinstance(e, KeyboardInterrupt) or _is_exit(e) == 130
            if not interrupted and not isinstance(e, Exception):
                raise
            if interrupted:
                row = {**_row(step, run_dir), "status": _INTERRUPTED}
                row["interrupted_seconds"] = carried + time.perf_counter() - t0
                rows.append(row)
                save(rows)
                raise KeyboardInterrupt from None
            code = _is_exit(e)
            why = "diverged" if code == 1 else f"{type(e).__name__}: {e}"
            console.print(f"[red]{step.spec.label} ({step.backend}) failed:[/red] {why}")
            row = {**_row(step, run_dir), "status": _FAILED, "error": why}
            row["train_seconds"] = time.perf_counter() - t0
            rows.append(row)
            save(rows)
            continue
        row = _row(step, run_dir)
        if row["status"] != _DONE:  # the trainer returned without writing its results
            row.update(status=_FAILED, error="no results were written")
        elif carried and row.get("train_seconds") is not None:
            row.update(train_seconds=row["train_seconds"] + carried, resumed=True)
        rows.append(row)
        save(rows)
    save(rows)
    return state


def _load(config: dict[str, Any]) -> Any:
    from pix2pred.cli_options import load_data

    root = Path(config["root"]) if config["root"] else None
    return load_data(
        config["dataset"],
        root,
        config["seed"],
        0.1,
        config["image_size"],
        config["n_train"],
        config["n_test"],
    )
