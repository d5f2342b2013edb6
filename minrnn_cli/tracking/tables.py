"""rich tables: one run's summary, and the comparison of every job of a sweep (also written as CSV)."""

from __future__ import annotations

import csv
from pathlib import Path

from rich.table import Table

LEADING_COLUMNS = ("job", "overrides", "status", "model", "task", "params", "steps", "best_step", "wall_time_s")
TRAILING_COLUMNS = ("error",)  # a failed job's one-line error


def _format(value) -> str:
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.2f}" if abs(value) >= 100 else f"{value:.4f}"  # seconds, then losses and accuracies
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def summary_table(title: str, values: dict) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", justify="right")
    for key, value in values.items():
        if not isinstance(value, (dict, list)):
            table.add_row(key, _format(value))
    return table


def comparison_columns(rows: list[dict]) -> list[str]:
    """The leading columns present in any row, then every split metric (val_*, test_*) in first-seen order."""
    present = {key for row in rows for key in row}
    columns = [column for column in LEADING_COLUMNS if column in present]
    for row in rows:
        for key in row:
            if key.startswith(("val_", "test_")) and key not in columns:
                columns.append(key)
    return columns + [column for column in TRAILING_COLUMNS if column in present]


def comparison_table(title: str, rows: list[dict]) -> Table:
    columns = comparison_columns(rows)
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if column in ("job", "overrides", "model", "task") else "right")
    for row in rows:
        table.add_row(*(_format(row.get(column)) for column in columns))
    return table


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = comparison_columns(rows)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
