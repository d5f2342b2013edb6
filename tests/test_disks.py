"""Nothing lost on a full disk or an unwritable folder: every writer (Hydra's .hydra/, checkpoints, metrics.jsonl,
results.json, the sweep's summary.csv, the report, the CPU kernel cache) ends in one line naming the file and
why (exit 2), keeps the last good checkpoint and leaves no `*.partial` file behind.

The tests run as root here, so a read-only folder is a path under a regular file (NotADirectoryError), and a
full disk is RLIMIT_FSIZE in the child process (SIGXFSZ ignored, so a write past it fails with EFBIG) or, for
a write in the middle of a run, a monkeypatched writer that fails with ENOSPC halfway through."""

from __future__ import annotations

import errno
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_faults import TINY, assert_one_line_error, error_lines, invoke, subprocess_env

from minrnn_cli.tracking.records import read_results
from minrnn_cli.training.checkpoint import load_checkpoint

DISK_FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def run_with_file_size_limit(args: list[str], cwd: Path, limit: int | None, **env: str) -> subprocess.CompletedProcess:
    """`minrnn ARGS` in a subprocess whose files cannot grow past `limit` bytes (None: no limit)."""

    def limit_file_size() -> None:
        if limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "minrnn_cli", *args], cwd=cwd, env=subprocess_env(**env),
                          capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size)


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = error_lines(result.stderr)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in result.stdout + result.stderr, result.stderr
    return lines[0]


def partial_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.name.endswith(".partial")]


