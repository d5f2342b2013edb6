"""Language modelling on any text corpus: `task=text`, with the presets shakespeare (Tiny Shakespeare at the
character level, nanoGPT's shakespeare_char), enwik8 (bytes, 90M/5M/5M) and wikitext103 (BPE).

The corpus (tasks/corpus/: a Hub dataset, a save_to_disk folder or local files) is tokenised once into
memory-mapped files in minrnn's cache (`minrnn prepare task=...`, or the first run). Training batches are
random windows of seq_len + 1 tokens read from the memmap, so memory stays flat whatever the corpus's size;
evaluation reads fixed-seed windows of each split, or with task.eval_full=true the whole split end to end
(recurrent models carry their state from chunk to chunk, the Transformer slides a window).

Metrics per split: loss (nats per token), ppl, bpb (bits per UTF-8 byte of the split's text, comparable
across tokenizers: mean nats per token x tokens / bytes / ln 2) and, for the char and byte tokenizers, bpc
(bits per character or byte, loss / ln 2).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from minrnn_cli.device import autocast
from minrnn_cli.errors import UserError, require_flag
from minrnn_cli.models.heads import TokenHead
from minrnn_cli.tasks.base import Task, random_offsets, require_at_least, score_batches
from minrnn_cli.tasks.corpus.job import prepare_corpus, prepare_job, progress_display  # noqa: F401 (their home)

log = logging.getLogger(__name__)

EVAL_SEED = 0
SPLIT_WORDS = {"train": "training", "val": "validation", "test": "test"}


class TextTask(Task):
    primary_metric = "loss"

    def __init__(self, *, name: str, dataset: str | None, dataset_config: str | None, data_files,
                 text_column: str, tokenizer: str, vocab_size: int | None, split_names, val_fraction: float | None,
                 test_fraction: float | None, separator: str | None, num_proc: int, download: bool,
                 eval_full: bool, seq_len: int, batch_size: int, eval_batches: int, sample_chars: int,
                 bpe_train_bytes: int | None = None):
        require_at_least("task.seq_len", seq_len, 1)
        require_at_least("task.batch_size", batch_size, 1)
        require_at_least("task.eval_batches", eval_batches, 1)
        require_at_least("task.sample_chars", sample_chars, 0)
        self.name = name
        self.seq_len, self.batch_size, self.eval_batches = seq_len, batch_size, eval_batches
        self.sample_chars, self.eval_full = sample_chars, require_flag("task.eval_full", eval_full)
        self.corpus = prepare_corpus(
            name=name, dataset=dataset, dataset_config=dataset_config, data_files=data_files,
            text_column=text_column, tokenizer=tokenizer, vocab_size=vocab_size, split_names=split_names,
            val_fraction=val_fraction, test_fraction=test_fraction, separator=separator, num_proc=num_proc,
            download=download, bpe_train_bytes=bpe_train_bytes)
        self.codec = self.corpus.codec
        self.vocab_size = self.codec.vocab_size
        self.head = TokenHead(self.vocab_size)
        self.data = {split: self.corpus.tokens(split) for split in self.corpus.splits}
        self.splits = tuple(split for split in self.corpus.splits if split != "train")
        for split in self.corpus.splits:
            self.check_fits(split)

    def check_fits(self, split: str) -> None:
        """seq_len + 1 tokens must fit in the split, and a batch must find batch_size distinct windows."""
        size, where = len(self.data[split]), f"the {SPLIT_WORDS[split]} split of {self.corpus.meta['source']}"
        if size < self.seq_len + 1:
            raise UserError(f"task.seq_len={self.seq_len} is longer than the data: {where} has {size} tokens; use "
                            f"task.seq_len <= {max(size - 1, 0)} or a longer text")
        windows = size - self.seq_len
        if self.batch_size > windows:
            raise UserError(f"task.batch_size={self.batch_size} is larger than the data: {where} holds {windows} "
                            f"distinct windows of task.seq_len={self.seq_len}; use task.batch_size <= {windows}, "
                            "a shorter seq_len or a longer text")

    @property
    def tokens_per_batch(self) -> int:
        return self.batch_size * self.seq_len

    def _blocks(self, split: str, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        data = self.data[split]
        starts = random_offsets(len(data) - self.seq_len, self.batch_size, generator)
        blocks = torch.from_numpy(data[starts.numpy()[:, None] + np.arange(self.seq_len + 1)].astype(np.int64))
        return blocks[:, :-1], blocks[:, 1:]

    def train_batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return self._blocks("train", generator)

    def eval_set(self, split: str) -> list[tuple[Tensor, Tensor]]:
        """The same eval_batches random windows of `split` every time (fixed seed), so evaluations compare."""

        def make() -> list[tuple[Tensor, Tensor]]:
            generator = torch.Generator().manual_seed(EVAL_SEED)
            return [self._blocks(split, generator) for _ in range(self.eval_batches)]

        return self.fixed_batches(split, make)

    def evaluate_split(self, model, split: str, device: torch.device, precision: str) -> dict[str, float]:
        if self.eval_full:
            loss = full_split_loss(model, self.data[split], self.seq_len, device, precision)
        else:
            loss = score_batches(model, self, self.eval_set(split), device, precision)[0]
        return self.split_metrics(split, loss)

    def split_metrics(self, split: str, loss: float) -> dict[str, float]:
        counts = self.corpus.meta["splits"][split]
        metrics = {"loss": loss}
        if self.codec.kind in ("char", "byte"):
            metrics["bpc"] = loss / math.log(2)
        metrics["ppl"] = math.exp(min(loss, 700.0))
        metrics["bpb"] = loss * counts["tokens"] / counts["bytes"] / math.log(2)
        return metrics

    def training_data(self) -> str:
        return f"{len(self.data['train']):,} training tokens"

    def vocabulary(self) -> dict:
        """What a checkpoint needs to turn ids back into text (tasks.corpus.tokenizers)."""
        return self.codec.vocabulary()


def has_attention(model) -> bool:
    from minrnn_cli.models.transformer import CausalSelfAttention

    return any(isinstance(module, CausalSelfAttention) for module in model.modules())


@torch.no_grad()
def full_split_loss(model, tokens, seq_len: int, device: torch.device, precision: str) -> float:
    """Mean nats per token over a whole split, every token but the first predicted once. Recurrent models read
    it end to end in chunks of seq_len, carrying their state; the Transformer slides a window of seq_len by
    half of it, each token scored with at least half a window of context (its state, a growing cache, is not
    carried)."""
    total, count, size = 0.0, 0, len(tokens)
    if has_attention(model):
        stride, scored = max(seq_len // 2, 1), 0  # tokens[1:scored + 1] are scored
        for start in range(0, size - 1, stride):
            window = torch.from_numpy(tokens[start:start + seq_len + 1].astype(np.int64)).to(device)
            inputs, targets = window[:-1][None], window[1:]
            with autocast(device, precision):
                logits, _ = model(inputs)
            fresh = start + len(targets) - scored  # the window's last `fresh` targets are new
            total += F.cross_entropy(logits[0, -fresh:].float(), targets[-fresh:], reduction="sum").item()
            count, scored = count + fresh, scored + fresh
            if start + seq_len + 1 >= size:
                break
        return total / count
    state = None
    for start in range(0, size - 1, seq_len):
        chunk = torch.from_numpy(tokens[start:start + seq_len + 1].astype(np.int64)).to(device)
        with autocast(device, precision):
            logits, state = model(chunk[:-1][None], state)
        total += F.cross_entropy(logits[0].float(), chunk[1:], reduction="sum").item()
        count += len(chunk) - 1
    return total / count


def upgrade_shakespeare(options: dict) -> dict:
    """The settings of a Shakespeare checkpoint from before task=text (`data_path`, no corpus keys) as today's
    preset (conf/task/shakespeare.yaml), so eval and generate still take it."""
    options = dict(options)
    return {"dataset": None, "dataset_config": None, "data_files": options.pop("data_path"), "text_column": "text",
            "tokenizer": "char", "vocab_size": None, "split_names": None, "val_fraction": 0.1,
            "test_fraction": 0.0, "separator": None, "num_proc": 1, "download": False, "eval_full": False,
            **options}
