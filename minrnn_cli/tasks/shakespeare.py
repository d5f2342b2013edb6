"""Tiny Shakespeare at the character level, as in nanoGPT's shakespeare_char.

The text (shipped inside the package) is read through HF datasets' `text` builder from the local file,
offline and cached; the vocabulary is every character of the text (65 for Tiny Shakespeare); the first
90% is the training split and the last 10% the validation split. Batches are random contiguous blocks.
"""

from __future__ import annotations

import codecs
import math
import os
import stat
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from minrnn_cli.errors import UserError
from minrnn_cli.models.heads import TokenHead
from minrnn_cli.paths import shakespeare_path
from minrnn_cli.tasks.base import Task, random_offsets, require_at_least

TRAIN_FRACTION = 0.9
TEXT_CHUNK = 1 << 20  # bytes checked at a time
EVAL_SEED = 0


def check_text_file(path: Path) -> None:
    """A one-line UserError unless `path` is a readable, non-empty UTF-8 text file. Read in chunks, so a
    binary file is refused at its first chunk and memory stays flat; a pipe or device is never opened."""
    wanted = "give a readable UTF-8 text file, or task.data_path=null for the bundled Tiny Shakespeare"
    try:
        mode, size = path.stat().st_mode, path.stat().st_size
    except OSError as error:
        raise UserError(f"task.data_path={path}: cannot read it ({error.strerror or error}); {wanted}") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"task.data_path={path}: cannot read it (Is a directory); {wanted}")
    if not stat.S_ISREG(mode):
        raise UserError(f"task.data_path={path} is not a regular file (a pipe, socket or device); {wanted}")
    if size == 0:
        raise UserError(f"task.data_path={path} is empty; {wanted}")
    decoder, read, given_from = codecs.getincrementaldecoder("utf-8")(), 0, 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(TEXT_CHUNK):
                if b"\x00" in chunk:
                    raise UserError(f"task.data_path={path} looks binary (it holds NUL bytes); {wanted}")
                given_from = read - len(decoder.getstate()[0])  # the decoder keeps a split character's bytes
                decoder.decode(chunk)
                read += len(chunk)
            given_from = read - len(decoder.getstate()[0])
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as error:
        raise UserError(f"task.data_path={path} is not UTF-8 text (byte {given_from + error.start}); "
                        f"{wanted}") from None
    except OSError as error:
        raise UserError(f"task.data_path={path}: cannot read it ({error.strerror or error}); {wanted}") from None


def read_text(path: Path) -> str:
    """The whole file as one string, loaded with HF datasets (one row per file keeps the newlines)."""
    check_text_file(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    datasets.disable_progress_bars()
    dataset = datasets.load_dataset("text", data_files=str(path), sample_by="document", split="train")
    return dataset[0]["text"] if len(dataset) else ""


class Shakespeare(Task):
    name = "shakespeare"
    splits = ("val",)
    primary_metric = "loss"

    def __init__(self, *, seq_len: int, batch_size: int, eval_batches: int, sample_chars: int,
                 data_path: str | None):
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
        self.head = TokenHead(self.vocab_size)
        ids = torch.from_numpy(encode(text, self.chars)).long()
        split_at = int(len(ids) * TRAIN_FRACTION)
        self.data = {"train": ids[:split_at], "val": ids[split_at:]}
        check_fits(self.data["val"], path, seq_len, batch_size)  # the validation split is the smaller one

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

        def make() -> list[tuple[Tensor, Tensor]]:
            generator = torch.Generator().manual_seed(EVAL_SEED)
            return [self._blocks(split, generator) for _ in range(self.eval_batches)]

        return self.fixed_batches(split, make)

    def metrics(self, loss: float, accuracy: float) -> dict[str, float]:
        return {"loss": loss, "bpc": loss / math.log(2)}

    def training_data(self) -> str:
        return f"{len(self.data['train']):,} training tokens"

    def vocabulary(self) -> dict:
        """What a checkpoint needs to turn ids back into text."""
        return {"chars": self.chars}


def check_fits(split: Tensor, path: Path, seq_len: int, batch_size: int) -> None:
    """seq_len + 1 characters must fit in the split, and a batch must find batch_size distinct blocks."""
    size = len(split)
    if size < seq_len + 1:
        raise UserError(f"task.seq_len={seq_len} is longer than the data: the validation split of {path} has "
                        f"{size} characters; use task.seq_len <= {max(size - 1, 0)} or a longer text")
    blocks = size - seq_len
    if batch_size > blocks:
        raise UserError(f"task.batch_size={batch_size} is larger than the data: the validation split of {path} "
                        f"holds {blocks} distinct blocks of task.seq_len={seq_len}; use task.batch_size <= {blocks}, "
                        "a shorter seq_len or a longer text")


def encode(text: str, chars: list[str]) -> np.ndarray:
    index = {char: i for i, char in enumerate(chars)}
    dtype = np.uint8 if len(chars) <= 256 else np.int32
    return np.fromiter((index[char] for char in text), dtype=dtype, count=len(text))


def decode(ids, chars: list[str]) -> str:
    return "".join(chars[i] for i in ids)
