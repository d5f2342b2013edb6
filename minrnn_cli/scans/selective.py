"""Mamba's selective scan (S6) with its own backward, never making a (B, T, D, N) tensor.

    h_t = exp(delta_t A) * h_{t-1} + delta_t B_t x_t        h: (B, D, N), one state of N per channel
    y_t = C_t . h_t + D x_t          (then times SiLU(z_t) when z is given; delta = softplus(delta + bias))

`selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, h0)` takes mamba-ssm's arguments in the
batch-first layout (u, delta, z (B, T, D); B, C (B, T, N); A (D, N); h0 (B, D, N)) and returns (y, h_last).
`scan_forward` / `scan_backward` are the same scan for callers with their own autograd function
(models/mamba.py runs Mamba's conv and projections around it). Both keep only the state before every chunk of
`chunk_len` steps (B * T * D floats at N = chunk_len = 16) and recompute a chunk's states in the backward, which
runs the adjoint G_t = C_t gy_t + a_{t+1} G_{t+1} in reverse and reads every gradient off G and h:
    dB_t = sum_D G_t du_t     dC_t = sum_D h_t gy_t     d(du)_t = sum_N B_t G_t     dh0 = a_0 G_0
    P_t = G_t a_t h_{t-1}:    dA = sum_t P_t delta_t    ddelta_t (through a) = sum_N P_t A

Two implementations of that contract:
- CPU, float32 (bf16/fp16 computed in float32): `scans/fused/cpu_kernels.c` (compiled at first use,
  `scans/fused/cpu.py`). One thread per batch row; 16 channels side by side in vector lanes, each channel's N
  states in an (N, 16) block that stays in L1; the per-step values that are no state (softplus, D u, the
  SiLU(z) gate and its slope) computed a tile of whole rows at a time, apart from the recurrence. One read of
  the (B, T, D) inputs and one write of y forward, the same backward.
- Anywhere else (float64, CUDA without mamba-ssm, no C compiler): PyTorch ops on chunks, below. Time is cut
  into chunks and the batch into blocks of `batch_block` rows; one block's chunk keeps its decays, states and
  adjoints in (chunk_len, batch_block, N, D) buffers every chunk reuses, and the recurrence inside a chunk is a
  loop of in-place `addcmul_` (an odd/even scan over the chunk measured 3-4x slower per step on a CPU).

Floor (B=64, T=512, D=256, N=16, float32, one training step = forward + backward):
- Bytes: per step the forward reads u, delta, z (3 B*D floats) and B, C (2 B*N) and writes y (B*D); the backward
  reads those and dL/dy and writes five gradients: ~0.45 GB, ~11 ms at this machine's ~41 GB/s copy bandwidth.
- Arithmetic: ~134M state elements, each an exp and three multiply-adds forward, recomputed plus ~10 more
  backward: ~3 GFLOP and ~270M exp, which bounds the compiled kernel (tens of ms per core), not memory.
  The PyTorch chunks instead pass every state-sized intermediate through cache and memory (~35 passes over a
  chunk's (l, b, N, D) buffers per training step), several times slower.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from minrnn_cli.scans.fused import cpu

DEFAULT_CHUNK_LEN = 16
DEFAULT_BATCH_BLOCK = 8
LOG2E = 1.4426950408889634  # exp(x) = exp2(x log2(e)): torch's exp2 is several times faster than its exp on CPU
SOFTPLUS_THRESHOLD = 20.0  # F.softplus's default: the identity above it


def batch_groups(batch: int, block: int) -> list[tuple[slice, int, int]]:
    """The batch rows as (rows, number of blocks, rows per block): whole blocks, then the remainder."""
    block = max(1, min(block, batch))
    whole = batch // block
    groups = [(slice(0, whole * block), whole, block)]
    if batch % block:
        groups.append((slice(whole * block, batch), 1, batch % block))
    return groups


class ChunkWorkspace:
    """The memory every chunk of one group of batch rows reuses, allocated once per call.

    Named wide buffers are (blocks, l, b, width) for a chunk of l steps, so that one block's chunk, [k], is a
    contiguous time-major (l, b, width) tensor, and (blocks * l * b, width) as a matrix. The state-sized buffers
    a, h, g are (l, b, N, D) for one block at a time; h has a leading slot for the state before the chunk, so
    h[:-1] is h_{t-1} as a view. Each view is the front of a flat storage, so a short last chunk reuses it.
    """

    def __init__(self, blocks: int, length: int, rows: int, n: int, d: int, dtype: torch.dtype,
                 device: torch.device, widths: dict[str, int], backward: bool):
        self.blocks, self.rows, self.n, self.d = blocks, rows, n, d
        self._wide = {name: torch.empty(blocks * length * rows * width, dtype=dtype, device=device)
                      for name, width in widths.items()}
        self._widths = widths
        state = rows * n * d
        self._a = torch.empty(length * state, dtype=dtype, device=device)
        self._h = torch.empty((length + 1) * state, dtype=dtype, device=device)
        self._g = torch.empty(length * state, dtype=dtype, device=device) if backward else None
        self._views: dict[int, tuple] = {}

    def wide(self, name: str, length: int) -> Tensor:
        width = self._widths[name]
        return self._wide[name][: self.blocks * length * self.rows * width].view(self.blocks, length, self.rows,
                                                                                 width)

    def states(self, length: int) -> tuple:
        """The views a, h, g of a chunk of `length` steps and their per-step views (a[t], h[t], g[t]), made once
        per length: a Python-level view costs about as much as a step's arithmetic."""
        if length not in self._views:
            size = length * self.rows * self.n * self.d
            shape = (self.rows, self.n, self.d)
            a = self._a[:size].view(length, *shape)
            h = self._h[: size + self.rows * self.n * self.d].view(length + 1, *shape)
            g = None if self._g is None else self._g[:size].view(length, *shape)
            self._views[length] = (a, h, g, a.unbind(0), h.unbind(0), None if g is None else g.unbind(0))
        return self._views[length]


