"""The Mamba baseline: mambapy's MambaBlock parameters, this package's own forward and selective scan.

The parameters are mambapy's `MambaBlock` (`self.block`: in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj),
so parameter names, the count and checkpoints are what they were; mambapy's own forward, whose parallel scan
makes (B, T, D_inner, N) tensors, is not used. The forward:
- CPU, or CUDA without mamba-ssm, or any call that carries an SSM state in: `_MambaInner`, everything
  between the two projections (causal depthwise conv carrying its last d_conv - 1 inputs, SiLU,
  x_proj -> (dt, B, C), dt_proj, and the selective scan of scans/selective.py with its softplus, D skip and
  SiLU(z) gate) as one autograd function: it keeps xz = in_proj(x), x_proj's output and the scan's chunk-start
  states, and its backward recomputes the rest. On the CPU the conv + SiLU and the scan are compiled C
  (scans/fused/cpu_kernels.c); elsewhere PyTorch ops. Memory O(B*T*D_inner); no (B, T, D_inner, N) tensor.
- CUDA with mamba-ssm installed and no SSM state carried in: mamba-ssm's `selective_scan_fn` (its kernel has
  no initial-state input), with the conv state carried here and the last SSM state returned by the kernel.

`forward(x, state)` returns `(y, state)` and takes a carried state, with state = (SSM state (B, D_inner, N),
conv state (B, D_inner, d_conv - 1): the last d_conv - 1 conv inputs), the layout `step` uses, so parallel,
chunked and step-by-step calls agree. A is -exp(A_log) in float32 at least and in float64 for a float64
model (mambapy rounds A and D to float32 even there); the outputs and gradients match mambapy's MambaBlock
to float32 rounding (tests/test_mamba.py).
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minrnn_cli.scans.fused import cpu
from minrnn_cli.scans.selective import DEFAULT_BATCH_BLOCK, DEFAULT_CHUNK_LEN, keeps_graph, scan_backward, scan_forward


class MambaMixer(nn.Module):
    def __init__(self, d_model: int, d_state: int = 16, expansion: int = 2, d_conv: int = 4,
                 chunk_len: int = DEFAULT_CHUNK_LEN, batch_block: int = DEFAULT_BATCH_BLOCK):
        super().__init__()
        from mambapy.mamba import MambaBlock, MambaConfig

        self.config = MambaConfig(d_model=d_model, n_layers=1, d_state=d_state, expand_factor=expansion,
                                  d_conv=d_conv)
        self.block = MambaBlock(self.config)
        self.chunk_len, self.batch_block = chunk_len, batch_block
        self._cuda_scan = _mamba_ssm_scan()

    def _a(self) -> Tensor:
        """A = -exp(A_log), in float32 at least."""
        a_log = self.block.A_log
        return -torch.exp(a_log.to(torch.promote_types(a_log.dtype, torch.float32)))

    def forward(self, x: Tensor, state=None):
        blk = self.block
        ssm_state, conv_state = (None, None) if state is None else state
        xz = blk.in_proj(x)
        if ssm_state is None and self._kernel_applies(xz):
            y, state = self._kernel_forward(xz, conv_state)
        else:
            inputs = (xz, blk.conv1d.weight, blk.conv1d.bias, blk.x_proj.weight, blk.dt_proj.weight,
                      blk.dt_proj.bias, self._a(), blk.D, ssm_state, conv_state)
            y, ssm_state, conv_state = _MambaInner.apply(*inputs, self.chunk_len, self.batch_block,
                                                         keeps_graph(inputs))
            state = (ssm_state, conv_state)
        return blk.out_proj(y), state

    def _kernel_applies(self, xz: Tensor) -> bool:
        return self._cuda_scan is not None and xz.is_cuda

    def _kernel_forward(self, xz: Tensor, conv_state: Tensor | None):
        """mamba-ssm's CUDA selective scan (from the zero SSM state), with the conv state carried here."""
        blk, c = self.block, self.config
        xi, z = xz.chunk(2, dim=-1)
        xi = xi.transpose(1, 2)  # (B, D, T)
        if conv_state is None:
            conv_state = xi.new_zeros(xi.shape[0], c.d_inner, c.d_conv - 1)
        padded = torch.cat([conv_state.to(xi.dtype), xi], dim=2)
        u = F.silu(F.conv1d(padded, blk.conv1d.weight, blk.conv1d.bias, groups=c.d_inner))  # (B, D, T)
        dt, b_in, c_in = torch.split(blk.x_proj(u.transpose(1, 2)), [c.dt_rank, c.d_state, c.d_state], dim=-1)
        delta = F.linear(dt, blk.dt_proj.weight).transpose(1, 2)
        y, ssm_state = self._cuda_scan(u, delta, self._a(), b_in.transpose(1, 2).contiguous(),
                                       c_in.transpose(1, 2).contiguous(), blk.D.float(), z.transpose(1, 2),
                                       delta_bias=blk.dt_proj.bias.float(), delta_softplus=True,
                                       return_last_state=True)
        return y.transpose(1, 2), (ssm_state.to(xz.dtype), padded[:, :, padded.shape[2] - (c.d_conv - 1):])

    def step(self, x_t: Tensor, state=None):
        """One token x_t (B, d_model) from state (ssm state (B, D, N), conv state (B, D, k - 1)), None: zeros.

        On the CPU, the parallel call on one step: its compiled conv and scan take the state in one pass, where
        the ops below make several (B, D, N) tensors (1.2-1.4 ms against 2.6 ms a token at B=64, d_model=128)."""
        if cpu.handles_selective(x_t, self.block.A_log):
            y, state = self(x_t[:, None], state)
            return y[:, 0], state
        blk, c = self.block, self.config
        if state is None:
            state = (x_t.new_zeros(x_t.shape[0], c.d_inner, c.d_state),
                     x_t.new_zeros(x_t.shape[0], c.d_inner, c.d_conv - 1))
        h, conv_state = state
        xi, z = blk.in_proj(x_t).chunk(2, dim=-1)
        window = torch.cat([conv_state.to(xi.dtype), xi.unsqueeze(2)], dim=2)  # (B, D, k)
        u = F.silu((window * blk.conv1d.weight[:, 0]).sum(-1) + blk.conv1d.bias)
        dt, b_in, c_in = torch.split(blk.x_proj(u), [c.dt_rank, c.d_state, c.d_state], dim=-1)
        delta = F.softplus(blk.dt_proj(dt))
        cd = torch.promote_types(u.dtype, torch.float32)
        delta, u_c = delta.to(cd), u.to(cd)
        h = (torch.exp(delta.unsqueeze(-1) * self._a().to(cd)) * h.to(cd)
             + (delta * u_c).unsqueeze(-1) * b_in.to(cd).unsqueeze(1))
        y = (h * c_in.to(cd).unsqueeze(1)).sum(-1) + blk.D.to(cd) * u_c
        y = y.to(u.dtype) * F.silu(z)
        return blk.out_proj(y), (h.to(x_t.dtype), window[:, :, 1:])


