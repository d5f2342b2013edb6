"""The Mamba baseline: mambapy's MambaBlock parameters, this package's own forward and selective scan.

The parameters are mambapy's `MambaBlock` (`self.block`: in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj),
so parameter names, the count and checkpoints are what they were; mambapy's own forward, whose parallel scan
makes (B, T, D_inner, N) tensors, is not used. The forward:
- CPU, or CUDA without mamba-ssm, or any call that carries an SSM state in: `_MambaInner`, everything
  between the two projections (causal depthwise conv carrying its last d_conv - 1 inputs, SiLU,
  x_proj -> (dt, B, C), dt_proj and softplus, the selective scan of scans/selective.py, the D skip and the
  SiLU(z) gate) chunked along time as one autograd function: it keeps xz = in_proj(x) and the chunk-start
  states, and its backward recomputes each chunk. Memory O(B*T*D_inner); no (B, T, D_inner, N) tensor.
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

from minrnn_cli.scans.selective import (
    DEFAULT_BATCH_BLOCK,
    DEFAULT_CHUNK_LEN,
    LOG2E,
    SOFTPLUS_THRESHOLD,
    ChunkWorkspace,
    batch_groups,
    keeps_graph,
    load_rows,
    scan_chunk,
    scan_chunk_backward,
    store_rows,
)

_softplus_out = torch.ops.aten.softplus.out
_softplus_backward_out = torch.ops.aten.softplus_backward.grad_input


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
        """One token x_t (B, d_model) from state (ssm state (B, D, N), conv state (B, D, k - 1)), None: zeros."""
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
    """Everything between Mamba's two projections, chunked along time: from xz = in_proj(x) (B, T, 2D), the
    causal depthwise conv (carrying the last k - 1 inputs), SiLU, x_proj -> (dt, B, C), dt_proj and softplus,
    the selective scan, the D skip and the SiLU(z) gate. Keeps xz and the chunk-start states; the backward
    recomputes each chunk."""

    @staticmethod
    def forward(ctx, xz, conv_w, conv_b, x_proj_w, dt_proj_w, dt_bias, A, D, h0, conv0, chunk_len, batch_block,
                keep):
        batch, length, d = xz.shape[0], xz.shape[1], xz.shape[2] // 2
        n, k = A.shape[1], conv_w.shape[-1]
        cd = torch.promote_types(xz.dtype, torch.float32)
        p = _Params(conv_w, conv_b, x_proj_w, dt_proj_w, dt_bias, A, D, cd)
        chunk_len = max(1, min(chunk_len, length))
        y = torch.empty(batch, length, d, dtype=xz.dtype, device=xz.device)
        h_last = torch.empty(batch, d, n, dtype=xz.dtype, device=xz.device)
        conv_last = torch.empty(batch, d, k - 1, dtype=xz.dtype, device=xz.device)
        starts = []
        for rows, blocks, b in batch_groups(batch, batch_block):
            ws = _workspace(blocks, chunk_len, k, b, n, d, p.r, cd, xz.device, False)
            state = torch.empty(blocks, b, n, d, dtype=cd, device=xz.device)
            if h0 is None:
                state.zero_()
            else:
                state.copy_(h0[rows].transpose(1, 2).view(blocks, b, n, d))
            group_starts = []
            for t0 in range(0, length, chunk_len):
                steps = slice(t0, min(t0 + chunk_len, length))
                x = _chunk_prologue(ws, p, xz, conv0, rows, steps, k)
                y_c = ws.wide("y", x["u"].shape[1])
                h_in = state
                if keep:
                    group_starts.append(state)
                    state = torch.empty_like(state)
                scan_chunk(ws, x["delta"], x["du"], x["b"], x["c"], p.a2_t, h_in, state, y_c)
                z = load_rows(ws.wide("z", y_c.shape[1]), xz[..., d:], rows, steps)
                y_c.addcmul_(x["u"], p.D).mul_(F.silu(z, inplace=True))
                store_rows(y, rows, steps, y_c)
            h_last[rows] = state.view(-1, n, d).transpose(1, 2)
            xw = x["xw"]
            conv_last[rows] = xw[:, xw.shape[1] - (k - 1):].permute(0, 2, 3, 1).reshape(blocks * b, d, k - 1)
            starts.append(group_starts)
        ctx.options = chunk_len, batch_block, h0 is not None, cd
        if keep:
            ctx.save_for_backward(xz, conv_w, conv_b, x_proj_w, dt_proj_w, dt_bias, A, D, conv0)
            ctx.starts = starts
        return y, h_last, conv_last

    @staticmethod
    def backward(ctx, grad_y, grad_h_last, grad_conv_last):
        xz, conv_w, conv_b, x_proj_w, dt_proj_w, dt_bias, A, D, conv0 = ctx.saved_tensors
        chunk_len, batch_block, has_h0, cd = ctx.options
        starts = ctx.starts
        del ctx.starts
        batch, length, d = xz.shape[0], xz.shape[1], xz.shape[2] // 2
        n, k = A.shape[1], conv_w.shape[-1]
        p = _Params(conv_w, conv_b, x_proj_w, dt_proj_w, dt_bias, A, D, cd)
        r = p.r
        zeros = lambda *shape: torch.zeros(*shape, dtype=cd, device=xz.device)  # noqa: E731
        g_conv_w, g_conv_b, g_x_proj, g_dt_proj = zeros(k, d), zeros(d), zeros(r + 2 * n, d), zeros(d, r)
        g_bias, g_a_t, g_D = zeros(d), zeros(n, d), zeros(d)
        grad_xz = torch.empty_like(xz)
        grad_h0 = torch.empty(batch, d, n, dtype=xz.dtype, device=xz.device) if has_h0 else None
        grad_conv0 = None if conv0 is None else torch.empty_like(conv0)
        n_chunks = -(-length // chunk_len)
        for (rows, blocks, b), group_starts in zip(batch_groups(batch, batch_block), starts, strict=True):
            ws = _workspace(blocks, chunk_len, k, b, n, d, r, cd, xz.device, True)
            gh = torch.empty(blocks, b, n, d, dtype=cd, device=xz.device)
            if grad_h_last is None:
                gh.zero_()
            else:
                gh.copy_(grad_h_last[rows].transpose(1, 2).view(blocks, b, n, d))
            carry = torch.zeros(blocks, k - 1, b, d, dtype=cd, device=xz.device)  # dL/d(inputs before the chunk)
            if grad_conv_last is not None:
                carry.copy_(grad_conv_last[rows].view(blocks, b, d, k - 1).permute(0, 3, 1, 2))
            for c in reversed(range(n_chunks)):
                steps = slice(c * chunk_len, min((c + 1) * chunk_len, length))
                x = _chunk_prologue(ws, p, xz, conv0, rows, steps, k)
                span = x["u"].shape[1]
                u, u2 = x["u"], x["u"].view(-1, d)
                gy = load_rows(ws.wide("gy", span), grad_y, rows, steps)
                z, dz, tmp = ws.wide("z", span), ws.wide("dz", span), ws.wide("tmp", span)
                load_rows(z, xz[..., d:], rows, steps)
                # y = y_pre * silu(z): dz = gy * y_pre * silu'(z), silu'(z) = sig (1 + z (1 - sig))
                sig = torch.sigmoid(z, out=tmp)
                torch.sub(1, sig, out=dz).mul_(z).add_(1).mul_(sig).mul_(gy)
                gy.mul_(z.mul_(sig))
                y_pre, gdu, gdelta = ws.wide("y", span), ws.wide("gdu", span), ws.wide("gdelta", span)
                gb, gc = ws.wide("gb", span), ws.wide("gc", span)
                scan_chunk_backward(ws, x["delta"], x["du"], x["b"], x["c"], gy, p.a_t, group_starts[c], gh,
                                    g_a_t, gdu, gdelta, gb, gc, y_pre)
                store_rows(grad_xz[..., d:], rows, steps, dz.mul_(y_pre.addcmul_(u, p.D)))
                g_D += torch.mul(gy, u, out=tmp).sum((0, 1, 2))
                # through du = delta * u and the skip D u
                gdelta.addcmul_(gdu, u)
                gu = gdu.mul_(x["delta"]).addcmul_(gy, p.D)
                # through delta = softplus(dt @ W_dt^T + bias) and (dt, B, C) = u @ W_x^T
                gpre = _softplus_backward_out(gdelta, x["pre"], 1.0, SOFTPLUS_THRESHOLD, grad_input=tmp)
                gpre2 = gpre.view(-1, d)
                g_bias += gpre.sum((0, 1, 2))
                dbc2 = x["dbc"].view(-1, r + 2 * n)
                g_dt_proj.addmm_(gpre2.t(), dbc2[:, :r])
                gdbc = ws.wide("gdbc", span)
                gdbc2 = gdbc.view(-1, r + 2 * n)
                gdbc2[:, :r] = torch.mm(gpre2, p.dt_proj_w)
                gdbc[..., r:r + n] = gb
                gdbc[..., r + n:] = gc
                g_x_proj.addmm_(gdbc2.t(), u2)
                gu.view(-1, d).addmm_(gdbc2, p.x_proj_w)
                # through u = silu(c): silu'(c) = sig (1 + c - u)
                conv = x["conv"]
                sig = torch.sigmoid(conv, out=tmp)
                gconv = gu.mul_(conv.sub_(u).add_(1).mul_(sig))
                g_conv_b += gconv.sum((0, 1, 2))
                # through the causal conv c_t = bias + sum_j w_j x_{t - (k - 1) + j}
                xw, gxw = x["xw"], ws.wide("gxw", span + k - 1)
                torch.mul(gconv, p.conv_w_t[k - 1], out=gxw[:, k - 1:])
                gxw[:, : k - 1].zero_()
                for j in range(k - 1):
                    gxw[:, j:j + span].addcmul_(gconv, p.conv_w_t[j])
                for j in range(k):
                    g_conv_w[j] += torch.mul(gconv, xw[:, j:j + span], out=tmp).sum((0, 1, 2))
                gxw[:, span:].add_(carry)
                store_rows(grad_xz[..., :d], rows, steps, gxw[:, k - 1:])
                carry.copy_(gxw[:, : k - 1])
            if has_h0:
                grad_h0[rows] = gh.view(-1, n, d).transpose(1, 2)
            if grad_conv0 is not None:
                grad_conv0[rows] = carry.permute(0, 2, 3, 1).reshape(blocks * b, d, k - 1)
        return (grad_xz, g_conv_w.t().reshape(conv_w.shape).to(conv_w.dtype), g_conv_b.to(conv_b.dtype),
                g_x_proj.to(x_proj_w.dtype), g_dt_proj.to(dt_proj_w.dtype), g_bias.to(dt_bias.dtype),
                g_a_t.t().to(A.dtype), g_D.to(D.dtype), grad_h0, grad_conv0, None, None, None)


class _Params:
    """The mixer's weights in the compute dtype, in the layouts the chunks use."""

    def __init__(self, conv_w, conv_b, x_proj_w, dt_proj_w, dt_bias, A, D, cd):
        self.conv_w_t = conv_w.to(cd).view(conv_w.shape[0], -1).t().contiguous()  # (k, D)
        self.conv_b = conv_b.to(cd)
        self.x_proj_w = x_proj_w.to(cd)  # (R + 2N, D)
        self.dt_proj_w = dt_proj_w.to(cd)  # (D, R)
        self.dt_bias = dt_bias.to(cd)
        self.a_t = A.to(cd).t().contiguous()  # (N, D)
        self.a2_t = self.a_t * LOG2E
        self.D = D.to(cd)
        self.r = dt_proj_w.shape[1]


