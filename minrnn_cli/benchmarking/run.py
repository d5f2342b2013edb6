"""`run_bench`: fix the environment, measure the grid, write the CSV/JSON/Markdown/PNG, print the tables."""

from __future__ import annotations

import datetime
import sys
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from minrnn_cli.benchmarking import memory
from minrnn_cli.benchmarking.config import BenchConfig
from minrnn_cli.benchmarking.environment import (
    bench_device,
    fix_threads,
    load_average,
    machine_info,
    memory_limit_bytes,
    resolve_dtype,
)
from minrnn_cli.benchmarking.grid import KINDS, Cell, measure_grid
from minrnn_cli.benchmarking.report import BenchResult, print_tables, write_files
from minrnn_cli.benchmarking.timing import timing_method


def run_bench(config: BenchConfig, out_dir: Path, command: str,
              console: Console | None = None) -> BenchResult:
    """Measure `config`'s grid and write bench.csv, bench.json, bench.md (and bench.png) into `out_dir`."""
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    device = bench_device(config.device)
    dtype = resolve_dtype(config.dtype)
    threads = fix_threads(config)
    machine = machine_info(device, threads)
    max_memory = memory_limit_bytes(config, device)
    console.print(f"minrnn bench on {machine.get('gpu') or machine['cpu']} ({device.type}, "
                  f"torch threads: {threads}, torch {machine['torch']}); results in {out_dir}")
    cells = measure_grid(config, device, dtype, max_memory,
                         on_cell=lambda cell: console.print(_progress(cell)))
    machine["load_average_at_end"] = load_average()
    result = BenchResult(
        meta={
            "command": command,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine,
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
    console.print("wrote " + ", ".join(str(path) for path in paths.values()))
    return result


def _progress(cell: Cell) -> str:
    parts = []
    for kind in KINDS:
        measured = cell.measurements[kind]
        value = f"{measured.timing.median_s * 1e3:.3g} ms" if measured.timing else measured.status
        parts.append(f"{kind} {value}")
    if cell.peak_bytes:
        parts.append(f"peak {cell.peak_bytes / 2**20:.3g} MiB")
    return f"  {cell.model:<10} T={cell.seq_len:<5} " + ", ".join(parts)
