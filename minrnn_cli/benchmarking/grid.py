"""Measure every (model, length) cell of the grid: training step, prefill, decoding, peak memory, and the
training step's floor (the model's weight matmuls alone, `workload.Floor`), timed beside the step."""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from minrnn_cli.benchmarking import memory
from minrnn_cli.benchmarking.budget import CALIBRATION_LEN, Budget, Plan, headline_models
from minrnn_cli.benchmarking.config import BenchConfig
from minrnn_cli.benchmarking.timing import Timing, time_interleaved, time_once
from minrnn_cli.benchmarking.workload import Floor, Workload, floor_flops, make_inputs, projection_weights

KINDS = ("train_step", "prefill", "decode_token")  # decode_token timings are per token
FLOOR = "floor"  # the training step's floor: a measurement of its own, kept out of KINDS' speedups


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
    floor_flops: int | None = None  # floating-point operations of one floor call

    def seconds(self, kind: str) -> float | None:
        measured = self.measurements.get(kind)
        return measured.timing.median_s if measured and measured.timing else None


def measure_grid(config: BenchConfig, device: torch.device, dtype: torch.dtype, max_memory_bytes: int,
                 on_cell: Callable[[Cell], None] = lambda cell: None) -> list[Cell]:
    """All cells, shortest length first so the budgets can extrapolate; `on_cell` sees each as it ends.

    The models of one length are timed side by side (their repeats interleaved), so the ratios between
    them do not depend on when, during the run, another job loaded the machine.
    """
    budget = Budget(config.budget_s, config.warmup, config.repeats, config.min_repeats, max_memory_bytes,
                    protected=headline_models(config.models))
    cells = []
    for seq_len in sorted(set(config.seq_len)):
        for cell in _measure_length(list(dict.fromkeys(config.models)), seq_len, config, device, dtype, budget):
            cells.append(cell)
            on_cell(cell)
    return cells


def _measure_length(models: list[str], seq_len: int, config: BenchConfig, device: torch.device,
                    dtype: torch.dtype, budget: Budget) -> list[Cell]:
    cells = {model: Cell(model, seq_len) for model in models}
    workloads = _build(cells, config, device, dtype, budget)
    for kind in KINDS:
        if kind != "train_step" and not config.inference:
            for model in workloads:
                cells[model].measurements[kind] = Measurement("off")
            continue
        if kind == "decode_token":
            for model, workload in workloads.items():
                workload.prepare_decode(from_prefill=cells[model].measurements["prefill"].status == "ok")
        measured, floors = _measure_side_by_side(workloads, kind, seq_len, device, budget)
        for model, measurement in floors.items():
            cells[model].measurements[FLOOR] = measurement
        for model, measurement in measured.items():
            if kind == "decode_token":
                if measurement.timing is not None:
                    measurement.timing = measurement.timing.scaled(config.decode_tokens)
                if workloads[model].decodes_from_zero_state():
                    measurement.note = "; ".join(filter(None, [measurement.note, "decoded from the zero state"]))
            cells[model].measurements[kind] = measurement
    for model, workload in workloads.items():
        _measure_memory(cells[model], workload, config, device, budget)
    del workloads
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return list(cells.values())


def _build(cells: dict[str, Cell], config: BenchConfig, device: torch.device, dtype: torch.dtype,
           budget: Budget) -> dict[str, Workload]:
    """A workload per model of one length, all on one shared input; cells predicted over the memory limit
    or failing to build are marked and left out."""
    workloads, inputs = {}, None
    for model, cell in cells.items():
        over_memory = budget.memory_skip(model, cell.seq_len)
        if over_memory:
            cell.measurements = {kind: Measurement("skipped", note=over_memory) for kind in KINDS}
            cell.measurements[FLOOR] = Measurement("skipped")
            cell.memory_note = "not measured: over the memory limit"
            continue
        torch.manual_seed(config.seed)
        try:
            inputs = inputs or make_inputs(config.batch_size, cell.seq_len, config.d_model, dtype, device,
                                           config.seed)
            workloads[model] = Workload(model, *inputs, depth=config.depth, scan_backend=config.scan_backend,
                                        optimizer_step=config.optimizer_step, decode_tokens=config.decode_tokens)
        except (RuntimeError, ValueError) as error:  # e.g. out of memory at build time
            cell.measurements = {kind: Measurement("error", note=_first_line(error)) for kind in KINDS}
            cell.measurements[FLOOR] = Measurement("skipped")
            continue
        cell.n_params = workloads[model].n_params()
        cell.floor_flops = floor_flops(workloads[model].model, inputs[0].shape[0] * cell.seq_len)
    return workloads