def _workspace(blocks, chunk_len, k, b, n, d, r, cd, device, backward):
    widths = {name: d for name in ("xw", "conv", "u", "pre", "delta", "du", "y", "z")}
    widths["dbc"] = r + 2 * n
    if backward:
        widths.update({name: d for name in ("gy", "dz", "tmp", "gdu", "gdelta", "gxw")})
        widths.update(gb=n, gc=n, gdbc=r + 2 * n)
    return ChunkWorkspace(blocks, chunk_len + k - 1, b, n, d, cd, device, widths, backward)


def _chunk_prologue(ws, p: _Params, xz, conv0, rows: slice, steps: slice, k: int) -> dict[str, Tensor]:
    """The chunk's conv inputs xw (the k - 1 before it, then its own), conv output, u = silu(conv),
    dbc = u @ W_x^T and its views dt, B, C, pre = dt @ W_dt^T + bias, delta = softplus(pre), du = delta * u."""
    d = xz.shape[2] // 2
    t0, t1 = steps.start, steps.stop
    span = t1 - t0
    xw = ws.wide("xw", span + k - 1)
    lead = max(0, (k - 1) - t0)  # inputs from before the sequence: the initial conv state (or zeros)
    if lead:
        if conv0 is None:
            xw[:, :lead].zero_()
        else:
            blocks, _, b, _ = xw.shape
            xw[:, :lead] = conv0[rows, :, k - 1 - lead:].view(blocks, b, d, lead).permute(0, 3, 1, 2)
    load_rows(xw[:, lead:], xz[..., :d], rows, slice(t0 - (k - 1) + lead, t1))
    conv = torch.addcmul(p.conv_b, xw[:, :span], p.conv_w_t[0], out=ws.wide("conv", span))
    for j in range(1, k):
        conv.addcmul_(xw[:, j:j + span], p.conv_w_t[j])
    u = torch.ops.aten.silu.out(conv, out=ws.wide("u", span))
    dbc = ws.wide("dbc", span)
    r, n = p.r, (dbc.shape[-1] - p.r) // 2
    torch.mm(u.view(-1, d), p.x_proj_w.t(), out=dbc.view(-1, r + 2 * n))
    pre = ws.wide("pre", span)
    torch.mm(dbc.view(-1, r + 2 * n)[:, :r], p.dt_proj_w.t(), out=pre.view(-1, d))
    pre.add_(p.dt_bias)
    delta = _softplus_out(pre, 1.0, SOFTPLUS_THRESHOLD, out=ws.wide("delta", span))
    du = torch.mul(delta, u, out=ws.wide("du", span))
    return {"xw": xw, "conv": conv, "u": u, "dbc": dbc, "b": dbc[..., r:r + n], "c": dbc[..., r + n:],
            "pre": pre, "delta": delta, "du": du}


def _mamba_ssm_scan():
    """mamba-ssm's fused selective scan when the package is installed, else None."""
    if importlib.util.find_spec("mamba_ssm") is None:
        return None
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn
