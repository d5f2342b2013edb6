"""Wall-clock timing: warm-up, then N repeats summarised by median, min and max, several calls interleaved.

On CUDA each repeat is bracketed by CUDA events and waited on, so asynchronous kernel launches are
counted in full; elsewhere `time.perf_counter` brackets the call, after waiting for the device (CPU ops run
synchronously; MPS is waited for).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from minrnn_cli.device import synchronize


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
    synchronize(device)
    begin = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - begin


def timing_method(device: torch.device) -> str:
    if device.type == "cuda":
        return "CUDA events around each repeat, synchronised"
    if device.type == "cpu":
        return "time.perf_counter around each repeat (CPU ops are synchronous)"
    return f"time.perf_counter around each repeat, {device.type} synchronised before and after"


def time_interleaved(calls: dict[str, Callable[[], object]], repeats: dict[str, int], device: torch.device,
                     warmup: int) -> dict[str, Timing | RuntimeError]:
    """Time several calls side by side: `warmup` untimed calls of each, then round after round of one timed
    call of each, until each has its `repeats`. Interleaving spreads any drift in the machine's load
    (other jobs on a shared CPU) evenly over the models compared. Python's cyclic GC is paused while
    timing, as timeit does. A call that raises is dropped from the rounds and its error returned.
    """
    samples: dict[str, list[float]] = {name: [] for name in calls}
    failed: dict[str, RuntimeError] = {}
    for name, fn in calls.items():
        try:
            for _ in range(warmup):
                fn()
        except RuntimeError as error:
            failed[name] = error
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for round_ in range(max(repeats.values(), default=0)):
            for name, fn in calls.items():
                if name in failed or round_ >= repeats[name]:
                    continue
                try:
                    samples[name].append(time_once(fn, device))
                except RuntimeError as error:
                    failed[name] = error
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: failed.get(name) or _summary(samples[name]) for name in calls}


def _summary(samples: list[float]) -> Timing:
    return Timing(statistics.median(samples), min(samples), max(samples), len(samples))
