"""First-order linear recurrences h_t = a_t * h_{t-1} + b_t over (B, T, D), with initial and final state.

Backends (all differentiable, all agreeing with `sequential` in float64):
- `sequential`: the plain loop over time, the reference.
- `log`: the paper's log-space (Heinsen) scan.
- `linear`: the fast linear-space odd/even scan with a reverse-recurrence backward (the default).
- `triton`: Triton kernels (forward and backward each one pass over memory); CUDA only, needs triton.
- `auto`: the fastest valid backend for the inputs: `triton` on CUDA when triton imports, else `linear`.

Inputs of any length T >= 1 and any strides are accepted; bfloat16/float16 inputs accumulate in float32
and come back in their own dtype.

minGRU / minLSTM straight from their input projection, gates computed inside the scan, are in
`scans.fused` (`fused_cell_scan`), with the projection's layout in `scans/fused/layout.py`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from minrnn_cli.scans.linear import linear_scan
from minrnn_cli.scans.log_space import log_scan, signed_log_scan
from minrnn_cli.scans.selective import selective_scan
from minrnn_cli.scans.sequential import sequential_scan
from minrnn_cli.scans.triton_scan import triton_importable, triton_linear_scan

BACKENDS = ("sequential", "log", "linear", "auto", "triton")

_IMPLEMENTATIONS = {"sequential": sequential_scan, "log": signed_log_scan, "linear": linear_scan}


def resolve_backend(backend: str, device: torch.device | None = None) -> str:
    """The concrete backend `auto` stands for on `device`: the Triton kernels on CUDA when triton imports,
    the linear scan everywhere else (and when the device is not known yet)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown scan backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    on_cuda = device is not None and device.type == "cuda"
    return "triton" if on_cuda and triton_importable() else "linear"


def scan(a: Tensor, b: Tensor, h0: Tensor | None = None, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """Run h_t = a_t * h_{t-1} + b_t along dim 1. a, b: (B, T, D); h0: (B, D) or None for zeros.

    Returns (h, h_last) with h of shape (B, T, D) and h_last of shape (B, D). T = 0 is a ValueError.
    """
    resolved = resolve_backend(backend, b.device)
    if a.shape != b.shape or a.dim() != 3:
        shapes = f"{tuple(a.shape)} and {tuple(b.shape)}"
        raise ValueError(f"scan needs a and b of one shape (B, T, D); got {shapes}")
    if b.shape[1] < 1:
        raise ValueError("scan needs a sequence of length T >= 1")
    if resolved == "triton":  # reads any dtype and accumulates in float32 itself
        return triton_linear_scan(a, b, h0)
    implementation = _IMPLEMENTATIONS[resolved]
    out_dtype = b.dtype
    compute_dtype = out_dtype if out_dtype in _FULL_PRECISION else _ACCUMULATE
    if h0 is not None:
        h0 = h0.to(compute_dtype)
    h, h_last = implementation(a.to(compute_dtype), b.to(compute_dtype), h0)
    return h.to(out_dtype), h_last.to(out_dtype)


_ACCUMULATE = torch.float32
_FULL_PRECISION = (torch.float32, torch.float64)

__all__ = ["BACKENDS", "log_scan", "resolve_backend", "scan", "selective_scan", "sequential_scan"]
