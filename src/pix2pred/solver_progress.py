"""The Solver's progress bar: one rich bar over all iterations, with the loss and accuracies."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pix2pred.solver import Solver

__all__ = ["ProgressBar"]


def _fmt(history: list[float]) -> str:
    return f"{history[-1]:.3f}" if history else "-"


class ProgressBar:
    """A rich progress bar over all iterations, with the epoch, loss and accuracies.

    Use as a context manager; `advance` after each iteration, `end_epoch` after each epoch.
    """

    def __init__(self, solver: Solver) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.solver = solver
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "loss {task.fields[loss]}  train {task.fields[train]}  val {task.fields[val]}"
            ),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        last = solver.loss_history[-1] if solver.loss_history else math.nan
        self.task = self.progress.add_task(
            self._description(),
            total=solver.epochs * solver.iterations_per_epoch,
            completed=solver.epoch * solver.iterations_per_epoch + solver.batch,
            loss=f"{last:.4f}",
            train=_fmt(solver.train_acc_history),
            val=_fmt(solver.val_acc_history),
        )

    def __enter__(self) -> ProgressBar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def _description(self) -> str:
        return f"epoch {min(self.solver.epoch + 1, self.solver.epochs)}/{self.solver.epochs}"

    def print(self, line: str) -> None:
        """Print a line above the bar."""
        self.progress.console.print(line)

    def advance(self, loss: float) -> None:
        self.progress.update(self.task, advance=1, loss=f"{loss:.4f}")

    def end_epoch(self, line: str | None) -> None:
        if line is not None:
            self.print(line)
        self.progress.update(
            self.task,
            description=self._description(),
            train=_fmt(self.solver.train_acc_history),
            val=_fmt(self.solver.val_acc_history),
        )
