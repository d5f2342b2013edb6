"""minGRU and minLSTM computed straight from their input projection: gates, candidate and scan fused.

The cells (`models/cells.py`) project x_t to [gates | candidate] (`layout.py`) and run the recurrence
h_t = a_t * h_{t-1} + b_t from the pre-activations:

    minGRU:   z_t = sigmoid(k_t)                              a_t = 1 - z_t   b_t = z_t * cand(c_t)
    minLSTM:  f_t = sigmoid(k^f_t), i_t = sigmoid(k^i_t)
              normalize: z_t = i_t / (f_t + i_t)              a_t = 1 - z_t   b_t = z_t * cand(c_t)
                         (= sigmoid(log i_t - log f_t))
              otherwise:                                      a_t = f_t       b_t = i_t * cand(c_t)

    cand(c) = g(c) = c + 0.5 (c >= 0), sigmoid(c) (c < 0)  with log_space, else cand(c) = c

h_0 is a state (already through g), or zeros. Where these are computed, per concrete scan backend:
- `triton` (CUDA, both cells): `triton_scan/kernels.py` evaluates them inside the scan kernels, forward
  and backward (`triton_scan/ops.py` hands it the projection's slices).
- `linear` on the CPU (both cells, float32/bf16/fp16): `fused/cpu_kernels.c`, compiled at first use
  (`fused/cpu.py`): one pass over memory forward, one backward.
- `linear` otherwise (minGRU in float64, or where no C compiler works): `fused/mingru.py`, one autograd
  function over the odd/even scan of `scans/linear.py`.
- anything else (minLSTM on `linear` without the compiled kernels; `log`, `sequential`): the cell itself,
  with torch ops (`MinGRU.gates` / `MinLSTM.gates`, or `log_gates` for the log-space scan), then `scans.scan`.
`has_fused_path(cell, backend, hidden)` says which; `fused_cell_scan` runs it.

Importing this package imports torch only; triton is imported when a Triton kernel is first used.
"""

from __future__ import annotations

from torch import Tensor

from minrnn_cli.scans.fused import cpu
from minrnn_cli.scans.fused.layout import N_GATES, inner_width, projection_width, split_gates, split_projection
from minrnn_cli.scans.fused.mingru import mingru_scan
from minrnn_cli.scans.triton_scan import triton_cell_scan


def has_fused_path(cell: str, backend: str, hidden: Tensor | None = None) -> bool:
    """Whether `fused_cell_scan` computes `cell` ("mingru" or "minlstm") on the concrete `backend` (for the
    projection `hidden`, when given: the compiled CPU kernels take CPU tensors but float64)."""
    if backend == "triton":
        return True
    if backend != "linear":
        return False
    return cell == "mingru" or (hidden is not None and cpu.handles(hidden))


def fused_cell_scan(
    hidden: Tensor, h0: Tensor | None, cell: str, log_space: bool, normalize: bool, backend: str
) -> tuple[Tensor, Tensor]:
    """(h (B, T, D), h_last (B, D)) of a minGRU / minLSTM from its input projection (B, T, (n_gates + 1) * D).

    `hidden` is laid out as in `layout.py`; `h0` is a state (B, D) or None for zeros; `normalize` is
    minLSTM's (minGRU ignores it); `backend` is concrete ("triton", or "linear" for minGRU), already
    resolved by the caller. Outputs come in hidden's dtype.
    """
    if hidden.dim() < 2 or hidden.shape[1] < 1:  # T = 0 would recurse without end in the odd/even scan
        raise ValueError(f"fused_cell_scan needs a sequence of length T >= 1; got shape {tuple(hidden.shape)}")
    if cell not in N_GATES:
        raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(N_GATES)}")
    if not has_fused_path(cell, backend, hidden):
        raise ValueError(f"no fused {cell} path for scan backend {backend!r}")
    if backend == "triton":
        h = triton_cell_scan(hidden, h0, cell, log_space, normalize)
        return h, h[:, -1]
    if cpu.handles(hidden):
        return cpu.compiled_cell_scan(hidden, h0, cell, log_space, normalize)
    return mingru_scan(hidden, h0, log_space)


__all__ = [
    "N_GATES",
    "fused_cell_scan",
    "has_fused_path",
    "inner_width",
    "mingru_scan",
    "projection_width",
    "split_gates",
    "split_projection",
]
