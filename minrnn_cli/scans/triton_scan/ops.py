"""The Triton kernels as torch.library custom ops with autograd and fake (meta) kernels.

Registered ops, opaque to torch.compile (no graph break; the fake kernels give output shapes):
    minrnn::linear_scan(a, b, h0?) -> h                            h_t = a_t h_{t-1} + b_t
    minrnn::cell_scan(hidden, h0?, cell, log_space, normalize) -> h  the fused minGRU / minLSTM scan
and their backward ops. `hidden` is the cell's whole input projection (B, T, (n_gates + 1) * D), laid out
as in `scans/fused/layout.py` (gate pre-activations first, candidate last), so the backward writes one
gradient tensor for it instead of one per slice.

Importing this module imports triton; `minrnn_cli.scans.triton_scan` imports it only when it is used.
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from minrnn_cli.scans.fused.layout import N_GATES as LAYOUT_GATES
from minrnn_cli.scans.fused.layout import inner_width, split_gates, split_projection
from minrnn_cli.scans.triton_scan.kernels import (
    MINGRU,
    MINLSTM,
    PLAIN,
    scan_backward_kernel,
    scan_forward_kernel,
)

N_GATES = {MINGRU: LAYOUT_GATES["mingru"], MINLSTM: LAYOUT_GATES["minlstm"]}  # by kernel CELL code


@dataclass
class LaunchConfig:
    """Tile sizes: CHUNK_T steps x BLOCK_D channels per program (capped at the tensor's own sizes)."""

    chunk_t: int = 32
    block_d: int = 32
    num_warps: int = 4  # 8 elements a thread at 32 x 32: no register spills in ptxas for sm_90


CONFIG = LaunchConfig()  # scripts/bench_triton_scan.py sweeps these; tests shrink them


def _launch(kernel, batch: int, length: int, width: int, *args, **constants) -> None:
    block_d = min(CONFIG.block_d, triton.next_power_of_2(width))
    chunk_t = min(CONFIG.chunk_t, triton.next_power_of_2(length))
    n_blocks_d = triton.cdiv(width, block_d)
    num_warps = max(1, min(CONFIG.num_warps, chunk_t * block_d // 32))  # no more threads than elements
    with torch.cuda.device_of(args[0]):
        kernel[(batch * n_blocks_d,)](
            *args[:-1], length, width, n_blocks_d, *args[-1],
            CHUNK_T=chunk_t, BLOCK_D=block_d, num_warps=num_warps, **constants,
        )  # fmt: skip


def _accumulator(*tensors: Tensor):
    return tl.float64 if any(t.dtype == torch.float64 for t in tensors) else tl.float32


def _h0_args(h0: Tensor | None, like: Tensor) -> tuple[Tensor, tuple[int, int]]:
    return (like, (0, 0)) if h0 is None else (h0, h0.stride())


def _cell_inputs(hidden: Tensor, cell: int) -> tuple[Tensor, Tensor, Tensor]:
    """(x, y, w) views of the projection: x the first gate, y the candidate, w the second gate (or x)."""
    gate_pre, y = split_projection(hidden, N_GATES[cell])
    gates = split_gates(gate_pre, N_GATES[cell])
    x, w = gates[0], gates[-1]  # minGRU's one gate is both
    return x, y, w


def _forward(cell: int, x: Tensor, y: Tensor, w: Tensor, h0: Tensor | None, h: Tensor, **flags) -> Tensor:
    batch, length, width = h.shape
    h0_arg, h0_strides = _h0_args(h0, h)
    strides = (*x.stride(), *h0_strides, *h.stride())
    _launch(
        scan_forward_kernel, batch, length, width, x, y, w, h0_arg, h, strides,
        CELL=cell, HAS_H0=h0 is not None, ACC=_accumulator(x, y, h), **flags,
    )  # fmt: skip
    return h


def _backward(cell, x, y, w, h0, h, grad_h, grad_x, grad_y, grad_w, grad_h0, **flags) -> None:
    batch, length, width = h.shape
    h0_arg, h0_strides = _h0_args(h0, h)
    strides = (*x.stride(), *h0_strides, *h.stride(), *grad_h.stride(), *grad_x.stride())
    _launch(
        scan_backward_kernel, batch, length, width,
        x, y, w, h0_arg, h, grad_h, grad_x, grad_y, grad_w, grad_h0, strides,
        CELL=cell, HAS_H0=h0 is not None, ACC=_accumulator(x, y, h), **flags,
    )  # fmt: skip


def _state(h: Tensor) -> tuple[int, int]:
    """The (B, D) shape of a state of the (B, T, D) sequence h."""
    return h.shape[0], h.shape[2]


def _same_strides(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """The kernels index a and b with one set of strides."""
    return (a, b) if a.stride() == b.stride() else (a.contiguous(), b.contiguous())


# --- the plain scan -------------------------------------------------------------------------------------


@torch.library.custom_op("minrnn::linear_scan", mutates_args=())
def linear_scan(a: Tensor, b: Tensor, h0: Tensor | None) -> Tensor:
    a, b = _same_strides(a, b)
    h = torch.empty(b.shape, dtype=b.dtype, device=b.device)
    return _forward(PLAIN, a, b, a, h0, h, LOG_SPACE=False, NORMALIZE=False)


@linear_scan.register_fake
def _(a: Tensor, b: Tensor, h0: Tensor | None) -> Tensor:
    return b.new_empty(b.shape)


@torch.library.custom_op("minrnn::linear_scan_backward", mutates_args=())
def linear_scan_backward(a: Tensor, h0: Tensor | None, h: Tensor, grad_h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    grad_a = torch.empty(a.shape, dtype=a.dtype, device=a.device)
    grad_b = torch.empty(h.shape, dtype=h.dtype, device=h.device)
    grad_h0 = torch.empty(_state(h), dtype=h.dtype if h0 is None else h0.dtype, device=h.device)
    _backward(PLAIN, a, a, a, h0, h, grad_h, grad_a, grad_b, grad_a, grad_h0, LOG_SPACE=False, NORMALIZE=False)
    return grad_a, grad_b, grad_h0


@linear_scan_backward.register_fake
def _(a: Tensor, h0: Tensor | None, h: Tensor, grad_h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    grad_h0 = h.new_empty(_state(h), dtype=h.dtype if h0 is None else h0.dtype)
    return a.new_empty(a.shape), h.new_empty(h.shape), grad_h0


def _linear_scan_setup(ctx, inputs, output) -> None:
    a, _, h0 = inputs
    ctx.save_for_backward(a, h0, output)


def _linear_scan_grad(ctx, grad_h: Tensor):
    a, h0, h = ctx.saved_tensors
    grad_a, grad_b, grad_h0 = linear_scan_backward(a, h0, h, grad_h)
    return grad_a, grad_b, None if h0 is None else grad_h0


linear_scan.register_autograd(_linear_scan_grad, setup_context=_linear_scan_setup)


# --- the fused cells ------------------------------------------------------------------------------------


def _state_shape(hidden: Tensor, cell: int) -> tuple[int, int, int]:
    batch, length, projected = hidden.shape
    return batch, length, inner_width(projected, N_GATES[cell])


@torch.library.custom_op("minrnn::cell_scan", mutates_args=())
def cell_scan(hidden: Tensor, h0: Tensor | None, cell: int, log_space: bool, normalize: bool) -> Tensor:
    h = torch.empty(_state_shape(hidden, cell), dtype=hidden.dtype, device=hidden.device)
    return _forward(cell, *_cell_inputs(hidden, cell), h0, h, LOG_SPACE=log_space, NORMALIZE=normalize)


@cell_scan.register_fake
def _(hidden: Tensor, h0: Tensor | None, cell: int, log_space: bool, normalize: bool) -> Tensor:
    return hidden.new_empty(_state_shape(hidden, cell))


@torch.library.custom_op("minrnn::cell_scan_backward", mutates_args=())
def cell_scan_backward(
    hidden: Tensor, h0: Tensor | None, h: Tensor, grad_h: Tensor, cell: int, log_space: bool, normalize: bool
) -> tuple[Tensor, Tensor]:
    grad_hidden = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device)
    grad_h0 = torch.empty(_state(h), dtype=h.dtype if h0 is None else h0.dtype, device=h.device)
    inputs, grads = _cell_inputs(hidden, cell), _cell_inputs(grad_hidden, cell)
    _backward(cell, *inputs, h0, h, grad_h, grads[0], grads[1], grads[2], grad_h0,
              LOG_SPACE=log_space, NORMALIZE=normalize)  # fmt: skip
    return grad_hidden, grad_h0


@cell_scan_backward.register_fake
def _(hidden, h0, h, grad_h, cell, log_space, normalize) -> tuple[Tensor, Tensor]:
    grad_h0 = h.new_empty(_state(h), dtype=h.dtype if h0 is None else h0.dtype)
    return hidden.new_empty(hidden.shape), grad_h0


def _cell_scan_setup(ctx, inputs, output) -> None:
    hidden, h0, ctx.cell, ctx.log_space, ctx.normalize = inputs
    ctx.save_for_backward(hidden, h0, output)


def _cell_scan_grad(ctx, grad_h: Tensor):
    hidden, h0, h = ctx.saved_tensors
    grad_hidden, grad_h0 = cell_scan_backward(hidden, h0, h, grad_h, ctx.cell, ctx.log_space, ctx.normalize)
    return grad_hidden, None if h0 is None else grad_h0, None, None, None


cell_scan.register_autograd(_cell_scan_grad, setup_context=_cell_scan_setup)
