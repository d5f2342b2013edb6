"""Scoring a model on a task's fixed evaluation sets (and, for D4RL, by running its policy)."""

from __future__ import annotations

import torch

from minrnn_cli.training.device import autocast

HIGHER_IS_BETTER = ("accuracy", "score")  # every other primary metric is a loss


@torch.no_grad()
def evaluate(model, task, device: torch.device, precision: str, splits=None) -> dict[str, float]:
    """`{split}_{metric}` for every split (default: all the task has). A task with `evaluate_split` (D4RL,
    whose policy runs in its environment) scores each split itself; the others are averaged over their
    fixed batches."""
    was_training = model.training
    model.eval()
    results = {}
    for split in splits or task.splits:
        if hasattr(task, "evaluate_split"):
            metrics = task.evaluate_split(model, split, device, precision)
        else:
            metrics = task.metrics(*score_batches(model, task, task.eval_set(split), device, precision))
        results.update({f"{split}_{name}": value for name, value in metrics.items()})
    model.train(was_training)
    return results


def score_batches(model, task, batches, device: torch.device, precision: str) -> tuple[float, float]:
    """(mean loss over the batches, fraction of correct predictions) by the task's own `score`."""
    loss_sum, correct, counted = 0.0, 0, 0
    for inputs, targets in batches:
        inputs, targets = inputs.to(device), targets.to(device)
        with autocast(device, precision):
            logits, _ = model(inputs)
        loss, batch_correct, batch_counted = task.score(logits, targets)
        loss_sum += loss.item()
        correct += int(batch_correct)
        counted += batch_counted
    return loss_sum / len(batches), correct / counted


def is_better(value: float, best: float | None, primary_metric: str) -> bool:
    """Accuracy and score improve upwards, losses downwards."""
    if best is None:
        return True
    return value > best if primary_metric in HIGHER_IS_BETTER else value < best
