"""A small causal Transformer mixer (the paper's Shakespeare comparison): multi-head self-attention with
rotary position embeddings and a key/value cache as its state, so generation costs O(t) per token."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _rotate(x: Tensor, offset: int) -> Tensor:
    """Rotary position embedding for x: (B, H, T, head_dim) at positions offset .. offset + T - 1."""
    head_dim = x.shape[-1]
    exponents = torch.arange(0, head_dim, 2, device=x.device, dtype=torch.float32) / head_dim
    inv_freq = 1.0 / (10000**exponents)
    positions = torch.arange(offset, offset + x.shape[2], device=x.device, dtype=torch.float32)
    angles = torch.outer(positions, inv_freq)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int = 4):
        super().__init__()
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise ValueError(f"n_heads={n_heads} must divide d_model={d_model} into an even head size")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None):
        """x: (B, T, D); state: cached (keys, values) of earlier positions, each (B, H, T_past, head_dim)."""
        batch, length, width = x.shape
        q, k, v = (
            part.view(batch, length, self.n_heads, -1).transpose(1, 2) for part in self.qkv(x).chunk(3, -1)
        )
        past = 0 if state is None else state[0].shape[2]
        q, k = _rotate(q, past), _rotate(k, past)
        if state is not None:
            k, v = torch.cat([state[0], k], dim=2), torch.cat([state[1], v], dim=2)
        if past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            visible = torch.ones(length, past + length, dtype=torch.bool, device=x.device).tril(past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)
        return self.out(y.transpose(1, 2).reshape(batch, length, width)), (k, v)

    def step(self, x_t: Tensor, state=None):
        y, state = self(x_t.unsqueeze(1), state)
        return y.squeeze(1), state
