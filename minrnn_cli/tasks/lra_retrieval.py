"""LRA Retrieval: do two ACL Anthology (AAN) papers cite one another? Byte-level document matching.

`task.data_path` is LRA's `lra_release/tsv_data` folder with `new_aan_pairs.{train,eval,test}.tsv`; each
line is `label <tab> id1 <tab> id2 <tab> text1 <tab> text2` (label 0 or 1, no header, no quoting), read as LRA
reads it: the bytes of each text, cut to `max_length` (LRA: 4000), as tokens byte + 1 (0 is padding). The
eval file is the validation split. A batch is (B, 2, longest document) of pairs, right-padded, read by a
two-tower classifier (models.PairClassifier).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from minrnn_cli.errors import UserError
from minrnn_cli.models.heads import ClassHead
from minrnn_cli.tasks.base import LabelledExamples, require_at_least, require_pool
from minrnn_cli.tasks.external import required_folder

SPLIT_FILES = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv", "test": "new_aan_pairs.test.tsv"}
FIELDS = 5  # label, id1, id2, text1, text2
PAD = 0
BYTE_LEVELS = 256

Pairs = tuple[list[tuple[bytes, bytes]], Tensor]  # (text pairs, labels)


def read_pairs(path: Path, max_length: int) -> Pairs:
    """Every (text1, text2) pair of one TSV file, each text cut to max_length bytes, and the labels."""
    pairs, labels = [], []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.rstrip(b"\r\n").split(b"\t")
            if number == 1 and fields[0] == b"label":
                continue  # a header line, as some re-exports of the release carry
            if len(fields) != FIELDS:
                raise UserError(f"{path}, line {number}: {len(fields)} tab-separated fields; LRA Retrieval "
                                f"expects {FIELDS} (label, id1, id2, text1, text2)")
            try:
                label = float(fields[0])
            except ValueError:
                label = None
            if label not in (0.0, 1.0):
                raise UserError(f"{path}, line {number}: label {fields[0].decode(errors='replace')!r} is not 0 or 1")
            pairs.append((fields[3][:max_length], fields[4][:max_length]))
            labels.append(int(label))
    if not pairs:
        raise UserError(f"{path} holds no document pairs")
    return pairs, torch.tensor(labels)


def encode_pairs(pairs: list[tuple[bytes, bytes]]) -> Tensor:
    """(B, 2, longest document) byte tokens (byte + 1), right-padded with PAD."""
    width = max(1, *(len(text) for pair in pairs for text in pair))
    tokens = np.zeros((len(pairs), 2, width), dtype=np.int64)
    for row, pair in enumerate(pairs):
        for tower, text in enumerate(pair):
            tokens[row, tower, : len(text)] = np.frombuffer(text, dtype=np.uint8).astype(np.int64) + 1
    return torch.from_numpy(tokens)


class LRARetrieval(LabelledExamples):
    name = "lra_retrieval"

    def __init__(self, *, data_path: str | None, max_length: int, batch_size: int, eval_batches: int | None,
                 pool: str):
        folder = required_folder(self.name, data_path, "LRA's AAN document pairs (lra_release/tsv_data)",
                                 tuple(SPLIT_FILES.values()))
        require_at_least("task.max_length", max_length, 1)
        require_at_least("task.batch_size", batch_size, 1)
        if eval_batches is not None:
            require_at_least("task.eval_batches", eval_batches, 1)
        self.head = ClassHead(BYTE_LEVELS + 1, 2, require_pool(pool), pad_token=PAD, paired=True)  # two towers
        self.train = read_pairs(folder / SPLIT_FILES["train"], max_length)
        self.held_out = {split: read_pairs(folder / SPLIT_FILES[split], max_length) for split in self.splits}
        self.batch_size, self.eval_batches = batch_size, eval_batches

    def training_data(self) -> str:
        return f"{len(self.train[1]):,} training pairs"

    def train_batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        pairs, labels = self.train
        rows = torch.randint(len(pairs), (self.batch_size,), generator=generator)
        chosen = [pairs[row] for row in rows.tolist()]
        self.count_tokens(sum(len(text) for pair in chosen for text in pair))  # both towers counted
        return encode_pairs(chosen), labels[rows]

    def eval_set(self, split: str) -> list[tuple[Tensor, Tensor]]:
        """The whole split in batches, in file order (the first `eval_batches` of them when that is set)."""
        pairs, labels = self.held_out[split]
        starts = range(0, len(pairs), self.batch_size)
        if self.eval_batches:
            starts = starts[: self.eval_batches]
        return [(encode_pairs(pairs[start : start + self.batch_size]), labels[start : start + self.batch_size])
                for start in starts]
