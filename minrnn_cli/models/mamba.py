"""Mamba baseline through mambapy (pure PyTorch, any device), with mamba-ssm's CUDA selective scan used
automatically on CUDA tensors when that package is installed.

mambapy's parallel path returns no final state, so a call that carries state in (`state` not None) runs
the recurrence token by token with mambapy's `step`; a call from the initial state runs in parallel and
returns `None` as its state (`carries_parallel_state = False` tells the language model to prefill by steps).
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor, nn


class MambaMixer(nn.Module):
    carries_parallel_state = False

    def __init__(self, d_model: int, d_state: int = 16, expansion: int = 2, d_conv: int = 4):
        super().__init__()
        from mambapy.mamba import MambaBlock, MambaConfig

        self.config = MambaConfig(d_model=d_model, n_layers=1, d_state=d_state, expand_factor=expansion,
                                  d_conv=d_conv)
        self.block = MambaBlock(self.config)
        self._cuda_scan = _mamba_ssm_scan()

    def forward(self, x: Tensor, state=None):
        if state is not None:
            outputs = []
            for t in range(x.shape[1]):
                y_t, state = self.step(x[:, t], state)
                outputs.append(y_t)
            return torch.stack(outputs, dim=1), state
        use_kernel = x.is_cuda and self._cuda_scan is not None
        self.config.use_cuda = use_kernel
        if use_kernel:
            self.block.selective_scan_cuda = self._cuda_scan
        return self.block(x), None

    def step(self, x_t: Tensor, state=None):
        if state is None:
            d_inner = self.config.d_inner
            state = (
                x_t.new_zeros(x_t.shape[0], d_inner, self.config.d_state),
                x_t.new_zeros(x_t.shape[0], d_inner, self.config.d_conv - 1),
            )
        return self.block.step(x_t, state)


def _mamba_ssm_scan():
    """mamba-ssm's fused selective scan when the package is installed, else None."""
    if importlib.util.find_spec("mamba_ssm") is None:
        return None
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn
