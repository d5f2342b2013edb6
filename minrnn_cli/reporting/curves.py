"""Each task's validation metric against step and against elapsed seconds, one line per group (the mean over its
seeds, a band from min to max), saved as a PNG (matplotlib, Agg) whose bytes depend on the runs alone."""

from __future__ import annotations

import statistics
from pathlib import Path

from minrnn_cli.reporting.groups import Group, TrainedRun, is_number
from minrnn_cli.tracking.records import write_whole

CURVE_METRICS = ("val_score", "val_accuracy", "val_loss")  # the first one the task's runs log is drawn


def curve_metric(groups: list[Group]) -> str | None:
    logged = {key for group in groups for run in group.runs for row in run.metrics for key in row}
    return next((metric for metric in CURVE_METRICS if metric in logged), None)


def _points(runs: list[TrainedRun], metric: str, x_key: str) -> list[tuple[float, float, float, float]]:
    """(x, mean, min, max) at each step some run evaluated: x is the step, or the runs' mean elapsed_s there."""
    by_step: dict[int, list[tuple[float, float]]] = {}
    for run in runs:
        for row in run.metrics:
            if is_number(row.get(metric)) and is_number(row.get(x_key)):
                by_step.setdefault(row["step"], []).append((row[x_key], row[metric]))
    points = []
    for step in sorted(by_step):
        xs, values = zip(*by_step[step], strict=True)
        points.append((statistics.fmean(xs), statistics.fmean(values), min(values), max(values)))
    return points


def save_task_curves(groups: list[Group], target: Path, title: str) -> tuple[Path | None, list[TrainedRun]]:
    """Writes target (PNG) for one task's groups; returns it (None: nothing to draw) and the runs left out of
    the time panel for want of elapsed_s."""
    metric = curve_metric(groups)
    if metric is None:
        return None, []
    untimed = [run for group in groups for run in group.runs if not run.timed]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), squeeze=False)
    for axis, x_key, x_label in ((axes[0][0], "step", "step"), (axes[0][1], "elapsed_s", "elapsed seconds")):
        for colour, group in enumerate(groups):  # a group keeps its colour in both panels
            runs = group.runs if x_key == "step" else [run for run in group.runs if run.timed]
            points = _points(runs, metric, x_key)
            if not points:
                continue
            xs, means, lows, highs = (list(column) for column in zip(*points, strict=True))
            axis.plot(xs, means, color=f"C{colour % 10}", marker="." if len(xs) < 50 else None,
                      label=f"{group.label} (n={len(runs)})")
            if len(runs) > 1:
                axis.fill_between(xs, lows, highs, color=f"C{colour % 10}", alpha=0.2, linewidth=0)
        axis.set_xlabel(x_label)
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        if axis.has_data():
            axis.legend(fontsize="small")
    figure.suptitle(f"{title}: {metric}, mean over seeds (band: min-max)")
    figure.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    # no version or date: the same runs, the same bytes; whole or not at all
    write_whole(target, lambda partial: figure.savefig(partial, format="png", dpi=100, metadata={"Software": None}))
    plt.close(figure)
    return target, untimed
