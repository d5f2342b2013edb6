"""The residual block's RMSNorm, causal depthwise conv and GEGLU on the CPU, by the compiled kernels of
`cpu_kernels.c`.

Why: at the default job's size a block's norms, Conv4 and GEGLU took about as long as all its matmuls. torch's
RMSNorm is a composite of about a dozen elementwise passes each way, the conv (k shifted multiply-adds) as many
again with its backward, GEGLU five; each kernel here reads its inputs once and writes its outputs once, forward
and backward. `models/blocks.py` calls them for CPU tensors (float32; GEGLU bfloat16 too, as autocast gives it)
when the kernels are built (`cpu.available()`), and keeps torch's ops otherwise (float64, CUDA, no compiler,
`MINRNN_CPU_KERNELS=0`, inside torch.compile): the same results to float32 rounding, which
tests/test_block_kernels.py checks, gradients included.
"""

from __future__ import annotations

import torch
from torch import Tensor

from minrnn_cli.scans.fused import cpu


def handles(x: Tensor, *weights: Tensor, dtypes: tuple = (torch.float32,)) -> bool:
    """Whether the kernels take this input and these float32 weights: on the CPU, x in one of `dtypes`, outside
    torch.compile."""
    return (x.device.type == "cpu" and x.dtype in dtypes and all(w.dtype == torch.float32 for w in weights)
            and not torch.compiler.is_compiling() and cpu.available())


def _needs_graph(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        y, rstd = cpu.rms_norm_forward(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        x, weight, rstd = ctx.saved_tensors
        grad_x, grad_weight = cpu.rms_norm_backward(x, weight, rstd, grad_y.float().contiguous())
        return grad_x, grad_weight, None


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """x / sqrt(mean(x^2 over the last dimension) + eps) * weight."""
    x = x.contiguous()
    if _needs_graph(x, weight):
        return _RMSNorm.apply(x, weight, eps)
    return cpu.rms_norm_forward(x, weight.detach(), eps)[0]


class _CausalConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, conv0: Tensor | None, weight: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(x, conv0, weight, bias)
        return cpu.causal_conv(x, conv0, weight, bias, silu=False)

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        x, conv0, weight, bias = ctx.saved_tensors
        grad_x = torch.empty_like(x)
        # without SiLU the kernel reads grad_y and leaves it as it is
        grad_weight, grad_bias, grad_conv0 = cpu.causal_conv_backward(
            x, conv0, weight, bias, grad_y.float().contiguous(), None, grad_x, silu=False)
        return grad_x, grad_conv0 if ctx.needs_input_grad[1] else None, grad_weight, grad_bias


def causal_conv(x: Tensor, state: Tensor | None, weight: Tensor, bias: Tensor) -> Tensor:
    """y_t = bias + sum_j weight[:, 0, j] * x_{t - (k - 1) + j}: x (B, T, D), state (B, k - 1, D) the inputs
    before the sequence (None: zeros), weight (D, 1, k) as nn.Conv1d keeps it."""
    x = x.contiguous()
    conv0 = None if state is None else state.transpose(1, 2).contiguous()  # the kernel's (B, D, k - 1)
    taps = weight[:, 0].t()  # (k, D), tap-major
    if _needs_graph(x, conv0, weight, bias):
        return _CausalConv.apply(x, conv0, taps, bias)
    return cpu.causal_conv(x, conv0, taps.detach(), bias.detach(), silu=False)


class _GEGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor) -> Tensor:
        ctx.save_for_backward(h)
        return cpu.geglu_forward(h)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (h,) = ctx.saved_tensors
        return cpu.geglu_backward(h, grad_out.to(h.dtype).contiguous())


GEGLU_DTYPES = (torch.float32, torch.bfloat16)


def geglu(h: Tensor) -> Tensor:
    """value * gelu(gate) for h = [value | gate] over the last dimension (exact, erf-based gelu)."""
    h = h.contiguous()
    return _GEGLU.apply(h) if _needs_graph(h) else cpu.geglu_forward(h)
