"""The paper's log-space scan (Heinsen, 2023), kept for fidelity and comparison.

With a*_t = sum_{k<=t} log a_k, the recurrence unrolls to
    h_t = exp(a*_t + logcumsumexp_{k<=t}(log b_k - a*_k)),
with log h_0 entering as an extra first term whose coefficient prefix is zero.

Numerical edges. An exact 0 (log = -inf: a gate that rounds to 0, b = 0, h0 = 0) would make a* -inf and
log b_k - a*_k +inf, then -inf + inf = NaN, and logcumsumexp's gradient is NaN over a leading -inf: every
log input is floored at `_log_floor(dtype)`, so far below the log of the smallest positive number that
what it multiplies never shows in a result, while a* stays finite. bfloat16/float16 are computed in
float32 and come back in their own dtype (exp overflows float16 within a few steps). In float32 the result
carries a relative error of about eps * |a*_t| (a* cancels against the log-sum), which grows with T and
with the gates' magnitude; the `linear` scan has no such term.
"""

from __future__ import annotations

import math
from functools import reduce

import torch
import torch.nn.functional as F
from torch import Tensor

_FULL_PRECISION = (torch.float32, torch.float64)


def _log_floor(dtype: torch.dtype) -> float:
    """A finite stand-in for log(0): exp(floor) * (largest / smallest positive number) < eps.

    float32: -207.9, float64: -1490.3; every positive number's log is above it (float32: -103.3).
    """
    info = torch.finfo(dtype)
    return 2 * math.log(info.eps) + math.log(info.tiny) - math.log(info.max)


def _dtypes(*tensors: Tensor | None) -> tuple[torch.dtype, torch.dtype]:
    """(output dtype, compute dtype): low-precision inputs are computed in float32."""
    out = reduce(torch.promote_types, [t.dtype for t in tensors if t is not None])
    return out, out if out in _FULL_PRECISION else torch.float32


def _check_length(x: Tensor, name: str) -> None:
    if x.dim() < 2 or x.shape[1] < 1:
        raise ValueError(f"{name} needs a sequence of length T >= 1 (dim 1); got shape {tuple(x.shape)}")


def _heinsen(log_a: Tensor, log_b: Tensor, log_h0: Tensor | None) -> tuple[Tensor, Tensor]:
    """(h, a*) of the log-space scan, computed in the inputs' dtype; -inf (or anything below the floor) in
    any input is read as the floor."""
    floor = _log_floor(log_b.dtype)
    a_star = torch.cumsum(log_a.clamp_min(floor), dim=1)
    log_terms = log_b.clamp_min(floor) - a_star
    if log_h0 is None:
        return torch.exp(a_star + torch.logcumsumexp(log_terms, dim=1)), a_star
    log_terms = torch.cat([log_h0.clamp_min(floor).unsqueeze(1), log_terms], dim=1)
    h = torch.exp(F.pad(a_star, (0, 0, 1, 0)) + torch.logcumsumexp(log_terms, dim=1))
    return h[:, 1:], a_star


def log_scan(log_a: Tensor, log_b: Tensor, log_h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """h for positive b (and h0) given in log space. Returns (h, h_last) in linear space.

    -inf (an exact 0) is allowed in any input; T >= 1 (else a ValueError); bfloat16/float16 are computed in
    float32 and returned in their own dtype.
    """
    _check_length(log_b, "log_scan")
    out_dtype, compute = _dtypes(log_a, log_b, log_h0)
    log_h0 = None if log_h0 is None else log_h0.to(compute)
    h, _ = _heinsen(log_a.to(compute), log_b.to(compute), log_h0)
    h = h.to(out_dtype)
    return h, h[:, -1]


def log_scan_from_state(log_a: Tensor, log_b: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """`log_scan` with the initial state h0 in linear space, as the cells carry it; needs log_a <= 0.

    h0 may be any value, 0 included (a state that underflowed, or zeros given as a reset): where it is at
    least the smallest normal number it enters as log h0, exactly as in `log_scan`; below that it enters in
    linear space, as h0 * prod a, whose gradient is exact where log's is 0 / 0.
    """
    _check_length(log_b, "log_scan_from_state")
    out_dtype, compute = _dtypes(log_a, log_b, h0)
    log_a, log_b = log_a.to(compute), log_b.to(compute)
    if h0 is None:
        h, _ = _heinsen(log_a, log_b, None)
    else:
        h0 = h0.to(compute)
        positive = h0.clamp_min(torch.finfo(compute).tiny)
        h, a_star = _heinsen(log_a, log_b, torch.log(positive))
        h = torch.addcmul(h, torch.exp(a_star), (h0 - positive).unsqueeze(1))  # adds exactly 0 where h0 >= tiny
    h = h.to(out_dtype)
    return h, h[:, -1]


def _log_positive(x: Tensor) -> Tensor:
    """log(x) where x > 0, a very negative finite number elsewhere (exp gives exactly 0, no NaN grads)."""
    tiny = torch.finfo(x.dtype).tiny
    return torch.log(x.clamp_min(tiny))


def _signed_scan_values(a: Tensor, b: Tensor, h0: Tensor | None) -> Tensor:
    """h for any signs of a, b and h0: two positive log-space scans (b's positive and negative parts) over |a|.

    With s_t = sign(prod_{k<=t} a_k) (an exact 0 counts as +), u_t = s_t h_t follows
    u_t = |a_t| u_{t-1} + s_t b_t from u_0 = h_0; for a >= 0, s = 1 and this is the plain split.
    """
    sign = (1 - 2 * (a < 0).to(a.dtype)).cumprod(dim=1)
    log_a = torch.log(a.abs())
    b = b * sign
    parts = []
    for part_sign in (1.0, -1.0):
        log_h0 = None if h0 is None else _log_positive(part_sign * h0)
        parts.append(_heinsen(log_a, _log_positive(part_sign * b), log_h0)[0])
    h_pos, h_neg = parts
    return (h_pos - h_neg) * sign


class _SignedLogScan(torch.autograd.Function):
    """Forward: the signed log-space scan. Backward: the same scan run in reverse on the recurrence's own
    gradient, G_t = dL/dh_t + a_{t+1} G_{t+1}, dL/da_t = G_t h_{t-1}, dL/db_t = G_t, dL/dh_0 = a_1 G_1:
    autograd through log would give 0 / 0 (NaN, or 0 after a clamp) where a, b or h0 is exactly 0."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor | None) -> Tensor:
        h = _signed_scan_values(a, b, h0)
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        a, h, h0 = ctx.saved_tensors
        a_next = torch.cat([a[:, 1:], torch.ones_like(a[:, :1])], dim=1)  # the last 1 multiplies nothing
        grad = _signed_scan_values(a_next.flip(1), grad_h.flip(1), None).flip(1)
        grad_a = None
        if ctx.needs_input_grad[0]:
            first = torch.zeros_like(h[:, :1]) if h0 is None else h0.unsqueeze(1)
            grad_a = grad * torch.cat([first, h[:, :-1]], dim=1)
        grad_h0 = a[:, 0] * grad[:, 0] if h0 is not None and ctx.needs_input_grad[2] else None
        return grad_a, grad, grad_h0


def signed_log_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The log-space scan for any signs of a, b and h0 (exact zeros included); the `log` backend of `scan`."""
    _check_length(b, "signed_log_scan")
    out_dtype, compute = _dtypes(a, b, h0)
    h = _SignedLogScan.apply(a.to(compute), b.to(compute), None if h0 is None else h0.to(compute))
    h = h.to(out_dtype)
    return h, h[:, -1]
