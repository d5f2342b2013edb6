"""minGRU's recurrence straight from its pre-activations, gates and scan in one autograd function.

    z_t = sigmoid(k_t),   a_t = 1 - z_t,   b_t = z_t * g(c_t)   (or z_t * c_t in the vanilla cell)
    h_t = a_t * h_{t-1} + b_t

Autograd over the separate ops would keep z, 1 - z, g(c), z * g(c) and every mask of g's `where`, and walk
them all again backwards. Here the forward keeps only z, c and h, and the backward is the reverse scan
(g_t = dL/dh_t + a_{t+1} g_{t+1}) followed by the chain rule written out:

    dL/dk_t = g_t * (cand_t - h_{t-1}) * z_t * (1 - z_t)        dL/dc_t = g_t * z_t * cand'(c_t)
"""

from __future__ import annotations

import torch
from torch import Tensor

from minrnn_cli.scans.linear import _odd_even_scan, _reverse_odd_even_scan


def _candidate(c: Tensor, log_space: bool) -> Tensor:
    """g(c) = c + 0.5 for c >= 0, sigmoid(c) below; the identity for the vanilla cell."""
    if not log_space:
        return c
    return torch.where(c >= 0, c + 0.5, torch.sigmoid(c))


def _candidate_slope(c: Tensor, log_space: bool) -> Tensor | None:
    """g'(c): 1 for c >= 0, sigmoid(c) * (1 - sigmoid(c)) below; None (meaning 1) for the vanilla cell."""
    if not log_space:
        return None
    s = torch.sigmoid(c)
    return torch.where(c >= 0, 1.0, s.mul_(1 - s))


class _MinGRUScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, k: Tensor, c: Tensor, h0: Tensor | None, log_space: bool) -> Tensor:
        z = torch.sigmoid(k)
        b = z * _candidate(c, log_space)
        if h0 is not None:
            b[:, 0].addcmul_(1 - z[:, 0], h0)
        h = _odd_even_scan(1 - z, b)
        ctx.log_space = log_space
        ctx.save_for_backward(z, c, h, h0)
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        z, c, h, h0 = ctx.saved_tensors
        a_next = torch.empty_like(z)
        torch.sub(1, z[:, 1:], out=a_next[:, :-1])
        a_next[:, -1] = 0
        g = _reverse_odd_even_scan(a_next, grad_h)
        del a_next
        cand = _candidate(c, ctx.log_space)
        # cand - h_{t-1}, in place; h_{-1} is h0 (or zero)
        cand[:, 1:] -= h[:, :-1]
        if h0 is not None:
            cand[:, 0] -= h0
        grad_k = cand.mul_(g).mul_(z).mul_(1 - z)
        grad_c = g * z
        slope = _candidate_slope(c, ctx.log_space)
        if slope is not None:
            grad_c.mul_(slope)
        grad_h0 = None
        if h0 is not None and ctx.needs_input_grad[2]:
            grad_h0 = (1 - z[:, 0]) * g[:, 0]
        return grad_k, grad_c, grad_h0, None


def mingru_scan(k: Tensor, c: Tensor, h0: Tensor | None = None, log_space: bool = True) -> tuple[Tensor, Tensor]:
    """minGRU's states from gate pre-activations k and candidate pre-activations c, both (B, T, D).

    h0: (B, D) state before the first token (already a state, not a pre-activation) or None for zeros.
    Returns (h, h_last). float32/float64 only; the cell casts low-precision inputs first.
    """
    h = _MinGRUScan.apply(k, c, h0, log_space)
    return h, h[:, -1]