class _MambaInner(torch.autograd.Function):
    """Everything between Mamba's two projections: from xz = in_proj(x) (B, T, 2D), the causal depthwise conv
    (carrying the last k - 1 inputs), SiLU, x_proj -> (dt, B, C), dt_proj, and the selective scan with its
    softplus, D skip and SiLU(z) gate. Keeps xz, x_proj's output and the scan's chunk-start states; the backward
    recomputes the rest. On the CPU the conv and the scan run compiled (scans/fused/cpu_kernels.c)."""

    @staticmethod
    def forward(ctx, xz, conv_w, conv_b, x_proj_w, dt_proj_w, dt_bias, A, D, h0, conv0, chunk_len, batch_block,
                keep):
        cd = torch.promote_types(xz.dtype, torch.float32)
        p = _Params(conv_w, conv_b, x_proj_w, dt_proj_w, dt_bias, A, D, cd)
        xz_c = xz.to(cd)
        x = _scan_inputs(p, xz_c, conv0)
        y, h_last, starts = scan_forward(x["u"], x["pre"], p.A, x["b"], x["c"], p.D, x["z"], h0, chunk_len,
                                         batch_block, keep, softplus=True)
        ctx.options = chunk_len, batch_block, h0 is not None
        if keep:
            ctx.save_for_backward(xz, conv_w, conv_b, x_proj_w, dt_proj_w, dt_bias, A, D, conv0, x["dbc"])
            ctx.starts = starts
        return y.to(xz.dtype), h_last.to(xz.dtype), _conv_last(xz_c, conv0, p.k).to(xz.dtype)

    @staticmethod
    def backward(ctx, grad_y, grad_h_last, grad_conv_last):
        xz, conv_w, conv_b, x_proj_w, dt_proj_w, dt_bias, A, D, conv0, dbc = ctx.saved_tensors
        chunk_len, batch_block, has_h0 = ctx.options
        starts = ctx.starts
        del ctx.starts
        cd = torch.promote_types(xz.dtype, torch.float32)
        p = _Params(conv_w, conv_b, x_proj_w, dt_proj_w, dt_bias, A, D, cd)
        xz_c = xz.to(cd)
        x = _scan_inputs(p, xz_c, conv0, dbc)
        u, r, d = x["u"], p.r, xz.shape[2] // 2
        grad_xz = torch.empty(xz.shape, dtype=cd, device=xz.device)
        g_u, g_pre, g_a, g_b, g_c, g_D, _, grad_h0 = scan_backward(
            u, x.pop("pre"), p.A, x["b"], x["c"], p.D, x["z"], starts, grad_y, grad_h_last, chunk_len, batch_block,
            has_h0, softplus=True, grad_z=grad_xz[..., d:])
        # through pre = dt @ W_dt^T + bias and (dt, B, C) = u @ W_x^T
        g_bias = g_pre.sum((0, 1))
        g_pre2, dbc2 = g_pre.view(-1, d), x["dbc"].view(-1, r + 2 * p.n)
        # as (dt^T g)^T: the (D, R) product with R = d_model / 16 is ~10x slower the other way round on a CPU
        g_dt_proj = (dbc2[:, :r].t() @ g_pre2).t()
        g_dbc = torch.cat([g_pre2 @ p.dt_proj_w, g_b.view(-1, p.n), g_c.view(-1, p.n)], dim=1)
        del g_pre, g_pre2, g_b, g_c, x
        g_x_proj = g_dbc.t() @ u.view(-1, d)
        del u
        g_u.view(-1, d).addmm_(g_dbc, p.x_proj_w)
        del g_dbc
        # through u = silu(conv(x)), the conv carrying the k - 1 inputs before the sequence
        g_conv_w, g_conv_b, grad_conv0 = _conv_silu_backward(p, xz_c, conv0, g_u, grad_conv_last, grad_xz[..., :d])
        return (grad_xz.to(xz.dtype), g_conv_w.t().reshape(conv_w.shape).to(conv_w.dtype), g_conv_b.to(conv_b.dtype),
                g_x_proj.to(x_proj_w.dtype), g_dt_proj.to(dt_proj_w.dtype), g_bias.to(dt_bias.dtype),
                g_a.to(A.dtype), None if g_D is None else g_D.to(D.dtype),
                None if grad_h0 is None else grad_h0.to(xz.dtype),
                None if grad_conv0 is None else grad_conv0.to(conv0.dtype), None, None, None)


