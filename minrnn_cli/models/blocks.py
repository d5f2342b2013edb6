"""The residual block around every mixer, as in the paper and the authors' code:

    x = x + Conv4(x)                  (optional causal depthwise conv, kernel 4, then a 1x1 projection)
    x = x + Dropout(Mixer(Norm(x)))
    x = x + Dropout(MLP(Norm(x)))     (optional GEGLU MLP)

Per task (paper C.2): selective copying uses the mixer only; Chomsky Conv4 -> mixer; LRA and language
modelling Conv4 -> mixer -> MLP. Every part carries its own state, so a block runs in parallel, by steps,
or in chunks and gives the same answer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minrnn_cli.scans.fused import block_kernels


class RMSNorm(nn.RMSNorm):
    """nn.RMSNorm (same parameters and results), by the compiled kernel on float32 CPU inputs: one pass over
    memory each way where torch's composite takes about a dozen (`scans/fused/block_kernels.py`)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.weight is not None and len(self.normalized_shape) == 1 and block_kernels.handles(x, self.weight):
            return block_kernels.rms_norm(x, self.weight, torch.finfo(x.dtype).eps if self.eps is None else self.eps)
        return super().forward(x)


NORMS = {"rms": RMSNorm, "layer": nn.LayerNorm}


def make_norm(kind: str, width: int) -> nn.Module:
    if kind not in NORMS:
        raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")
    return NORMS[kind](width)


def run_layers(layers, x: Tensor, state: list | None = None, step: bool = False) -> tuple[Tensor, list]:
    """x through each layer in turn (`layer(x, state)`, or `layer.step` one token at a time), each with its own
    entry of `state` (None: every layer starts from its initial state). Returns (output, the new states)."""
    new_state = []
    for i, layer in enumerate(layers):
        x, layer_state = (layer.step if step else layer)(x, None if state is None else state[i])
        new_state.append(layer_state)
    return x, new_state


class CausalConv(nn.Module):
    """Depthwise causal conv over time plus a pointwise projection; the state is the last k-1 inputs.

    The depthwise conv is y_t = bias + sum_j w_j * x_{t-k+1+j}: on a float32 CPU input one pass of the compiled
    kernel each way (`scans/fused/block_kernels.py`), elsewhere k shifted multiply-adds (oneDNN's depthwise
    kernel costs several times either at these shapes). The weights keep nn.Conv1d's layout, so checkpoints
    hold `depthwise.weight` (D, 1, k).
    """

    def __init__(self, d_model: int, kernel_size: int = 4):
        super().__init__()
        self.kernel_size = kernel_size
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, groups=d_model)
        self.pointwise = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        carry, length = self.kernel_size - 1, x.shape[1]
        weight, bias = self.depthwise.weight, self.depthwise.bias
        if block_kernels.handles(x, weight, bias) and (state is None or state.dtype == torch.float32):
            y = block_kernels.causal_conv(x, state, weight, bias)
            if length >= carry:
                return self.pointwise(y), x[:, length - carry :]
            padded = torch.cat([x.new_zeros(x.shape[0], carry, x.shape[2]) if state is None else state, x], dim=1)
            return self.pointwise(y), padded[:, -carry:]
        if state is None:
            state = x.new_zeros(x.shape[0], carry, x.shape[2])
        padded = torch.cat([state, x], dim=1)
        taps = weight[:, 0]  # (D, k)
        y = torch.addcmul(bias, padded[:, :length], taps[:, 0])
        for j in range(1, self.kernel_size):
            y = torch.addcmul(y, padded[:, j : j + length], taps[:, j])
        return self.pointwise(y), padded[:, -carry:]

    def step(self, x_t: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y, state = self(x_t.unsqueeze(1), state)
        return y.squeeze(1), state


class GEGLU(nn.Module):
    def __init__(self, d_model: int, ratio: float = 4.0):
        super().__init__()
        hidden = int(d_model * ratio)
        self.proj_in = nn.Linear(d_model, 2 * hidden)
        self.proj_out = nn.Linear(hidden, d_model)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.proj_in(x)
        if block_kernels.handles(hidden, dtypes=block_kernels.GEGLU_DTYPES):
            return self.proj_out(block_kernels.geglu(hidden))  # the compiled kernel, one pass each way
        value, gate = hidden.chunk(2, dim=-1)
        return self.proj_out(value * F.gelu(gate))


class ResidualBlock(nn.Module):
    def __init__(
        self,
        mixer: nn.Module,
        d_model: int,
        conv: bool = False,
        mlp: bool = False,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        norm: str = "rms",
    ):
        super().__init__()
        self.conv = CausalConv(d_model) if conv else None
        self.mixer_norm = make_norm(norm, d_model)
        self.mixer = mixer
        self.mlp_norm = make_norm(norm, d_model) if mlp else None
        self.mlp = GEGLU(d_model, mlp_ratio) if mlp else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, state: tuple | None = None) -> tuple[Tensor, tuple]:
        return self._run(x, state, step=False)

    def step(self, x_t: Tensor, state: tuple | None = None) -> tuple[Tensor, tuple]:
        return self._run(x_t, state, step=True)

    def _run(self, x: Tensor, state: tuple | None, step: bool) -> tuple[Tensor, tuple]:
        conv_state, mixer_state = (None, None) if state is None else state
        if self.conv is not None:
            y, conv_state = (self.conv.step if step else self.conv)(x, conv_state)
            x = x + y
        y, mixer_state = (self.mixer.step if step else self.mixer)(self.mixer_norm(x), mixer_state)
        x = x + self.dropout(y)
        if self.mlp is not None:
            x = x + self.dropout(self.mlp(self.mlp_norm(x)))
        return x, (conv_state, mixer_state)
