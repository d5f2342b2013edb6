"""Non-finite losses and gradients: stop the run before the update (`trainer.on_nonfinite=stop`, the last
good checkpoint stays the newest) or skip that update and go on (`skip`).

The check costs one host-device sync per step (the loss and the gradient norm, read together).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from minrnn_cli.errors import UserError

POLICIES = ("stop", "skip")


class NonFiniteError(UserError):
    """A non-finite loss or gradient with `trainer.on_nonfinite=stop`."""


def gradient_norm(model: nn.Module, grad_clip: float) -> Tensor:
    """The total gradient norm, after clipping to `grad_clip` when it is > 0 (the norm before clipping)."""
    parameters = [p for p in model.parameters() if p.grad is not None]
    if grad_clip > 0:
        return torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    return torch.nn.utils.get_total_norm([p.grad for p in parameters])


def update_is_finite(loss: Tensor, grad_norm: Tensor, step: int, policy: str, checkpoint: str | None) -> bool:
    """True when the update may be applied; with policy `stop` a non-finite one raises NonFiniteError.
    `step` numbers the update being made (1 for the first); `checkpoint` describes the last one saved."""
    loss_value, norm_value = torch.stack([loss.detach().float(), grad_norm.detach().float()]).tolist()
    if math.isfinite(loss_value) and math.isfinite(norm_value):
        return True
    if policy == "skip":
        return False
    what = f"gradient norm ({norm_value})" if math.isfinite(loss_value) else f"loss ({loss_value})"
    kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint had been written yet"
    raise NonFiniteError(f"non-finite {what} at step {step}; stopped before applying it and {kept}. "
                         "Lower optim.lr or set trainer.grad_clip, or skip such steps with trainer.on_nonfinite=skip")