def load_rows(buffer: Tensor, source: Tensor, rows: slice, steps: slice) -> Tensor:
    """buffer (blocks, l, b, w) = source[rows, steps] (B, T, w), time-major per block; returns buffer."""
    blocks, length, b, width = buffer.shape
    return buffer.copy_(source[rows, steps].view(blocks, b, length, width).transpose(1, 2))


def store_rows(target: Tensor, rows: slice, steps: slice, buffer: Tensor) -> None:
    """The inverse of `load_rows`: target[rows, steps] (B, T, w) = buffer (blocks, l, b, w)."""
    blocks, length, b, width = buffer.shape
    target[rows, steps].view(blocks, b, length, width).copy_(buffer.transpose(1, 2))


def _rows(t: Tensor) -> Tensor:
    """(l, b, ..., w) -> (l * b, -1, w), for bmm."""
    return t.view(t.shape[0] * t.shape[1], -1, t.shape[-1])


def _chunk_states(ws: ChunkWorkspace, delta: Tensor, du: Tensor, b_in: Tensor, a2_t: Tensor, h_init: Tensor
                  ) -> tuple[Tensor, Tensor]:
    """One block's decays a_t = exp(delta_t A) and states over one chunk, in the workspace.

    delta, du: (l, b, D); b_in: (l, b, N); a2_t: (N, D), A transposed and times log2(e); h_init: (b, N, D).
    Returns (a (l, b, N, D), h (l + 1, b, N, D)) with h[0] = h_init and h[t + 1] the state after step t.
    """
    length = delta.shape[0]
    a, h, _, decays, states, _ = ws.states(length)
    states[0].copy_(h_init)
    torch.mul(delta.unsqueeze(2), a2_t, out=a).exp2_()
    torch.mul(du.unsqueeze(2), b_in.unsqueeze(3), out=h[1:])
    for t in range(length):
        states[t + 1].addcmul_(decays[t], states[t])
    return a, h


