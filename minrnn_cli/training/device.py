"""Which device to run on, and the autocast context for the chosen precision."""

from __future__ import annotations

import contextlib
import re

import torch

from minrnn_cli.errors import UserError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then the CPU; an explicit device must exist on this machine."""
    name = str(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", name):
        if not torch.cuda.is_available():
            raise UserError(f"trainer.device={name} but CUDA is not available on this machine; "
                            "use trainer.device=cpu or auto")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"trainer.device={name} but this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(name)
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise UserError("trainer.device=mps but MPS is not available on this machine; use trainer.device=cpu")
        return torch.device("mps")
    raise UserError(f"trainer.device={name!r} is invalid: choose {DEVICE_CHOICES}")


def autocast(device: torch.device, precision: str):
    """bf16 autocast for `precision=bf16`, nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
