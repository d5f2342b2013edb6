"""Sweeps through Hydra's plugins: joblib (local parallel jobs), submitit (local DDP jobs; SLURM job scripts),
Optuna (hparams_search/*.yaml). Each test skips when its plugin is not installed (pip install -e ".[sweeps,optuna]")."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from minrnn_cli.paths import config_dir

TINY = ["task=selective_copying", "task.seq_len=16", "task.n_memorize=4", "task.batch_size=4",
        "task.eval_batches=1", "model.d_model=16", "model.n_layers=1", "optim.warmup_steps=0",
        "trainer.max_steps=2", "trainer.eval_every=2", "trainer.device=cpu"]


def minrnn_train(cwd: Path, *arguments: str, env: dict | None = None, timeout: int = 240):
    base = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return subprocess.run([sys.executable, "-m", "minrnn_cli", "train", *arguments], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**base, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1",
                                                           "COLUMNS": "200", **(env or {})})


def succeeded(done) -> None:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def only_sweep_dir(cwd: Path) -> Path:
    sweeps = list((cwd / "outputs" / "multirun").iterdir())
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def job_results(sweep_dir: Path) -> dict[str, dict]:
    return {path.parent.name: json.loads(path.read_text()) for path in sweep_dir.glob("*/results.json")}


@pytest.mark.slow
def test_joblib_runs_the_jobs_of_a_sweep_in_parallel_in_one_wandb_group(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    done = minrnn_train(tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "trainer.seed=1,2",
                        "logger.mode=offline", *TINY, env={"WANDB_MODE": "offline"})
    succeeded(done)
    sweep_dir = only_sweep_dir(tmp_path)
    assert sorted(job_results(sweep_dir)) == ["0", "1"]
    with (sweep_dir / "summary.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 2
    # the group name is stored as text in each offline run's record
    for job in ("0", "1"):
        (record,) = (sweep_dir / job / "wandb").glob("offline-run-*/run-*.wandb")
        assert sweep_dir.name.encode() in record.read_bytes()


@pytest.mark.slow
def test_submitit_local_runs_a_two_task_ddp_job(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    succeeded(minrnn_train(tmp_path, "-m", "hydra/launcher=local_ddp", "logger=none", *TINY))
    sweep_dir = only_sweep_dir(tmp_path)
    results = job_results(sweep_dir)
    assert list(results) == ["0"] and results["0"]["world_size"] == 2
    steps = [json.loads(line)["step"] for line in (sweep_dir / "0" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 2]  # one train and one eval record: rank 0 writes, rank 1 does not
    assert len(list(sweep_dir.glob(".submitit/*/*_1_log.out"))) == 1  # the second task ran


def test_slurm_preset_asks_for_one_task_per_gpu(tmp_path):
    """Without a cluster: a stand-in sbatch keeps the job script submitit writes, and refuses it (submitit
    also looks for srun)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_ins = {"sbatch": f'cp "$1" {tmp_path}/job.sh\necho "sbatch: error: no cluster here" >&2', "srun": ""}
    for name, body in stand_ins.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    done = minrnn_train(tmp_path, "-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                        "hydra.launcher.gpus_per_node=4", "hydra.launcher.timeout_min=30", "logger=none", *TINY,
                        env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert done.returncode != 0
    script = (tmp_path / "job.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --time=30"):
        assert line in script


@pytest.mark.slow
def test_optuna_search_optimises_the_metric_the_jobs_return(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    succeeded(minrnn_train(tmp_path, "hparams_search=selective_copying_optuna", "hydra.sweeper.n_trials=2",
                           "logger=none", *TINY))
    sweep_dir = only_sweep_dir(tmp_path)
    accuracies = [results["val_accuracy"] for results in job_results(sweep_dir).values()]
    assert len(accuracies) == 2
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(accuracies)  # direction: maximize
    assert set(best["best_params"]) == {"optim.lr", "model.expansion"}


@pytest.mark.parametrize("search", sorted(path.stem for path in (config_dir() / "hparams_search").glob("*.yaml")))
def test_every_hparams_search_config_composes_with_a_metric_its_task_reports(search):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"hparams_search={search}"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.mode == RunMode.MULTIRUN
    assert cfg.hydra.sweeper.direction in ("minimize", "maximize")
    assert cfg.optimize_metric.startswith("val_") and cfg.hydra.sweeper.params


def test_multirun_jobs_default_to_the_sweep_folder_as_wandb_group(tmp_path):
    from minrnn_cli.hydra_app.context import sweep_group

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        multirun = compose("train", overrides=["hydra.mode=MULTIRUN", f"hydra.sweep.dir={tmp_path}/sweep-7"],
                           return_hydra_config=True)
        single = compose("train", overrides=["hydra.mode=RUN"], return_hydra_config=True)
    try:
        HydraConfig.instance().set_config(multirun)
        assert sweep_group() == "sweep-7"
        HydraConfig.instance().set_config(single)
        assert sweep_group() is None
    finally:
        HydraConfig.instance().cfg = None


def test_a_continued_sweep_job_keeps_continues_or_refuses_what_its_folder_holds(tmp_path):
    """minrnn_cli.training.sweep_jobs on fake job folders: only a run of this job's own config is kept (finished)
    or continued (its last.pt), a run stopped before its first checkpoint starts afresh, another config's is
    refused and left as it is."""
    import torch
    from omegaconf import OmegaConf

    from minrnn_cli.errors import UserError
    from minrnn_cli.training.checkpoint import FORMAT, REQUIRED_KEYS, VERSION
    from minrnn_cli.training.sweep_jobs import earlier_job

    config = {"model": {"name": "mingru"}, "task": {"name": "x"}, "outputs_dir": "outputs",
              "trainer": {"seed": 1, "max_steps": 4, "eval_every": 2, "resume": None}}

    def job(name: str, saved: dict | None, finished: bool = False) -> Path:
        run_dir = tmp_path / name
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "metrics.jsonl").write_text('{"step": 1, "train_loss": 2.0}\n')
        (run_dir / "error.txt").write_text("error: stopped by SIGTERM at step 2\n")
        if saved is not None:
            torch.save({"format": FORMAT, "version": VERSION, **dict.fromkeys(REQUIRED_KEYS, {}), "step": 2,
                        "config": saved}, run_dir / "checkpoints" / "last.pt")
        if finished:
            (run_dir / "results.json").write_text('{"steps": 4}\n')
        return run_dir

    ours = OmegaConf.create({**config, "outputs_dir": "elsewhere", "trainer": {**config["trainer"], "eval_every": 1}})
    assert earlier_job(tmp_path / "empty", ours) is None
    assert earlier_job(job("finished", config, finished=True), ours).results == {"steps": 4}
    unfinished = job("unfinished", config)
    assert earlier_job(unfinished, ours).checkpoint == unfinished / "checkpoints" / "last.pt"
    assert not (unfinished / "error.txt").exists() and (unfinished / "metrics.jsonl").exists()
    early = job("early", None)
    assert earlier_job(early, ours) is None and not (early / "metrics.jsonl").exists()

    other_seed = job("other_seed", {**config, "trainer": {**config["trainer"], "seed": 2}})
    with pytest.raises(UserError, match=r"another config \(trainer\.seed: 2 there, 1 here\)"):
        earlier_job(other_seed, ours)
    assert (other_seed / "error.txt").exists()  # left as it is
    longer = OmegaConf.merge(ours, {"trainer": {"max_steps": 8}})
    assert earlier_job(job("resumable", config), longer).checkpoint is not None  # a longer run continues it
    with pytest.raises(UserError, match=r"trainer\.max_steps: 4 there, 8 here"):
        earlier_job(job("done", config, finished=True), longer)
    without_checkpoint = job("without_checkpoint", None, finished=True)
    with pytest.raises(UserError, match="results.json names no config and without its checkpoints/last.pt"):
        earlier_job(without_checkpoint, ours)
    assert (without_checkpoint / "metrics.jsonl").exists()  # left as it is

    # a finished run's results.json names its config: kept after its checkpoints were deleted, unless another's
    for name, saved in (("deleted_checkpoints", config), ("deleted_other", {**config, "task": {"name": "y"}})):
        run_dir = job(name, None)
        (run_dir / "checkpoints").rmdir()
        (run_dir / "results.json").write_text(json.dumps({"steps": 4, "config": saved}))
    assert earlier_job(tmp_path / "deleted_checkpoints", ours).results == {"steps": 4, "config": config}
    with pytest.raises(UserError, match=r"another config \(task\.name: 'y' there, 'x' here\)"):
        earlier_job(tmp_path / "deleted_other", ours)