class _Params:
    """The mixer's weights in the compute dtype, in the layouts the conv and the scan use."""

    def __init__(self, conv_w, conv_b, x_proj_w, dt_proj_w, dt_bias, A, D, cd):
        self.k = conv_w.shape[-1]
        self.conv_w_t = conv_w.to(cd).view(conv_w.shape[0], -1).t().contiguous()  # (k, D)
        self.conv_b = conv_b.to(cd)
        self.x_proj_w = x_proj_w.to(cd)  # (R + 2N, D)
        self.dt_proj_w = dt_proj_w.to(cd)  # (D, R)
        self.dt_bias = dt_bias.to(cd)
        self.A = A.to(cd)  # (D, N)
        self.D = D.to(cd)
        self.r, self.n = dt_proj_w.shape[1], A.shape[1]
        self.compiled = cd == torch.float32 and cpu.handles_selective(conv_w, A)


def _scan_inputs(p: _Params, xz: Tensor, conv0: Tensor | None, dbc: Tensor | None = None) -> dict[str, Tensor]:
    """The scan's inputs from xz: u = silu(conv(x)), dbc = u @ W_x^T (given: reused) and its views B, C,
    pre = dt @ W_dt^T + bias (delta's pre-activation), and z (a view into xz)."""
    batch, length, d = xz.shape[0], xz.shape[1], xz.shape[2] // 2
    r, n = p.r, p.n
    x = xz[..., :d]
    if p.compiled:
        u = cpu.causal_conv(x, conv0, p.conv_w_t, p.conv_b, silu=True)
    else:
        u = F.silu(_conv(p, _padded(x, conv0, p.k), length))
    if dbc is None:  # the forward; the backward passes the one the forward kept
        dbc = (u.view(-1, d) @ p.x_proj_w.t()).view(batch, length, r + 2 * n)
    dbc = dbc.to(xz.dtype)
    pre = torch.addmm(p.dt_bias, dbc.view(-1, r + 2 * n)[:, :r], p.dt_proj_w.t()).view(batch, length, d)
    return {"u": u, "dbc": dbc, "b": dbc[..., r:r + n], "c": dbc[..., r + n:], "pre": pre, "z": xz[..., d:]}


