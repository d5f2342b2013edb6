"""The suite's parameter-matched presets (conf/experiment/suite_<table>/<model>.yaml) and the sweep commands of
docs/RESULTS.md's "The suite": every model of a table within 10% of the table's minGRU in parameters, the same
task, optimiser and trainer settings for every model of a table, minGRU's files the CPU presets they stand
for, and every command of the section composes."""

from __future__ import annotations

import importlib.util
import re
import shlex

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from minrnn_cli.models import count_params
from minrnn_cli.paths import config_dir
from minrnn_cli.tasks import build_task
from minrnn_cli.training.model_setup import build_task_model, check_model_config
from minrnn_cli.training.settings import check_train_config

EXPERIMENTS = config_dir() / "experiment"
TABLES = sorted(path.name for path in EXPERIMENTS.glob("suite_*") if path.is_dir())
CHOMSKY = ["parity_check", "even_pairs", "cycle_nav", "majority", "majority_count", "missing_duplicate", "bucket_sort"]
SHARED = ("task", "optim", "trainer")  # the groups every model of a table has in common
RESULTS = config_dir().parent / "docs" / "RESULTS.md"


def composed(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=["logger=none", *overrides])


def models_of(table: str) -> list[str]:
    return sorted(path.stem for path in (EXPERIMENTS / table).glob("*.yaml"))


def tasks_of(table: str) -> list[str | None]:
    return CHOMSKY if table == "suite_chomsky" else [None]


def params(table: str, model: str, task: str | None) -> int:
    cfg = composed(f"experiment={table}/{model}", *([f"task={task}"] if task else []))
    check_train_config(cfg)
    return count_params(build_task_model(cfg.model, build_task({**cfg.task, "eval_batches": 1})))


def test_the_suite_has_its_tables_and_models():
    assert TABLES == ["suite_chomsky", "suite_listops", "suite_selective_copying", "suite_shakespeare"]
    six = ["gru", "lstm", "mamba", "mingru", "minlstm", "transformer"]
    assert models_of("suite_shakespeare") == models_of("suite_selective_copying") == six
    assert models_of("suite_chomsky") == models_of("suite_listops") == sorted(set(six) - {"gru"})


@pytest.mark.parametrize("table", TABLES)
def test_every_model_of_a_table_is_within_ten_percent_of_its_mingru_in_parameters(table):
    for task in tasks_of(table):
        reference = params(table, "mingru", task)
        counts = {model: params(table, model, task) for model in models_of(table)}
        off = {model: round(count / reference, 3) for model, count in counts.items()
               if abs(count / reference - 1) > 0.10}
        assert not off, f"{table} on {task or 'its task'}: minGRU has {reference:,}; outside 10%: {off}"


@pytest.mark.parametrize("table", TABLES)
def test_the_models_of_a_table_differ_only_in_their_model_settings(table):
    configs = {model: composed(f"experiment={table}/{model}") for model in models_of(table)}
    reference = configs["mingru"]
    for model, cfg in configs.items():
        assert cfg.model.name == model
        for group in SHARED:
            assert cfg[group] == reference[group], f"{table}/{model}: {group} differs from minGRU's"
        assert set(cfg) == set(reference)


@pytest.mark.parametrize(("table", "preset", "changed"), [
    ("suite_selective_copying", ["experiment=cpu_selective_copying"], {}),
    ("suite_listops", ["experiment=cpu_listops"], {}),
    ("suite_chomsky", ["experiment=cpu_parity_check"], {}),
    # the default job, evaluated every 100 steps instead of 250 (steps to a target), without its closing sample
    ("suite_shakespeare", [], {"trainer": {"eval_every": 100}, "task": {"sample_chars": 0}}),
])
def test_each_tables_mingru_is_the_cpu_preset_it_stands_for(table, preset, changed):
    expected = OmegaConf.merge(composed(*preset), changed)
    assert composed(f"experiment={table}/mingru") == expected


# ---- the commands of docs/RESULTS.md's "The suite" -------------------------------------------------------------


def suite_commands() -> list[list[str]]:
    """The `minrnn train -m ...` commands of the section (a command may continue over lines ending in `\\`)."""
    section = RESULTS.read_text().split("\n## The suite\n", 1)[1].split("\n## ", 1)[0]
    text = section.replace("\\\n", "")  # a line continued with a backslash, as the shell joins it
    commands = [shlex.split(line.split("#", 1)[0]) for line in text.splitlines()
                if re.match(r"\s*(OMP_NUM_THREADS=\d+ )?minrnn train", line)]
    return [command[command.index("train") + 1:] for command in commands]


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """Enough jobs to compose every value of every swept key once: the first values of all keys, then each other
    value of each key with the other keys at their first."""
    fixed = [override for override in overrides if override != "-m"]
    swept = {i: override.split("=", 1) for i, override in enumerate(fixed) if "," in override.split("=", 1)[1]}
    first = [f"{swept[i][0]}={swept[i][1].split(',')[0]}" if i in swept else override
             for i, override in enumerate(fixed)]
    jobs = [first]
    for i, (key, values) in swept.items():
        jobs += [[*first[:i], f"{key}={value}", *first[i + 1:]] for value in values.split(",")[1:]]
    return jobs


def test_the_suite_section_has_a_named_sweep_per_table_and_the_paper_sweeps():
    commands = suite_commands()
    cpu = [command for command in commands if not any(o.startswith("experiment=paper_") for o in command)]
    gpu = [command for command in commands if command not in cpu]
    for table in TABLES:
        assert any(f"experiment={table}/mingru" in " ".join(command) for command in cpu), table
    assert len(gpu) >= len(TABLES)
    for command in commands:
        assert command[0] == "-m" and any(o.startswith("hydra.sweep.dir=") for o in command), command
    folders = [next(o for o in command if o.startswith("hydra.sweep.dir=")) for command in commands]
    assert len(set(folders)) == len(folders)  # one folder per sweep: a rerun continues only its own


@pytest.mark.parametrize("command", suite_commands(), ids=lambda command: " ".join(command)[:80])
def test_every_suite_command_composes(command):
    for job in sweep_jobs(command):
        cfg = composed(*(override for override in job if not override.startswith(("hydra.", "hydra/"))))
        check_train_config(cfg)
        check_model_config(cfg.model)


def test_the_command_line_takes_a_suite_preset_but_not_a_base_part():
    from minrnn_cli.errors import UserError
    from minrnn_cli.hydra_app.launch import check_group_choices

    check_group_choices(["experiment=suite_chomsky/mingru,suite_listops/lstm", "model=gru"], None)  # a sweep too
    for wrong in ("experiment=suite_chomsky/gru", "experiment=base/cpu_chomsky", "experiment=suite_nope/mingru"):
        with pytest.raises(UserError, match=f"unknown experiment '{wrong.split('=')[1]}'"):
            check_group_choices([wrong], None)


def test_the_suite_script_runs_the_documented_commands():
    """scripts/run_suite.py (every table in turn, resumable) runs exactly the sweeps docs/RESULTS.md shows."""
    spec = importlib.util.spec_from_file_location("run_suite", RESULTS.parents[1] / "scripts" / "run_suite.py")
    run_suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_suite)
    documented = [command for command in suite_commands()
                  if not any(o.startswith("experiment=paper_") for o in command)]
    scripted = [run_suite.command(table)[2:] for table in run_suite.TABLES]
    assert sorted(scripted) == sorted(documented)
