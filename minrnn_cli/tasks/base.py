"""The task interface, written down: what the training loop, evaluation and checkpoints read of a task.

A task says where batches come from and how outputs are scored, and declares what it needs of a model:

    task.name                       the registry name (conf/task/<name>.yaml)
    task.splits                     the evaluation splits, e.g. ("val", "test"); `val` picks the best checkpoint
    task.primary_metric             the metric of `val` that picks it ("loss", "accuracy", "score")
    task.higher_is_better           whether that metric improves upwards
    task.head                       the model head it needs (models.heads: TokenHead, ClassHead, ActionHead)
    task.train_batch(generator)     -> (inputs, targets), anything with .to(device)
    task.eval_set(split)            -> [(inputs, targets), ...] fixed batches, the same at every evaluation
    task.score(outputs, targets)    -> (loss tensor, correct predictions, predictions counted); by default
                                       the cross-entropy of logits against token ids
    task.metrics(loss, accuracy)    -> {metric: value} for one split
    task.evaluate_split(model, split, device, precision) -> {metric: value}; by default the metrics of the
                                       split's fixed batches (D4RL adds episodes run in its environment)
    task.vocabulary()               -> what a checkpoint must carry to use the model without the data
    task.tokens_per_batch           tokens in a training batch (a running mean where batches vary)
    task.training_data()            -> the training data's size in words, e.g. "1,003,854 training tokens"

Task settings have no defaults in code: conf/task/<name>.yaml holds them, the one source.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from minrnn_cli.device import autocast
from minrnn_cli.errors import UserError
from minrnn_cli.models.heads import Head
from minrnn_cli.models.sequence_models import check_pool

Batch = tuple  # (inputs, targets)


class Task(ABC):
    name: str
    splits: tuple[str, ...] = ("val", "test")
    primary_metric: str = "loss"
    higher_is_better: bool = False
    head: Head

    _tokens_seen: int = 0
    _batches_seen: int = 0

    @abstractmethod
    def train_batch(self, generator: torch.Generator) -> Batch: ...

    @abstractmethod
    def eval_set(self, split: str) -> list[Batch]: ...

    def score(self, outputs, targets) -> tuple[Tensor, Tensor | int, int]:
        """Cross-entropy of the logits at every position (or of one label per example)."""
        return cross_entropy_score(outputs, targets)

    def metrics(self, loss: float, accuracy: float) -> dict[str, float]:
        return {"loss": loss, "accuracy": accuracy}

    def evaluate_split(self, model, split: str, device: torch.device, precision: str) -> dict[str, float]:
        return self.metrics(*score_batches(model, self, self.eval_set(split), device, precision))

    def vocabulary(self) -> dict:
        return {}

    def training_data(self) -> str:
        """The training data's size, for the start line of a run (a fixed data set's tokens or examples)."""
        return "data generated per batch"

    @property
    def tokens_per_batch(self) -> float:
        """Mean number of real (not padding) tokens in the training batches so far."""
        return self._tokens_seen / max(self._batches_seen, 1)

    def count_tokens(self, tokens: int) -> None:
        """Record one training batch's real tokens (for tasks whose batches vary in size)."""
        self._tokens_seen += tokens
        self._batches_seen += 1

    def fixed_batches(self, split: str, make: Callable[[], list[Batch]]) -> list[Batch]:
        """`make()`'s batches for `split`, made once and kept, so every evaluation sees the same ones."""
        cache = self.__dict__.setdefault("_fixed_batches", {})
        if split not in cache:
            cache[split] = make()
        return cache[split]


class LabelledExamples(Task):
    """Tasks whose examples each carry one label, read by a classifier: cross-entropy and accuracy."""

    primary_metric = "accuracy"
    higher_is_better = True


@torch.no_grad()
def score_batches(model, task: Task, batches: list[Batch], device: torch.device, precision: str
                  ) -> tuple[float, float]:
    """(mean loss over the batches, fraction of correct predictions) by the task's own `score`."""
    loss_sum, correct, counted = 0.0, 0, 0
    for inputs, targets in batches:
        inputs, targets = inputs.to(device), targets.to(device)
        with autocast(device, precision):
            outputs, _ = model(inputs)
        loss, batch_correct, batch_counted = task.score(outputs, targets)
        loss_sum += loss.item()
        correct += int(batch_correct)
        counted += batch_counted
    return loss_sum / len(batches), correct / counted


def require_at_least(key: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UserError(f"{key}={value!r} is invalid: it must be an integer >= {minimum}")


def require_pool(pool: str) -> str:
    """`task.pool`, checked against the pooling the classifier heads offer."""
    try:
        check_pool(pool)
    except ValueError as error:
        raise UserError(f"task.{error}") from None
    return pool


def cross_entropy_score(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, int]:
    """(mean cross-entropy in nats, number of correct argmax predictions, number of predictions)."""
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
    correct = (logits.argmax(dim=-1) == targets).sum()
    return loss, correct, targets.numel()


def random_offsets(high: int, count: int, generator: torch.Generator) -> Tensor:
    return torch.randint(high, (count,), generator=generator)