def scan_chunk(ws: ChunkWorkspace, delta: Tensor, du: Tensor, b_in: Tensor, c_in: Tensor, a2_t: Tensor,
               h_in: Tensor, h_out: Tensor, y_out: Tensor) -> None:
    """One chunk of h_t = exp(delta_t A) h_{t-1} + du_t B_t, y_t = C_t . h_t, block by block.

    delta, du, y_out: (blocks, l, b, D); b_in, c_in: (blocks, l, b, N); h_in, h_out: (blocks, b, N, D), the
    states before and after the chunk (may be one tensor); a2_t: (N, D), A transposed and times log2(e).
    """
    for k in range(delta.shape[0]):
        _, h = _chunk_states(ws, delta[k], du[k], b_in[k], a2_t, h_in[k])
        torch.bmm(_rows(c_in[k]), _rows(h[1:]), out=_rows(y_out[k]))
        h_out[k].copy_(h[-1])


def scan_chunk_backward(ws: ChunkWorkspace, delta: Tensor, du: Tensor, b_in: Tensor, c_in: Tensor, gy: Tensor,
                        a_t: Tensor, h_in: Tensor, gh: Tensor, grad_a_t: Tensor, grad_du: Tensor,
                        grad_delta: Tensor, grad_b: Tensor, grad_c: Tensor, y_out: Tensor | None = None) -> None:
    """The backward of `scan_chunk`: the states recomputed from h_in, then the adjoint run backwards.

    gy: dL/dy (blocks, l, b, D); gh (blocks, b, N, D): dL/dh after the chunk on entry, before it on return;
    a_t: A transposed (N, D). Writes dL/d(du) into grad_du, dL/ddelta through the decays into grad_delta
    (blocks, l, b, D), dL/dB, dL/dC into grad_b, grad_c (blocks, l, b, N), adds dL/dA^T into grad_a_t and, when
    y_out is given, writes y_t = C_t . h_t into it.
    """
    a2_t = a_t * LOG2E
    length = delta.shape[1]
    for k in range(delta.shape[0]):
        a, h = _chunk_states(ws, delta[k], du[k], b_in[k], a2_t, h_in[k])
        if y_out is not None:
            torch.bmm(_rows(c_in[k]), _rows(h[1:]), out=_rows(y_out[k]))
        # the adjoint G_t = dL/dh_t = C_t gy_t + a_{t+1} G_{t+1}, run backwards from the gradient the chunk's
        # last state gets from the steps after the chunk
        _, _, g, decays, _, adjoints = ws.states(length)
        torch.mul(gy[k].unsqueeze(2), c_in[k].unsqueeze(3), out=g)
        adjoints[-1].add_(gh[k])
        for t in range(length - 2, -1, -1):
            adjoints[t].addcmul_(decays[t + 1], adjoints[t + 1])
        torch.mul(decays[0], adjoints[0], out=gh[k])
        torch.bmm(_rows(gy[k]), _rows(h[1:]).transpose(1, 2), out=_rows(grad_c[k]))
        torch.bmm(_rows(b_in[k]), _rows(g), out=_rows(grad_du[k]))
        torch.bmm(_rows(du[k]), _rows(g).transpose(1, 2), out=_rows(grad_b[k]))
        # P_t = G_t a_t h_{t-1} = dL/d(delta_t A): dL/dA = sum_t P_t delta_t, dL/ddelta_t = sum_n P_t A
        p = a.mul_(g).mul_(h[:-1])
        grad_a_t += torch.mul(p, delta[k].unsqueeze(2), out=h[:-1]).sum((0, 1))
        torch.sum(p.mul_(a_t), 2, out=grad_delta[k])


_WIDE_FORWARD = ("u", "delta", "du", "y")


