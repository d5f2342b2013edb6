"""minGRU and minLSTM (Feng et al., 2024): gates that see x_t only, so h_t = a_t * h_{t-1} + b_t is a scan.

    minGRU:  z_t = sigmoid(k_t)                      a_t = 1 - z_t    b_t = z_t * g(h~_t)
    minLSTM: f_t = sigmoid(k^f_t), i_t = sigmoid(k^i_t), normalised f' = f / (f + i), i' = i / (f + i)
                                                     a_t = f'_t       b_t = i'_t * g(h~_t)

`log_space=True` is the paper's recommended (and the authors' released) cell: the candidate goes through
g(x) = x + 0.5 (x >= 0) or sigmoid(x) (x < 0), which keeps every state positive so the log-space scan
applies. `log_space=False` is the vanilla cell (h~_t used as is) for the linear-space scans. Gates are
computed in log space (log sigmoid(k) = -softplus(-k)), exactly as in the paper's listings.

Initial state. The paper's listings disagree: the log-space minGRU listing feeds h_0 through log_g (so
h_0 is a pre-activation), while the minLSTM listing and pseudocode take log(h_0) (so h_0 is already a
state). We follow the authors' code, which is consistent in both cells: a *learned* h0 is a parameter
that goes through g (through log_g in the log-space scan, which is the same thing), and zero otherwise;
a *carried* state (the `state` returned by a previous call) is a state value and is used as is. Carrying
it through g again is the bug behind lucidrains' chunked minLSTM error; here every mode agrees.

The input projection is laid out [gates | candidate] (`scans/fused/layout.py`). Where the backend has a
fused path (`triton`; `linear` for minGRU) the recurrence is computed from that projection by
`scans.fused.fused_cell_scan`; on the CPU the compiled kernel takes the projection without its bias and adds
it as it reads (`scans/fused/cpu.py`); the other backends run the gates here, then `scans.scan`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minrnn_cli.scans import resolve_backend, scan
from minrnn_cli.scans.fused import (
    N_GATES,
    fused_cell_scan,
    has_fused_path,
    projection_width,
    split_gates,
    split_projection,
)
from minrnn_cli.scans.fused import cpu as compiled_kernels
from minrnn_cli.scans.log_space import log_scan_from_state


def g(x: Tensor) -> Tensor:
    """The paper's positive activation: x + 0.5 for x >= 0, sigmoid(x) below (continuous at 0)."""
    return F.relu(x) + torch.sigmoid(x.clamp(max=0))  # torch.where is several times slower on the CPU


