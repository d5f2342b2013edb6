"""What a run says, run as a user would (`python -m minrnn_cli` in a subprocess, piped, COLUMNS=80, from a
folder whose name needs quoting): the start line, the final table with throughput, the `next:` commands (run
here), every table at 80 columns with each value whole and in the one format of its kind, and the warning on
a machine whose load average (faked) is above its cores."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_faults import subprocess_env
from conftest import TINY_COPYING, TINY_SHAKESPEARE, TINY_TRAINER

from minrnn_cli.device import precision_shown, resolve_precision
from minrnn_cli.formatting import ratio, time_value, value_text

WIDTH = 80
BUSY, IDLE = (64.0, 32.0, 16.0), (0.0, 0.0, 0.0)
# `minrnn ARGS` with os.getloadavg faked (the first argument: three load averages)
WITH_LOAD = """
import os, runpy, sys
load = tuple(float(value) for value in sys.argv[1].split(","))
os.getloadavg = lambda: load
sys.argv = ["minrnn", *sys.argv[2:]]
runpy.run_module("minrnn_cli", run_name="__main__")
"""
TABLE_LINE = re.compile("[│┃┏┡┌└┗]")


def minrnn(cwd: Path, *args: str, load: tuple[float, ...] = IDLE, threads: int = 1) -> str:
    """stdout of `minrnn ARGS` piped, 80 columns wide, under a faked load average; it must succeed."""
    env = subprocess_env(COLUMNS=str(WIDTH), OMP_NUM_THREADS=str(threads))
    done = subprocess.run([sys.executable, "-c", WITH_LOAD, ",".join(map(str, load)), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def tables_in(text: str) -> list[dict]:
    """Every rich table printed in `text`: {"header": [column names], "rows": [[cells]]} (wrapped headers
    joined, a long value's lines joined by spaces); checks on the way that each fits WIDTH and that no value
    was cut (no ellipsis)."""
    tables, current, section = [], None, "rows"
    for line in text.splitlines():
        if TABLE_LINE.search(line):
            assert len(line) <= WIDTH, f"{len(line)} columns: {line}"
            assert "…" not in line, line
        stripped = line.strip()
        if stripped[:1] in ("┏", "┌"):
            current, section = {"header_lines": [], "rows": []}, "header" if stripped[0] == "┏" else "rows"
        elif stripped[:1] == "┡":
            section = "rows"
        elif stripped[:1] in ("└", "┗") and current is not None:
            lines = current.pop("header_lines")
            current["header"] = [" ".join(part for part in parts if part) for parts in zip(*lines, strict=True)]
            tables.append(current)
            current = None
        elif current is not None and stripped[:1] in ("┃", "│"):
            cells = [cell.strip() for cell in re.split("[┃│]", stripped)[1:-1]]
            if section == "rows" and not cells[0] and current["rows"]:  # a long value's next line
                current["rows"][-1] = [" ".join(filter(None, pair)) for pair in zip(current["rows"][-1], cells,
                                                                                     strict=True)]
            else:
                (current["header_lines"] if section == "header" else current["rows"]).append(cells)
    return tables


def by_key(tables: list[dict], *keys: str) -> dict[str, dict[str, str]]:
    """The rows of tables split into parts, joined again: {key cells joined by a space: {column: cell}}."""
    rows: dict[str, dict[str, str]] = {}
    for table in tables:
        if set(keys) <= set(table["header"]):
            for cells in table["rows"]:
                row = dict(zip(table["header"], cells, strict=True))
                rows.setdefault(" ".join(row[key] for key in keys), {}).update(row)
    return rows


def key_values(table: dict) -> dict[str, str]:
    return {cells[0]: cells[1] for cells in table["rows"]}


def printed_value(key: str, cell: str, results: dict) -> None:
    assert cell == value_text(key, results[key]), (key, cell, results[key])


def after(text: str, prefix: str) -> str:
    return next(line.removeprefix(prefix) for line in text.splitlines() if line.startswith(prefix))


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> tuple[str, Path, Path]:
    """A Shakespeare run from a folder with a space in its name, on a machine faked busy: (stdout, its run
    folder, the working folder)."""
    cwd = tmp_path_factory.mktemp("console") / "my runs"
    cwd.mkdir()
    minrnn(cwd, "prepare", "task=shakespeare")  # the corpus in the cache, as after a first run
    stdout = minrnn(cwd, "train", *TINY_SHAKESPEARE, *TINY_TRAINER, load=BUSY)
    return stdout, Path(after(stdout, "run folder: ")), cwd


def test_a_run_starts_with_one_line_saying_what_it_trains_where(text_run):
    stdout, run_dir, _ = text_run
    first = stdout.splitlines()[0]
    assert "training mingru (5,312 params) on shakespeare (1,003,854 training tokens, batch 4), 6 steps" in first
    precision = precision_shown("auto", resolve_precision("auto", torch.device("cpu")))  # bf16 on CPUs that have it
    assert f"device cpu, 1 torch thread, {precision}; run folder {run_dir}" in first
    assert first.index("training mingru") < stdout.index("step 3/6")  # before the first progress line


def test_a_busy_machine_is_one_warning_line_and_the_load_is_recorded(text_run):
    stdout, run_dir, _ = text_run
    warnings = [line for line in stdout.splitlines() if "WARNING" in line]
    cores = len(os.sched_getaffinity(0))
    assert len(warnings) == 1, warnings
    assert (f"the machine is busy before this started: 1-minute load average 64.0 on {cores} core"
            in warnings[0]) and "wait for the other work to finish" in warnings[0]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["load_average_at_start"] == results["load_average_at_end"] == list(BUSY)


def test_the_fewer_threads_remedy_names_the_variable_when_threads_are_many(monkeypatch):
    import torch

    from minrnn_cli import runtime

    monkeypatch.setattr(os, "getloadavg", lambda: BUSY)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert "run with fewer threads (OMP_NUM_THREADS=1 before the command; now 8) or wait" in \
        runtime.busy_machine("OMP_NUM_THREADS=1 before the command")
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    assert runtime.busy_machine("OMP_NUM_THREADS=1 before the command") is None


def test_one_format_per_kind_of_number():
    assert [time_value(v) for v in (0.0612, 5.714, 12.345, 99.96, 124.7, 999.7, 1404.6)] == \
        ["0.0612", "5.71", "12.3", "100", "125", "1,000", "1,405"]
    assert value_text("val_loss", 4.346045) == "4.3460" and value_text("test_accuracy", 0.77) == "0.7700"
    assert value_text("val_score", 77.0123) == "77.01" and value_text("params", 227136) == "227,136"
    assert value_text("tokens_per_s", 11216.4) == "11,216" and value_text("wall_time_s", 124.7) == "125"
    assert value_text("seed", 1337) == "1337" and value_text("model", "mingru") == "mingru"
    assert ratio(1.0) == "1.00x" and value_text("memory_vs_loop", 0.642) == "0.64x"


def test_a_value_too_wide_for_any_table_wraps_whole_beside_the_keys():
    import io

    from rich.console import Console

    from minrnn_cli.formatting import Column, print_fitted

    error = "error: " + " ".join(f"word{n}" for n in range(40))  # a failed job's one-line error
    columns = [Column("job", key=True), *(Column(f"val_metric_{n}") for n in range(8)), Column("error")]
    out = io.StringIO()
    print_fitted(Console(file=out, width=WIDTH), "Sweep: 2 jobs", columns,
                 [["0", *(value_text("val_loss", 1.23456 * n) for n in range(8)), error], ["1", *["-"] * 8, ""]])
    rows = by_key(tables_in(out.getvalue()), "job")
    assert rows["0"]["error"] == error and rows["0"]["val_metric_7"] == "8.6419"
    assert len(tables_in(out.getvalue())) >= 3  # split, and the error alone beside the key


def test_a_window_far_below_the_best_one_warns_once():
    from minrnn_cli.training.loop import Throughput

    watch = Throughput()
    assert watch.add(10, 2.0, 1000.0) is None
    assert watch.add(10, 0.1, 10.0) is None  # too short to judge
    warning = watch.add(10, 2.0, 200.0)
    assert warning and "slowed down to 200 tokens/s from 1,000 at best" in warning
    assert watch.add(10, 2.0, 100.0) is None  # once a run
    assert (watch.steps, watch.seconds) == (40, pytest.approx(6.1))


def test_the_final_table_fits_and_shows_every_result_with_throughput(text_run):
    stdout, run_dir, _ = text_run
    results = json.loads((run_dir / "results.json").read_text())
    summary = key_values(tables_in(stdout)[-1])
    assert results["tokens_per_s"] > 0 and results["step_time_ms"] > 0
    assert summary["tokens_per_s"] == f"{results['tokens_per_s']:,.0f}"
    assert summary["step_time_ms"] == time_value(results["step_time_ms"])
    shown = [key for key, value in results.items()
             if value is not None and not isinstance(value, (dict, list)) and key not in ("sample", "command")]
    for key in shown:
        printed_value(key, summary[key], results)
    assert summary["val_loss"] == f"{results['val_loss']:.4f}"


def test_the_next_commands_run_as_printed(text_run, tmp_path):
    stdout, run_dir, _ = text_run
    lines = stdout.splitlines()
    commands = [line.strip() for line in lines[lines.index("next:") + 1:]]
    best = run_dir / "checkpoints" / "best.pt"
    assert commands == [f"minrnn eval 'checkpoint=\"{best}\"'", f"minrnn generate 'checkpoint=\"{best}\"'",
                        f"minrnn report '{run_dir}'"]
    env = subprocess_env(COLUMNS=str(WIDTH), OMP_NUM_THREADS="1",
                         PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    outputs = []
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        outputs.append(done.stdout)
    results = json.loads((run_dir / "results.json").read_text())
    evaluated = key_values(tables_in(outputs[0])[-1])
    for key in ("model", "task", "params", "steps", "val_loss", "val_bpc"):
        printed_value(key, evaluated[key], results)
    tables_in(outputs[2])  # all of them fit
    runs_part = outputs[2][:outputs[2].index("the paper's figures")]  # its tables are numbered from 1 too
    reported = by_key(tables_in(runs_part), "#")["1"]
    assert reported["run"].replace(" ", "") == str(run_dir).replace(" ", "")  # wrapped, whole
    assert reported["metric"] == "val_loss"
    assert reported["ours"] == f"{results['val_loss']:.4f}" and reported["steps"] == "6"
    printed_value("wall_time_s", reported["wall_time_s"], results)


def test_the_sweep_summary_fits_80_columns_with_every_value_whole(tmp_path):
    stdout = minrnn(tmp_path, "train", "-m", "model=mingru,gru", *TINY_COPYING, *TINY_TRAINER)
    assert "WARNING" not in stdout  # the load average faked idle
    commands = [line.strip() for line in stdout.splitlines() if line.startswith("  minrnn ")]
    assert [command.split()[1] for command in commands] == ["eval", "report"] * 2  # no generate: not a text task
    sweep = tmp_path / Path(after(stdout, "comparison written to ")).parent  # relative to the working folder
    rows = by_key(tables_in(stdout), "job")
    assert sorted(rows) == ["0", "1"]
    for job, row in rows.items():
        results = json.loads((sweep / job / "results.json").read_text())
        assert {"val_loss", "val_accuracy", "test_loss", "test_accuracy", "wall_time_s", "params"} <= set(row)
        for key, cell in row.items():
            if key not in ("job", "overrides", "status"):
                printed_value(key, cell, results)
    assert rows["0"]["overrides"] == "model=mingru" and rows["1"]["overrides"] == "model=gru"


def test_the_bench_tables_fit_80_columns_and_a_busy_machine_is_said(tmp_path):
    stdout = minrnn(tmp_path, "bench", "models=[mingru,gru,gru_loop]", "seq_len=[8,1024]", "batch_size=2",
                    "d_model=8", "warmup=0", "repeats=1", "min_repeats=1", "decode_tokens=2", "threads=1",
                    "plot=false", load=BUSY)
    cores = len(os.sched_getaffinity(0))
    assert f"warning: the machine is busy before this started: 1-minute load average 64.0 on {cores}" in stdout
    assert stdout.index("warning: the machine was overloaded while this ran (1-minute load average 64.0") > \
        stdout.rindex("┘")  # after the tables
    bench_json = Path(re.search(r"wrote (\S+/bench\.csv), (\S+/bench\.json)", stdout)[2])
    document = json.loads(bench_json.read_text())
    machine = document["meta"]["machine"]
    assert machine["load_average_at_start"] == machine["load_average_at_end"] == list(BUSY)
    assert machine["usable_cores"] == cores
    printed = by_key(tables_in(stdout), "T", "model")  # T and model lead every part
    assert len(printed) == len(document["rows"]) == 6
    for row in document["rows"]:
        cells = printed[f"{row['seq_len']} {row['model']}"]
        assert cells["step ms"] == time_value(row["train_step_ms"])
        assert cells["min-max"] == f"{time_value(row['train_step_min_ms'])}-{time_value(row['train_step_max_ms'])}"
        assert cells["peak MiB"] == time_value(row["peak_memory_mib"])
        assert cells["x floor"] == ratio(row["x_floor"])
        assert cells["decode ms/token"] == time_value(row["decode_token_ms"])
        if row["memory_vs_loop"] is not None:
            assert cells["mem vs loop"] == ratio(row["memory_vs_loop"])
