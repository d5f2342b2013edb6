"""Training end to end on tiny settings: the records a run leaves, determinism, exact resumption, eval and
generate from a checkpoint, unusable checkpoints, W&B offline, one folder per run; and the pieces of the
loop (optimiser groups, schedule, checkpoints, progress lines) on their own."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch
from conftest import (
    TINY_COPYING,
    TINY_SHAKESPEARE,
    TINY_TRAINER,
    newest_run_dir,
    only_run_dir,
    run_minrnn,
    run_ok,
)
from test_cli import assert_one_line_error

from minrnn_cli.errors import UserError
from minrnn_cli.tracking.records import read_metrics, read_results

# Every step logged, dropout on (so resuming must restore the RNG too), evaluation at steps 3 and 6.
REFERENCE = [*TINY_SHAKESPEARE, *TINY_TRAINER, "trainer.log_every=1", "model.dropout=0.1"]


def losses(run_dir: Path, after_step: int = 0) -> list[tuple]:
    """Every logged loss and learning rate (not the timing) from metrics.jsonl, by step."""
    rows = [row for row in read_metrics(run_dir) if row["step"] > after_step]
    return [(row["step"], *(row[key] for key in sorted(row) if "loss" in key or key in ("lr", "val_bpc")))
            for row in rows]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(folder, run folder, CLI result) of one tiny Shakespeare run, shared by the tests that read it."""
    folder = tmp_path_factory.mktemp("reference")
    result = run_ok(folder, "train", *REFERENCE)
    return folder, only_run_dir(folder), result


# ---- what a run leaves behind --------------------------------------------------------------------------

def test_shakespeare_run_writes_metrics_results_checkpoints_and_a_sample(reference):
    _, run_dir, result = reference
    results = read_results(run_dir)
    assert results["model"] == "mingru" and results["task"] == "shakespeare"
    assert results["steps"] == 6 and results["params"] > 0 and results["wall_time_s"] > 0
    assert results["best_step"] in (3, 6)
    assert math.isclose(results["val_bpc"], results["val_loss"] / math.log(2), rel_tol=1e-9)

    metrics = read_metrics(run_dir)
    assert [row["step"] for row in metrics if "train_loss" in row] == [1, 2, 3, 4, 5, 6]
    evals = {row["step"]: row for row in metrics if "val_loss" in row}
    assert sorted(evals) == [3, 6]
    # the final metrics are the best checkpoint's, the same numbers as its evaluation during training
    assert results["val_loss"] == pytest.approx(evals[results["best_step"]]["val_loss"], abs=1e-6)
    assert results["val_loss"] == min(row["val_loss"] for row in evals.values())

    for name in ("best.pt", "last.pt"):
        assert (run_dir / "checkpoints" / name).is_file()
    assert not list(run_dir.glob("checkpoints/*.partial"))
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "train.log").is_file()

    sample = (run_dir / "sample.txt").read_text()
    assert len(sample) == 1 + 20  # the "\n" prompt and sample_chars characters
    assert results["sample"] == sample


def test_output_without_a_terminal_is_plain_lines_and_a_table_without_the_sample(reference):
    _, run_dir, result = reference
    lines = result.stdout.splitlines()
    progress = [line for line in lines if "step 4/6" in line]
    assert progress and all("loss" in line and "tok/s" in line and "ETA" in line for line in progress)
    assert any("val_loss" in line for line in lines)
    table_rows = [line for line in lines if line.startswith("│")]
    assert any("val_loss" in row for row in table_rows)
    assert not any("sample" in row for row in table_rows)
    assert f"run folder: {run_dir}" in result.stdout


def test_selective_copying_run_reports_accuracy_on_val_and_test(tmp_path):
    run_ok(tmp_path, "train", *TINY_COPYING, *TINY_TRAINER)
    run_dir = only_run_dir(tmp_path)
    results = read_results(run_dir)
    assert results["task"] == "selective_copying" and results["steps"] == 6
    for key in ("val_accuracy", "test_accuracy"):
        assert 0.0 <= results[key] <= 1.0
    assert results["val_loss"] > 0 and results["test_loss"] > 0
    assert "sample" not in results and not (run_dir / "sample.txt").exists()
    assert (run_dir / "checkpoints" / "best.pt").is_file()


