"""What an experiment's plots show, said in sentences computed from its numbers, and its table.

Each function takes the `pix2pred.experiments.RunResult` list of an experiment and returns plain
text: no number here is typed by hand, so the summary says what this run did, not what the course
expects it to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pix2pred.report import percent as _pct

if TYPE_CHECKING:
    from pix2pred.experiments import RunResult

__all__ = ["ablation_summary", "optimizer_summary", "results_table", "signed_percent"]

# A loss that changed by less than this share over the run "barely moved".
STALLED = 0.05


def signed_percent(x: float) -> str:
    """A relative change as ``+12%`` or ``−1.5%`` (one decimal under 10%)."""
    sign = "+" if x >= 0 else "−"
    return f"{sign}{abs(x):.1%}" if abs(x) < 0.1 else f"{sign}{abs(x):.0%}"


def _diverged_line(r: RunResult) -> str:
    line = f"{r.name} diverged in epoch {r.diverged_epoch} (step {r.diverged_step})"
    if r.loss and max(r.loss) > 10 * r.loss[0]:
        line += f", after its loss grew from {r.loss[0]:.3g} to {max(r.loss):.3g}"
    return line


def _loss_lines(runs: Sequence[RunResult]) -> list[str]:
    """Runs that barely moved the loss, and runs whose loss grew."""
    lines = []
    for r in runs:
        change = r.loss_change
        if r.diverged or change is None:
            continue
        if abs(change) < STALLED:
            lines.append(f"{r.name} barely moved the loss ({signed_percent(change)})")
        elif change > 0:
            lines.append(f"{r.name} made the loss grow ({signed_percent(change)})")
    return lines


def _same_start(runs: Sequence[RunResult]) -> str | None:
    starts = {round(r.loss[0], 6) for r in runs if r.loss}
    if len(runs) > 1 and len(starts) == 1:
        return f"all runs started from the same initial loss {runs[0].loss[0]:.4f}"
    return None


def optimizer_summary(runs: Sequence[RunResult]) -> list[str]:
    """Sentences on an optimizer comparison: ranking, loss reached, stalls and divergences."""
    lines = []
    start = _same_start(runs)
    if start:
        lines.append(start + " (same weights, same batches).")
    done = sorted((r for r in runs if not r.diverged), key=lambda r: -(r.best_val_acc or 0.0))
    if done:
        best = done[0]
        line = (
            f"{best.name} reached the best validation accuracy {_pct(best.best_val_acc or 0.0)} "
            f"(test {_pct(best.test_acc or 0.0)})"
        )
        if len(done) > 1:
            rest = ", ".join(f"{r.name} {_pct(r.best_val_acc or 0.0)}" for r in done[1:])
            line += f"; then {rest}"
        lines.append(line + ".")
        by_loss = sorted(done, key=lambda r: r.loss_change if r.loss_change is not None else 0.0)
        reached = ", ".join(
            f"{r.name} {signed_percent(r.loss_change)}"
            for r in by_loss
            if r.loss_change is not None
        )
        if reached:
            lines.append(f"training loss from the first batch to the last epoch: {reached}.")
    lines += [_diverged_line(r) + "." for r in runs if r.diverged]
    lines += [line + "." for line in _loss_lines(runs)]
    return lines


def ablation_summary(runs: Sequence[RunResult], param: str, numeric: bool) -> list[str]:
    """Sentences on an ablation: divergences, stalls, the best value and the train/val trade."""
    lines = [_diverged_line(r) for r in runs if r.diverged]
    lines += _loss_lines(runs)
    done = [r for r in runs if not r.diverged]
    if done:
        best = max(done, key=lambda r: r.best_val_acc or 0.0)
        lines.append(
            f"{best.name} reached the best validation accuracy {_pct(best.best_val_acc or 0.0)} "
            f"(test {_pct(best.test_acc or 0.0)})"
        )
    if numeric and len(done) >= 2:
        ordered = sorted(done, key=lambda r: r.value)
        lo, hi = ordered[0], ordered[-1]
        train = "fell" if (hi.final_train_acc or 0) < (lo.final_train_acc or 0) else "rose"
        line = (
            f"as {param} went from {lo.name.split('=', 1)[1]} to {hi.name.split('=', 1)[1]}, "
            f"training accuracy {train} from {_pct(lo.final_train_acc or 0.0)} to "
            f"{_pct(hi.final_train_acc or 0.0)} while validation went from "
            f"{_pct(lo.final_val_acc or 0.0)} to {_pct(hi.final_val_acc or 0.0)}"
        )
        gap_lo = (lo.final_train_acc or 0.0) - (lo.final_val_acc or 0.0)
        gap_hi = (hi.final_train_acc or 0.0) - (hi.final_val_acc or 0.0)
        gaps = [f"{g * 100:+.1f}".replace("-", "−") for g in (gap_lo, gap_hi)]
        line += f" (train − val gap {gaps[0]} → {gaps[1]} points)"
        lines.append(line)
    if not done:
        lines.append(f"every value of {param} diverged: none finished training")
    return [line + "." for line in lines]


def results_table(runs: Sequence[RunResult]) -> str:
    """A fixed-width text table: one row per run, final accuracies, loss change, time, status."""
    header = ("run", "lr", "train acc", "val acc", "best val", "test acc", "loss", "time", "status")
    rows = []
    for r in runs:

        def acc(x: float | None) -> str:
            return "-" if x is None else _pct(x)

        change = r.loss_change
        rows.append(
            (
                r.name,
                f"{r.params.get('lr', float('nan')):g}",
                acc(r.final_train_acc),
                acc(r.final_val_acc),
                acc(r.best_val_acc),
                acc(r.test_acc),
                "-" if change is None or r.diverged else signed_percent(change),
                f"{r.seconds:.1f} s",
                f"diverged (epoch {r.diverged_epoch})" if r.diverged else "ok",
            )
        )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
