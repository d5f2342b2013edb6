"""Chomsky-hierarchy tasks (Deletang et al. 2023, xLSTM's majority tasks), as the official minRNN code
generates them: `length` random symbols, then a query part ending in the EMPTY token; the answer is
read at the last positions (one answer, or `length` for bucket_sort).

Training lengths are drawn from min_train_length..max_train_length and evaluation lengths (length
generalisation) from min_eval_length..max_eval_length, one length per example. A batch is right-padded
with PAD and its targets are IGNORE (-100) everywhere but the answer positions, so a causal model's
answer is never influenced by padding. The validation and test sets are fixed by `eval_seed`.

Metrics: accuracy over answers (per token for bucket_sort) and the scaled accuracy xLSTM reports,
(accuracy - chance) / (1 - chance), 0 = uniform guessing over the task's answer classes, 1 = perfect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from minrnn_cli.errors import UserError
from minrnn_cli.models.heads import TokenHead
from minrnn_cli.tasks.base import Task, require_at_least

IGNORE = -100


def _one(value: Tensor) -> Tensor:
    return value.reshape(1)


def _parity_check(symbols: Tensor, empty: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    return torch.tensor([empty]), _one(symbols.sum() % 2)


def _even_pairs(symbols: Tensor, empty: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    return torch.tensor([empty]), _one((symbols[1:] != symbols[:-1]).sum() % 2)


def _cycle_nav(symbols: Tensor, empty: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    # symbols 0, 1, 2 are the moves -1, 0, +1 on a cycle of 5 states, starting at state 0
    return torch.tensor([empty]), _one((symbols - 1).sum() % 5)


def _bucket_sort(symbols: Tensor, empty: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    return torch.full((len(symbols),), empty), symbols.sort().values


def _majority(symbols: Tensor, empty: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    counts = torch.bincount(symbols, minlength=empty)
    winners = (counts == counts.max()).nonzero().flatten()
    return torch.tensor([empty]), _one(winners.max())  # ties: the highest symbol, as in the official code


def _majority_count(symbols: Tensor, empty: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    return torch.tensor([empty]), _one(torch.bincount(symbols).max())


def _missing_duplicate(symbols: Tensor, empty: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    # the sequence repeated with one symbol left out where the copy stops: which one is it?
    missing = int(torch.randint(len(symbols), (1,), generator=generator))
    return torch.cat([symbols[:missing], torch.tensor([empty])]), symbols[missing : missing + 1]


@dataclass(frozen=True)
class Problem:
    n_symbols: int     # input symbols are 0 .. n_symbols-1; EMPTY = n_symbols, PAD = n_symbols + 1
    chance_classes: int  # answer classes of the official code: chance accuracy is 1 / chance_classes
    query: Callable[[Tensor, int, torch.Generator], tuple[Tensor, Tensor]]  # symbols -> (query part, answers)
    counts: bool = False  # answers are counts 0 .. length (majority_count)


PROBLEMS: dict[str, Problem] = {
    "parity_check": Problem(2, 2, _parity_check),
    "even_pairs": Problem(2, 2, _even_pairs),
    "cycle_nav": Problem(3, 5, _cycle_nav),
    "bucket_sort": Problem(10, 10, _bucket_sort),
    "majority": Problem(63, 63, _majority),
    "majority_count": Problem(63, 63, _majority_count, counts=True),
    "missing_duplicate": Problem(9, 9, _missing_duplicate),
}


def make_example(problem: Problem, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One example: inputs (symbols, query part) and its answers, read at the last len(answers) positions."""
    symbols = torch.randint(problem.n_symbols, (length,), generator=generator)
    query, answers = problem.query(symbols, problem.n_symbols, generator)
    return torch.cat([symbols, query]), answers


def make_batch(problem: Problem, batch_size: int, min_length: int, max_length: int,
               generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """inputs (B, T) right-padded with PAD, targets (B, T): the answers at their positions, IGNORE elsewhere."""
    lengths = torch.randint(min_length, max_length + 1, (batch_size,), generator=generator)
    examples = [make_example(problem, int(length), generator) for length in lengths]
    width = max(len(inputs) for inputs, _ in examples)
    pad = problem.n_symbols + 1
    inputs = torch.full((batch_size, width), pad, dtype=torch.long)
    targets = torch.full((batch_size, width), IGNORE, dtype=torch.long)
    for row, (sequence, answers) in enumerate(examples):
        inputs[row, : len(sequence)] = sequence
        targets[row, len(sequence) - len(answers) : len(sequence)] = answers
    return inputs, targets


def masked_score(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, int]:
    """(mean cross-entropy, correct argmax predictions, predictions) over the positions not IGNORE."""
    answered = targets != IGNORE
    picked, wanted = logits[answered], targets[answered]
    loss = F.cross_entropy(picked.float(), wanted)
    return loss, (picked.argmax(dim=-1) == wanted).sum(), int(answered.sum())


class ChomskyTask(Task):
    primary_metric = "accuracy"
    higher_is_better = True

    def __init__(self, name: str, *, min_train_length: int, max_train_length: int, min_eval_length: int,
                 max_eval_length: int, batch_size: int, eval_batches: int, eval_seed: int):
        if name not in PROBLEMS:
            raise UserError(f"unknown Chomsky task {name!r}; choose one of {', '.join(PROBLEMS)}")
        for key, value in (("min_train_length", min_train_length), ("min_eval_length", min_eval_length),
                           ("batch_size", batch_size), ("eval_batches", eval_batches)):
            require_at_least(f"task.{key}", value, 1)
        require_at_least("task.max_train_length", max_train_length, min_train_length)
        require_at_least("task.max_eval_length", max_eval_length, min_eval_length)
        self.name, self.problem = name, PROBLEMS[name]
        self.train_lengths = (min_train_length, max_train_length)
        self.eval_lengths = (min_eval_length, max_eval_length)
        self.batch_size, self.eval_batches, self.eval_seed = batch_size, eval_batches, eval_seed
        longest = max(max_train_length, max_eval_length)
        answers = longest + 1 if self.problem.counts else self.problem.n_symbols
        self.vocab_size = max(self.problem.n_symbols + 2, answers)
        self.head = TokenHead(self.vocab_size)

    def train_batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        inputs, targets = make_batch(self.problem, self.batch_size, *self.train_lengths, generator)
        self.count_tokens(int((inputs != self.problem.n_symbols + 1).sum()))
        return inputs, targets

    def eval_set(self, split: str) -> list[tuple[Tensor, Tensor]]:
        def make() -> list[tuple[Tensor, Tensor]]:
            generator = torch.Generator().manual_seed(self.eval_seed + self.splits.index(split))
            return [make_batch(self.problem, self.batch_size, *self.eval_lengths, generator)
                    for _ in range(self.eval_batches)]

        return self.fixed_batches(split, make)

    def score(self, logits: Tensor, targets: Tensor):
        return masked_score(logits, targets)

    def metrics(self, loss: float, accuracy: float) -> dict[str, float]:
        chance = 1 / self.problem.chance_classes
        return {"loss": loss, "accuracy": accuracy, "scaled_accuracy": (accuracy - chance) / (1 - chance)}

    def vocabulary(self) -> dict:
        return {"empty": self.problem.n_symbols, "pad": self.problem.n_symbols + 1}