def scan_forward(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
                 h0: Tensor | None, chunk_len: int, batch_block: int, keep: bool, softplus: bool
                 ) -> tuple[Tensor, Tensor, object]:
    """(y, h_last, starts) of the scan, with delta already through its bias (and through its softplus unless
    `softplus`, which applies it here), in the compute dtype (float32, or float64 for float64 inputs).
    `starts`, the state before every chunk (None unless `keep`), is what `scan_backward` needs. The compiled CPU
    kernel (scans/fused/cpu_kernels.c) where it applies, else this module's PyTorch chunks; both keep only the
    chunk starts."""
    chunk_len = max(1, min(chunk_len, u.shape[1]))
    if cpu.handles_selective(u, A):
        return cpu.selective_forward(u, delta, A, B, C, D, z, h0, chunk_len, keep, softplus)
    if softplus:
        delta = F.softplus(delta.to(torch.promote_types(delta.dtype, torch.float32)))
    return _chunked_forward(u, delta, A, B, C, D, z, h0, chunk_len, batch_block, keep)


def scan_backward(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
                  starts, grad_y: Tensor, grad_h_last: Tensor | None, chunk_len: int, batch_block: int,
                  need_h0: bool, softplus: bool, grad_z: Tensor | None = None) -> tuple:
    """dL/d(u, delta, A, B, C, D, z, h0) of `scan_forward`'s (y, h_last) from the `starts` it returned, in the
    compute dtype; None where there is no such input. With `softplus`, delta and its gradient are the
    pre-activation's. dL/dz goes into `grad_z` when one is given."""
    chunk_len = max(1, min(chunk_len, u.shape[1]))
    if cpu.handles_selective(u, A):
        return cpu.selective_backward(u, delta, A, B, C, D, z, starts, grad_y, grad_h_last, chunk_len, need_h0,
                                      softplus, grad_z)
    if not softplus:
        return _chunked_backward(u, delta, A, B, C, D, z, starts, grad_y, grad_h_last, chunk_len, batch_block,
                                 need_h0, grad_z)
    pre = delta.to(torch.promote_types(delta.dtype, torch.float32))
    grads = _chunked_backward(u, F.softplus(pre), A, B, C, D, z, starts, grad_y, grad_h_last, chunk_len,
                              batch_block, need_h0, grad_z)
    grad_pre = torch.ops.aten.softplus_backward(grads[1], pre, 1.0, SOFTPLUS_THRESHOLD)
    return grads[0], grad_pre, *grads[2:]


def _chunked_forward(u, delta, A, B, C, D, z, h0, chunk_len, batch_block, keep):
    batch, length, d = u.shape
    n = A.shape[1]
    cd = torch.promote_types(u.dtype, torch.float32)
    a2_t = (A.to(cd) * LOG2E).t().contiguous()
    d_skip = None if D is None else D.to(cd)
    y = torch.empty(batch, length, d, dtype=cd, device=u.device)
    h_last = torch.empty(batch, d, n, dtype=cd, device=u.device)
    widths = {**dict.fromkeys(_WIDE_FORWARD, d), "z": d, "b": n, "c": n}
    starts = []
    for rows, blocks, b in batch_groups(batch, batch_block):
        ws = ChunkWorkspace(blocks, chunk_len, b, n, d, cd, u.device, widths, backward=False)
        state = _block_states(h0, rows, blocks, b, n, d, cd, u.device)
        group_starts = []
        for t0 in range(0, length, chunk_len):
            steps = slice(t0, min(t0 + chunk_len, length))
            x = _load_chunk(ws, (u, delta, B, C, z), rows, steps)
            y_c = ws.wide("y", x["u"].shape[1])
            h_in = state
            if keep:
                group_starts.append(state)
                state = torch.empty_like(state)
            scan_chunk(ws, x["delta"], x["du"], x["b"], x["c"], a2_t, h_in, state, y_c)
            if d_skip is not None:
                y_c.addcmul_(x["u"], d_skip)
            if z is not None:
                y_c.mul_(F.silu(x["z"], inplace=True))
            store_rows(y, rows, steps, y_c)
        h_last[rows] = state.view(-1, n, d).transpose(1, 2)
        starts.append(group_starts)
    return y, h_last, starts if keep else None


