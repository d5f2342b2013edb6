"""The `minrnn` command line: help, completion, config printing, Hydra's flags, every shipped config
composing, and one-line errors for user mistakes. Runs that train are in test_training.py."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import TINY_SHAKESPEARE, TINY_TRAINER, run_minrnn, run_ok

from minrnn_cli.cli import complete_overrides, config_groups
from minrnn_cli.paths import config_dir

HEAVY_MODULES = ("torch", "wandb", "datasets", "hydra", "omegaconf")
MODELS = ("mingru", "minlstm", "gru", "lstm", "gru_loop", "lstm_loop", "mamba", "transformer")


def assert_one_line_error(result, *needles: str) -> None:
    """A user mistake: non-zero exit, exactly one line on stderr naming the problem, no traceback."""
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# ---- help and completion ---------------------------------------------------------------------------

HELP_WITHOUT_TORCH = """
import sys
from minrnn_cli.cli import main
sys.argv = ["minrnn", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print("HEAVY:" + ",".join(name for name in {heavy!r} if name in sys.modules))
"""


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["generate", "--help"], ["bench", "--help"],
                                  ["report", "--help"]])
def test_help_imports_no_torch_hydra_wandb_or_datasets(args):
    code = HELP_WITHOUT_TORCH.format(heavy=HEAVY_MODULES)
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Usage: minrnn" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "HEAVY:"


def test_top_level_help_lists_every_command(tmp_path):
    result = run_ok(tmp_path, "--help")
    for command in ("train", "eval", "generate", "config", "bench"):
        assert command in result.stdout


def test_completion_offers_groups_and_their_options():
    assert "model=" in complete_overrides("mo")
    assert complete_overrides("model=min") == ["model=mingru", "model=minlstm"]
    assert {"task=selective_copying", "task=shakespeare"} <= set(complete_overrides("task="))
    assert complete_overrides("task=shake") == ["task=shakespeare"]
    assert "+experiment=paper_shakespeare" in complete_overrides("+experiment=paper")
    assert "hydra" not in config_groups()


# ---- config, --cfg, -cd ----------------------------------------------------------------------------

def test_config_prints_the_composed_config_and_writes_nothing(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    work = tmp_path / "work"
    work.mkdir()
    result = run_ok(work, "config", "model=minlstm", "trainer.max_steps=77")
    assert "name: minlstm" in result.stdout
    assert "max_steps: 77" in result.stdout
    assert "forget_bias: 3.0" in result.stdout
    assert list(work.iterdir()) == []
    assert list(scratch.iterdir()) == []  # the temporary Hydra output folder is gone too


def test_config_of_another_command(tmp_path):
    result = run_ok(tmp_path, "config", "--config-name", "generate", "prompt=ROMEO:")
    assert "prompt: 'ROMEO:'" in result.stdout or "prompt: ROMEO:" in result.stdout
    assert "max_new_tokens: 500" in result.stdout


def test_hydra_cfg_job_passes_through_and_runs_nothing(tmp_path):
    result = run_ok(tmp_path, "train", "--cfg", "job", "model=gru", "trainer.max_steps=5")
    assert "name: gru" in result.stdout
    assert "max_steps: 5" in result.stdout
    assert not (tmp_path / "outputs").exists()


def test_hydra_info_with_an_override_after_it(tmp_path):
    result = run_ok(tmp_path, "train", "--info", "model=minlstm")
    assert "Config search path" in result.stdout
    assert not (tmp_path / "outputs").exists()


def test_config_dir_adds_user_configs(tmp_path):
    user = tmp_path / "my_conf"
    (user / "experiment").mkdir(parents=True)
    (user / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: minlstm\ntrainer:\n  max_steps: 4321\n"
    )
    result = run_ok(tmp_path, "config", "-cd", str(user), "experiment=mine")
    assert "max_steps: 4321" in result.stdout
    assert "name: minlstm" in result.stdout
    info = run_ok(tmp_path, "train", "--info", "searchpath", "-cd", str(user))
    assert str(user) in info.stdout


# ---- every shipped config composes ------------------------------------------------------------------

def compose(config_name: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides)


def test_config_groups_hold_every_model_and_both_tasks():
    groups = config_groups()
    assert sorted(groups["model"]) == sorted(MODELS)
    assert {"shakespeare", "selective_copying"} <= set(groups["task"])


@pytest.mark.parametrize("model", MODELS)
def test_every_model_config_builds_its_model_on_every_task(model):
    from omegaconf import OmegaConf

    from minrnn_cli.models import TokenHead
    from minrnn_cli.training.model_setup import build_task_model, check_model_config
    from minrnn_cli.training.settings import check_train_config

    for task in config_groups()["task"]:
        cfg = compose("train", [f"model={model}", f"task={task}"])
        OmegaConf.to_container(cfg, resolve=True)
        check_train_config(cfg)
        check_model_config(cfg.model)
        assert cfg.model.name == model and cfg.task.name == task
    tiny = OmegaConf.merge(cfg.model, {"d_model": 8, "n_layers": 1})
    assert build_task_model(tiny, SimpleNamespace(head=TokenHead(16))) is not None
    # the shipped options are all accepted
    assert build_task_model(cfg.model, SimpleNamespace(head=TokenHead(65))) is not None


@pytest.mark.parametrize("experiment", sorted(path.stem for path in (config_dir() / "experiment").glob("*.yaml")))
def test_every_experiment_composes_and_passes_the_checks(experiment):
    from omegaconf import OmegaConf

    from minrnn_cli.models import TokenHead
    from minrnn_cli.training.model_setup import build_task_model
    from minrnn_cli.training.settings import check_train_config

    cfg = compose("train", [f"experiment={experiment}"])
    OmegaConf.to_container(cfg, resolve=True)
    check_train_config(cfg)
    assert build_task_model(cfg.model, SimpleNamespace(head=TokenHead(cfg.task.get("vocab_size") or 65))) is not None


def test_paper_experiments_hold_the_paper_settings():
    shakespeare = compose("train", ["experiment=paper_shakespeare"])
    assert (shakespeare.model.n_layers, shakespeare.model.d_model, shakespeare.model.dropout) == (3, 384, 0.2)
    assert shakespeare.model.conv and shakespeare.model.mlp
    assert (shakespeare.optim.lr, shakespeare.task.batch_size, shakespeare.trainer.max_steps) == (1e-3, 64, 5000)
    assert shakespeare.trainer.grad_clip == 0.25
    copying = compose("train", ["experiment=paper_selective_copying"])
    assert (copying.task.seq_len, copying.model.n_layers, copying.model.d_model) == (4096, 3, 64)
    assert copying.model.expansion == 6 and not copying.model.conv and not copying.model.mlp


@pytest.mark.parametrize(("config_name", "key"), [("eval", "checkpoint"), ("generate", "prompt"), ("bench", "models")])
def test_other_command_configs_compose(config_name, key):
    from omegaconf import OmegaConf

    assert key in OmegaConf.to_container(compose(config_name, []), resolve=True)


def test_hparams_search_configs_compose_when_their_sweeper_is_installed():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    paths = sorted((config_dir() / "hparams_search").glob("*.yaml"))
    assert paths
    for path in paths:
        cfg = compose("train", [f"hparams_search={path.stem}"])
        assert cfg.optimize_metric in ("val_loss", "val_accuracy")  # what the Optuna sweeper optimises


# ---- user mistakes: one line, non-zero exit, no traceback --------------------------------------------

@pytest.mark.parametrize(("override", "group"), [("model=nope", "model"), ("task=nope", "task"),
                                                 ("model=mingru,nope", "model")])
def test_unknown_model_or_task_names_the_valid_ones(tmp_path, override, group):
    result = run_minrnn(tmp_path, "train", "-m" if "," in override else "--", override)
    assert_one_line_error(result, f"unknown {group} 'nope'", "mingru" if group == "model" else "shakespeare")
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(("override", "needle"), [
    ("trainer.max_steps=0", "trainer.max_steps=0"),
    ("trainer.max_steps=abc", "trainer.max_steps='abc'"),
    ("trainer.eval_every=-1", "trainer.eval_every=-1"),
    ("optim.lr=0", "optim.lr=0"),
    ("optim.lr=-0.1", "optim.lr=-0.1"),
    ("task.seq_len=0", "task.seq_len=0"),
    ("model.dropout=1.0", "model.dropout=1.0"),
    ("model.dropout=-0.1", "model.dropout=-0.1"),
    ("trainer.precision=fp8", "trainer.precision='fp8'"),
    ("trainer.device=tpu", "trainer.device='tpu'"),
])
def test_invalid_values_are_one_line_errors(tmp_path, override, needle):
    result = run_minrnn(tmp_path, "train", *TINY_SHAKESPEARE, *TINY_TRAINER, override)
    assert_one_line_error(result, needle)
    assert not list(tmp_path.glob("outputs/runs/*/checkpoints"))


def test_cuda_device_without_cuda_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run_minrnn(tmp_path, "train", *TINY_SHAKESPEARE, *TINY_TRAINER, "trainer.device=cuda")
    assert_one_line_error(result, "trainer.device=cuda", "CUDA is not available")


def test_missing_data_file_names_the_path(tmp_path):
    missing = tmp_path / "no_such_text.txt"
    result = run_minrnn(tmp_path, "train", *TINY_SHAKESPEARE, *TINY_TRAINER, f"task.data_files={missing}")
    assert_one_line_error(result, str(missing))


def test_missing_checkpoint_is_one_line(tmp_path):
    missing = tmp_path / "nowhere.pt"
    for args in (["eval", f"checkpoint={missing}"], ["generate", f"checkpoint={missing}"]):
        assert_one_line_error(run_minrnn(tmp_path, *args), str(missing))


def test_checkpoint_latest_without_any_run_is_one_line(tmp_path):
    assert_one_line_error(run_minrnn(tmp_path, "eval"), "checkpoint=latest")


def test_an_error_is_one_line_in_a_real_process_too(tmp_path):
    """Outside the test runner: Hydra's own error printing and Python's exit path included."""
    minrnn = Path(sys.executable).parent / "minrnn"
    done = subprocess.run([str(minrnn), "train", "optim.lr=0", "logger=none"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: optim.lr=0 is invalid"), done.stderr


# ---- sweeps ------------------------------------------------------------------------------------------

def test_multirun_gives_one_folder_per_job_and_a_summary_of_every_job(tmp_path):
    import csv

    result = run_ok(tmp_path, "train", "-m", "model=mingru,minlstm", *TINY_SHAKESPEARE, *TINY_TRAINER,
                    "trainer.max_steps=2", "task.sample_chars=0")
    sweeps = list((tmp_path / "outputs" / "multirun").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(path.name for path in sweeps[0].iterdir() if path.is_dir())
    assert jobs == ["0", "1"]
    assert all((sweeps[0] / job / "results.json").is_file() for job in jobs)
    with (sweeps[0] / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["job"], row["overrides"], row["model"]) for row in rows] == [
        ("0", "model=mingru", "mingru"), ("1", "model=minlstm", "minlstm")]
    assert all(float(row["val_loss"]) > 0 and row["steps"] == "2" for row in rows)
    assert "model=minlstm" in result.stdout and "summary.csv" in result.stdout