def log_g(x: Tensor) -> Tensor:
    """log(g(x)), computed without leaving log space for negative x."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


class _MinimalRNN(nn.Module):
    """What minGRU and minLSTM share: candidate, h0, the three modes and the down-projection.

    Subclasses define `cell_kind`, `n_gates` and `log_gates(pre) -> (log_a, log_input_gate)`; `gates`
    gives the same two in linear space (a subclass may compute them more directly).

    `backend_choice` is the scan backend as given (`auto` included), validated here and resolved once per
    forward call against the input's device.
    """

    cell_kind: str  # the cell's name for `scans.fused` ("mingru" / "minlstm")
    n_gates: int
    normalize = False  # minLSTM's gate normalisation (minGRU has none)

    def __init__(
        self,
        d_model: int,
        expansion: float = 1.0,
        log_space: bool = True,
        learned_h0: bool = False,
        scan_backend: str = "auto",
    ):
        super().__init__()
        self.d_inner = int(round(d_model * expansion))
        if self.d_inner < 1:
            raise ValueError(f"expansion={expansion} gives an inner width below 1 for d_model={d_model}")
        self.log_space = log_space
        resolve_backend(scan_backend)  # a ValueError for an unknown name, now rather than at the first call
        self.backend_choice = scan_backend
        self.to_hidden = nn.Linear(d_model, projection_width(self.n_gates, self.d_inner))
        self.to_out = nn.Linear(self.d_inner, d_model) if self.d_inner != d_model else nn.Identity()
        self.h0 = nn.Parameter(torch.randn(self.d_inner)) if learned_h0 else None

    @property
    def scan_backend(self) -> str:
        """The concrete backend on a device not known yet (CPU): `auto` reads `linear` here."""
        return resolve_backend(self.backend_choice)

    def log_gates(self, gate_pre: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def gates(self, gate_pre: Tensor) -> tuple[Tensor, Tensor]:
        log_a, log_input = self.log_gates(gate_pre)
        return torch.exp(log_a), torch.exp(log_input)

    def _candidate(self, candidate_pre: Tensor) -> Tensor:
        return g(candidate_pre) if self.log_space else candidate_pre

    def initial_state(self, batch_size: int, like: Tensor) -> Tensor | None:
        """The state before the first token: g(learned h0), or None meaning zeros."""
        if self.h0 is None:
            return None
        h0 = g(self.h0) if self.log_space else self.h0
        return h0.to(like.dtype).expand(batch_size, -1)

    def _compiled_scan(self, x: Tensor, h0: Tensor | None) -> tuple[Tensor, Tensor]:
        """(h, h_last) by the compiled CPU kernel, which adds the projection's bias as it reads it and sums its
        gradient as it writes the projection's: a pass over (B, T, width) fewer each way than nn.Linear's."""
        hidden = F.linear(x, self.to_hidden.weight)
        return compiled_kernels.compiled_cell_scan(hidden, h0, self.cell_kind, self.log_space, self.normalize,
                                                   bias=self.to_hidden.bias)

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Parallel mode over x: (B, T, d_model). Returns (y, final state (B, d_inner)).

        T must be at least 1: an empty sequence is a ValueError on every backend, as in `scans.scan`.
        With bfloat16/float16 the recurrence accumulates in float32 on every backend; y comes in x's dtype.
        """
        if x.dim() != 3 or x.shape[1] < 1:
            name = type(self).__name__
            raise ValueError(f"{name} needs x (B, T, d_model) with a sequence of length T >= 1; got {tuple(x.shape)}")
        h0 = self.initial_state(x.shape[0], x) if state is None else state
        backend = resolve_backend(self.backend_choice, x.device)
        if backend == "linear" and compiled_kernels.handles(x):
            h, h_last = self._compiled_scan(x, h0)
            return self.to_out(h), h_last
        hidden = self.to_hidden(x)
        if has_fused_path(self.cell_kind, backend, hidden):  # gates computed inside the scan
            h, h_last = fused_cell_scan(hidden, h0, self.cell_kind, self.log_space, self.normalize, backend)
            return self.to_out(h), h_last
        gate_pre, candidate_pre = split_projection(hidden, self.n_gates)
        if backend == "log" and self.log_space:  # gates in float32 at least, as on the other backends
            compute = hidden.dtype if hidden.dtype in (torch.float32, torch.float64) else torch.float32
            gate_pre, candidate_pre = gate_pre.to(compute), candidate_pre.to(compute)
            log_a, log_input = self.log_gates(gate_pre)
            # h0 in linear space: a state may be exactly 0 (underflow, or zeros given), where log has no gradient
            h0 = None if h0 is None else h0.to(compute)
            h, h_last = log_scan_from_state(log_a, log_input + log_g(candidate_pre), h0)
            h, h_last = h.to(hidden.dtype), h_last.to(hidden.dtype)
        else:
            a, input_gate = self.gates(gate_pre)
            h, h_last = scan(a, input_gate * self._candidate(candidate_pre), h0, backend=backend)
        return self.to_out(h), h_last

    def step(self, x_t: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Sequential mode, one token x_t: (B, d_model), O(1) state. Returns (y_t, new state)."""
        h_prev = self.initial_state(x_t.shape[0], x_t) if state is None else state
        if resolve_backend(self.backend_choice, x_t.device) == "linear" and compiled_kernels.handles(x_t):
            # one compiled call for the bias, the gates and the update, instead of a handful of small ops
            _, h = self._compiled_scan(x_t.unsqueeze(1), h_prev)
            return self.to_out(h), h
        hidden = self.to_hidden(x_t)
        gate_pre, candidate_pre = split_projection(hidden, self.n_gates)
        a, input_gate = self.gates(gate_pre)
        h = input_gate * self._candidate(candidate_pre)
        if h_prev is not None:
            h = h + a * h_prev
        return self.to_out(h), h


class MinGRU(_MinimalRNN):
    """h_t = (1 - z_t) * h_{t-1} + z_t * h~_t with z_t = sigmoid(Linear(x_t)), h~_t = g(Linear(x_t))."""

    cell_kind = "mingru"
    n_gates = N_GATES[cell_kind]

    def log_gates(self, gate_pre: Tensor) -> tuple[Tensor, Tensor]:
        log_z = -F.softplus(-gate_pre)
        log_one_minus_z = -F.softplus(gate_pre)
        return log_one_minus_z, log_z

    def gates(self, gate_pre: Tensor) -> tuple[Tensor, Tensor]:
        z = torch.sigmoid(gate_pre)
        return 1 - z, z


class MinLSTM(_MinimalRNN):
    """h_t = f'_t * h_{t-1} + i'_t * h~_t with gates from x_t only (no output gate, no tanh).

    `normalize=True` (the paper) uses f' = f/(f+i), i' = i/(f+i), so the state is a convex combination
    and its scale cannot grow with t; `normalize=False` uses f and i as they are (the authors' YAML
    default). `forget_bias` is added to the forget gate's bias at init (paper App. D.4).
    """

    cell_kind = "minlstm"
    n_gates = N_GATES[cell_kind]

    def __init__(self, d_model: int, *, normalize: bool = True, forget_bias: float = 0.0, **options):
        super().__init__(d_model, **options)
        self.normalize = normalize
        with torch.no_grad():
            gate_bias, _ = split_projection(self.to_hidden.bias, self.n_gates)
            forget_gate_bias, _ = split_gates(gate_bias, self.n_gates)
            forget_gate_bias += forget_bias

    def log_gates(self, gate_pre: Tensor) -> tuple[Tensor, Tensor]:
        forget_pre, input_pre = split_gates(gate_pre, self.n_gates)
        if self.normalize:
            diff = F.softplus(-forget_pre) - F.softplus(-input_pre)  # log i - log f
            return -F.softplus(diff), -F.softplus(-diff)
        return -F.softplus(-forget_pre), -F.softplus(-input_pre)

    def gates(self, gate_pre: Tensor) -> tuple[Tensor, Tensor]:
        """The same gates in linear space: f' = sigmoid(log f - log i), i' = sigmoid(log i - log f)."""
        forget_pre, input_pre = split_gates(gate_pre.contiguous(), self.n_gates)
        if self.normalize:
            diff = F.softplus(-forget_pre) - F.softplus(-input_pre)  # log i - log f
            return torch.sigmoid(-diff), torch.sigmoid(diff)
        return torch.sigmoid(forget_pre), torch.sigmoid(input_pre)
