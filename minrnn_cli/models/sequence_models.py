"""Whole models: a stack of residual blocks between an embedding and a head.

`LanguageModel` predicts the next token at every position and generates with O(1) state per token for
the recurrent mixers; `SequenceClassifier` reads the sequence out at its last position or pooled;
`PairClassifier` (LRA Retrieval) encodes two sequences with one backbone and compares them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minrnn_cli.models.blocks import ResidualBlock, make_norm, run_layers


class Backbone(nn.Module):
    """Embedding, blocks and final norm; the state is one entry per block. Without a vocabulary there is no
    embedding, and `mix` takes the input vectors themselves (the Decision model embeds its own tokens)."""

    def __init__(self, vocab_size: int | None, d_model: int, blocks: list[ResidualBlock], norm: str):
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Embedding(vocab_size, d_model) if vocab_size is not None else None
        self.blocks = nn.ModuleList(blocks)
        self.norm = make_norm(norm, d_model)

    def forward(self, idx: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        return self.mix(self.embed(idx), state)

    def mix(self, x: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        """The blocks and the final norm over vectors x (B, T, d_model)."""
        x, state = run_layers(self.blocks, x, state)
        return self.norm(x), state

    def step(self, token: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        x, state = run_layers(self.blocks, self.embed(token), state, step=True)
        return self.norm(x), state


class LanguageModel(nn.Module):
    def __init__(self, backbone: Backbone, vocab_size: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.d_model, vocab_size, bias=False)

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
                 generator: torch.Generator | None = None, on_token=None) -> Tensor:
        """Continue idx (B, T) by max_new_tokens sampled tokens: prefill the prompt, then one step a token.
        `on_token(token)` is called with each new (B,) token as soon as it is drawn (to stream it)."""
        logits, state = self(idx)
        logits = logits[:, -1]
        out = [idx]
        for _ in range(max_new_tokens):
            token = _sample(logits, temperature, top_k, generator)
            out.append(token.unsqueeze(1))
            if on_token is not None:
                on_token(token)
            logits, state = self.step(token, state)
        return torch.cat(out, dim=1)


def _sample(logits: Tensor, temperature: float, top_k: int | None, generator) -> Tensor:
    if temperature <= 0:
        return logits.argmax(dim=-1)
    # shifted so the largest logit is 0 before dividing: a tiny temperature gives -inf (probability 0), never
    # inf - inf = NaN, and a huge one a uniform distribution; the same distribution otherwise
    logits = (logits - logits.max(dim=-1, keepdim=True).values) / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator).squeeze(1)


POOLING = ("last", "mean")


def pool_sequence(x: Tensor, lengths: Tensor | None, pool: str) -> Tensor:
    """(B, d) from x (B, T, d): each row at its last real position (`"last"`) or averaged over its real
    positions (`"mean"`); `lengths` (B,) says where each right-padded row ends (None: all T)."""
    if lengths is None:
        lengths = torch.full((x.shape[0],), x.shape[1], device=x.device)
    lengths = lengths.clamp(min=1)  # an empty row is read at its first position
    if pool == "last":
        return x[torch.arange(x.shape[0], device=x.device), lengths - 1]
    mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
    return (x * mask.unsqueeze(-1)).sum(1) / lengths.unsqueeze(-1)


def check_pool(pool: str) -> None:
    if pool not in POOLING:
        raise ValueError(f"pool={pool!r} is invalid: choose one of {', '.join(POOLING)}")


class SequenceClassifier(nn.Module):
    """Class logits from the representation at the last position (`pool="last"`) or averaged (`"mean"`).

    `lengths` (B,) marks where each padded sequence really ends, for batches of unequal lengths.
    """

    def __init__(self, backbone: Backbone, num_classes: int, pool: str = "last"):
        super().__init__()
        check_pool(pool)
        self.backbone = backbone
        self.pool = pool
        self.head = nn.Linear(backbone.d_model, num_classes)

    def forward(self, idx: Tensor, lengths: Tensor | None = None) -> Tensor:
        x, _ = self.backbone(idx)
        return self.head(pool_sequence(x, lengths, self.pool))


class PairClassifier(nn.Module):
    """LRA's two-tower (dual encoder) model for document matching: one backbone encodes both sequences of
    a pair, each is pooled to u and v, and an MLP reads [u, v, u * v, u - v] (LRA's interaction features).

    idx (B, 2, T) holds the pairs; `lengths` (B, 2) where each padded sequence really ends.
    """

    def __init__(self, backbone: Backbone, num_classes: int, pool: str = "last"):
        super().__init__()
        check_pool(pool)
        self.backbone = backbone
        self.pool = pool
        d_model = backbone.d_model
        self.head = nn.Sequential(nn.Linear(4 * d_model, d_model), nn.ReLU(), nn.Linear(d_model, num_classes))

    def forward(self, idx: Tensor, lengths: Tensor | None = None) -> Tensor:
        pairs = idx.shape[0]
        x, _ = self.backbone(idx.flatten(0, 1))  # both towers in one batch of 2B sequences
        flat_lengths = None if lengths is None else lengths.flatten()
        u, v = pool_sequence(x, flat_lengths, self.pool).view(pairs, 2, -1).unbind(1)
        return self.head(torch.cat([u, v, u * v, u - v], dim=-1))