def test_a_run_folder_under_a_file_is_one_line_and_nothing_is_created(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    line = one_line(run_with_file_size_limit(["train", *TINY, "hydra.run.dir=a_file/run"], tmp_path, None))
    assert "cannot write a_file/run" in line and "a part of the path is a file, not a folder" in line, line
    assert "hydra.run.dir=" in line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file"]


def test_a_full_disk_while_hydra_writes_its_config_removes_the_torn_run_folder(tmp_path):
    line = one_line(run_with_file_size_limit(["train", *TINY, "hydra.run.dir=run"], tmp_path, 2000))
    assert "cannot write the run folder run" in line and "file-size limit" in line, line
    assert not (tmp_path / "run").exists()  # only Hydra's torn .hydra/ files were there


def test_a_full_disk_at_the_first_checkpoint_stops_with_no_torn_file(tmp_path):
    # the .hydra/ files and metrics.jsonl fit in 12 kB; a checkpoint of the tiny model (about 19 kB) does not
    line = one_line(run_with_file_size_limit(["train", *TINY, "hydra.run.dir=run"], tmp_path, 12_000))
    assert f"cannot write {tmp_path / 'run' / 'checkpoints' / 'last.pt'}" in line and "no checkpoint was saved" in line
    assert not partial_files(tmp_path) and not list(tmp_path.rglob("*.pt"))
    assert not (tmp_path / "run" / "results.json").exists()
    assert (tmp_path / "run" / "error.txt").read_text().splitlines()[0] == line


def test_a_sweep_on_a_full_disk_stops_at_the_first_job(tmp_path):
    result = run_with_file_size_limit(["train", "-m", *TINY, "optim.lr=0.001,0.002", "hydra.sweep.dir=sweep"],
                                      tmp_path, 12_000)
    line = one_line(result)
    assert "cannot write" in line and "last.pt" in line and "file-size limit" in line, line
    assert not (tmp_path / "sweep" / "1").exists()  # the next job would have met the same disk
    assert not partial_files(tmp_path)


def fail_halfway_on_call(monkeypatch, module, name: str, call: int) -> None:
    """`module.name` writes half its output and then fails with ENOSPC on its `call`-th call."""
    original, calls = getattr(module, name), [0]

    def writer(payload, handle, *args, **kwargs):
        calls[0] += 1
        if calls[0] == call:
            handle.write(b"PK\x03\x04 half a checkpoint")
            raise DISK_FULL
        return original(payload, handle, *args, **kwargs)

    monkeypatch.setattr(module, name, writer)


def test_a_later_checkpoint_on_a_full_disk_keeps_the_previous_and_resumes_from_it(tmp_path, monkeypatch):
    """TINY saves last.pt at steps 2 and 4: the second save meets a full disk."""
    monkeypatch.chdir(tmp_path)
    fail_halfway_on_call(monkeypatch, torch, "save", call=3)  # last.pt (step 2), best.pt (step 2), last.pt (4)
    line = assert_one_line_error(invoke(["train", *TINY, "hydra.run.dir=run"]))
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert f"cannot write {last}: no space left on the device" in line, line
    assert "the previous save is kept" in line and f"trainer.resume={last}" in line
    assert load_checkpoint(last)["step"] == 2 and not partial_files(tmp_path)
    monkeypatch.undo()

    monkeypatch.chdir(tmp_path)  # the line's advice, once there is space, finishes the run
    resume = re.search(r"(trainer\.resume=\S+)", line).group(1)
    assert invoke(["train", *TINY, resume, "hydra.run.dir=more"]).exit_code == 0
    assert read_results(tmp_path / "more")["resumed_from_step"] == 2


def test_results_on_a_full_disk_leave_no_torn_file_and_the_advice_finishes_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_text = Path.write_text

    def full_for_results(self, text, *args, **kwargs):
        if self.name == "results.json.partial":
            write_text(self, text[: len(text) // 2])
            raise DISK_FULL
        return write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_for_results)
    line = assert_one_line_error(invoke(["train", *TINY, "hydra.run.dir=run"]))
    assert f"cannot write {tmp_path / 'run' / 'results.json'}: no space left" in line, line
    assert "checkpoints are kept" in line and "trainer.resume=" in line
    assert not (tmp_path / "run" / "results.json").exists() and not partial_files(tmp_path)
    monkeypatch.undo()

    monkeypatch.chdir(tmp_path)
    resume = re.search(r"(trainer\.resume=\S+)", line).group(1)
    assert invoke(["train", *TINY, resume, "hydra.run.dir=finished"]).exit_code == 0
    assert read_results(tmp_path / "finished")["steps"] == 4


def test_metrics_on_a_full_disk_stop_with_the_checkpoint_to_continue_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path_open, appends = Path.open, [0]

    def full_after_the_first_checkpoint(self, mode="r", *args, **kwargs):
        if self.name == "metrics.jsonl" and mode == "a":
            appends[0] += 1
            if appends[0] == 5:  # step 3's line: last.pt (step 2) is saved
                raise DISK_FULL
        return path_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", full_after_the_first_checkpoint)
    line = assert_one_line_error(invoke(["train", *TINY, "hydra.run.dir=run"]))
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert f"cannot write {tmp_path / 'run' / 'metrics.jsonl'}" in line and f"trainer.resume={last}" in line, line
    assert load_checkpoint(last)["step"] == 2


def test_the_sweep_summary_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    from minrnn_cli.tracking import sweep_summary

    def full(path, rows):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(sweep_summary, "write_csv", full)
    monkeypatch.chdir(tmp_path)
    line = assert_one_line_error(invoke(["train", "-m", *TINY, "optim.lr=0.001", "hydra.sweep.dir=sweep"]))
    assert f"cannot write {Path('sweep') / 'summary.csv'}" in line and "no space left" in line, line
    assert (tmp_path / "sweep" / "0" / "results.json").is_file()  # the job's own results stay


@pytest.mark.parametrize("limit", [None, 1000])
def test_a_report_that_cannot_be_written_is_one_line(tmp_path, limit):
    (tmp_path / "a_file").write_text("not a folder")
    assert invoke_ok(tmp_path, ["train", *TINY, "hydra.run.dir=run"])
    out = "a_file/report" if limit is None else "report"
    line = one_line(run_with_file_size_limit(["report", "run", "--out", out], tmp_path, limit))
    failure = "the folder cannot be made (a part of the path is a file" if limit is None else "cannot write"
    assert failure in line and "give another folder with --out" in line, line
    if limit is not None:  # every file the report writes is whole or absent: no torn table, no .partial
        assert not list((tmp_path / "report").glob("*.partial"))
        for written in (tmp_path / "report").glob("*.csv"):
            assert written.read_text().endswith("\n"), written


def test_a_writer_failing_halfway_leaves_the_earlier_file_and_no_partial(tmp_path):
    from minrnn_cli.tracking.records import write_text_whole, write_whole

    target = tmp_path / "summary.csv"
    write_text_whole(target, "a,b\n1,2\n")

    def half_then_full_disk(partial: Path) -> None:
        partial.write_text("a,b\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        write_whole(target, half_then_full_disk)
    assert target.read_text() == "a,b\n1,2\n" and list(tmp_path.iterdir()) == [target]


def invoke_ok(folder: Path, args: list[str]) -> bool:
    previous = Path.cwd()
    os.chdir(folder)
    try:
        return invoke(args).exit_code == 0
    finally:
        os.chdir(previous)


def test_an_unwritable_kernel_cache_costs_one_warning_and_no_files(tmp_path):
    """MINRNN_CACHE_DIR under a file: the CPU kernels are built in a temporary folder, which goes again."""
    from minrnn_cli.scans.fused import cpu

    if not cpu.available():
        pytest.skip(f"no CPU kernels here: {cpu.kernel_status()}")
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "tmp").mkdir()
    code = ("import logging; logging.basicConfig(format='%(levelname)s %(message)s')\n"
            "from minrnn_cli.scans.fused import cpu; print(cpu.available(), cpu.kernel_status())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env=subprocess_env(MINRNN_CACHE_DIR=str(tmp_path / "a_file"), TMPDIR=str(tmp_path / "tmp"),
                                               MINRNN_CPU_KERNELS="1"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("True compiled: a temporary folder"), result.stdout
    warnings = error_lines(result.stderr)
    assert len(warnings) == 1 and "cannot be written" in warnings[0] and "MINRNN_CACHE_DIR" in warnings[0]
    assert not list((tmp_path / "tmp").iterdir())  # the temporary build is removed once loaded


def test_bench_outputs_on_a_full_disk_are_one_line(tmp_path):
    """bench.csv, .json and .md fit in 6 kB, bench.png does not: the line names the folder (a failed write()
    carries no file name)."""
    bench = ["bench", "models=[mingru]", "device=cpu", "seq_len=[8]", "batch_size=1", "d_model=8", "depth=1",
             "repeats=1", "warmup=0", "min_repeats=1", "hydra.run.dir=bench"]
    line = one_line(run_with_file_size_limit(bench, tmp_path, 6000))
    assert f"cannot write a file in {tmp_path / 'bench'}" in line and "file-size limit" in line, line


def test_a_resume_that_cannot_copy_the_earlier_best_leaves_no_torn_best(tmp_path, monkeypatch):
    """A resumed run copies the earlier run's best.pt into its own folder: whole or not at all."""
    from minrnn_cli.training import checkpoint

    monkeypatch.chdir(tmp_path)
    assert invoke(["train", *TINY, "hydra.run.dir=first"]).exit_code == 0

    def full_halfway(source, target, *args):
        target.write(source.read(100))
        raise DISK_FULL

    monkeypatch.setattr(checkpoint.shutil, "copyfileobj", full_halfway)
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    line = assert_one_line_error(invoke(["train", *TINY, "trainer.max_steps=6", f"trainer.resume={last}",
                                         "hydra.run.dir=more"]))
    assert f"cannot write {tmp_path / 'more' / 'checkpoints' / 'best.pt'}: no space left" in line, line
    assert not list((tmp_path / "more").rglob("*.pt")) and not partial_files(tmp_path)