def _chunked_backward(u, delta, A, B, C, D, z, starts, grad_y, grad_h_last, chunk_len, batch_block, need_h0,
                      grad_z):
    batch, length, d = u.shape
    n = A.shape[1]
    cd = torch.promote_types(u.dtype, torch.float32)
    a_t = A.to(cd).t().contiguous()
    d_skip = None if D is None else D.to(cd)
    new = lambda *shape: torch.empty(*shape, dtype=cd, device=u.device)  # noqa: E731
    grad_u, grad_delta, grad_B, grad_C = new(batch, length, d), new(batch, length, d), new(batch, length, n), \
        new(batch, length, n)
    if z is not None and grad_z is None:
        grad_z = new(batch, length, d)
    grad_h0 = new(batch, d, n) if need_h0 else None
    grad_a_t = torch.zeros(n, d, dtype=cd, device=u.device)
    grad_D = None if D is None else torch.zeros(d, dtype=cd, device=u.device)
    widths = {**dict.fromkeys(_WIDE_FORWARD + ("z", "gy", "gdu", "gdelta", "tmp", "dz"), d),
              **dict.fromkeys(("b", "c", "gb", "gc"), n)}
    n_chunks = -(-length // chunk_len)
    for (rows, blocks, b), group_starts in zip(batch_groups(batch, batch_block), starts, strict=True):
        ws = ChunkWorkspace(blocks, chunk_len, b, n, d, cd, u.device, widths, backward=True)
        gh = _block_states(grad_h_last, rows, blocks, b, n, d, cd, u.device)
        for c in reversed(range(n_chunks)):
            steps = slice(c * chunk_len, min((c + 1) * chunk_len, length))
            x = _load_chunk(ws, (u, delta, B, C, z), rows, steps)
            span = x["u"].shape[1]
            gy = load_rows(ws.wide("gy", span), grad_y, rows, steps)
            y_pre = None
            if z is not None:
                dz, tmp = ws.wide("dz", span), ws.wide("tmp", span)
                gy_gated = _gate_backward(x["z"], gy, dz, tmp)
                y_pre = ws.wide("y", span)
            else:
                gy_gated = gy
            gdu, gdelta = ws.wide("gdu", span), ws.wide("gdelta", span)
            scan_chunk_backward(ws, x["delta"], x["du"], x["b"], x["c"], gy_gated, a_t, group_starts[c], gh,
                                grad_a_t, gdu, gdelta, ws.wide("gb", span), ws.wide("gc", span), y_pre)
            if z is not None:
                if d_skip is not None:
                    y_pre.addcmul_(x["u"], d_skip)
                store_rows(grad_z, rows, steps, dz.mul_(y_pre))
            if d_skip is not None:
                grad_D += torch.mul(gy_gated, x["u"], out=ws.wide("tmp", span)).sum((0, 1, 2))
            gdelta.addcmul_(gdu, x["u"])
            grad_u_c = gdu.mul_(x["delta"])
            if d_skip is not None:
                grad_u_c.addcmul_(gy_gated, d_skip)
            store_rows(grad_u, rows, steps, grad_u_c)
            store_rows(grad_delta, rows, steps, gdelta)
            store_rows(grad_B, rows, steps, ws.wide("gb", span))
            store_rows(grad_C, rows, steps, ws.wide("gc", span))
        if need_h0:
            grad_h0[rows] = gh.view(-1, n, d).transpose(1, 2)
    return grad_u, grad_delta, grad_a_t.t(), grad_B, grad_C, grad_D, grad_z, grad_h0


class _SelectiveScan(torch.autograd.Function):
    """u, delta, z (B, T, D) with delta already through its bias and softplus; B, C (B, T, N); A (D, N); D (D,);
    h0 and h_last (B, D, N)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, h0, chunk_len, batch_block, softplus, keep):
        y, h_last, starts = scan_forward(u, delta, A, B, C, D, z, h0, chunk_len, batch_block, keep, softplus)
        ctx.options = chunk_len, batch_block, softplus
        if keep:
            ctx.save_for_backward(u, delta, A, B, C, D, z, h0)
            ctx.starts = starts
        return y.to(u.dtype), h_last.to(u.dtype)

    @staticmethod
    def backward(ctx, grad_y, grad_h_last):
        inputs = ctx.saved_tensors
        u, delta, A, B, C, D, z, h0 = inputs
        starts = ctx.starts
        del ctx.starts
        chunk_len, batch_block, softplus = ctx.options
        grads = scan_backward(u, delta, A, B, C, D, z, starts, grad_y, grad_h_last, chunk_len, batch_block,
                              h0 is not None, softplus)
        return (*(None if g is None else g.to(t.dtype) for g, t in zip(grads, inputs, strict=True)), None, None,
                None, None)


def _block_states(states: Tensor | None, rows: slice, blocks: int, b: int, n: int, d: int, cd: torch.dtype,
                  device: torch.device) -> Tensor:
    """(blocks, b, N, D) states (or their gradients) of the batch rows `rows` from (B, D, N); None: zeros."""
    if states is None:
        return torch.zeros(blocks, b, n, d, dtype=cd, device=device)
    return states[rows].transpose(1, 2).reshape(blocks, b, n, d).to(cd)


def _load_chunk(ws: ChunkWorkspace, inputs, rows: slice, steps: slice) -> dict[str, Tensor]:
    """The chunk's u, delta, B, C, z and du = delta * u."""
    length = steps.stop - steps.start
    x = {name: load_rows(ws.wide(name, length), src, rows, steps) for name, src in
         zip(("u", "delta", "b", "c", "z"), inputs, strict=True) if src is not None}
    x["du"] = torch.mul(x["delta"], x["u"], out=ws.wide("du", length))
    return x


def _gate_backward(z: Tensor, gy: Tensor, dz: Tensor, tmp: Tensor) -> Tensor:
    """For y = y_pre * silu(z): dz = gy * silu'(z) (to be times y_pre), z becomes silu(z) and gy the gradient
    of y_pre, in place; returns gy. silu'(z) = sig (1 + z (1 - sig))."""
    sig = torch.sigmoid(z, out=tmp)
    torch.sub(1, sig, out=dz).mul_(z).add_(1).mul_(sig).mul_(gy)
    return gy.mul_(z.mul_(sig))


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                   z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
                   h0: Tensor | None = None, chunk_len: int = DEFAULT_CHUNK_LEN,
                   batch_block: int = DEFAULT_BATCH_BLOCK) -> tuple[Tensor, Tensor]:
    """Mamba's selective scan from state h0 (None: zeros), chunked along time; returns (y, h_last).

    u, delta, z: (B, T, D); A: (D, N); B, C: (B, T, N); D, delta_bias: (D,); h0, h_last: (B, D, N).
    y_t = C_t . h_t + D u_t, times SiLU(z_t) when z is given, with h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t
    and delta = softplus(delta + delta_bias) when `delta_softplus`. Differentiable in every tensor argument.
    `chunk_len` and `batch_block` set the work-buffer shape (speed and memory only, not the result).
    """
    if delta_bias is not None:
        delta = delta + delta_bias
    inputs = (u, delta, A, B, C, D, z, h0)
    return _SelectiveScan.apply(*inputs, chunk_len, batch_block, delta_softplus, keeps_graph(inputs))


def keeps_graph(tensors) -> bool:
    """Whether autograd will need the backward: grad mode on and some input requiring grad."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def selective_scan_sequential(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                              z: Tensor | None = None, delta_bias: Tensor | None = None,
                              delta_softplus: bool = False, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The plain loop over time through autograd, in the inputs' dtype: the reference for `selective_scan`."""
    if delta_bias is not None:
        delta = delta + delta_bias
    if delta_softplus:
        delta = F.softplus(delta)
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1]) if h0 is None else h0
    ys = []
    for t in range(u.shape[1]):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))
    y = torch.stack(ys, dim=1)
    if D is not None:
        y = y + D * u
    if z is not None:
        y = y * F.silu(z)
    return y, h
