"""Selective Copying (Gu & Dao's Mamba paper, used in the minRNN paper Sec. 4.2), generated on the fly.

A sequence is `seq_len` noise tokens with `n_memorize` data tokens at sorted random positions, followed by
`n_memorize` query markers; at the query positions the model must output the data tokens in order.
Tokens, as in the official minRNN code: 0 the query marker, 1 .. vocab_size-2 data, vocab_size-1 noise.
Loss and per-token accuracy are taken over the `n_memorize` answer positions only. The validation and
test sets are fixed by `eval_seed`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from minrnn_cli.errors import UserError
from minrnn_cli.models.heads import TokenHead
from minrnn_cli.tasks.base import Task, cross_entropy_score, require_at_least

QUERY_TOKEN = 0


def make_batch(batch_size: int, seq_len: int, n_memorize: int, vocab_size: int,
               generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """inputs (B, seq_len + n_memorize) and targets (B, n_memorize): the data tokens in order."""
    noise_token = vocab_size - 1
    data = torch.randint(1, noise_token, (batch_size, n_memorize), generator=generator)
    positions = torch.rand(batch_size, seq_len, generator=generator).argsort(dim=1)[:, :n_memorize]
    sequence = torch.full((batch_size, seq_len), noise_token, dtype=torch.long)
    sequence.scatter_(1, positions.sort(dim=1).values, data)
    queries = torch.full((batch_size, n_memorize), QUERY_TOKEN, dtype=torch.long)
    return torch.cat([sequence, queries], dim=1), data


class SelectiveCopying(Task):
    name = "selective_copying"
    primary_metric = "accuracy"
    higher_is_better = True

    def __init__(self, *, seq_len: int, n_memorize: int, vocab_size: int, batch_size: int, eval_batches: int,
                 eval_seed: int):
        require_at_least("task.seq_len", seq_len, 1)
        require_at_least("task.n_memorize", n_memorize, 1)
        require_at_least("task.vocab_size", vocab_size, 3)
        require_at_least("task.batch_size", batch_size, 1)
        require_at_least("task.eval_batches", eval_batches, 1)
        if n_memorize > seq_len:
            raise UserError(f"task.n_memorize={n_memorize} is invalid: it must be <= task.seq_len={seq_len}")
        self.seq_len, self.n_memorize, self.vocab_size = seq_len, n_memorize, vocab_size
        self.batch_size, self.eval_batches, self.eval_seed = batch_size, eval_batches, eval_seed
        self.head = TokenHead(vocab_size)

    @property
    def tokens_per_batch(self) -> int:
        return self.batch_size * (self.seq_len + self.n_memorize)

    def _batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return make_batch(self.batch_size, self.seq_len, self.n_memorize, self.vocab_size, generator)

    def train_batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return self._batch(generator)

    def eval_set(self, split: str) -> list[tuple[Tensor, Tensor]]:
        def make() -> list[tuple[Tensor, Tensor]]:
            generator = torch.Generator().manual_seed(self.eval_seed + self.splits.index(split))
            return [self._batch(generator) for _ in range(self.eval_batches)]

        return self.fixed_batches(split, make)

    def score(self, logits: Tensor, targets: Tensor):
        return cross_entropy_score(logits[:, -self.n_memorize :], targets)