def test_same_seed_same_losses_and_another_seed_others(reference, tmp_path):
    _, reference_dir, _ = reference
    run_ok(tmp_path, "train", *REFERENCE)
    assert losses(only_run_dir(tmp_path)) == losses(reference_dir)
    run_ok(tmp_path, "train", *REFERENCE, "trainer.seed=7")
    assert losses(newest_run_dir(tmp_path)) != losses(reference_dir)


# ---- resuming -------------------------------------------------------------------------------------------

class InterruptAt:
    """A task that sends this process SIGINT (Ctrl-C) while fetching the batch of step `step`."""

    def __init__(self, task, step: int):
        self.task, self.step, self.calls = task, step, 0

    def __getattr__(self, name):
        return getattr(self.task, name)

    def train_batch(self, generator):
        self.calls += 1
        if self.calls == self.step:
            signal.raise_signal(signal.SIGINT)
        return self.task.train_batch(generator)


def test_interrupted_run_resumes_exactly_where_it_stopped(reference, tmp_path, monkeypatch):
    from minrnn_cli.training import loop

    _, reference_dir, _ = reference
    build_task = loop.build_task
    with monkeypatch.context() as patch:
        patch.setattr(loop, "build_task", lambda cfg: InterruptAt(build_task(cfg), step=4))
        interrupted = run_minrnn(tmp_path, "train", *REFERENCE)
    assert interrupted.exit_code == 128 + signal.SIGINT, interrupted.stderr
    stopped_dir = only_run_dir(tmp_path)
    stopped_at = torch.load(stopped_dir / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert 3 <= stopped_at < 6
    assert not (stopped_dir / "results.json").exists()

    run_ok(tmp_path, "train", *REFERENCE, "trainer.resume=auto")  # the newest last.pt of this model and task
    resumed_dir = newest_run_dir(tmp_path)
    assert resumed_dir != stopped_dir
    results = read_results(resumed_dir)
    assert results["resumed_from_step"] == stopped_at and results["steps"] == 6
    assert losses(resumed_dir, after_step=stopped_at) == losses(reference_dir, after_step=stopped_at)
    assert results["val_loss"] == read_results(reference_dir)["val_loss"]
    resumed = torch.load(resumed_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    uninterrupted = torch.load(reference_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in uninterrupted)


# ---- eval and generate from a checkpoint ----------------------------------------------------------------

def test_eval_of_the_best_checkpoint_gives_the_runs_final_metrics(reference, tmp_path):
    _, run_dir, _ = reference
    best = run_dir / "checkpoints" / "best.pt"
    result = run_ok(tmp_path, "eval", f"checkpoint={best}", "trainer.device=cpu")
    evaluated = read_results(only_run_dir(tmp_path, "evals"))
    trained = read_results(run_dir)
    assert evaluated["checkpoint"] == str(best)
    assert (evaluated["model"], evaluated["task"]) == ("mingru", "shakespeare")
    assert evaluated["steps"] == trained["best_step"]
    assert evaluated["val_loss"] == pytest.approx(trained["val_loss"], abs=1e-6)
    assert "val_loss" in result.stdout


def test_eval_latest_finds_the_newest_best_checkpoint(reference):
    folder, run_dir, _ = reference
    run_ok(folder, "eval")  # checkpoint=latest by default
    evaluated = read_results(newest_run_dir(folder, "evals"))
    assert Path(evaluated["checkpoint"]).resolve() == (run_dir / "checkpoints" / "best.pt").resolve()


def greedy_reference(checkpoint: Path, prompt: str, new_tokens: int) -> str:
    """Greedy decoding by re-running the whole sequence through the parallel forward at every token."""
    from minrnn_cli.models import build_lm
    from minrnn_cli.training.checkpoint import load_checkpoint

    payload = load_checkpoint(checkpoint)
    chars = payload["vocabulary"]["chars"]
    options = dict(payload["config"]["model"])
    model = build_lm(options.pop("name"), len(chars), **options)
    model.load_state_dict(payload["model"])
    model.eval()
    idx = torch.tensor([[chars.index(char) for char in prompt]])
    with torch.no_grad():
        for _ in range(new_tokens):
            logits, _ = model(idx)
            idx = torch.cat([idx, logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    return "".join(chars[i] for i in idx[0].tolist())


def test_generate_greedy_step_mode_matches_the_parallel_model(reference, tmp_path):
    _, run_dir, _ = reference
    best = run_dir / "checkpoints" / "best.pt"
    result = run_ok(tmp_path, "generate", f"checkpoint={best}", "prompt=ROMEO:", "max_new_tokens=24",
                    "temperature=0", "trainer.device=cpu")
    text = (only_run_dir(tmp_path, "samples") / "sample.txt").read_text()
    assert text == greedy_reference(best, "ROMEO:", 24)
    assert text in result.stdout


@pytest.mark.parametrize("temperature", ["1e-30", "1e30"])
def test_generate_at_extreme_temperatures_samples_a_valid_distribution(reference, tmp_path, temperature):
    """1e-30 overflowed logits / T to inf and softmax to NaN (a traceback); now it is the greedy choice."""
    _, run_dir, _ = reference
    best = run_dir / "checkpoints" / "best.pt"
    run_ok(tmp_path, "generate", f"checkpoint={best}", "prompt=ROMEO:", "max_new_tokens=12",
           f"temperature={temperature}", "trainer.device=cpu")
    text = (newest_run_dir(tmp_path, "samples") / "sample.txt").read_text()
    assert len(text) == 6 + 12
    if temperature == "1e-30":
        assert text == greedy_reference(best, "ROMEO:", 12)


def test_generate_streams_its_text_and_ctrl_c_keeps_what_was_shown(reference, tmp_path):
    """A long sample prints as it goes: text arrives while the process still runs, and after Ctrl-C the
    characters already shown stay, with exit code 130."""
    from cli_faults import sigint_as_in_a_terminal, subprocess_env

    _, run_dir, _ = reference
    command = [sys.executable, "-m", "minrnn_cli", "generate", f"checkpoint={run_dir / 'checkpoints' / 'best.pt'}",
               "prompt=ROMEO:", "max_new_tokens=1000000", "trainer.device=cpu"]
    process = subprocess.Popen(command, cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, preexec_fn=sigint_as_in_a_terminal)
    try:
        shown = b""  # the log line of the loaded checkpoint, then the prompt and the first sampled characters
        while (b"ROMEO:" not in shown or len(shown.split(b"ROMEO:", 1)[1]) < 40) and process.poll() is None:
            shown += process.stdout.read1(64)
        assert process.poll() is None and len(shown.split(b"ROMEO:", 1)[1]) >= 40
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, errors.decode()[-2000:]
    assert "Traceback" not in errors.decode()


def test_generate_sampling_is_seeded(reference, tmp_path):
    _, run_dir, _ = reference
    args = ["generate", f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}", "prompt=KING:", "max_new_tokens=30"]
    texts = []
    for seed in (1, 1, 2):
        run_ok(tmp_path, *args, f"seed={seed}")
        texts.append((newest_run_dir(tmp_path, "samples") / "sample.txt").read_text())
    assert all(text.startswith("KING:") and len(text) == 5 + 30 for text in texts)
    assert texts[0] == texts[1] != texts[2]


def test_generate_refuses_a_prompt_outside_the_vocabulary(reference, tmp_path):
    _, run_dir, _ = reference
    result = run_minrnn(tmp_path, "generate", f"checkpoint={run_dir / 'checkpoints' / 'best.pt'}", "prompt=naïve")
    assert_one_line_error(result, "ï")


# ---- checkpoints that cannot be used: one line, nothing overwritten ---------------------------------------

@pytest.mark.parametrize("content", [b"not a checkpoint at all", b"PK\x03\x04 truncated zip", "foreign"])
def test_unusable_checkpoint_is_one_line_and_nothing_is_overwritten(tmp_path, content):
    bad = tmp_path / "given" / "checkpoints" / "last.pt"
    bad.parent.mkdir(parents=True)
    if content == "foreign":
        torch.save({"weights": torch.zeros(2)}, bad)
    else:
        bad.write_bytes(content)
    before = digest(bad)
    for args in (["eval", f"checkpoint={bad}"], ["generate", f"checkpoint={bad}"],
                 ["train", *TINY_SHAKESPEARE, *TINY_TRAINER, f"trainer.resume={bad}"]):
        assert_one_line_error(run_minrnn(tmp_path, *args), str(bad))
    assert digest(bad) == before
    assert sorted(path.name for path in bad.parent.iterdir()) == ["last.pt"]
    assert not list(tmp_path.glob("outputs/runs/*/checkpoints"))


def test_checkpoint_of_another_model_is_one_line_and_left_alone(reference, tmp_path):
    _, run_dir, _ = reference
    last = run_dir / "checkpoints" / "last.pt"
    before = digest(last)
    result = run_minrnn(tmp_path, "train", *REFERENCE, "model.d_model=32", "trainer.max_steps=9",
                        f"trainer.resume={last}")
    assert_one_line_error(result, str(last), "model")
    assert digest(last) == before
    assert not list(tmp_path.glob("outputs/runs/*/checkpoints"))


# ---- W&B and run folders -----------------------------------------------------------------------------

def test_wandb_offline_run_is_written_in_the_run_folder_and_reads_back(tmp_path):
    run_ok(tmp_path, "train", *TINY_SHAKESPEARE, *TINY_TRAINER, "logger=wandb", "logger.mode=offline",
           "task.sample_chars=0")
    run_dir = only_run_dir(tmp_path)
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and list(offline_runs[0].glob("run-*.wandb"))
    wandb = Path(sys.executable).parent / "wandb"
    done = subprocess.run([str(wandb), "leet", "inspect", "--summary", "--json", str(offline_runs[0])],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    logged = json.loads(done.stdout)
    results = read_results(run_dir)
    assert logged["state"] == "finished" and logged["project"] == "minrnn"
    assert logged["config"]["model"]["name"] == "mingru" and logged["config"]["trainer"]["max_steps"] == 6
    assert logged["summary"]["val_loss"] == pytest.approx(results["val_loss"])
    assert logged["summary"]["best_step"] == results["best_step"]
    assert logged["summary"]["_step"] == 6


def test_two_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    import hydra.core.utils

    class SameSecond(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz).replace(year=2030, month=1, day=1, hour=12, minute=0, second=0)

    monkeypatch.setattr(hydra.core.utils, "datetime", SameSecond)
    for _ in range(2):
        run_ok(tmp_path, "train", *TINY_SHAKESPEARE, *TINY_TRAINER, "trainer.max_steps=1", "task.sample_chars=0")
    runs = sorted((tmp_path / "outputs" / "runs").iterdir())
    assert len(runs) == 2 and all(run.name.startswith("2030-01-01_12-00-00") for run in runs)
    assert all(read_results(run)["steps"] == 1 for run in runs)
    assert all(len(read_metrics(run)) == 2 for run in runs)  # one train line and one eval line each


def test_a_folder_that_holds_a_run_is_not_reused(reference, tmp_path):
    _, run_dir, _ = reference
    copy = tmp_path / "taken"
    shutil.copytree(run_dir, copy)
    before = {path.name: digest(path) for path in copy.iterdir() if path.is_file()}
    result = run_minrnn(tmp_path, "train", *REFERENCE, f"hydra.run.dir={copy}")
    assert_one_line_error(result, str(copy), "already")
    assert {name: digest(copy / name) for name in before} == before


# ---- the loop's parts -------------------------------------------------------------------------------------

def tiny_model():
    from minrnn_cli.models import build_lm

    return build_lm("mingru", 11, d_model=8, n_layers=1, conv=True, mlp=True)


def test_weight_decay_only_on_weight_matrices():
    from omegaconf import OmegaConf

    from minrnn_cli.training.optim import build_optimizer

    model = tiny_model()
    optimizer = build_optimizer(model, OmegaConf.create({"lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.99]}))
    decayed = {id(p) for group in optimizer.param_groups if group["weight_decay"] > 0 for p in group["params"]}
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(list(model.parameters()))
    for name, param in model.named_parameters():
        module = model.get_submodule(name.rpartition(".")[0])
        expected = isinstance(module, (torch.nn.Linear, torch.nn.Conv1d)) and name.endswith(".weight")
        assert (id(param) in decayed) == expected, name


def test_learning_rate_warms_up_then_decays_along_a_cosine():
    from minrnn_cli.training.optim import lr_factor

    assert [lr_factor(step, 4, 20, 0.1) for step in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 4, 20, 0.1) == pytest.approx(1.0)
    assert lr_factor(12, 4, 20, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the decay
    assert lr_factor(20, 4, 20, 0.1) == pytest.approx(0.1)
    assert lr_factor(50, 4, 20, 0.1) == pytest.approx(0.1)
    assert all(lr_factor(step, 0, 20, 1.0) == 1.0 for step in range(25))  # constant


def test_checkpoint_round_trip_and_refusals(tmp_path):
    from omegaconf import OmegaConf

    from minrnn_cli.training.checkpoint import load_checkpoint, save_checkpoint
    from minrnn_cli.training.optim import build_optimizer, build_scheduler

    model = tiny_model()
    optim_cfg = OmegaConf.create({"lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.99], "warmup_steps": 2,
                                  "min_lr_ratio": 0.1})
    optimizer = build_optimizer(model, optim_cfg)
    scheduler = build_scheduler(optimizer, optim_cfg, 10)
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler, step=3, best=None,
                    config=OmegaConf.create({"model": {"name": "mingru"}, "task": {"name": "shakespeare"}}),
                    vocabulary={"chars": ["a", "b"]})
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]
    payload = load_checkpoint(path)
    assert payload["step"] == 3 and payload["vocabulary"] == {"chars": ["a", "b"]}
    assert all(torch.equal(payload["model"][k], v) for k, v in model.state_dict().items())

    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match="not readable"):
        load_checkpoint(path)
    torch.save({**payload, "version": 99}, path)
    with pytest.raises(UserError, match="incompatible"):
        load_checkpoint(path)


def test_progress_without_a_terminal_logs_plain_lines(caplog):
    from rich.console import Console

    from minrnn_cli.tracking.progress import TrainingProgress

    console = Console(file=open("/dev/null", "w"), force_terminal=False)  # noqa: SIM115
    with caplog.at_level(logging.INFO, logger="minrnn"), TrainingProgress(100, 40, console=console) as progress:
        progress.update(50, 1.23456, 12345.6)
    assert [record.getMessage().split(" | ")[:3] for record in caplog.records] == [
        ["step 50/100", "loss 1.2346", "12,346 tok/s"]]
    assert "ETA" in caplog.records[0].getMessage()


def test_console_log_handler_is_plain_without_a_terminal(monkeypatch):
    import rich

    from minrnn_cli.tracking.console_log import console_handler

    monkeypatch.setattr(rich, "_console", rich.console.Console(file=open("/dev/null", "w"), force_terminal=False))  # noqa: SIM115
    handler = console_handler()
    assert type(handler) is logging.StreamHandler
    record = logging.LogRecord("minrnn", logging.INFO, __file__, 1, "step 1/2 | loss 3.0", None, None)
    assert handler.format(record).endswith("INFO step 1/2 | loss 3.0")
    monkeypatch.setattr(rich, "_console", rich.console.Console(file=open("/dev/null", "w"), force_terminal=True))  # noqa: SIM115
    assert type(console_handler()).__name__ == "RichHandler"
