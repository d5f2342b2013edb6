"""Where the numbers come from: the device (minrnn_cli.device resolves it, as for training) and dtype, machine
facts (the thread count is one of minrnn_cli.runtime's process-wide settings)."""

from __future__ import annotations

import os
import platform

import torch

from minrnn_cli.benchmarking.config import BenchConfig
from minrnn_cli.device import resolve_device
from minrnn_cli.runtime import load_average, usable_cores


def bench_device(name: str) -> torch.device:
    """The device to measure on: `device=auto|cpu|cuda|cuda:N|mps`, one line naming it when it is not here."""
    return resolve_device(name, key="device")


def resolve_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def memory_limit_bytes(config: BenchConfig, device: torch.device) -> int:
    """The cell memory limit: `max_memory_gib`, else 90% of the GPU's memory or half the machine's RAM."""
    if config.max_memory_gib is not None:
        return int(config.max_memory_gib * 2**30)
    if device.type == "cuda":
        return int(0.9 * torch.cuda.get_device_properties(device).total_memory)
    return int(0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def machine_info(device: torch.device, threads: int) -> dict[str, object]:
    """Facts every result file carries: hardware, software, threads."""
    info: dict[str, object] = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device.type,
        "torch_threads": threads,
        "torch_interop_threads": torch.get_num_interop_threads(),
        "load_average_at_start": load_average(),  # other work on the machine skews CPU timings
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(
            gpu=properties.name,
            gpu_memory_gib=round(properties.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
