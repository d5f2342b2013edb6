"""Scoring a model on every split of its task (each task scores a split its own way: tasks.base.Task)."""

from __future__ import annotations

import torch


@torch.no_grad()
def evaluate(model, task, device: torch.device, precision: str, splits=None) -> dict[str, float]:
    """`{split}_{metric}` for every split (default: all the task has)."""
    was_training = model.training
    model.eval()
    results = {}
    for split in splits or task.splits:
        metrics = task.evaluate_split(model, split, device, precision)
        results.update({f"{split}_{name}": value for name, value in metrics.items()})
    model.train(was_training)
    return results


def is_better(value: float, best: float | None, higher_is_better: bool) -> bool:
    """Whether `value` improves on `best` (None: nothing yet)."""
    if best is None:
        return True
    return value > best if higher_is_better else value < best
