"""Nothing lost: SIGINT/SIGTERM save last.pt and stop with one line, a SIGKILLed run resumes with
trainer.resume=auto to exactly the losses of an uninterrupted run, and runs never share an output folder."""

from __future__ import annotations

import itertools
import re
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest
from cli_faults import TINY, assert_one_line_error, error_lines, invoke, start_minrnn

from minrnn_cli.tracking.records import read_metrics, read_results
from minrnn_cli.training.checkpoint import load_checkpoint

LONG = ["trainer.max_steps=100000", "trainer.eval_every=1000"]  # stopped long before the end


def wait_for(path: Path, process, timeout: float = 120.0) -> None:
    """Poll until `path` exists (the subprocess is then training); fail if the process ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"the run ended (rc {process.returncode}) before {path} appeared: {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_last_checkpoint_and_exits_with_one_line(signum, tmp_path):
    run_dir = tmp_path / "run"
    process = start_minrnn(["train", *TINY, *LONG, f"hydra.run.dir={run_dir}"], tmp_path)
    wait_for(run_dir / "metrics.jsonl", process)  # written at step 1: the loop is running
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 128 + signum, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    checkpoint = run_dir / "checkpoints" / "last.pt"
    assert f"stopped by {signum.name} at step" in lines[0] and f"trainer.resume={checkpoint}" in lines[0]
    step = int(re.search(r"at step (\d+)", lines[0]).group(1))
    assert load_checkpoint(checkpoint)["step"] == step >= 1
    assert read_metrics(run_dir)[-1]["step"] <= step
    assert not (run_dir / "results.json").exists()


def test_training_continues_from_the_checkpoint_a_signal_left(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    process = start_minrnn(["train", *TINY, *LONG, f"hydra.run.dir={run_dir}"], tmp_path)
    wait_for(run_dir / "metrics.jsonl", process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    resume = re.search(r"(trainer\.resume=\S+)", stderr).group(1)
    step = load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"]

    monkeypatch.chdir(tmp_path)
    result = invoke(["train", *TINY, f"trainer.max_steps={step + 2}", resume, f"hydra.run.dir={tmp_path / 'more'}"])
    assert result.exit_code == 0, result.stdout + result.stderr
    results = read_results(tmp_path / "more")
    assert results["resumed_from_step"] == step and results["steps"] == step + 2
    steps = [row["step"] for row in read_metrics(tmp_path / "more") if "train_loss" in row]
    assert steps == sorted(set(steps)) and steps[-2:] == [step + 1, step + 2]  # no step twice, none lost


def test_resume_auto_after_sigkill_reproduces_an_uninterrupted_run(tmp_path, monkeypatch):
    args = [*TINY, "trainer.max_steps=300", "trainer.eval_every=10", "trainer.log_every=5"]
    killed = tmp_path / "outputs" / "runs" / "killed"
    process = start_minrnn(["train", *args, f"hydra.run.dir={killed}"], tmp_path)
    wait_for(killed / "checkpoints" / "last.pt", process)
    process.kill()
    process.wait(timeout=60)
    killed_at = load_checkpoint(killed / "checkpoints" / "last.pt")["step"]
    assert 10 <= killed_at < 300  # killed mid-run, after a checkpoint

    monkeypatch.chdir(tmp_path)
    resumed = invoke(["train", *args, "trainer.resume=auto"])
    assert resumed.exit_code == 0, resumed.stdout + resumed.stderr
    (resumed_dir,) = [path for path in (tmp_path / "outputs" / "runs").iterdir() if path != killed]
    reference = invoke(["train", *args, f"hydra.run.dir={tmp_path / 'reference'}"])
    assert reference.exit_code == 0, reference.stdout + reference.stderr

    def losses(run_dir: Path) -> list[dict]:
        return [{k: v for k, v in row.items() if k != "tokens_per_s"} for row in read_metrics(run_dir)]

    assert read_results(resumed_dir)["resumed_from_step"] == killed_at
    assert losses(resumed_dir) == losses(tmp_path / "reference")  # every step once, bit for bit the same
    final = {k: v for k, v in read_results(resumed_dir).items() if k.startswith(("val_", "test_"))}
    assert final == {k: v for k, v in read_results(tmp_path / "reference").items() if k in final}


class FrozenClock(datetime):
    """`datetime.now()` stuck in one second; the microseconds advance by `step` per call (0: fully stuck)."""

    ticks = itertools.count()
    step = 1

    @classmethod
    def now(cls, tz=None):
        return cls(2026, 1, 1, 12, 0, 0, (next(cls.ticks) * cls.step) % 1_000_000)


def test_two_runs_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    import hydra.core.utils

    monkeypatch.setattr(hydra.core.utils, "datetime", FrozenClock)
    monkeypatch.chdir(tmp_path)
    for lr in ("0.001", "0.002"):
        assert invoke(["train", *TINY, f"optim.lr={lr}"]).exit_code == 0
    runs = sorted((tmp_path / "outputs" / "runs").iterdir())
    assert len(runs) == 2 and all(run.name.startswith("2026-01-01_12-00-00-") for run in runs)
    assert all((run / "results.json").is_file() for run in runs)


def test_a_run_never_writes_into_a_folder_holding_another(tmp_path, monkeypatch):
    import hydra.core.utils

    monkeypatch.setattr(FrozenClock, "step", 0)  # the same microsecond twice
    monkeypatch.setattr(hydra.core.utils, "datetime", FrozenClock)
    monkeypatch.chdir(tmp_path)
    assert invoke(["train", *TINY]).exit_code == 0
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}

    line = assert_one_line_error(invoke(["train", *TINY, "optim.lr=0.001"]))
    assert f"{run_dir} already holds a run" in line and "hydra.run.dir" in line
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == before
