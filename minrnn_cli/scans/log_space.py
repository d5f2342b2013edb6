"""The paper's log-space scan (Heinsen, 2023), kept for fidelity and comparison.

With a*_t = sum_{k<=t} log a_k, the recurrence unrolls to
    h_t = exp(a*_t + logcumsumexp_{k<=t}(log b_k - a*_k)),
with log h_0 entering as an extra first term whose coefficient prefix is zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def log_scan(log_a: Tensor, log_b: Tensor, log_h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """h for positive b (and h0) given in log space. Returns (h, h_last) in linear space."""
    a_star = torch.cumsum(log_a, dim=1)
    log_terms = log_b - a_star
    if log_h0 is not None:
        log_terms = torch.cat([log_h0.unsqueeze(1), log_terms], dim=1)
        a_star = F.pad(a_star, (0, 0, 1, 0))
    h = torch.exp(a_star + torch.logcumsumexp(log_terms, dim=1))
    if log_h0 is not None:
        h = h[:, 1:]
    return h, h[:, -1]


def _log_positive(x: Tensor) -> Tensor:
    """log(x) where x > 0, a very negative finite number elsewhere (exp gives exactly 0, no NaN grads)."""
    tiny = torch.finfo(x.dtype).tiny
    return torch.log(x.clamp_min(tiny))


def signed_log_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The log-space scan for any sign of b and h0 (a > 0): scan the positive and negative parts apart."""
    log_a = torch.log(a)
    parts = []
    for sign in (1.0, -1.0):
        log_h0 = None if h0 is None else _log_positive(sign * h0)
        parts.append(log_scan(log_a, _log_positive(sign * b), log_h0))
    (h_pos, last_pos), (h_neg, last_neg) = parts
    return h_pos - h_neg, last_pos - last_neg
