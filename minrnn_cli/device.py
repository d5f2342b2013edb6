"""Which device to run on, and the autocast context for a precision: shared by training, tasks and the bench
(torch only)."""

from __future__ import annotations

import contextlib
import re

import torch

from minrnn_cli.errors import UserError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
PRECISIONS = ("auto", "fp32", "bf16")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 CPUs that multiply bf16 in hardware


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


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` is bf16 autocast where the device multiplies bf16 natively (a CUDA GPU with bf16, an x86 CPU with
    AVX512-BF16 or AMX: its matmuls take about two thirds of the fp32 time here) and fp32 elsewhere (where bf16
    would be emulated, and slower); fp32 and bf16 stay as given."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return False
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def precision_shown(asked: str, used: str) -> str:
    """The precision for a start line: `bf16 (auto)` when `auto` chose it."""
    return f"{used} (auto)" if asked == "auto" else used


def autocast(device: torch.device, precision: str):
    """bf16 autocast for `precision=bf16`, nothing for fp32 (resolve `auto` first: `resolve_precision`)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on an asynchronous device (CUDA, MPS); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
