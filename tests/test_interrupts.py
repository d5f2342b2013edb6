"""Nothing lost: SIGINT/SIGTERM save last.pt and stop with one line, a SIGKILLed run resumes with
trainer.resume=auto to exactly the losses of an uninterrupted run, and runs never share an output folder."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch
from cli_faults import TINY, TINY_RUN, assert_one_line_error, error_lines, invoke, run_signalled_at, start_minrnn

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
        timing = ("tokens_per_s", "elapsed_s")
        return [{k: v for k, v in row.items() if k not in timing} for row in read_metrics(run_dir)]

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

    def dies_midway(payload, handle):  # a kill during the write: half a file, then nothing more
        handle.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(last, step=2, **state)
    assert load_checkpoint(last)["step"] == 1
    assert sorted(path.name for path in last.parent.iterdir()) == ["last.pt"]  # the torn file is removed
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


def test_an_interrupted_sweep_job_advises_starting_the_sweep_again_not_a_checkpoint_path():
    from minrnn_cli.training.signals import FinalPhaseInterrupted, Interrupted

    last = Path("outputs/multirun/s/0/checkpoints/last.pt")
    for stopped in (Interrupted(signal.SIGINT, 3, last), FinalPhaseInterrupted(signal.SIGINT, 4, last)):
        assert f"trainer.resume={last}" in str(stopped)  # a single run
        advice = stopped.sweep_advice("the same command plus hydra.sweep.dir=/s")
        assert "with the same command plus hydra.sweep.dir=/s (finished jobs are kept" in advice, advice
        assert "trainer.resume" not in advice


def test_sigterm_while_the_results_are_written_stops_at_once_and_resume_finishes_the_run(tmp_path, monkeypatch):
    """TINY trains 4 steps, evaluating at 2 and 4; SIGTERM arrives as the results are being written. The run stops
    there (exit 143, one line), and `trainer.resume=<last.pt>` writes the results without training: the same
    metrics as an uninterrupted run."""
    from minrnn_cli.training import loop

    monkeypatch.chdir(tmp_path)
    assert invoke(["train", *TINY, f"hydra.run.dir={tmp_path / 'reference'}"]).exit_code == 0
    final_results = loop.final_results

    def sigterm_in_the_results(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return final_results(*args, **kwargs)

    monkeypatch.setattr(loop, "final_results", sigterm_in_the_results)
    line = assert_one_line_error(invoke(["train", *TINY, f"hydra.run.dir={tmp_path / 'stopped'}"]),
                                 128 + signal.SIGTERM)
    assert "while the results were being written" in line and "trainer.resume=" in line
    assert not (tmp_path / "stopped" / "results.json").exists()
    monkeypatch.setattr(loop, "final_results", final_results)

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


# ---- a stop at every phase of a run, in a real process (tests/cli_faults.run_signalled_at) ---------------------
# TINY trains 4 steps and evaluates at steps 2 and 4 (loop.evaluate's calls 1 and 2), then writes its results
# (loop.final_results) and a closing sample.
EVALUATE, RESULTS, SAMPLE = ("minrnn_cli.training.loop:evaluate", "minrnn_cli.training.loop:final_results",
                             "minrnn_cli.training.runs:closing_sample")
STOPS = pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])


def only_line(result, returncode: int) -> str:
    lines = error_lines(result.stderr)
    assert result.returncode == returncode, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in result.stdout + result.stderr, result.stderr
    return lines[0]


@STOPS
def test_a_stop_during_a_periodic_evaluation_stops_after_it_with_that_step_saved(signum, tmp_path):
    result = run_signalled_at(EVALUATE, 1, signum, ["train", *TINY, "hydra.run.dir=run"], tmp_path)
    line = only_line(result, 128 + signum)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert f"stopped by {signal.Signals(signum).name} at step 2, saved {last}" in line, line
    assert f"trainer.resume={last}" in line and load_checkpoint(last)["step"] == 2
    assert not (tmp_path / "run" / "results.json").exists()
    assert not list(tmp_path.rglob("*.partial"))


@STOPS
def test_a_stop_while_the_results_are_written_ends_at_once_with_every_checkpoint_saved(signum, tmp_path):
    result = run_signalled_at(RESULTS, 1, signum, ["train", *TINY, "hydra.run.dir=run"], tmp_path)
    line = only_line(result, 128 + signum)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert f"stopped by {signal.Signals(signum).name} while the results were being written" in line, line
    assert "training finished at step 4" in line and f"trainer.resume={last}" in line
    assert load_checkpoint(last)["step"] == 4 and (tmp_path / "run" / "checkpoints" / "best.pt").is_file()
    assert not (tmp_path / "run" / "results.json").exists()


@STOPS
def test_a_stop_during_the_closing_sample_keeps_the_results(signum, tmp_path):
    """The results are written before the sample; the signal's default effect ends the process (SIGTERM kills
    it, Ctrl-C is Python's KeyboardInterrupt: `interrupted`, exit 130)."""
    text = [*TINY_RUN, "task=shakespeare", "task.seq_len=8", "task.batch_size=2", "task.eval_batches=1",
            "task.sample_chars=200"]
    result = run_signalled_at(SAMPLE, 1, signum, ["train", *text, "hydra.run.dir=run"], tmp_path)
    if signum == signal.SIGTERM:
        assert result.returncode == -signal.SIGTERM, result.stderr[-2000:]
    else:
        assert only_line(result, 130) == "interrupted"
    results = read_results(tmp_path / "run")
    assert results["steps"] == 4 and "sample" not in results
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 4


