"""Wall-clock timing of one callable: warm-up, then N repeats summarised by median, min and max.

On CUDA each repeat is bracketed by CUDA events and waited on, so asynchronous kernel launches are
counted in full; on CPU `time.perf_counter` brackets the call (CPU ops run synchronously).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Timing:
    """Seconds per repeat: median, min, max over `repeats` timed calls."""

    median_s: float
    min_s: float
    max_s: float
    repeats: int

    def scaled(self, factor: float) -> Timing:
        """The same timing divided by `factor` (e.g. per token when one repeat decodes `factor` tokens)."""
        return Timing(self.median_s / factor, self.min_s / factor, self.max_s / factor, self.repeats)


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of `fn` takes, including all the device work it queues."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin


def time_repeats(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> Timing:
    for _ in range(warmup):
        fn()
    samples = [time_once(fn, device) for _ in range(repeats)]
    return Timing(statistics.median(samples), min(samples), max(samples), repeats)
