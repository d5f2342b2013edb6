"""`minrnn report [PATHS...] [--target METRIC=VALUE]...`: the runs grouped by config but for the seed, one table
per task with models as rows (mean ± std over seeds, steps and seconds to targets, the paper's figure beside
ours), a PNG of each task's validation curves, the evaluations apart, and every run listed; rich on screen,
Markdown and CSV on disk. The same folders give the same bytes: rows sorted, numbers in fixed formats, no
dates."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from minrnn_cli.errors import WRITE_FAILURES, UserError
from minrnn_cli.formatting import MISSING, Column, print_fitted, value_text
from minrnn_cli.reporting.collect import (
    EVALUATION_COLUMNS,
    REPORT_COLUMNS,
    evaluation_row,
    find_run_dirs,
    natural_key,
    report_row,
    run_command,
)
from minrnn_cli.reporting.curves import save_task_curves
from minrnn_cli.reporting.groups import (
    FINAL_KEYS,
    Group,
    Target,
    final_metrics,
    group_runs,
    mean_std,
    reached,
    read_trained_run,
    targets_for,
)
from minrnn_cli.reporting.paper import PAPER_FIGURES, matching_figure
from minrnn_cli.tracking.records import write_text_whole
from minrnn_cli.tracking.tables import csv_text

REPORT_CSV, GROUPS_CSV, REPORT_MARKDOWN = "report.csv", "groups.csv", "report.md"


def _text(value, column: str = "") -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if column.endswith("_s") else f"{value:.4f}"  # seconds to a tenth, metrics to 1e-4
    return "" if value is None else str(value)


def _csv_number(value: float | None):
    """A mean or std in groups.csv: rounded to 6 decimals, so reruns write the same bytes."""
    return "" if value is None else round(value, 6)


def columns_of(rows: list[dict]) -> list[str]:
    extra = [key for row in rows for key in row if key not in REPORT_COLUMNS]
    return [*REPORT_COLUMNS, *dict.fromkeys(extra)]


def shown_columns(columns: list[str], rows: list[dict]) -> list[str]:
    """The columns with a value in some row (the CSV keeps them all)."""
    return [column for column in columns if any(_text(row.get(column)) for row in rows)]


def markdown_table(columns: list[str], rows: list[dict]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_text(row.get(column), column) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def paper_rows(tasks: set[str]) -> list[dict]:
    return [{"task": f.task, "model": f.model, "layers": f.layers, "metric": f.metric, "value": f.value,
             "source": f.source, "note": f.note} for f in PAPER_FIGURES if f.task in tasks]


TEXT_COLUMNS = ("run", "model", "task", "metric", "source", "note", "paper_note", "setting")


def print_table(console: Console, title: str, columns: list[str], rows: list[dict]) -> None:
    """Numbers in the tables' common formats (`ours` in its metric's); a table wider than the console is
    split into parts, each led by the row number `#`."""
    def shown(row: dict, column: str) -> str:
        return value_text((row.get("metric") or "") if column == "ours" else column, row.get(column))

    print_fitted(console, title, [Column("#", key=True),
                                  *(Column(c, justify="left" if c in TEXT_COLUMNS else "right") for c in columns)],
                 [[str(number), *(shown(row, column) for column in columns)] for number, row in enumerate(rows, 1)])


def _mean_std_text(key: str, values: list[float]) -> str:
    summary = mean_std(values)
    if summary is None:
        return ""
    mean, std = summary
    return f"{value_text(key, mean)} ± {MISSING if std is None else value_text(key, std)}"


class TaskTable:
    """One task's groups as a table: `columns` and `text` (the shown cells) for screen and Markdown, `csv`
    (raw means and stds) for groups.csv, and the notes that go under it."""

    def __init__(self, task: str, groups: list[Group], targets: tuple[Target, ...]):
        self.task, self.groups, self.targets = task, groups, targets
        self.keys = ["model"]
        if len({str(group.layers) for group in groups}) > 1:
            self.keys.append("layers")
        if any(group.setting for group in groups):
            self.keys.append("setting")
        metrics = final_metrics(groups)
        figures = [matching_figure(task, group.model, group.layers) for group in groups]
        self.columns = [*self.keys, "n", *metrics, *(["paper"] if any(figures) else []), *FINAL_KEYS]
        for target in targets:
            self.columns += [f"{target.label} step", f"{target.label} s", f"{target.label} reached"]
        self.text: list[dict[str, str]] = []
        self.csv: list[dict] = []
        for group, figure in zip(groups, figures, strict=True):
            text = {"model": group.model, "layers": value_text("layers", group.layers), "setting": group.setting,
                    "n": str(len(group.runs)), "paper": figure.value if figure else ""}
            raw = {"task": task, "model": group.model, "layers": group.layers, "setting": group.setting,
                   "n": len(group.runs), "seeds": " ".join(str(run.config.get("trainer", {}).get("seed", ""))
                                                           for run in group.runs),
                   "paper": figure.value if figure else "", "paper_metric": figure.metric if figure else "",
                   "paper_beside": figure.compared if figure else ""}
            for key in (*metrics, *FINAL_KEYS):
                values = group.values(key)
                text[key] = _mean_std_text(key, values)
                mean, std = mean_std(values) or (None, None)
                raw[f"{key}_mean"], raw[f"{key}_std"] = _csv_number(mean), _csv_number(std)
            for target in targets:
                got = reached(group, target)
                text[f"{target.label} step"] = value_text("step", got.step)
                text[f"{target.label} s"] = value_text("elapsed_s", got.seconds)
                text[f"{target.label} reached"] = f"{got.reached}/{got.runs}"
                raw[f"{target.label} step"] = _csv_number(got.step)
                raw[f"{target.label} s"] = _csv_number(got.seconds)
                raw[f"{target.label} reached"] = got.reached
            self.text.append(text)
            self.csv.append(raw)
        self.notes = self._notes(figures)

    def _notes(self, figures) -> list[str]:
        notes = []
        if self.targets:
            notes.append(f"Targets {', '.join(target.label for target in self.targets)}: the step and the seconds "
                         "(elapsed_s, evaluations included) at which each run first reached it, mean over the runs "
                         "that did; reached: how many of the n did.")
        notes.append("Each cell: mean ± sample std over the group's seeds (- for one seed).")
        beside: dict[tuple[str, str, str], list[str]] = {}  # one line for the figures that share a note
        for figure in dict.fromkeys(figure for figure in figures if figure):
            layers = f" {figure.layers}L" if figure.layers else ""
            beside.setdefault((figure.metric, figure.compared, figure.note), []).append(
                f"{figure.model}{layers} {figure.value}")
        for (metric, compared, note), values in beside.items():
            notes.append(f"paper: the paper's {metric} ({', '.join(values)}) beside our {compared}"
                         f"{f'; {note}' if note else ''}.")
        return notes

    def markdown(self, png: Path | None) -> list[str]:
        lines = [f"## {self.task}", "", "| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(row[column] for column in self.columns) + " |" for row in self.text]
        lines += ["", *(f"- {note}" for note in self.notes), ""]
        if png:
            lines += [f"![{self.task}: validation curves]({png.name})", ""]
        return lines

    def print(self, console: Console) -> None:
        columns = [Column(column, justify="left" if column in TEXT_COLUMNS else "right", key=column in self.keys)
                   for column in self.columns]
        runs = sum(len(group.runs) for group in self.groups)
        print_fitted(console, f"{self.task}: {runs} run(s) in {len(self.groups)} group(s)", columns,
                     [[row[column] for column in self.columns] for row in self.text])
        for note in self.notes:
            console.print(note, soft_wrap=True, highlight=False)


OVERVIEW_METRICS = ("test_accuracy", "test_score", "val_accuracy", "test_loss", "val_loss")


def overview_markdown(tables: list[TaskTable]) -> list[str]:
    """For runs of several tasks: one metric (the first of OVERVIEW_METRICS that every task has) as a table of
    tasks by models, each cell the group's mean ± std over seeds; nothing for one task or no such metric."""
    if len(tables) < 2:
        return []
    metric = next((key for key in OVERVIEW_METRICS if all(key in table.columns for table in tables)), None)
    if metric is None:
        return []

    def label(table: TaskTable, row: dict[str, str]) -> str:
        return " ".join(row[key] for key in table.keys if row[key])

    models = list(dict.fromkeys(label(table, row) for table in tables for row in table.text))
    rows = []
    for table in tables:
        cells = {label(table, row): row[metric] for row in table.text}
        rows.append({"task": table.task, **{model: cells.get(model, "") for model in models}})
    return [f"# Overview: {metric} by task (mean ± std over seeds; each task's own table below)", "",
            markdown_table(["task", *models], rows), ""]


