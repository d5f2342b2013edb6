"""Data-parallel training under torchrun (2 CPU ranks on gloo): one update equals the single-process update
on the combined batch, one run folder per run, and a checkpoint resumes with another world size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from minrnn_cli.errors import UserError
from minrnn_cli.paths import config_dir
from minrnn_cli.tasks import build_task
from minrnn_cli.training import distributed
from minrnn_cli.training.checkpoint import load_checkpoint
from minrnn_cli.training.distributed import batch_seed
from minrnn_cli.training.loop import train
from minrnn_cli.training.model_setup import build_task_model
from minrnn_cli.training.optim import build_optimizer, build_scheduler

SEED = 7
# A constant learning rate (no warmup, no decay), so a run resumed with a larger max_steps follows the same path
TINY = ["task=selective_copying", "task.seq_len=16", "task.n_memorize=4", "task.batch_size=4",
        "task.eval_batches=1", "model.d_model=16", "model.n_layers=1", "optim.warmup_steps=0",
        "optim.min_lr_ratio=1.0", "trainer.eval_every=2", "trainer.log_every=1", f"trainer.seed={SEED}",
        "trainer.device=cpu", "trainer.precision=fp32", "logger=none"]  # fp32: the ranks' sums agree to float rounding
RANKS = 2


def quiet_env() -> dict:
    env = {key: value for key, value in os.environ.items()
           if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")}
    return {**env, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "COLUMNS": "120"}


@pytest.fixture(scope="module")
def torchrun_dir(tmp_path_factory) -> Path:
    """The working folder of one 2-rank `torchrun -m minrnn_cli train` run of 2 steps."""
    cwd = tmp_path_factory.mktemp("torchrun")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={RANKS}",
               "-m", "minrnn_cli", "train", *TINY, "trainer.max_steps=2"]
    done = subprocess.run(command, cwd=cwd, env=quiet_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return cwd


def compose_train(*overrides: str):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("train", overrides=[*TINY, *overrides])


def reference_parameters(steps_per_world_size: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
    """The model after single-process AdamW steps on the batch all ranks would draw together:
    [(number of steps, world size), ...] in order."""
    cfg = compose_train("trainer.max_steps=100")
    torch.manual_seed(SEED)
    task = build_task(cfg.task)
    model = build_task_model(cfg.model, task)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.trainer.max_steps)
    generator, step = torch.Generator(), 0
    for steps, world_size in steps_per_world_size:
        for _ in range(steps):
            batches = [task.train_batch(generator.manual_seed(batch_seed(SEED, rank, step)))
                       for rank in range(world_size)]
            inputs, targets = (torch.cat(parts) for parts in zip(*batches, strict=True))
            loss, _, _ = task.score(model(inputs)[0], targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
    return model.state_dict()


def assert_same_parameters(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=1e-4, atol=1e-6, msg=name)


def only_run_dir(cwd: Path) -> Path:
    runs = list((cwd / "outputs" / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def test_two_rank_update_equals_the_single_process_update_on_the_combined_batch(torchrun_dir):
    last = load_checkpoint(only_run_dir(torchrun_dir) / "checkpoints" / "last.pt")
    assert last["step"] == 2
    reference = reference_parameters([(2, RANKS)])
    assert_same_parameters(last["model"], reference)
    # and not the update on rank 0's batch alone: the ranks did draw different batches
    alone = reference_parameters([(2, 1)])
    assert any(not torch.allclose(alone[name], value) for name, value in reference.items())


def test_torchrun_writes_one_run_folder_with_rank_0_records(torchrun_dir):
    run_dir = only_run_dir(torchrun_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["world_size"] == RANKS and results["steps"] == 2
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 2]  # train at 1 and 2, eval at 2: written once, by rank 0
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert sorted(path.name for path in run_dir.glob("*.log")) == ["train.log"]


def test_a_two_rank_checkpoint_resumes_in_one_process(torchrun_dir, tmp_path):
    checkpoint = only_run_dir(torchrun_dir) / "checkpoints" / "last.pt"
    cfg = compose_train("trainer.max_steps=4", f"trainer.resume={checkpoint}")
    results = train(cfg, tmp_path, tmp_path, distributed.Replica()).results
    assert results["resumed_from_step"] == 2 and results["world_size"] == 1
    resumed = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert_same_parameters(resumed["model"], reference_parameters([(2, RANKS), (2, 1)]))


def test_batch_seeds_differ_between_ranks_and_steps():
    seeds = {batch_seed(SEED, rank, step) for rank in range(4) for step in range(100)}
    assert len(seeds) == 400
    assert batch_seed(SEED, 1, 5) == batch_seed(SEED, 1, 5)
    assert batch_seed(-1, 0, 0) >= 0


def test_nothing_changes_outside_torchrun(monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert distributed.torchrun_overrides(["model=mingru"], multirun=False) == []
    assert distributed.init_process_group() == distributed.Replica()


def test_a_sweep_under_torchrun_is_a_user_error(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="local_ddp"):
        distributed.torchrun_overrides(["trainer.seed=1,2"], multirun=True)
    with pytest.raises(UserError, match="local_ddp"):
        distributed.torchrun_overrides(["hparams_search=shakespeare_optuna"], multirun=False)
