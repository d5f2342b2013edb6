"""The layout of a minGRU / minLSTM input projection, the one contract between the cells and the fused scans.

A cell with `n_gates` gates and inner width D projects each token to (n_gates + 1) * D features:

    [ gate 1 | ... | gate n_gates | candidate ]     each block D wide, along the last dim

    minGRU  (n_gates = 1): [ k (update gate z = sigmoid(k)) | candidate ]
    minLSTM (n_gates = 2): [ forget gate | input gate | candidate ]

Gate pre-activations come first, in that order, and the candidate pre-activation last. The cells
(`models/cells.py`), the CPU fused minGRU (`fused/mingru.py`) and the Triton ops (`triton_scan/ops.py`)
all slice the projection (and write its gradient) through the functions here. Every slice is a view.
"""

from __future__ import annotations

from torch import Tensor

N_GATES = {"mingru": 1, "minlstm": 2}  # gate blocks in front of the candidate, per cell


def projection_width(n_gates: int, d_inner: int) -> int:
    """The projection's width for `n_gates` gates of inner width `d_inner`: (n_gates + 1) * d_inner."""
    return (n_gates + 1) * d_inner


def inner_width(projected: int, n_gates: int) -> int:
    """d_inner of a projection `projected` features wide (the inverse of `projection_width`)."""
    d_inner = projected // (n_gates + 1)
    if projected % (n_gates + 1) or d_inner < 1:
        raise ValueError(f"a projection of width {projected} does not hold {n_gates} gate(s) and a candidate")
    return d_inner


def split_projection(hidden: Tensor, n_gates: int) -> tuple[Tensor, Tensor]:
    """(gate pre-activations (..., n_gates * D), candidate pre-activation (..., D)) of `hidden`."""
    d_inner = inner_width(hidden.shape[-1], n_gates)
    return hidden[..., :-d_inner], hidden[..., -d_inner:]


def split_gates(gate_pre: Tensor, n_gates: int) -> tuple[Tensor, ...]:
    """The gate pre-activations one per gate, in layout order (minLSTM: forget, input)."""
    return gate_pre.chunk(n_gates, dim=-1)
