"""Long Range Arena ListOps (Nangia & Bowman 2018; Tay et al. 2021), generated on the fly with the
public LRA grammar: an expression is a digit 0-9 or, with probability 0.25 below `max_depth`, an operator
(MAX, MIN, MED, SM = sum mod 10) applied to 2..`max_args` sub-expressions, e.g. `[MAX 2 9 [MIN 4 7 ] 0 ]`.
The label (10 classes) is the expression's value; MED of an even count is the floor of the mean of the
middle two, as LRA's `int(np.median(...))`. Like LRA, only expressions whose token count (without
parentheses) lies strictly between `min_length` and `max_length` are kept (LRA: 500 and 2000, padded to 2048).

Differences from LRA, by design: training examples are drawn fresh every batch (LRA has a fixed set of
96,000), excluding any expression of the fixed validation or test sets; batches are right-padded with
PAD = 0 only to their longest expression. The model is a classifier read at each expression's last token.
"""

from __future__ import annotations

import random

import torch
from torch import Tensor

from minrnn_cli.models.heads import ClassHead
from minrnn_cli.tasks.base import LabelledExamples, require_at_least, require_pool

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
VALUE_PROBABILITY = 0.25  # LRA's VALUE_P: the chance that a node below max_depth is an operator
TOKENS = ("<pad>", *(str(digit) for digit in range(10)), *OPERATORS, END)
TOKEN_IDS = {token: index for index, token in enumerate(TOKENS)}
PAD = 0
NUM_CLASSES = 10


class _TooLong(Exception):
    pass


def generate_tree(rng: random.Random, max_depth: int, max_args: int, max_tokens: int | None = None):
    """A digit, or (operator, [sub-trees]): LRA's recursion, drawn from `rng`. With `max_tokens`, raises
    _TooLong as soon as the expression reaches that many tokens (rejection sampling stops early)."""
    count = 0

    def node(depth: int):
        nonlocal count
        is_operator = depth < max_depth and rng.random() <= VALUE_PROBABILITY
        count += 2 if is_operator else 1  # an operator and its END, or a digit
        if max_tokens is not None and count >= max_tokens:
            raise _TooLong
        if is_operator:
            children = [node(depth + 1) for _ in range(rng.randint(2, max_args))]
            return rng.choice(OPERATORS), children
        return rng.randrange(10)

    return node(1)


def tokens_of(tree) -> list[str]:
    if isinstance(tree, int):
        return [str(tree)]
    operator, children = tree
    return [operator, *(token for child in children for token in tokens_of(child)), END]


def value_of(tree) -> int:
    if isinstance(tree, int):
        return tree
    operator, children = tree
    values = sorted(value_of(child) for child in children)
    if operator == "[MIN":
        return values[0]
    if operator == "[MAX":
        return values[-1]
    if operator == "[SM":
        return sum(values) % 10
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) // 2


def sample_expression(rng: random.Random, min_length: int, max_length: int, max_depth: int,
                      max_args: int) -> tuple[tuple[str, ...], int]:
    """(tokens, value) of a random expression with min_length < len(tokens) < max_length (rejection)."""
    while True:
        try:
            tree = generate_tree(rng, max_depth, max_args, max_tokens=max_length)
        except _TooLong:
            continue
        tokens = tokens_of(tree)
        if min_length < len(tokens):
            return tuple(tokens), value_of(tree)


def encode(expressions: list[tuple[tuple[str, ...], int]]) -> tuple[Tensor, Tensor]:
    """inputs (B, longest) of token ids right-padded with PAD, labels (B,)."""
    width = max(len(tokens) for tokens, _ in expressions)
    inputs = torch.full((len(expressions), width), PAD, dtype=torch.long)
    for row, (tokens, _) in enumerate(expressions):
        inputs[row, : len(tokens)] = torch.tensor([TOKEN_IDS[token] for token in tokens])
    return inputs, torch.tensor([label for _, label in expressions])


class ListOps(LabelledExamples):
    name = "listops"

    def __init__(self, *, min_length: int, max_length: int, max_depth: int, max_args: int, batch_size: int,
                 eval_batches: int, eval_seed: int, pool: str):
        require_at_least("task.min_length", min_length, 0)
        require_at_least("task.max_length", max_length, min_length + 2)
        require_at_least("task.max_depth", max_depth, 2)
        require_at_least("task.max_args", max_args, 2)
        require_at_least("task.batch_size", batch_size, 1)
        require_at_least("task.eval_batches", eval_batches, 1)
        self.head = ClassHead(len(TOKENS), NUM_CLASSES, require_pool(pool), pad_token=PAD)
        self.lengths, self.max_depth, self.max_args = (min_length, max_length), max_depth, max_args
        self.batch_size, self.eval_batches, self.eval_seed = batch_size, eval_batches, eval_seed
        self._eval_sets: dict[str, list[tuple[Tensor, Tensor]]] = {}
        self._held_out: set[tuple[str, ...]] = set()  # every validation and test expression

    def _sample(self, rng: random.Random) -> tuple[tuple[str, ...], int]:
        return sample_expression(rng, *self.lengths, self.max_depth, self.max_args)

    def _build_eval_sets(self) -> None:
        for index, split in enumerate(self.splits):
            rng = random.Random(self.eval_seed + index)
            batches = [[self._sample(rng) for _ in range(self.batch_size)] for _ in range(self.eval_batches)]
            self._held_out.update(tokens for batch in batches for tokens, _ in batch)
            self._eval_sets[split] = [encode(batch) for batch in batches]

    def train_batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        if not self._eval_sets:
            self._build_eval_sets()
        rng = random.Random(int(torch.randint(2**62, (1,), generator=generator)))
        batch = []
        while len(batch) < self.batch_size:
            expression = self._sample(rng)
            if expression[0] not in self._held_out:
                batch.append(expression)
        self.count_tokens(sum(len(tokens) for tokens, _ in batch))
        return encode(batch)

    def eval_set(self, split: str) -> list[tuple[Tensor, Tensor]]:
        if not self._eval_sets:
            self._build_eval_sets()
        return self._eval_sets[split]

    def vocabulary(self) -> dict:
        return {"tokens": list(TOKENS)}
