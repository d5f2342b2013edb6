"""rich tables: one run's summary, and the comparison of every job of a sweep (also written as CSV)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from rich.console import Console

from minrnn_cli.formatting import Column, print_fitted, value_text
from minrnn_cli.tracking.records import write_text_whole

LEADING_COLUMNS = ("job", "overrides", "status", "model", "task", "params", "steps", "best_step", "wall_time_s")
TRAILING_COLUMNS = ("error",)  # a failed job's one-line error
TEXT_COLUMNS = ("job", "overrides", "status", "model", "task", "error")


def print_summary(console: Console, title: str, values: dict) -> None:
    """One run's results as key/value rows (nested values, such as the process settings, and None left out)."""
    rows = [[key, value_text(key, value)] for key, value in values.items()
            if value is not None and not isinstance(value, (dict, list))]
    print_fitted(console, title, [Column("key", justify="left"), Column("value")], rows, show_header=False)


def comparison_columns(rows: list[dict]) -> list[str]:
    """The leading columns present in any row, then every split metric (val_*, test_*) in first-seen order."""
    present = {key for row in rows for key in row}
    columns = [column for column in LEADING_COLUMNS if column in present]
    for row in rows:
        for key in row:
            if key.startswith(("val_", "test_")) and key not in columns:
                columns.append(key)
    return columns + [column for column in TRAILING_COLUMNS if column in present]


def print_comparison(console: Console, title: str, rows: list[dict]) -> None:
    """Every job of a sweep, one row each; split into several tables (each led by `job`) to fit the console."""
    columns = comparison_columns(rows)
    print_fitted(console, title,
                 [Column(c, justify="left" if c in TEXT_COLUMNS else "right", key=c == "job") for c in columns],
                 [[value_text(column, row.get(column)) for column in columns] for row in rows])


def write_csv(path: Path, rows: list[dict]) -> None:
    """The comparison as CSV, whole or not at all (a full disk leaves no torn file)."""
    write_text_whole(path, csv_text(rows, comparison_columns(rows), extrasaction="ignore"))


def csv_text(rows: list[dict], columns: list[str], **options) -> str:
    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fieldnames=columns, **options)
    writer.writeheader()
    writer.writerows(rows)
    return handle.getvalue()
