"""What is timed: a stack of `depth` sequence mixers of one model at width `d_model`, fed (B, T, d_model).

The stack is the mixers alone (no embedding, norm, residual, conv or MLP), the level at which the paper
compared cells: every model gets the same depth and width, so the numbers compare the recurrences.
Three workloads share one stack and one input:
- `train_step`: forward, loss (MSE to a fixed random target), backward; optionally AdamW's step.
- `prefill`: the parallel forward over all T tokens, without autograd.
- `decode`: `decode_tokens` calls of `step`, one token each, continuing from the state `prepare_decode`
  left (the prefill's, computed untimed; mambapy's parallel path returns no state, so Mamba decodes from
  its zero state: same cost per token for a recurrent model).
`train_step` and `prefill` take an optional shorter `length` (a prefix of the input): the budget's
calibration call, which predicts a long sequence's cost without running it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minrnn_cli.benchmarking.memory import tensor_bytes
from minrnn_cli.models import build_mixer, count_params, takes_option
from minrnn_cli.models.blocks import run_layers


class MixerStack(nn.Module):
    def __init__(self, name: str, d_model: int, depth: int, scan_backend: str):
        super().__init__()
        options = {"scan_backend": scan_backend} if takes_option(name, "scan_backend") else {}
        self.layers = nn.ModuleList(build_mixer(name, d_model, **options) for _ in range(depth))

    def forward(self, x: Tensor, states: list | None = None) -> tuple[Tensor, list]:
        return run_layers(self.layers, x, states)

    def step(self, x_t: Tensor, states: list | None = None) -> tuple[Tensor, list]:
        return run_layers(self.layers, x_t, states, step=True)


def make_inputs(batch_size: int, seq_len: int, d_model: int, dtype: torch.dtype, device: torch.device,
                seed: int) -> tuple[Tensor, Tensor]:
    """The input and the regression target, (B, T, d_model) each; every model of a length shares them."""
    generator = torch.Generator().manual_seed(seed)
    x, target = torch.randn(2, batch_size, seq_len, d_model, generator=generator)
    return x.to(device=device, dtype=dtype), target.to(device=device, dtype=dtype)


class Workload:
    """One model on one (input, target) pair, ready to be timed; the model takes the input's dtype and device."""

    def __init__(self, name: str, x: Tensor, target: Tensor, *, depth: int, scan_backend: str,
                 optimizer_step: bool, decode_tokens: int):
        self.model = MixerStack(name, x.shape[-1], depth, scan_backend).to(device=x.device, dtype=x.dtype)
        self.x = x
        self.target = target
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4) if optimizer_step else None
        self.decode_tokens = decode_tokens
        self._decode_start: list | None = None  # None: the zero state

    def n_params(self) -> int:
        return count_params(self.model)

    def train_step(self, length: int | None = None) -> None:
        self.model.zero_grad(set_to_none=True)
        y, _ = self.model(self.x[:, :length])
        F.mse_loss(y, self.target[:, :length]).backward()
        if self.optimizer is not None:
            self.optimizer.step()

    def prefill(self, length: int | None = None) -> None:
        with torch.inference_mode():
            self.model(self.x[:, :length])

    def prepare_decode(self, from_prefill: bool) -> None:
        """The state decoding starts from: the prefill's (one untimed parallel call) or the zero state."""
        if from_prefill:
            with torch.inference_mode():
                _, self._decode_start = self.model(self.x)
        else:
            self._decode_start = None

    def decodes_from_zero_state(self) -> bool:
        return self._decode_start is None or all(state is None for state in self._decode_start)

    def decode(self) -> None:
        with torch.inference_mode():
            states = self._decode_start
            for t in range(self.decode_tokens):
                _, states = self.model.step(self.x[:, t % self.x.shape[1]], states)

    def resident_bytes(self) -> int:
        """Tensor bytes held between steps (gradients excluded: each step starts with them freed)."""
        tensors = [*self.model.parameters(), *self.model.buffers(), self.x, self.target]
        if self.optimizer is not None:
            for state in self.optimizer.state.values():
                tensors.extend(v for v in state.values() if torch.is_tensor(v))
        return tensor_bytes(tensors)
