"""Scoring a model on a task's fixed evaluation sets."""

from __future__ import annotations

import torch

from minrnn_cli.training.device import autocast


@torch.no_grad()
def evaluate(model, task, device: torch.device, precision: str, splits=None) -> dict[str, float]:
    """`{split}_{metric}` for every split (default: all the task has), averaged over its fixed batches."""
    was_training = model.training
    model.eval()
    results = {}
    for split in splits or task.splits:
        loss_sum, correct, counted = 0.0, 0, 0
        batches = task.eval_set(split)
        for inputs, targets in batches:
            inputs, targets = inputs.to(device), targets.to(device)
            with autocast(device, precision):
                logits, _ = model(inputs)
            loss, batch_correct, batch_counted = task.score(logits, targets)
            loss_sum += loss.item()
            correct += int(batch_correct)
            counted += batch_counted
        metrics = task.metrics(loss_sum / len(batches), correct / counted)
        results.update({f"{split}_{name}": value for name, value in metrics.items()})
    model.train(was_training)
    return results


def is_better(value: float, best: float | None, primary_metric: str) -> bool:
    """Loss improves downwards, accuracy upwards."""
    if best is None:
        return True
    return value > best if primary_metric == "accuracy" else value < best
