"""AdamW with weight decay only on weight matrices, and warmup followed by cosine decay.

Decayed: the weights of linear and convolution layers and of recurrent matrices (`weight_ih*`,
`weight_hh*`). Not decayed: biases, norm scales, embeddings, learned initial states, Mamba's A_log and D.
"""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig
from torch import nn

DECAYED_MODULES = (nn.Linear, nn.Conv1d)
FUSED_DEVICES = ("cpu", "cuda")  # where torch's fused AdamW runs


def is_decayed(module: nn.Module, name: str) -> bool:
    if isinstance(module, DECAYED_MODULES):
        return name == "weight"
    return name.startswith(("weight_ih", "weight_hh"))


def build_optimizer(model: nn.Module, optim: DictConfig) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if param.requires_grad:
                (decay if is_decayed(module, name) else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": float(optim.weight_decay)},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # the fused kernel (one pass over every parameter) where torch has it; the per-tensor loop elsewhere
    fused = all(param.device.type in FUSED_DEVICES for param in decay + no_decay)
    return torch.optim.AdamW(groups, lr=float(optim.lr), betas=tuple(optim.betas), fused=fused or None)


def lr_factor(step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """The multiplier of the base learning rate after `step` optimizer steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, optim: DictConfig, max_steps: int):
    def factor(step: int) -> float:
        return lr_factor(step, int(optim.warmup_steps), max_steps, float(optim.min_lr_ratio))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