def _padded(x: Tensor, conv0: Tensor | None, k: int) -> Tensor:
    """[the k - 1 conv inputs before the sequence (conv0, or zeros), x] along time: (B, T + k - 1, D)."""
    lead = x.new_zeros(x.shape[0], k - 1, x.shape[2]) if conv0 is None else conv0.transpose(1, 2).to(x.dtype)
    return torch.cat([lead, x], dim=1)


def _conv(p: _Params, xpad: Tensor, length: int) -> Tensor:
    """c_t = bias + sum_j w_j xpad_{t + j}: the causal depthwise conv, as k shifted multiply-adds."""
    conv = torch.addcmul(p.conv_b, xpad[:, :length], p.conv_w_t[0])
    for j in range(1, p.k):
        conv.addcmul_(xpad[:, j:j + length], p.conv_w_t[j])
    return conv


def _conv_last(xz: Tensor, conv0: Tensor | None, k: int) -> Tensor:
    """The conv state after the sequence: its last k - 1 inputs, (B, D, k - 1)."""
    d = xz.shape[2] // 2
    x = xz[..., :d]
    if x.shape[1] < k - 1:
        x = _padded(x, conv0, k)
    return x[:, x.shape[1] - (k - 1):].transpose(1, 2)


def _conv_silu_backward(p: _Params, xz: Tensor, conv0: Tensor | None, g_u: Tensor, grad_conv_last: Tensor | None,
                        grad_x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """The backward of u = silu(conv(x)): writes dL/dx into grad_x; returns dL/d(conv weight (k, D), bias, conv0)."""
    length, d, k = xz.shape[1], xz.shape[2] // 2, p.k
    if p.compiled:
        return cpu.causal_conv_backward(xz[..., :d], conv0, p.conv_w_t, p.conv_b, g_u, grad_conv_last, grad_x,
                                        silu=True)
    xpad = _padded(xz[..., :d], conv0, k)
    conv = _conv(p, xpad, length)
    sig = torch.sigmoid(conv)
    g_conv = g_u.mul_(sig * (1 + conv * (1 - sig)))  # silu'(c) = sig (1 + c (1 - sig))
    g_conv_w = torch.stack([(g_conv * xpad[:, j:j + length]).sum((0, 1)) for j in range(k)])
    g_xpad = torch.zeros_like(xpad)
    for j in range(k):
        g_xpad[:, j:j + length].addcmul_(g_conv, p.conv_w_t[j])
    if grad_conv_last is not None:
        g_xpad[:, g_xpad.shape[1] - (k - 1):] += grad_conv_last.transpose(1, 2)
    grad_x.copy_(g_xpad[:, k - 1:])
    grad_conv0 = None if conv0 is None else g_xpad[:, : k - 1].transpose(1, 2)
    return g_conv_w, g_conv.sum((0, 1)), grad_conv0


def _mamba_ssm_scan():
    """mamba-ssm's fused selective scan when the package is installed, else None."""
    if importlib.util.find_spec("mamba_ssm") is None:
        return None
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn
