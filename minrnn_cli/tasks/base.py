"""What every task shares: settings checks, scoring a batch, and metric names."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from minrnn_cli.errors import UserError


def require_at_least(key: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UserError(f"{key}={value!r} is invalid: it must be an integer >= {minimum}")


def cross_entropy_score(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, int]:
    """(mean cross-entropy in nats, number of correct argmax predictions, number of predictions)."""
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
    correct = (logits.argmax(dim=-1) == targets).sum()
    return loss, correct, targets.numel()


def random_offsets(high: int, count: int, generator: torch.Generator) -> Tensor:
    return torch.randint(high, (count,), generator=generator)


class LabelledExamples:
    """Scoring shared by the tasks whose examples each carry one label: cross-entropy and accuracy."""

    primary_metric = "accuracy"  # higher is better

    def score(self, logits: Tensor, targets: Tensor):
        return cross_entropy_score(logits, targets)

    @staticmethod
    def metrics(loss: float, accuracy: float) -> dict[str, float]:
        return {"loss": loss, "accuracy": accuracy}
