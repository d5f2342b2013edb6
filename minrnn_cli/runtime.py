"""Process-wide settings minrnn applies itself, so its speed does not depend on what the user exported.

- The C allocator keeps freed memory (glibc: `mallopt`). By default glibc hands every block above a few MB
  straight back to the kernel when it is freed, so every fresh (B, T, D) tensor of a training step pays its
  page faults again: a 67 MB tensor costs about 30 ms of faults on a 2-core VM, against 6 ms once freed
  memory is kept. minrnn asks glibc to serve large blocks from its heap (M_MMAP_MAX=0) and to keep up to
  TRIM_THRESHOLD of freed memory (M_TRIM_THRESHOLD), the effect of exporting `MALLOC_MMAP_MAX_=0
  MALLOC_TRIM_THRESHOLD_=...`. The price: the process keeps its peak memory until it exits, which is what a
  training run or a benchmark reaches again at its next step anyway. `MINRNN_ALLOCATOR=default` leaves
  the allocator alone; on a C library other than glibc nothing is changed.
- torch's intra-op threads, when a command names them (`minrnn bench threads=N`).
- The compiled CPU kernels of minGRU/minLSTM (scans/fused/cpu.py): whether they are in use.

It also says when the machine is already busy (`busy_machine`): with other work running, torch's default
threads (one per core) fight it for the cores, and a 2-core machine with one other job was seen training 15x
slower and timing 20x ranges. The load average is recorded in results.json and bench.json's meta.

`apply_process_settings(threads)` is called at the start of `minrnn train`, `eval`, `generate` and `bench`
(and the torch-only bench entry point); `process_settings()` reports what is in force, for bench.json's
meta and results.json.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4  # glibc's mallopt parameters (malloc.h)
TRIM_THRESHOLD = 2**31 - 1  # bytes of freed memory the heap keeps instead of returning them (C int max)
TOP_PAD = 64 << 20  # bytes the heap grows by beyond a request (fewer, larger brk calls)

_applied: dict[str, object] = {}


def apply_process_settings(threads: int | None = None) -> dict[str, object]:
    """Apply minrnn's process-wide settings (see the module docstring); returns what is in force."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    if "allocator" not in _applied:
        _applied["allocator"] = _keep_freed_memory()
    return process_settings()


def process_settings() -> dict[str, object]:
    """The process-wide settings in force."""
    import torch

    from minrnn_cli.scans.fused.cpu import kernel_status

    return {"torch_threads": torch.get_num_threads(), "allocator": _applied.get("allocator", "default"),
            "cpu_cell_kernels": kernel_status()}


def _keep_freed_memory() -> str:
    if os.environ.get("MINRNN_ALLOCATOR") == "default":
        return "default (MINRNN_ALLOCATOR=default)"
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        gnu_version = libc.gnu_get_libc_version
    except (OSError, AttributeError, TypeError):
        return "default (not glibc)"
    gnu_version.restype = ctypes.c_char_p
    settings = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    if not all(libc.mallopt(parameter, value) == 1 for parameter, value in settings):
        return "default (mallopt refused)"
    return (f"glibc {gnu_version().decode()} malloc keeps freed memory (mmap_max=0, "
            f"trim_threshold={TRIM_THRESHOLD >> 20} MiB, top_pad={TOP_PAD >> 20} MiB)")


def load_average() -> list[float] | None:
    """1/5/15-minute load averages (None where the system has none)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def usable_cores() -> int:
    """The cores this process may run on (its affinity, e.g. a container's or taskset's limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def busy_machine(threads_remedy: str, finished: bool = False) -> str | None:
    """One warning line when the machine is loaded beyond its cores (the 1-minute load average above the usable
    cores), with the remedy; None when it is not. `threads_remedy`: how this command takes fewer threads;
    `finished`: said after the work (its timings are then suspect) rather than before it."""
    load, cores = load_average(), usable_cores()
    if load is None or load[0] <= cores:
        return None
    where = f"1-minute load average {load[0]:.1f} on {cores} core{'s' if cores != 1 else ''}"
    if finished:
        return (f"the machine was overloaded while this ran ({where} at the end), so its timings may be slow and "
                f"uneven; {fewer_threads(threads_remedy)}wait for the other work to finish, and measure again")
    return (f"the machine is busy before this started: {where}, so this will run slower and its timings vary; "
            f"{fewer_threads(threads_remedy)}wait for the other work to finish")


def fewer_threads(threads_remedy: str) -> str:
    """The advice to use fewer threads, when this process runs more than one ("" otherwise)."""
    import torch

    threads = torch.get_num_threads()
    return f"run with fewer threads ({threads_remedy}; now {threads}) or " if threads > 1 else ""
