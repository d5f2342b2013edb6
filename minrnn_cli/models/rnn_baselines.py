"""GRU and LSTM baselines, each in two builds that compute the same function:

- `FusedGRU` / `FusedLSTM`: torch.nn.GRU / torch.nn.LSTM, i.e. cuDNN on CUDA and oneDNN on CPU, the
  strongest baseline a user has.
- `LoopGRU` / `LoopLSTM`: the plain-PyTorch loop over time the paper timed its 175x / 235x against. Their
  parameters have nn.GRU's / nn.LSTM's names, shapes and gate order, so one loads the other's weights.

Mixer state protocol: `forward(x, state) -> (y, state)`, `step(x_t, state) -> (y_t, state)`; the state is
h (B, D) for the GRU and (h, c) for the LSTM.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class FusedGRU(nn.Module):
    def __init__(self, d_model: int):
        super().__init__()
        self.rnn = nn.GRU(d_model, d_model, batch_first=True)

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y, h = self.rnn(x, None if state is None else state.unsqueeze(0).contiguous())
        return y, h.squeeze(0)

    def step(self, x_t: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y, h = self(x_t.unsqueeze(1), state)
        return y.squeeze(1), h


class FusedLSTM(nn.Module):
    def __init__(self, d_model: int):
        super().__init__()
        self.rnn = nn.LSTM(d_model, d_model, batch_first=True)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None):
        packed = None if state is None else tuple(s.unsqueeze(0).contiguous() for s in state)
        y, (h, c) = self.rnn(x, packed)
        return y, (h.squeeze(0), c.squeeze(0))

    def step(self, x_t: Tensor, state: tuple[Tensor, Tensor] | None = None):
        y, state = self(x_t.unsqueeze(1), state)
        return y.squeeze(1), state


class _LoopRNN(nn.Module):
    """Weights laid out as nn.GRU / nn.LSTM (weight_ih_l0 etc.), initialised the same way."""

    n_gates: int

    def __init__(self, d_model: int):
        super().__init__()
        self.d_model = d_model
        self.weight_ih_l0 = nn.Parameter(torch.empty(self.n_gates * d_model, d_model))
        self.weight_hh_l0 = nn.Parameter(torch.empty(self.n_gates * d_model, d_model))
        self.bias_ih_l0 = nn.Parameter(torch.empty(self.n_gates * d_model))
        self.bias_hh_l0 = nn.Parameter(torch.empty(self.n_gates * d_model))
        bound = 1.0 / math.sqrt(d_model)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def forward(self, x: Tensor, state=None):
        """The loop the paper timed: input projections for all t at once, then one cell step per t."""
        input_proj = x @ self.weight_ih_l0.T + self.bias_ih_l0
        outputs = []
        # unbind, not input_proj[:, t]: each slice's backward would write a zero tensor the size of the whole
        # projection, making the backward O(T^2) and the baseline artificially slow at long T
        for input_t in input_proj.unbind(1):
            h_t, state = self._cell(input_t, state, x)
            outputs.append(h_t)
        return torch.stack(outputs, dim=1), state

    def step(self, x_t: Tensor, state=None):
        return self._cell(x_t @ self.weight_ih_l0.T + self.bias_ih_l0, state, x_t)

    def _cell(self, input_proj: Tensor, state, like: Tensor):
        raise NotImplementedError

    def _hidden_proj(self, h: Tensor) -> Tensor:
        return h @ self.weight_hh_l0.T + self.bias_hh_l0


class LoopGRU(_LoopRNN):
    """r, z, n gates as in nn.GRU: n = tanh(W_in x + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h."""

    n_gates = 3

    def _cell(self, input_proj: Tensor, state: Tensor | None, like: Tensor):
        h = like.new_zeros(like.shape[0], self.d_model) if state is None else state
        in_r, in_z, in_n = input_proj.chunk(3, dim=-1)
        hid_r, hid_z, hid_n = self._hidden_proj(h).chunk(3, dim=-1)
        r = torch.sigmoid(in_r + hid_r)
        z = torch.sigmoid(in_z + hid_z)
        n = torch.tanh(in_n + r * hid_n)
        h = (1 - z) * n + z * h
        return h, h


class LoopLSTM(_LoopRNN):
    """i, f, g, o gates as in nn.LSTM: c' = f * c + i * g, h' = o * tanh(c')."""

    n_gates = 4

    def _cell(self, input_proj: Tensor, state: tuple[Tensor, Tensor] | None, like: Tensor):
        if state is None:
            zeros = like.new_zeros(like.shape[0], self.d_model)
            state = (zeros, zeros)
        h, c = state
        i, f, g, o = (input_proj + self._hidden_proj(h)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)
