"""`run_bench`: apply minrnn's process-wide settings, measure the grid, write the CSV/JSON/Markdown/PNG, print
the tables."""

from __future__ import annotations

import datetime
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from minrnn_cli.benchmarking import memory
from minrnn_cli.benchmarking.config import BenchConfig
from minrnn_cli.benchmarking.environment import (
    bench_device,
    load_average,
    machine_info,
    memory_limit_bytes,
    resolve_dtype,
)
from minrnn_cli.benchmarking.grid import FLOOR, KINDS, Cell, measure_grid
from minrnn_cli.benchmarking.report import BenchResult, print_tables, write_files
from minrnn_cli.benchmarking.timing import timing_method
from minrnn_cli.runtime import apply_process_settings, busy_machine, process_settings


def run_bench(config: BenchConfig, out_dir: Path, command: str,
              console: Console | None = None) -> BenchResult:
    """Measure `config`'s grid and write bench.csv, bench.json, bench.md (and bench.png) into `out_dir`.

    minrnn's process-wide settings (`minrnn_cli.runtime`, `threads` among them) are applied first and hold
    for the whole run, so every model is measured under the same ones; bench.json's meta records them.
    """
    threads = apply_process_settings(config.threads)["torch_threads"]
    console = console or Console(soft_wrap=True)  # lines stay whole; the tables fit the width (80 when piped)
    device = bench_device(config.device)
    dtype = resolve_dtype(config.dtype)
    machine = machine_info(device, threads)
    max_memory = memory_limit_bytes(config, device)
    settings = process_settings()
    console.print(f"minrnn bench on {machine.get('gpu') or machine['cpu']} ({device.type}, "
                  f"torch threads: {threads}, torch {machine['torch']}); results in {out_dir}")
    console.print("process settings: " + ", ".join(f"{key}={value}" for key, value in settings.items())
                  + " (the same for every model in this run)", highlight=False)
    busy = busy_machine("threads=1")
    if busy:
        console.print(f"[yellow]warning: {busy}[/yellow]", highlight=False)
    cells = measure_grid(config, device, dtype, max_memory,
                         on_cell=lambda cell: console.print(_progress(cell)))
    machine["load_average_at_end"] = load_average()
    overloaded = busy_machine("threads=1", finished=True)
    result = BenchResult(
        meta={
            "command": command,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine,
            "process_settings": settings,
            "config": asdict(config),
            "memory_method": memory.method(device),
            "memory_limit_gib": round(max_memory / 2**30, 2),
            "timing_method": timing_method(device),
            "units": "ms per call (decode: ms per token), MiB; speedup = baseline time / model time",
        },
        cells=cells,
    )
    paths = write_files(result, out_dir)
    if config.plot:
        from minrnn_cli.benchmarking.plot import save_figure

        paths["png"] = save_figure(result, out_dir / "bench.png")
    print_tables(result, console)
    if overloaded:  # under the tables it is about
        console.print(f"[yellow]warning: {overloaded}[/yellow]", highlight=False)
    console.print("wrote " + ", ".join(str(path) for path in paths.values()))
    return result


def _progress(cell: Cell) -> str:
    parts = []
    for kind in KINDS:
        measured = cell.measurements[kind]
        value = f"{measured.timing.median_s * 1e3:.3g} ms" if measured.timing else measured.status
        parts.append(f"{kind} {value}")
    floor = cell.measurements.get(FLOOR)
    if floor and floor.timing:
        parts.append(f"floor {floor.timing.median_s * 1e3:.3g} ms")
    if cell.peak_bytes:
        parts.append(f"peak {cell.peak_bytes / 2**20:.3g} MiB")
    return f"  {cell.model:<10} T={cell.seq_len:<5} " + ", ".join(parts)
