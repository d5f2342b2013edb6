"""What is timed: a stack of `depth` sequence mixers of one model at width `d_model`, fed (B, T, d_model).

The stack is the mixers alone (no embedding, norm, residual, conv or MLP), the level at which the paper
compared cells: every model gets the same depth and width, so the numbers compare the recurrences.
Three workloads share one stack and one input:
- `train_step`: forward, loss (MSE to a fixed random target), backward; optionally AdamW's step.
- `prefill`: the parallel forward over all T tokens, without autograd.
- `decode`: `decode_tokens` calls of `step`, one token each, continuing from the state `prepare_decode`
  left (the prefill's, computed untimed; every mixer's parallel call returns its state, Mamba's included).
`train_step` and `prefill` take an optional shorter `length` (a prefix of the input): the budget's
calibration call, which predicts a long sequence's cost without running it.
`Floor` is the training step's reference: the same stack's weight matrices alone, multiplied forward and
backward over all B*T tokens (the matmuls no implementation of the layer can avoid), timed beside it.
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
        """Forward, loss and backward, the gradient of the input included: the stack as a layer inside a
        network, where the input is the layer below's output (and as the floor counts its matmuls)."""
        self.model.zero_grad(set_to_none=True)
        x = self.x[:, :length].detach().requires_grad_()
        y, _ = self.model(x)
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


def projection_weights(module: nn.Module) -> list[tuple[str, Tensor]]:
    """Every weight matrix (out, in) of `module`: its 2-d parameters whose own name starts with "weight".

    That is each `nn.Linear`'s weight, `nn.GRU` / `nn.LSTM`'s `weight_ih_l*` and `weight_hh_l*`, the loop
    baselines' own `weight_*`, Mamba's in/x/dt/out projections and the Transformer's qkv and out. Not taken:
    biases and norm scales (1-d), convolution kernels (3-d) and other 2-d parameters that are no matmul
    operand, such as Mamba's `A_log` (the diagonal state matrix).
    """
    return [(name, parameter) for name, parameter in module.named_parameters()
            if parameter.dim() == 2 and name.rsplit(".", 1)[-1].startswith("weight")]


class Floor:
    """The matmuls a layer of the model cannot avoid: for every weight W (out, in) of the model
    (`projection_weights`), a (tokens, in) input X times W^T forward, and backward the gradient of the input
    (G @ W) and of W (G^T @ X, or (X^T G)^T where X is the narrower), G (tokens, out) standing in for the
    gradient from above. `tokens` = B*T: a recurrent weight (GRU / LSTM `weight_hh`) counts as one matmul
    batched over every step, a lower bound on its T small ones. No bias, activation, scan, convolution or
    loss: those are what the model adds (for Mamba: the convolution, discretisation and selective scan). The
    input gradient is counted for every weight, as inside a network; the timed training step computes it too
    (`Workload.train_step`).
    """

    def __init__(self, model: nn.Module, tokens: int):
        first = next(model.parameters())
        operands: dict[int, Tensor] = {}  # one random (tokens, n) tensor per width n, shared by the weights

        def operand(width: int) -> Tensor:
            if width not in operands:
                operands[width] = torch.randn(tokens, width, device=first.device, dtype=first.dtype)
            return operands[width]

        weights = [weight.detach() for _, weight in projection_weights(model)]
        self._calls = [(weight, operand(weight.shape[1]), operand(weight.shape[0])) for weight in weights]

    def __call__(self) -> None:
        with torch.no_grad():
            for weight, x, grad in self._calls:  # each product is dropped at once, as a layer's would be
                torch.mm(x, weight.t())
                torch.mm(grad, weight)
                # the weight's gradient with the narrower operand on the left: (out, in) = (256, 8) the other
                # way round is ~10x slower on a CPU, and Mamba's dt_proj computes it this way
                torch.mm(x.t(), grad) if weight.shape[1] < weight.shape[0] else torch.mm(grad.t(), x)


def floor_flops(model: nn.Module, tokens: int) -> int:
    """Floating-point operations of one `Floor` call: 3 matmuls of tokens x in x out per weight, 2 per multiply-add."""
    return sum(6 * tokens * weight.shape[0] * weight.shape[1] for _, weight in projection_weights(model))
