"""Which device to run on, and the autocast context for a precision: shared by training, tasks and the bench
(torch only)."""

from __future__ import annotations

import contextlib
import re

import torch

from minrnn_cli.errors import UserError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
PRECISIONS = ("fp32", "bf16")


def resolve_device(name: str, key: str = "trainer.device") -> torch.device:
    """`auto` picks CUDA, then MPS, then the CPU; an explicit device must exist on this machine. `key` is the
    setting named in the one-line error (`trainer.device` for training, `device` for the bench)."""
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
            raise UserError(f"{key}={name} but CUDA is not available on this machine; use {key}=cpu or auto")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"{key}={name} but this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(name)
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"{key}=mps but MPS is not available on this machine; use {key}=cpu")
        return torch.device("mps")
    raise UserError(f"{key}={name!r} is invalid: choose {DEVICE_CHOICES}")


def autocast(device: torch.device, precision: str):
    """bf16 autocast for `precision=bf16`, nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on an asynchronous device (CUDA, MPS); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
