"""Peak memory of one call (the training step), including what was resident before it.

On both devices the figure is the bytes of the tensors resident before the call (parameters, buffers,
input, target, optimiser state) plus the peak of the bytes the call allocates on top of what was allocated
when it began (other models of the same length, timed side by side, stay out of it):
- CUDA: `torch.cuda.max_memory_allocated` (after resetting the peak) minus `torch.cuda.memory_allocated`
  at the start.
- CPU: torch has no CPU peak counter, so the peak is replayed from torch.profiler's allocation events
  (`profile_memory=True`), which record every CPU-allocator allocation and free with its size.
Both are tensor bytes, so the two devices report the same quantity; process RSS (Python, libraries,
allocator caching) is excluded.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Iterator

import torch
from torch.profiler import ProfilerActivity, profile

CUDA_METHOD = (
    "resident tensor bytes (parameters, buffers, input, target, optimiser state) + torch.cuda.max_memory_allocated "
    "during one training step less torch.cuda.memory_allocated at its start"
)
CPU_METHOD = (
    "resident tensor bytes (parameters, buffers, input, target, optimiser state) + peak live CPU-allocator "
    "bytes during one training step, from torch.profiler allocation events (profile_memory=True)"
)


def method(device: torch.device) -> str:
    return CUDA_METHOD if device.type == "cuda" else CPU_METHOD


def peak_bytes(fn: Callable[[], object], device: torch.device, resident_bytes: int) -> int:
    """`resident_bytes` + the peak of the tensor bytes `fn` allocates while it runs."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        allocated = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return resident_bytes + torch.cuda.max_memory_allocated(device) - allocated
    with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return resident_bytes + _peak_live_bytes(prof)


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence the profiler's native start/stop lines on file descriptor 2 (Python errors still raise)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _peak_live_bytes(prof: profile) -> int:
    """Replay the profiler's CPU allocation events in time order; the running total's maximum."""
    from torch._C._profiler import _EventType

    events = []
    pending = list(prof.profiler.kineto_results.experimental_event_tree())
    while pending:
        event = pending.pop()
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu":
            events.append((event.start_time_ns, event.extra_fields.alloc_size))
        pending.extend(event.children)
    live = peak = 0
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    return peak


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)