def make_folder(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = WRITE_FAILURES.get(error.errno, error.strerror)
        raise UserError(f"--out {out_dir}: the folder cannot be made ({reason}); give another folder with --out"
                        ) from None


def write_report(paths: list[Path], out_dir: Path, targets: tuple[Target, ...] = (),
                 console: Console | None = None) -> list[Group]:
    """Collects the runs under paths, writes report.md, report.csv (every run), groups.csv (every group) and
    <task>.png to out_dir; `targets` replace the per-task defaults (groups.DEFAULT_TARGETS)."""
    console = console or Console()
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; give a folder (it is made if missing)")
    found = find_run_dirs(paths)
    root = Path.cwd()
    trained = {run_dir: run_command(run_dir) == "train" for run_dir in found}
    runs = sorted((read_trained_run(run_dir, root) for run_dir in found if trained[run_dir]),
                  key=lambda run: natural_key(run.shown))
    evaluations = sorted((evaluation_row(run_dir, root) for run_dir in found if not trained[run_dir]),
                         key=lambda row: natural_key(row["run"]))  # listed apart, not counted as runs
    rows = [report_row(run.run_dir, root) for run in runs]
    groups = group_runs(runs)
    tables, pngs, untimed = [], {}, []
    make_folder(out_dir)
    for task in sorted({group.task for group in groups}):
        task_groups = [group for group in groups if group.task == task]
        tables.append(TaskTable(task, task_groups, targets_for(task, targets)))
        pngs[task], left_out = save_task_curves(task_groups, out_dir / f"{task}.png", task)
        untimed += left_out
    columns = columns_of(rows)
    shown = shown_columns(columns, rows)
    figures = paper_rows({row["task"] for row in rows})
    figure_columns = ["task", "model", "layers", "metric", "value", "source", "note"]

    write_text_whole(out_dir / REPORT_CSV, csv_text(rows, columns))
    group_rows = [row for table in tables for row in table.csv]
    group_columns = list(dict.fromkeys(key for row in group_rows for key in row))
    write_text_whole(out_dir / GROUPS_CSV, csv_text(group_rows, group_columns))
    markdown = overview_markdown(tables) + ["# Results by task (runs grouped by config, over seeds)", ""]
    for table in tables:
        markdown += table.markdown(pngs[table.task])
    if evaluations:
        markdown += ["# Evaluations of checkpoints (minrnn eval; not counted as runs)", "",
                     markdown_table(list(EVALUATION_COLUMNS), evaluations), ""]
    if figures:
        markdown += ["# The paper's figures for these tasks (as reported, not run here)", "",
                     markdown_table(figure_columns, figures), ""]
    markdown += ["# Every run", "", markdown_table(shown, rows), ""]
    write_text_whole(out_dir / REPORT_MARKDOWN, "\n".join(markdown))

    for table in tables:
        table.print(console)
    print_table(console, f"{len(rows)} run(s)", shown, rows)
    if evaluations:
        print_table(console, f"{len(evaluations)} evaluation(s) of checkpoints (minrnn eval; not counted as runs)",
                    list(EVALUATION_COLUMNS), evaluations)
    if figures:
        print_table(console, "the paper's figures (as reported)", figure_columns, figures)
    if untimed:
        named = ", ".join(run.shown for run in untimed[:3]) + (", ..." if len(untimed) > 3 else "")
        console.print(f"warning: {len(untimed)} run(s) have a metrics.jsonl without elapsed_s (written before minrnn "
                      f"recorded it), left out of the time figures and the seconds to targets: {named}",
                      soft_wrap=True, highlight=False)
    written = [REPORT_MARKDOWN, REPORT_CSV, GROUPS_CSV, *(png.name for png in pngs.values() if png)]
    console.print(f"written to {out_dir}: {', '.join(written)}", soft_wrap=True)
    return groups
