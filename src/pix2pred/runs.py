"""Run folders: one folder per command, holding its config, metrics and figures.

A run never writes into a folder that already holds something, so an earlier run's results
cannot be overwritten by a new one.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from pathlib import Path
from typing import Any

from pix2pred import __version__
from pix2pred.checkpoint import read_json, write_json

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"


def default_run_dir(kind: str, dataset: str, base: str | os.PathLike[str] = "runs") -> Path:
    """``runs/<kind>-<dataset>-<timestamp>``, made unique with a numeric suffix if needed."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(base) / f"{kind}-{dataset}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path(base) / f"{kind}-{dataset}-{stamp}-{n}"
    return path


def create_run_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` for a new run; refuse a file or a non-empty folder at that path."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise FileExistsError(f"--out {path}: a file with that name exists")
        if any(path.iterdir()):
            raise FileExistsError(
                f"--out {path}: folder exists and is not empty; choose another folder "
                "(pix2pred never overwrites an earlier run)"
            )
    path.mkdir(parents=True, exist_ok=True)
    return path


def environment() -> dict[str, Any]:
    """Versions and machine facts worth keeping beside a result."""
    import numpy

    return {
        "pix2pred": __version__,
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "time": _dt.datetime.now().isoformat(timespec="seconds"),
    }


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Write the resolved configuration of a run (every option, defaults included)."""
    write_json(run_dir / CONFIG_FILE, {**config, "environment": environment()})


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    """Write the metrics of a run."""
    write_json(run_dir / METRICS_FILE, metrics)


def read_run(run_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read ``(config, metrics)`` of a run folder, naming the folder when it is not a run."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{run_dir}: not a pix2pred run folder (no {CONFIG_FILE})")
    metrics_path = run_dir / METRICS_FILE
    metrics = read_json(metrics_path) if metrics_path.is_file() else {}
    return read_json(run_dir / CONFIG_FILE), metrics
