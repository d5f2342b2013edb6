"""The plain loop over time: the reference every other scan backend is tested against."""

from __future__ import annotations

import torch
from torch import Tensor


def sequential_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """h_t = a_t * h_{t-1} + b_t, one step at a time. a, b: (B, T, D) with T >= 1; h0: (B, D) or None (zeros)."""
    if b.dim() < 2 or b.shape[1] < 1:
        raise ValueError(f"sequential_scan needs a sequence of length T >= 1 (dim 1); got shape {tuple(b.shape)}")
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0.to(b.dtype)
    outputs = []
    for t in range(b.shape[1]):
        h = a[:, t] * h + b[:, t]
        outputs.append(h)
    return torch.stack(outputs, dim=1), h
