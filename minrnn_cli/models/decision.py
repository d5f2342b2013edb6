"""The Decision Transformer's reading of a trajectory (Chen et al. 2021) with any mixer stack in its place,
as the paper does for offline RL (cell -> MLP blocks).

A window of K steps becomes 3K tokens R_1, s_1, a_1, R_2, s_2, a_2, ...: the return-to-go, state and action
of each step, each embedded by its own linear map plus an embedding of the step's timestep, then
LayerNorm. The action a_t is predicted (tanh) from the output at the token s_t, which the causal stack
computes from R_1..R_t, s_1..s_t and a_1..a_{t-1} only.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from minrnn_cli.models.sequence_models import Backbone


class Steps(NamedTuple):
    """A batch of trajectory windows, oldest step first."""

    returns_to_go: Tensor  # (B, K, 1), scaled
    states: Tensor  # (B, K, state_dim), normalised
    actions: Tensor  # (B, K, action_dim)
    timesteps: Tensor  # (B, K) integer step within the episode

    def to(self, device: torch.device) -> Steps:
        return Steps(*(tensor.to(device) for tensor in self))


class DecisionModel(nn.Module):
    def __init__(self, backbone: Backbone, state_dim: int, action_dim: int, max_timestep: int):
        super().__init__()
        d_model = backbone.d_model
        self.embed_return = nn.Linear(1, d_model)
        self.embed_state = nn.Linear(state_dim, d_model)
        self.embed_action = nn.Linear(action_dim, d_model)
        self.embed_timestep = nn.Embedding(max_timestep, d_model)
        self.embed_norm = nn.LayerNorm(d_model)
        self.backbone = backbone
        self.predict_action = nn.Sequential(nn.Linear(d_model, action_dim), nn.Tanh())

    def forward(self, steps: Steps) -> tuple[Tensor, None]:
        """Predicted actions (B, K, action_dim), one per step of the windows (and no state: a policy is run
        on its last K steps afresh at every step, as in training)."""
        time = self.embed_timestep(steps.timesteps)
        tokens = torch.stack([self.embed_return(steps.returns_to_go) + time,
                              self.embed_state(steps.states) + time,
                              self.embed_action(steps.actions) + time], dim=2)  # (B, K, 3, d)
        x, _ = self.backbone.mix(self.embed_norm(tokens.flatten(1, 2)))
        return self.predict_action(x.view(tokens.shape)[:, :, 1]), None
