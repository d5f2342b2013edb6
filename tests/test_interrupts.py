"""Nothing lost: SIGINT/SIGTERM save last.pt and stop with one line, a SIGKILLed run resumes with
trainer.resume=auto to exactly the losses of an uninterrupted run, and runs never share an output folder."""

from __future__ import annotations

import itertools
import os
import re
import signal
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch
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


def test_sigterm_saves_last_checkpoint_and_says_how_to_resume(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    process = start_minrnn(["train", *TINY, *LONG, f"hydra.run.dir={run_dir}"], tmp_path)
    wait_for(run_dir / "metrics.jsonl", process)  # written at step 1: the loop is running
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 128 + signal.SIGTERM, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    checkpoint = run_dir / "checkpoints" / "last.pt"
    assert "stopped by SIGTERM at step" in lines[0] and f"trainer.resume={checkpoint}" in lines[0]
    step = int(re.search(r"at step (\d+)", lines[0]).group(1))
    assert load_checkpoint(checkpoint)["step"] == step >= 1
    assert not (run_dir / "results.json").exists()

    # the line's advice works: the same command plus trainer.resume=... goes on from that step
    monkeypatch.chdir(tmp_path)
    resume = re.search(r"(trainer\.resume=\S+)", lines[0]).group(1)
    result = invoke(["train", *TINY, f"trainer.max_steps={step + 2}", resume, f"hydra.run.dir={tmp_path / 'more'}"])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert read_results(tmp_path / "more")["resumed_from_step"] == step
    steps = [row["step"] for row in read_metrics(tmp_path / "more") if "train_loss" in row]
    assert steps == sorted(set(steps)) and steps[-2:] == [step + 1, step + 2]  # no step twice, none lost


def test_ctrl_c_saves_last_checkpoint_and_exits_130(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"

    def press_ctrl_c_once_training() -> None:
        deadline = time.monotonic() + 120
        while not (run_dir / "metrics.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.chdir(tmp_path)
    before = signal.getsignal(signal.SIGINT)  # Python's handler, or SIG_IGN under nohup or `&` in a script
    threading.Thread(target=press_ctrl_c_once_training, daemon=True).start()
    result = invoke(["train", *TINY, *LONG, f"hydra.run.dir={run_dir}"])
    line = assert_one_line_error(result, 128 + signal.SIGINT)
    assert "stopped by SIGINT at step" in line and "trainer.resume=" in line
    step = int(re.search(r"at step (\d+)", line).group(1))
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == step
    assert signal.getsignal(signal.SIGINT) == before  # handlers are put back


def test_resume_auto_after_sigkill_reproduces_an_uninterrupted_run(tmp_path, monkeypatch):
    # a constant learning rate, so the killed run (which would go on for long) and the shorter reference
    # share their schedule; the kill can then come at any step after the first checkpoint
    args = [*TINY, "optim.warmup_steps=0", "optim.min_lr_ratio=1.0", "trainer.eval_every=10", "trainer.log_every=5"]
    killed = tmp_path / "outputs" / "runs" / "killed"
    process = start_minrnn(["train", *args, "trainer.max_steps=100000", f"hydra.run.dir={killed}"], tmp_path)
    wait_for(killed / "checkpoints" / "last.pt", process)
    process.kill()
    process.wait(timeout=60)
    killed_at = load_checkpoint(killed / "checkpoints" / "last.pt")["step"]
    args.append(f"trainer.max_steps={killed_at + 12}")

    monkeypatch.chdir(tmp_path)
    resumed = invoke(["train", *args, "trainer.resume=auto"])
    assert resumed.exit_code == 0, resumed.stdout + resumed.stderr
    (resumed_dir,) = [path for path in (tmp_path / "outputs" / "runs").iterdir() if path != killed]
    reference = invoke(["train", *args, f"hydra.run.dir={tmp_path / 'reference'}"])
    assert reference.exit_code == 0, reference.stdout + reference.stderr

    def losses(run_dir: Path) -> list[dict]:
        return [{k: v for k, v in row.items() if k != "tokens_per_s"} for row in read_metrics(run_dir)]

    assert read_results(resumed_dir)["resumed_from_step"] == killed_at >= 10
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


def test_a_save_that_dies_midway_leaves_the_previous_checkpoint_as_the_newest(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from minrnn_cli.models import build_lm
    from minrnn_cli.training.checkpoint import latest_resumable, save_checkpoint
    from minrnn_cli.training.optim import build_optimizer, build_scheduler

    config = OmegaConf.create({"model": {"name": "mingru", "d_model": 8, "n_layers": 1}, "task": {"name": "x"},
                               "optim": {"lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.99], "warmup_steps": 0,
                                         "min_lr_ratio": 1.0}})
    model = build_lm("mingru", 5, d_model=8, n_layers=1)
    optimizer = build_optimizer(model, config.optim)
    state = dict(model=model, optimizer=optimizer, scheduler=build_scheduler(optimizer, config.optim, 10),
                 best=None, config=config, vocabulary={})
    run_dir = tmp_path / "outputs" / "runs" / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(config, run_dir / ".hydra" / "config.yaml")
    last = run_dir / "checkpoints" / "last.pt"
    save_checkpoint(last, step=1, **state)

    def dies_midway(payload, path):  # a kill during the write: half a file, then nothing more
        Path(path).write_bytes(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(last, step=2, **state)
    assert load_checkpoint(last)["step"] == 1
    assert latest_resumable(tmp_path / "outputs", config) == last


def test_resume_auto_finds_each_sweep_jobs_own_unfinished_run(tmp_path, caplog):
    """Two jobs that differ only in their seed, one finished: auto picks the unfinished run of this seed only."""
    from omegaconf import OmegaConf

    from minrnn_cli.training.checkpoint import FORMAT, REQUIRED_KEYS, VERSION, latest_resumable

    def job(name: str, seed: int, finished: bool) -> Path:
        run_dir = tmp_path / "outputs" / "multirun" / "sweep" / name
        (run_dir / ".hydra").mkdir(parents=True)
        OmegaConf.save({"model": {"name": "mingru"}, "trainer": {"seed": seed, "max_steps": 4, "resume": None}},
                       run_dir / ".hydra" / "config.yaml")
        (run_dir / "checkpoints").mkdir()
        torch.save({"format": FORMAT, "version": VERSION, **dict.fromkeys(REQUIRED_KEYS, {}), "step": 1,
                    "config": {"model": {"name": "mingru"}, "task": {"name": "x"}}},
                   run_dir / "checkpoints" / "last.pt")
        if finished:
            (run_dir / "results.json").write_text("{}")
        return run_dir / "checkpoints" / "last.pt"

    own = job("0", seed=1, finished=False)
    job("1", seed=2, finished=False)
    job("2", seed=3, finished=True)
    wanted = OmegaConf.create({"model": {"name": "mingru"},
                               "trainer": {"seed": 1, "max_steps": 8, "resume": "auto"}, "logger": {"name": "none"}})
    assert latest_resumable(tmp_path / "outputs", wanted) == own
    assert latest_resumable(tmp_path / "outputs", OmegaConf.merge(wanted, {"trainer": {"seed": 3}})) is None
    assert latest_resumable(tmp_path / "outputs", OmegaConf.merge(wanted, {"trainer": {"seed": 9}})) is None

    # a newer run of the same config with a damaged checkpoint, and one with a damaged config: skipped, warned
    newer = job("3", seed=1, finished=False)
    newer.write_bytes(b"PK\x03\x04 half a zip")
    damaged_config = job("4", seed=1, finished=False)
    (damaged_config.parent.parent / ".hydra" / "config.yaml").write_text("model: {name: [unclosed\n")
    with caplog.at_level("WARNING", logger="minrnn"):
        assert latest_resumable(tmp_path / "outputs", wanted) == own
    warned = " ".join(record.getMessage() for record in caplog.records)
    assert "skipped" in warned and "config.yaml is damaged" in warned and "is not readable" in warned


def test_an_interrupted_sweep_job_advises_resume_auto_not_a_checkpoint_path():
    from minrnn_cli.training.signals import Interrupted

    stopped = Interrupted(signal.SIGINT, 3, Path("outputs/multirun/s/0/checkpoints/last.pt"))
    assert "trainer.resume=outputs/multirun/s/0/checkpoints/last.pt" in str(stopped)  # a single run
    advice = stopped.sweep_advice()
    assert "trainer.resume=auto" in advice and "trainer.resume=outputs" not in advice


def test_sigterm_in_the_final_evaluation_stops_at_once_and_resume_finishes_the_run(tmp_path, monkeypatch):
    """TINY trains 4 steps, evaluating at 2 and 4; the third evaluation is the final one, where SIGTERM arrives.
    The run stops there (exit 143, one line), and `trainer.resume=<last.pt>` writes the results without training:
    the same metrics as an uninterrupted run."""
    from minrnn_cli.training import loop

    monkeypatch.chdir(tmp_path)
    assert invoke(["train", *TINY, f"hydra.run.dir={tmp_path / 'reference'}"]).exit_code == 0
    evaluate, calls = loop.evaluate, itertools.count(1)

    def sigterm_in_the_final_evaluation(*args, **kwargs):
        if next(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", sigterm_in_the_final_evaluation)
    line = assert_one_line_error(invoke(["train", *TINY, f"hydra.run.dir={tmp_path / 'stopped'}"]),
                                 128 + signal.SIGTERM)
    assert "during the final evaluation" in line and "trainer.resume=" in line
    assert not (tmp_path / "stopped" / "results.json").exists()
    monkeypatch.setattr(loop, "evaluate", evaluate)

    last = tmp_path / "stopped" / "checkpoints" / "last.pt"
    assert invoke(["train", *TINY, f"trainer.resume={last}", f"hydra.run.dir={tmp_path / 'finished'}"]).exit_code == 0
    finished, reference = read_results(tmp_path / "finished"), read_results(tmp_path / "reference")
    assert finished["resumed_from_step"] == finished["steps"] == 4
    metric_keys = [key for key in reference if key.startswith(("val_", "test_"))]
    assert metric_keys and all(finished[key] == reference[key] for key in metric_keys)
    # and a run that has its results is not finished twice
    done_last = tmp_path / "reference" / "checkpoints" / "last.pt"
    line = assert_one_line_error(invoke(["train", *TINY, f"trainer.resume={done_last}"]))
    assert "nothing left to train" in line
