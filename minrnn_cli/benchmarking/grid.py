"""Measure every (model, length) cell of the grid: training step, prefill, decoding, peak memory."""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from minrnn_cli.benchmarking import memory
from minrnn_cli.benchmarking.budget import CALIBRATION_LEN, Budget
from minrnn_cli.benchmarking.config import BenchConfig
from minrnn_cli.benchmarking.timing import Timing, time_once, time_repeats
from minrnn_cli.benchmarking.workload import Workload

KINDS = ("train_step", "prefill", "decode_token")  # decode_token timings are per token


@dataclass
class Measurement:
    status: str  # "ok", "skipped", "error" or "off" (not asked for)
    timing: Timing | None = None
    note: str = ""


@dataclass
class Cell:
    model: str
    seq_len: int
    n_params: int | None = None
    measurements: dict[str, Measurement] = field(default_factory=dict)
    peak_bytes: int | None = None
    memory_note: str = ""

    def seconds(self, kind: str) -> float | None:
        measured = self.measurements.get(kind)
        return measured.timing.median_s if measured and measured.timing else None


def measure_grid(config: BenchConfig, device: torch.device, dtype: torch.dtype, max_memory_bytes: int,
                 on_cell: Callable[[Cell], None] = lambda cell: None) -> list[Cell]:
    """All cells, shortest length first so the budgets can extrapolate; `on_cell` sees each as it ends."""
    budget = Budget(config.budget_s, config.warmup, config.repeats, config.min_repeats, max_memory_bytes)
    cells = []
    for seq_len in sorted(set(config.seq_len)):
        for model in dict.fromkeys(config.models):
            cell = _measure_cell(model, seq_len, config, device, dtype, budget)
            cells.append(cell)
            on_cell(cell)
    return cells


def _measure_cell(model: str, seq_len: int, config: BenchConfig, device: torch.device,
                  dtype: torch.dtype, budget: Budget) -> Cell:
    cell = Cell(model, seq_len)
    over_memory = budget.memory_skip(model, seq_len)
    if over_memory:
        cell.measurements = {kind: Measurement("skipped", note=over_memory) for kind in KINDS}
        cell.memory_note = "not measured: over the memory limit"
        return cell
    torch.manual_seed(config.seed)
    try:
        workload = Workload(model, seq_len, batch_size=config.batch_size, d_model=config.d_model,
                            depth=config.depth, dtype=dtype, device=device,
                            scan_backend=config.scan_backend, optimizer_step=config.optimizer_step,
                            decode_tokens=config.decode_tokens)
    except (RuntimeError, ValueError) as error:  # e.g. out of memory at build time
        for kind in KINDS:
            cell.measurements[kind] = Measurement("error", note=_first_line(error))
        return cell
    cell.n_params = workload.n_params()
    calls = {"train_step": workload.train_step, "prefill": workload.prefill, "decode_token": workload.decode}
    calibrations = {"train_step": workload.train_step, "prefill": workload.prefill}
    for kind in KINDS:
        if kind != "train_step" and not config.inference:
            cell.measurements[kind] = Measurement("off")
            continue
        if kind == "decode_token":
            from_prefill = cell.measurements["prefill"].status == "ok"
            workload.prepare_decode(from_prefill)
        measured = _measure(calls[kind], model, kind, seq_len, device, budget, calibrations.get(kind))
        if kind == "decode_token" and measured.timing is not None:
            measured.timing = measured.timing.scaled(config.decode_tokens)
            if not from_prefill:
                measured.note = "; ".join(filter(None, [measured.note, "decoded from the zero state"]))
        cell.measurements[kind] = measured
    train_status = cell.measurements["train_step"].status
    if not config.memory:
        cell.memory_note = "off"
    elif train_status == "error" or not (train_status == "ok" or budget.fits_once(model, "train_step", seq_len)):
        cell.memory_note = f"not measured: training step {train_status}"
    else:
        if train_status != "ok":
            cell.memory_note = "from one training step (its timing did not fit the budget)"
        workload.model.zero_grad(set_to_none=True)
        try:
            cell.peak_bytes = memory.peak_bytes(workload.train_step, device, workload.resident_bytes())
            budget.record(model, "peak_bytes", seq_len, cell.peak_bytes)
        except RuntimeError as error:
            cell.memory_note = f"error: {_first_line(error)}"
    del workload, calls
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return cell


def _measure(fn: Callable[[], object], model: str, kind: str, seq_len: int, device: torch.device,
             budget: Budget, calibrate: Callable[[int], object] | None = None) -> Measurement:
    """Time `fn` within the budget: skip on a prediction, else probe once, then warm up and repeat.

    With nothing shorter measured yet, `calibrate(CALIBRATION_LEN)` (the same call on a prefix) is timed
    first, so even the first length of a grid is predicted before a possibly very long call is made.
    """
    try:
        if calibrate is not None and seq_len > CALIBRATION_LEN and budget.predict(model, kind, seq_len) is None:
            calibrate(CALIBRATION_LEN)  # first-call costs (allocator, kernel selection) stay out of the figure
            budget.record(model, kind, CALIBRATION_LEN, time_once(lambda: calibrate(CALIBRATION_LEN), device))
        skip = budget.before(model, kind, seq_len)
        if skip is not None:
            return Measurement("skipped", note=skip.note)
        probe_s = time_once(fn, device)
        plan = budget.after_probe(probe_s)
        budget.record(model, kind, seq_len, probe_s)
        if plan.repeats == 0:
            return Measurement("skipped", note=plan.note)
        timing = time_repeats(fn, device, budget.warmup, plan.repeats)
    except RuntimeError as error:  # out of memory, an op missing for this dtype/device, ...
        return Measurement("error", note=_first_line(error))
    budget.record(model, kind, seq_len, timing.median_s)
    return Measurement("ok", timing, plan.note)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:200]
