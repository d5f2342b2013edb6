"""Results as files (CSV, JSON, Markdown) and as the training and inference tables (rich, Markdown)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from minrnn_cli.benchmarking.compare import comparisons
from minrnn_cli.benchmarking.grid import FLOOR, KINDS, Cell
from minrnn_cli.formatting import MISSING, Column, print_fitted, ratio, time_value

RATIO_COLUMNS = [
    *(f"{kind}_speedup_vs_{baseline}" for kind in KINDS for baseline in ("fused", "loop")),
    "memory_vs_fused", "memory_vs_loop", "memory_vs_mingru",
]
COLUMNS = [
    "model", "seq_len", "batch_size", "d_model", "depth", "dtype", "device", "hardware", "threads", "torch",
    "n_params",
    *(f"{kind}_{part}" for kind in KINDS
      for part in ("ms", "min_ms", "max_ms", "repeats", "status")),
    # the training step's floor (grid.FLOOR): its weight matmuls alone; x_floor = train_step_ms / floor_ms
    "floor_ms", "floor_repeats", "floor_status", "floor_gflop", "x_floor",
    "peak_memory_mib", *RATIO_COLUMNS, "notes",
]


@dataclass
class BenchResult:
    meta: dict[str, object]  # machine, config, methods, command
    cells: list[Cell]

    def rows(self) -> list[dict[str, object]]:
        ratios = comparisons(self.cells)
        config, machine = self.meta["config"], self.meta["machine"]
        rows = []
        for cell in self.cells:
            row: dict[str, object] = {
                "model": cell.model, "seq_len": cell.seq_len, "batch_size": config["batch_size"],
                "d_model": config["d_model"], "depth": config["depth"], "dtype": config["dtype"],
                "device": machine["device"], "hardware": machine.get("gpu") or machine["cpu"],
                "threads": machine["torch_threads"], "torch": machine["torch"], "n_params": cell.n_params,
            }
            notes = []
            for kind in KINDS:
                measured = cell.measurements[kind]
                timing, prefix = measured.timing, kind
                row[f"{prefix}_ms"] = timing and timing.median_s * 1e3
                row[f"{prefix}_min_ms"] = timing and timing.min_s * 1e3
                row[f"{prefix}_max_ms"] = timing and timing.max_s * 1e3
                row[f"{prefix}_repeats"] = timing and timing.repeats
                row[f"{prefix}_status"] = measured.status
                if measured.note:
                    notes.append(f"{prefix}: {measured.note}")
            floor = cell.measurements.get(FLOOR)
            row["floor_ms"] = floor and floor.timing and floor.timing.median_s * 1e3
            row["floor_repeats"] = floor and floor.timing and floor.timing.repeats
            row["floor_status"] = floor.status if floor else "off"
            row["floor_gflop"] = cell.floor_flops and cell.floor_flops / 1e9
            row["x_floor"] = _ratio(row["train_step_ms"], row["floor_ms"])
            if floor and floor.note:
                notes.append(f"floor: {floor.note}")
            row["peak_memory_mib"] = cell.peak_bytes and cell.peak_bytes / 2**20
            if cell.memory_note:
                notes.append(f"memory: {cell.memory_note}")
            for column in RATIO_COLUMNS:
                row[column] = ratios.get((cell.model, cell.seq_len), {}).get(column)
            row["notes"] = "; ".join(notes)
            rows.append(row)
        return rows


def write_files(result: BenchResult, out_dir: Path) -> dict[str, Path]:
    """bench.csv, bench.json and bench.md in `out_dir`; returns their paths by format."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = result.rows()
    paths = {"csv": out_dir / "bench.csv", "json": out_dir / "bench.json", "md": out_dir / "bench.md"}
    with paths["csv"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    document = {"meta": result.meta, "rows": rows}
    paths["json"].write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    paths["md"].write_text(markdown(result), encoding="utf-8")
    return paths


def tables(result: BenchResult) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for the training table and, if measured, the inference table."""
    rows = result.rows()
    train = (
        "Training step (forward + loss + backward): median of the repeats, ms",
        ["T", "model", "step ms", "min-max", "floor ms", "x floor", "x fused", "x loop", "peak MiB",
         "mem vs fused", "mem vs loop", "mem vs minGRU"],
        [[str(r["seq_len"]), r["model"], *_timing(r, "train_step"), _floor(r), _times(r["x_floor"]),
          _times(r["train_step_speedup_vs_fused"]), _times(r["train_step_speedup_vs_loop"]),
          _number(r["peak_memory_mib"]),
          _times(r["memory_vs_fused"]), _times(r["memory_vs_loop"]), _times(r["memory_vs_mingru"])]
         for r in rows],
    )
    built = [train]
    if any(r["prefill_status"] != "off" for r in rows):
        built.append((
            "Inference: parallel prefill of T tokens (ms) and step decoding (ms per token), medians",
            ["T", "model", "prefill ms", "prefill min-max", "prefill x fused", "prefill x loop", "decode ms/token",
             "decode min-max", "decode x fused", "decode x loop"],
            [[str(r["seq_len"]), r["model"], *_timing(r, "prefill"), _times(r["prefill_speedup_vs_fused"]),
              _times(r["prefill_speedup_vs_loop"]), *_timing(r, "decode_token"),
              _times(r["decode_token_speedup_vs_fused"]), _times(r["decode_token_speedup_vs_loop"])]
             for r in rows],
        ))
    return built


def print_tables(result: BenchResult, console: Console) -> None:
    """The tables at the console's width: each split into parts led by T and model where it is wider."""
    for title, header, rows in tables(result):
        columns = [Column(name, justify="left" if name == "model" else "right", key=name in ("T", "model"))
                   for name in header]
        print_fitted(console, title, columns, rows)
    notes = [f"{r['model']} T={r['seq_len']}: {r['notes']}" for r in result.rows() if r["notes"]]
    for note in notes:
        console.print(f"[yellow]{note}[/yellow]")


def markdown(result: BenchResult) -> str:
    meta, machine, config = result.meta, result.meta["machine"], result.meta["config"]
    lines = [
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {machine['cpu']} ({machine['cpu_count']} CPUs), device {machine['device']}"
        + (f" ({machine['gpu']})" if "gpu" in machine else "")
        + f", torch {machine['torch']}, torch threads: {machine['torch_threads']}; load average (1/5/15 min) "
        f"{machine['load_average_at_start']} at the start, {machine.get('load_average_at_end')} at the end.",
        f"Shapes: batch {config['batch_size']}, width {config['d_model']}, depth {config['depth']}, "
        f"dtype {config['dtype']}; warm-up {config['warmup']}, repeats {config['repeats']} "
        f"(the budget may cut them to {config['min_repeats']}: see the CSV's *_repeats), "
        f"budget {config['budget_s']:g} s per measurement; cells predicted above "
        f"{meta['memory_limit_gib']:g} GiB are skipped.",
        "Process settings (the same for every model): "
        + ", ".join(f"{key}={value}" for key, value in meta.get("process_settings", {}).items()) + ".",
        f"Peak memory: {meta['memory_method']}.",
        "Floor: the same model's weight matrices alone, multiplied forward and backward (grad of input and of "
        "weight) over all B*T tokens, timed in the same rounds; x floor = step time / floor time.",
        "",
    ]
    for title, header, rows in tables(result):
        lines += [f"**{title}**", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    notes = [f"- {r['model']} T={r['seq_len']}: {r['notes']}" for r in result.rows() if r["notes"]]
    if notes:
        lines += ["Notes:", "", *notes, ""]
    return "\n".join(lines)


def _timing(row: dict[str, object], prefix: str) -> tuple[str, str]:
    """(median, "min-max") for a table; the status in place of the median when not measured."""
    status = row[f"{prefix}_status"]
    if status != "ok":
        return (MISSING if status == "off" else status), ""
    low, high = _number(row[f"{prefix}_min_ms"]), _number(row[f"{prefix}_max_ms"])
    return _number(row[f"{prefix}_ms"]), f"{low}-{high}"


def _floor(row: dict[str, object]) -> str:
    return _number(row["floor_ms"]) if row["floor_status"] == "ok" else MISSING


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator and denominator else None


def _number(value: float | None) -> str:
    return MISSING if value is None else time_value(value)


def _times(value: float | None) -> str:
    return MISSING if value is None else ratio(value)