def test_an_interrupted_sweep_started_again_as_advised_keeps_finished_jobs_and_continues_the_stopped_one(tmp_path):
    """Job 0 (seed 1) finishes, job 1 (seed 2) is stopped at step 2. The advised restart (the same command in the
    same sweep folder) keeps job 0 byte for byte without training it, and continues job 1 from its own step-2
    checkpoint in its own folder; a third start keeps both, their checkpoints deleted."""
    sweep = ["train", "-m", *TINY, "trainer.seed=1,2"]
    result = run_signalled_at(EVALUATE, 3, signal.SIGTERM, sweep, tmp_path)  # job 1's first evaluation
    line = only_line(result, 128 + signal.SIGTERM)
    (folder,) = (tmp_path / "outputs" / "multirun").iterdir()
    rerun = f"hydra.sweep.dir={folder}"
    assert f"continue the sweep with the same command plus {rerun} (finished" in line, line
    assert "trainer.resume" not in line
    kept = {name: (folder / "0" / name).read_bytes() for name in ("results.json", "metrics.jsonl")}
    assert not (folder / "1" / "results.json").exists()
    assert load_checkpoint(folder / "1" / "checkpoints" / "last.pt")["step"] == 2

    restarted = run_signalled_at(EVALUATE, 0, signal.SIGTERM, [*sweep, rerun], tmp_path)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    assert list((tmp_path / "outputs" / "multirun").iterdir()) == [folder]
    assert {name: (folder / "0" / name).read_bytes() for name in kept} == kept  # job 0 kept, not trained again
    logged = restarted.stdout + restarted.stderr
    assert f"kept: {folder / '0'} finished this job earlier (4 steps); not trained again" in logged, logged[-2000:]
    results = read_results(folder / "1")
    assert results["resumed_from_step"] == 2 and results["steps"] == 4  # job 1 continued its own run
    assert not (folder / "1" / "error.txt").exists()
    steps = [row["step"] for row in read_metrics(folder / "1") if "train_loss" in row]
    assert steps == [1, 2, 3, 4]  # every step once, the earlier start's included
    summary = (folder / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and all(",ok," in row for row in summary[1:]), summary  # both jobs' results

    for job in ("0", "1"):  # a finished job's results.json names its config: kept without its checkpoints
        shutil.rmtree(folder / job / "checkpoints")
    again = run_signalled_at(EVALUATE, 0, signal.SIGTERM, [*sweep, rerun], tmp_path)
    assert again.returncode == 0 and (again.stdout + again.stderr).count("not trained again") == 2, again.stderr


def test_a_sweep_job_stopped_while_writing_its_results_is_finished_by_the_sweep_started_again(tmp_path):
    sweep = ["train", "-m", *TINY, "trainer.seed=1", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    line = only_line(run_signalled_at(RESULTS, 1, signal.SIGTERM, sweep, tmp_path), 128 + signal.SIGTERM)
    assert "while the results were being written" in line and "get the results with the same command (" in line, line
    assert "trainer.resume" not in line
    assert run_signalled_at(EVALUATE, 0, signal.SIGTERM, sweep, tmp_path).returncode == 0
    results = read_results(tmp_path / "sweep" / "0")
    assert results["steps"] == results["resumed_from_step"] == 4  # finished without training


def test_a_sweep_folder_started_again_with_other_overrides_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "sweep"
    assert invoke(["train", "-m", *TINY, "trainer.seed=1", f"hydra.sweep.dir={folder}"]).exit_code == 0
    before = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    line = assert_one_line_error(invoke(["train", "-m", *TINY, "trainer.seed=1,2", f"hydra.sweep.dir={folder}"]))
    assert f"the sweep folder {folder} holds a sweep of other overrides" in line and "trainer.seed=1," in line
    assert {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()} == before


def test_a_stop_while_logging_to_wandb_is_still_one_line(tmp_path):
    """W&B's own `with run:` printed the stack trace of the run's one-line error before it."""
    pytest.importorskip("wandb")
    args = ["train", *TINY, "logger=wandb", "logger.mode=offline", "hydra.run.dir=run"]
    result = run_signalled_at(EVALUATE, 1, signal.SIGTERM, args, tmp_path)
    assert "stopped by SIGTERM at step 2" in only_line(result, 128 + signal.SIGTERM)
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))
