"""Whole models: a stack of residual blocks between an embedding and a head.

`LanguageModel` predicts the next token at every position and generates with O(1) state per token for
the recurrent mixers; `SequenceClassifier` reads the sequence out at its last position or pooled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minrnn_cli.models.blocks import ResidualBlock, make_norm


class Backbone(nn.Module):
    """Embedding, blocks and final norm; the state is one entry per block."""

    def __init__(self, vocab_size: int, d_model: int, blocks: list[ResidualBlock], norm: str):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(blocks)
        self.norm = make_norm(norm, d_model)

    @property
    def carries_parallel_state(self) -> bool:
        return all(getattr(block.mixer, "carries_parallel_state", True) for block in self.blocks)

    def forward(self, idx: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        x = self.embed(idx)
        new_state = []
        for i, block in enumerate(self.blocks):
            x, block_state = block(x, None if state is None else state[i])
            new_state.append(block_state)
        return self.norm(x), new_state

    def step(self, token: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        x = self.embed(token)
        new_state = []
        for i, block in enumerate(self.blocks):
            x, block_state = block.step(x, None if state is None else state[i])
            new_state.append(block_state)
        return self.norm(x), new_state


class LanguageModel(nn.Module):
    def __init__(self, backbone: Backbone, vocab_size: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.embed.embedding_dim, vocab_size, bias=False)

    def forward(self, idx: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        """idx: (B, T) token ids. Returns logits (B, T, vocab) and the state after the last token."""
        x, state = self.backbone(idx, state)
        return self.head(x), state

    def step(self, token: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        """token: (B,) ids. Returns logits (B, vocab) for the next token and the new state."""
        x, state = self.backbone.step(token, state)
        return self.head(x), state

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """Continue idx (B, T) by max_new_tokens sampled tokens: prefill the prompt, then one step a token."""
        if self.backbone.carries_parallel_state:
            logits, state = self(idx)
            logits = logits[:, -1]
        else:
            state = None
            for t in range(idx.shape[1]):
                logits, state = self.step(idx[:, t], state)
        out = [idx]
        for _ in range(max_new_tokens):
            token = _sample(logits, temperature, top_k, generator)
            out.append(token.unsqueeze(1))
            logits, state = self.step(token, state)
        return torch.cat(out, dim=1)


def _sample(logits: Tensor, temperature: float, top_k: int | None, generator) -> Tensor:
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator).squeeze(1)


POOLING = ("last", "mean")


class SequenceClassifier(nn.Module):
    """Class logits from the representation at the last position (`pool="last"`) or averaged (`"mean"`).

    `lengths` (B,) marks where each padded sequence really ends, for batches of unequal lengths.
    """

    def __init__(self, backbone: Backbone, num_classes: int, pool: str = "last"):
        super().__init__()
        if pool not in POOLING:
            raise ValueError(f"unknown pooling {pool!r}; choose one of {', '.join(POOLING)}")
        self.backbone = backbone
        self.pool = pool
        self.head = nn.Linear(backbone.embed.embedding_dim, num_classes)

    def forward(self, idx: Tensor, lengths: Tensor | None = None) -> Tensor:
        x, _ = self.backbone(idx)
        if lengths is None:
            lengths = torch.full((idx.shape[0],), idx.shape[1], device=idx.device)
        if self.pool == "last":
            pooled = x[torch.arange(x.shape[0], device=x.device), lengths - 1]
        else:
            mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
            pooled = (x * mask.unsqueeze(-1)).sum(1) / lengths.unsqueeze(-1)
        return self.head(pooled)
