"""`minrnn report [PATHS...]`: one table of every run (rich on screen, Markdown and CSV on disk) beside the
paper's figures, the paper's figures for the same tasks, and a PNG of each run's curves."""

from __future__ import annotations

import csv
from pathlib import Path

from rich.console import Console

from minrnn_cli.formatting import Column, print_fitted, value_text
from minrnn_cli.reporting.collect import (
    EVALUATION_COLUMNS,
    REPORT_COLUMNS,
    evaluation_row,
    find_run_dirs,
    report_row,
    run_command,
)
from minrnn_cli.reporting.curves import save_curves
from minrnn_cli.reporting.paper import PAPER_FIGURES

REPORT_CSV, REPORT_MARKDOWN, CURVES_DIR = "report.csv", "report.md", "curves"


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def columns_of(rows: list[dict]) -> list[str]:
    extra = [key for row in rows for key in row if key not in REPORT_COLUMNS]
    return [*REPORT_COLUMNS, *dict.fromkeys(extra)]


def shown_columns(columns: list[str], rows: list[dict]) -> list[str]:
    """The columns with a value in some row (the CSV keeps them all)."""
    return [column for column in columns if any(_text(row.get(column)) for row in rows)]


def markdown_table(columns: list[str], rows: list[dict]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_text(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def paper_rows(tasks: set[str]) -> list[dict]:
    return [{"task": f.task, "model": f.model, "layers": f.layers, "metric": f.metric, "value": f.value,
             "source": f.source, "note": f.note} for f in PAPER_FIGURES if f.task in tasks]


TEXT_COLUMNS = ("run", "model", "task", "metric", "source", "note", "paper_note")


def print_table(console: Console, title: str, columns: list[str], rows: list[dict]) -> None:
    """Numbers in the tables' common formats (`ours` in its metric's); a table wider than the console is
    split into parts, each led by the row number `#`."""
    def shown(row: dict, column: str) -> str:
        return value_text((row.get("metric") or "") if column == "ours" else column, row.get(column))

    print_fitted(console, title, [Column("#", key=True),
                                  *(Column(c, justify="left" if c in TEXT_COLUMNS else "right") for c in columns)],
                 [[str(number), *(shown(row, column) for column in columns)] for number, row in enumerate(rows, 1)])


def write_report(paths: list[Path], out_dir: Path, console: Console | None = None) -> list[dict]:
    """Collects the runs under paths, writes report.csv, report.md and curves/*.png to out_dir."""
    console = console or Console()
    found = find_run_dirs(paths)
    root = Path.cwd()
    trained = {run_dir: run_command(run_dir) == "train" for run_dir in found}
    run_dirs = [run_dir for run_dir in found if trained[run_dir]]  # evaluations are listed apart, not as runs
    evaluations = [evaluation_row(run_dir, root) for run_dir in found if not trained[run_dir]]
    rows = [report_row(run_dir, root) for run_dir in run_dirs]
    for run_dir, row in zip(run_dirs, rows, strict=True):
        slug = row["run"].strip("/").replace("/", "__") or "run"
        png = save_curves(run_dir, out_dir / CURVES_DIR / f"{slug}.png", f"{row['model']} on {row['task']}")
        row["curves"] = str(png) if png else ""
    columns = columns_of(rows)
    shown = shown_columns(columns, rows)
    figures = paper_rows({row["task"] for row in rows})
    figure_columns = ["task", "model", "layers", "metric", "value", "source", "note"]

    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / REPORT_CSV).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    markdown = ["# Runs", "", markdown_table(shown, rows), ""]
    if evaluations:
        markdown += ["# Evaluations of checkpoints (minrnn eval; not counted as runs)", "",
                     markdown_table(list(EVALUATION_COLUMNS), evaluations), ""]
    if figures:
        markdown += ["# The paper's figures for these tasks (as reported, not run here)", "",
                     markdown_table(figure_columns, figures), ""]
    (out_dir / REPORT_MARKDOWN).write_text("\n".join(markdown))

    print_table(console, f"{len(rows)} run(s)", [c for c in shown if c != "curves"], rows)
    if evaluations:
        print_table(console, f"{len(evaluations)} evaluation(s) of checkpoints (minrnn eval; not counted as runs)",
                    list(EVALUATION_COLUMNS), evaluations)
    if figures:
        print_table(console, "the paper's figures (as reported)", figure_columns, figures)
    console.print(f"written: {out_dir / REPORT_MARKDOWN}, {out_dir / REPORT_CSV}, {out_dir / CURVES_DIR}/",
                  soft_wrap=True)
    return rows
