"""Loss and accuracy curves of one run from its metrics.jsonl, saved as a PNG (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

from minrnn_cli.tracking.records import METRICS_FILE, read_metrics

LOSS_KEYS = ("train_loss", "val_loss", "test_loss")
ACCURACY_KEYS = ("val_accuracy", "test_accuracy", "val_scaled_accuracy", "test_scaled_accuracy")


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(record["step"], record[key]) for record in records if key in record]
    return [step for step, _ in points], [value for _, value in points]


def save_curves(run_dir: Path, target: Path, title: str) -> Path | None:
    """Writes target (PNG) and returns it, or None when the run has no metrics.jsonl or nothing to plot."""
    if not (run_dir / METRICS_FILE).is_file():
        return None
    records = read_metrics(run_dir)
    panels = [(label, keys) for label, keys in (("loss (nats)", LOSS_KEYS), ("accuracy", ACCURACY_KEYS))
              if any(key in record for record in records for key in keys)]
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for axis, (label, keys) in zip(axes[0], panels, strict=True):
        for key in keys:
            steps, values = _series(records, key)
            if steps:
                axis.plot(steps, values, marker="." if len(steps) < 50 else None, label=key)
        axis.set_xlabel("step")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=100)
    plt.close(figure)
    return target
