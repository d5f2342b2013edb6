"""The CPU fused minGRU: gates and scan in one autograd function over the input projection.

Autograd over the separate ops would keep z, 1 - z, g(c), z * g(c) and g's masks, walk them all again
backwards and scatter two gradient slices into the projection's gradient. Here the forward keeps only z, c
and h, and the backward is the reverse scan (G_t = dL/dh_t + a_{t+1} G_{t+1}) followed by the chain rule,
written straight into one gradient tensor for the projection [k | c] (`layout.py`):

    dL/dk_t = G_t * (cand_t - h_{t-1}) * z_t * (1 - z_t)        dL/dc_t = G_t * z_t * cand'(c_t)

g is written as relu(c) + sigmoid(min(c, 0)) and its slope with threshold masks: on the CPU, torch.where
and boolean masks cost several times a plain elementwise pass.
"""

from __future__ import annotations

import torch
from torch import Tensor

from minrnn_cli.scans.fused.layout import N_GATES, projection_width, split_projection
from minrnn_cli.scans.linear import odd_even_scan, reverse_odd_even_scan

_N_GATES = N_GATES["mingru"]
_threshold_backward = torch.ops.aten.threshold_backward  # (grad, x, t): grad where x > t, else 0
_sigmoid_backward = torch.ops.aten.sigmoid_backward  # (grad, s): grad * s * (1 - s)


def _g(c: Tensor) -> Tensor:
    """g(c) = c + 0.5 for c >= 0, sigmoid(c) below."""
    return torch.sigmoid(c.clamp(max=0)).add_(c.clamp(min=0))


def _times_g_slope(grad: Tensor, c: Tensor) -> Tensor:
    """grad * g'(c): grad for c >= 0, grad * sigmoid'(c) below."""
    below = _threshold_backward(_sigmoid_backward(grad, torch.sigmoid(c.clamp(max=0))), c.neg(), 0)
    at_or_above = _threshold_backward(grad, c, -torch.finfo(c.dtype).tiny)
    return below.add_(at_or_above)


class _MinGRUScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, h0: Tensor | None, log_space: bool) -> Tensor:
        k, c = split_projection(hidden, _N_GATES)
        z = torch.sigmoid(k.contiguous())
        c = c.contiguous()
        b = z * (_g(c) if log_space else c)
        if h0 is not None:
            b[:, 0].addcmul_(1 - z[:, 0], h0)
        h = odd_even_scan(1 - z, b)
        ctx.log_space = log_space
        ctx.save_for_backward(z, c, h, h0)
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        z, c, h, h0 = ctx.saved_tensors
        a_next = torch.empty_like(z)
        torch.sub(1, z[:, 1:], out=a_next[:, :-1])
        a_next[:, -1] = 0
        g = reverse_odd_even_scan(a_next, grad_h.contiguous())
        del a_next
        grad_h0 = None
        if h0 is not None and ctx.needs_input_grad[1]:
            grad_h0 = (1 - z[:, 0]) * g[:, 0]
        width = projection_width(_N_GATES, z.shape[-1])
        grad_hidden = torch.empty(*z.shape[:-1], width, dtype=z.dtype, device=z.device)
        grad_k, grad_c = split_projection(grad_hidden, _N_GATES)
        # dL/dk = G * (cand - h_{t-1}) * z * (1 - z); h_{-1} is h0 (or zero)
        cand_minus_prev = _g(c) if ctx.log_space else c.clone()
        cand_minus_prev[:, 1:] -= h[:, :-1]
        if h0 is not None:
            cand_minus_prev[:, 0] -= h0
        _sigmoid_backward.grad_input(cand_minus_prev.mul_(g), z, grad_input=grad_k)
        # dL/dc = G * z * cand'(c)
        g_z = g.mul_(z)
        grad_c.copy_(_times_g_slope(g_z, c) if ctx.log_space else g_z)
        return grad_hidden, grad_h0, None


def mingru_scan(hidden: Tensor, h0: Tensor | None = None, log_space: bool = True) -> tuple[Tensor, Tensor]:
    """minGRU's states from its input projection `hidden` = [k | c], (B, T, 2D).

    h0: (B, D) state before the first token (already a state, not a pre-activation) or None for zeros.
    Returns (h, h_last) in hidden's dtype; bfloat16/float16 inputs are computed in float32.
    """
    dtype = hidden.dtype
    compute = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    h0 = None if h0 is None else h0.to(compute)
    h = _MinGRUScan.apply(hidden.to(compute), h0, log_space)
    return h.to(dtype), h[:, -1].to(dtype)
