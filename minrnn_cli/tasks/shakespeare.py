"""Tiny Shakespeare at the character level, as in nanoGPT's shakespeare_char.

The text (shipped inside the package) is read through HF datasets' `text` builder from the local file,
offline and cached; the vocabulary is every character of the text (65 for Tiny Shakespeare); the first
90% is the training split and the last 10% the validation split. Batches are random contiguous blocks.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from minrnn_cli.errors import UserError
from minrnn_cli.paths import shakespeare_path
from minrnn_cli.tasks.base import cross_entropy_score, random_offsets, require_at_least

TRAIN_FRACTION = 0.9
EVAL_SEED = 0


def read_text(path: Path) -> str:
    """The whole file as one string, loaded with HF datasets (one row per file keeps the newlines)."""
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as error:
        raise UserError(f"cannot read the text file {path}: {error.strerror or error}") from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    datasets.disable_progress_bars()
    try:
        dataset = datasets.load_dataset("text", data_files=str(path), sample_by="document", split="train")
    except UnicodeDecodeError:
        raise UserError(f"the text file {path} is not UTF-8 text") from None
    return dataset[0]["text"] if len(dataset) else ""


class Shakespeare:
    name = "shakespeare"
    splits = ("val",)
    primary_metric = "loss"  # lower is better

    def __init__(self, seq_len: int = 128, batch_size: int = 32, eval_batches: int = 40,
                 sample_chars: int = 300, data_path: str | None = None):
        require_at_least("task.seq_len", seq_len, 1)
        require_at_least("task.batch_size", batch_size, 1)
        require_at_least("task.eval_batches", eval_batches, 1)
        require_at_least("task.sample_chars", sample_chars, 0)
        self.seq_len, self.batch_size, self.eval_batches = seq_len, batch_size, eval_batches
        self.sample_chars = sample_chars
        path = Path(data_path).expanduser() if data_path else shakespeare_path()
        text = read_text(path)
        self.chars = sorted(set(text))
        self.vocab_size = len(self.chars)
        ids = torch.from_numpy(encode(text, self.chars)).long()
        split_at = int(len(ids) * TRAIN_FRACTION)
        self.data = {"train": ids[:split_at], "val": ids[split_at:]}
        shortest = min(len(part) for part in self.data.values())
        if shortest < seq_len + 1:
            raise UserError(f"the text file {path} is too short for task.seq_len={seq_len} "
                            f"(its smaller split has {shortest} characters)")
        self._eval_sets: dict[str, list[tuple[Tensor, Tensor]]] = {}

    @property
    def tokens_per_batch(self) -> int:
        return self.batch_size * self.seq_len

    def _blocks(self, split: str, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        data = self.data[split]
        starts = random_offsets(len(data) - self.seq_len, self.batch_size, generator)
        blocks = data[starts[:, None] + torch.arange(self.seq_len + 1)]
        return blocks[:, :-1], blocks[:, 1:]

    def train_batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return self._blocks("train", generator)

    def eval_set(self, split: str) -> list[tuple[Tensor, Tensor]]:
        """The same eval_batches random blocks of `split` every time (fixed seed), so evaluations compare."""
        if split not in self._eval_sets:
            generator = torch.Generator().manual_seed(EVAL_SEED)
            self._eval_sets[split] = [self._blocks(split, generator) for _ in range(self.eval_batches)]
        return self._eval_sets[split]

    def score(self, logits: Tensor, targets: Tensor):
        return cross_entropy_score(logits, targets)

    @staticmethod
    def metrics(loss: float, accuracy: float) -> dict[str, float]:
        return {"loss": loss, "bpc": loss / math.log(2)}

    def vocabulary(self) -> dict:
        """What a checkpoint needs to turn ids back into text."""
        return {"chars": self.chars}


def encode(text: str, chars: list[str]) -> np.ndarray:
    index = {char: i for i, char in enumerate(chars)}
    dtype = np.uint8 if len(chars) <= 256 else np.int32
    return np.fromiter((index[char] for char in text), dtype=dtype, count=len(text))


def decode(ids, chars: list[str]) -> str:
    return "".join(chars[i] for i in ids)