def _measure_side_by_side(workloads: dict[str, Workload], kind: str, seq_len: int, device: torch.device,
                          budget: Budget) -> tuple[dict[str, Measurement], dict[str, Measurement]]:
    """Plan each model's call within the budget (`_plan`), then time those that fit, repeats interleaved:
    ({model: Measurement}, {model: its floor's Measurement}, the latter for the training step only).

    The training step and prefill take a prefix length, so they can be calibrated on a short prefix;
    decoding costs the same per token at any length, so its probe call is its calibration. Each training
    step timed brings its floor into the same rounds, with the same repeats (the floor costs less than the
    step it is part of, so it fits the step's budget).
    """
    calls = {model: workload.decode if kind == "decode_token" else getattr(workload, kind)
             for model, workload in workloads.items()}
    measured, repeats, notes = {}, {}, {}
    for model, fn in calls.items():
        plan = _plan(fn, None if kind == "decode_token" else fn, model, kind, seq_len, device, budget)
        if isinstance(plan, Measurement):
            measured[model] = plan
        else:
            repeats[model], notes[model] = plan.repeats, plan.note
    timed_calls = {m: calls[m] for m in repeats}
    floors: dict[str, Measurement] = {}
    if kind == "train_step":
        floors = {model: Measurement("skipped") for model in calls}  # no step timed, no floor
        for model in list(repeats):
            floor = _floor(workloads[model], device)
            if isinstance(floor, Measurement):
                floors[model] = floor
            else:
                timed_calls[f"{model} {FLOOR}"], repeats[f"{model} {FLOOR}"] = floor, repeats[model]
    timed = time_interleaved(timed_calls, repeats, device, budget.warmup)
    for name, timing in timed.items():
        model, _, floor = name.partition(" ")
        if isinstance(timing, RuntimeError):
            result = Measurement("error", note=_first_line(timing))
        else:
            result = Measurement("ok", timing, "" if floor else notes[model])
            if not floor:
                budget.record(model, kind, seq_len, timing.median_s)
        (floors if floor else measured)[model] = result
    return measured, floors


def _floor(workload: Workload, device: torch.device) -> Floor | Measurement:
    """The model's floor (`workload.Floor`) on B*T tokens, called once untimed; a Measurement if none."""
    if not projection_weights(workload.model):
        return Measurement("off", note="no weight matrices")
    try:
        floor = Floor(workload.model, workload.x.shape[0] * workload.x.shape[1])
        time_once(floor, device)  # first-call costs (allocation, kernel selection) stay out of the figure
    except RuntimeError as error:
        return Measurement("error", note=_first_line(error))
    return floor


def _plan(fn: Callable[[], object], calibrate: Callable[[int], object] | None, model: str, kind: str,
          seq_len: int, device: torch.device, budget: Budget) -> Plan | Measurement:
    """How many repeats fit the budget, or the skipped/error Measurement: skip on a prediction, else probe.

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
    except RuntimeError as error:  # out of memory, an op missing for this dtype/device, ...
        return Measurement("error", note=_first_line(error))
    plan = budget.after_probe(probe_s, model)
    budget.record(model, kind, seq_len, probe_s)
    return Measurement("skipped", note=plan.note) if plan.repeats == 0 else plan


def _measure_memory(cell: Cell, workload: Workload, config: BenchConfig, device: torch.device,
                    budget: Budget) -> None:
    """The training step's peak memory, wherever one step is predicted to fit the budget."""
    train_status = cell.measurements["train_step"].status
    if not config.memory:
        cell.memory_note = "off"
        return
    if train_status == "error" or not (train_status == "ok" or budget.fits_once(cell.model, "train_step",
                                                                                 cell.seq_len)):
        cell.memory_note = f"not measured: training step {train_status}"
        return
    if train_status != "ok":
        cell.memory_note = "from one training step (its timing did not fit the budget)"
    workload.model.zero_grad(set_to_none=True)
    try:
        cell.peak_bytes = memory.peak_bytes(workload.train_step, device, workload.resident_bytes())
        budget.record(cell.model, "peak_bytes", cell.seq_len, cell.peak_bytes)
    except RuntimeError as error:
        cell.memory_note = f"error: {_first_line(error)}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:200]
