"""Help and log lines as a person reads them: every command's `--help` rendered by a real process (a terminal
80 columns wide, a pipe, Typer without rich), its example verbatim on one line and runnable, the config groups
it takes; and every log line of minrnn, Hydra and W&B in one format, W&B's own lines replaced by ours."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_SHAKESPEARE, TINY_TRAINER, run_ok

from minrnn_cli.cli import BENCH_KEYS, COMMANDS, REPORT_EXAMPLE, complete_overrides
from minrnn_cli.paths import config_dir, config_groups

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {**{command.name: command.example for command in COMMANDS}, "report": REPORT_EXAMPLE}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) .")
WIDTH_ENV = ("COLUMNS", "LINES", "TERMINAL_WIDTH", "FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "TYPER_USE_RICH",
             "_TYPER_FORCE_DISABLE_TERMINAL", "WANDB_SILENT")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what changes how help is laid out (conftest sets COLUMNS=200) or silences W&B."""
    env = {name: value for name, value in os.environ.items() if name not in WIDTH_ENV}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def in_terminal(args: list[str], cwd: Path, **env: str) -> str:
    """What `python -m minrnn_cli ARGS` shows on a terminal (a pseudo-terminal), colours stripped."""
    pty = pytest.importorskip("pty")
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "minrnn_cli", *args], cwd=cwd, env=clean_env(**env),
                               stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert process.wait(timeout=300) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")


def piped(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "minrnn_cli", *args], cwd=cwd, env=clean_env(**env),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


HELP_MODES = {
    "terminal-80-columns": lambda args, cwd: in_terminal(args, cwd, COLUMNS="80"),
    "pipe": lambda args, cwd: piped(args, cwd).stdout,
    "no-rich": lambda args, cwd: piped(args, cwd, TYPER_USE_RICH="0").stdout,
}


# ---- --help ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", HELP_MODES)
@pytest.mark.parametrize("command", EXAMPLES)
def test_command_help_as_printed(command, mode, tmp_path):
    text = HELP_MODES[mode]([command, "--help"], tmp_path)
    lines = text.splitlines()
    assert f"Usage: minrnn {command}" in text
    assert any(f"Example: {EXAMPLES[command]}" in line for line in lines), text  # verbatim, on one line
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert "<bool>" not in text  # flags show no value
    assert "base" not in text and "hydra" not in text.replace("Hydra", "")
    words = set(re.findall(r"[\w/]+", text))
    spec = next((spec for spec in COMMANDS if spec.name == command), None)
    for group in spec.groups if spec else ():
        assert group in words and set(config_groups()[group]) <= words, (group, text)
    if command == "bench":
        assert set(config_groups()["model"]) <= words and set(BENCH_KEYS) <= words, text
    assert not list(tmp_path.iterdir()), "help wrote files"


def test_top_level_help_shows_flags_as_flags(tmp_path):
    for mode in HELP_MODES.values():
        text = mode(["--help"], tmp_path)
        row = next(line for line in text.splitlines() if "--install-completion" in line)
        assert "<" not in row and "bool" not in row.lower(), row
        assert "<bool>" not in text


def test_overrides_examples_are_the_commands_own_keys(tmp_path):
    """The overrides argument's example for each command composes with that command's config."""
    from minrnn_cli.benchmarking.config import BenchConfig

    bench_keys = {field.name for field in dataclasses.fields(BenchConfig)}
    for command in COMMANDS:
        overrides = shlex.split(command.overrides_example)
        run_ok(tmp_path, "config", "--config-name", command.launch.config_name, *overrides)
        if command.name == "bench":
            assert {override.split("=")[0] for override in overrides} <= bench_keys
    assert set(BENCH_KEYS) <= bench_keys


def test_bench_models_are_the_model_configs():
    from minrnn_cli.models import MODELS

    assert config_groups()["model"] == sorted(MODELS)


def test_readme_commands_block_shows_every_example():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("### Commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    for example in EXAMPLES.values():
        assert example in block.splitlines() or any(line.startswith(example + " ") for line in block.splitlines())


# ---- the examples run --------------------------------------------------------------------------------

def example_args(command: str, *tiny: str) -> list[str]:
    words = shlex.split(EXAMPLES[command])
    assert words[:2] == ["minrnn", command]
    return [*words[1:], *tiny]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A folder where the train example ran (tiny): the checkpoint that eval, generate and report read."""
    folder = tmp_path_factory.mktemp("examples")
    run_ok(folder, *example_args("train", *TINY_SHAKESPEARE, *TINY_TRAINER))
    return folder


def test_train_example_runs(trained):
    assert list(trained.rglob("checkpoints/best.pt"))


@pytest.mark.parametrize("command, tiny", [
    ("eval", []),
    ("generate", ["max_new_tokens=8"]),
    ("report", []),
])
def test_example_that_reads_a_checkpoint_runs(command, tiny, trained):
    run_ok(trained, *example_args(command, *tiny))


def test_config_example_runs(tmp_path):
    assert "name: minlstm" in run_ok(tmp_path, *example_args("config")).stdout


def test_bench_example_runs(tmp_path):
    run_ok(tmp_path, *example_args("bench", "device=cpu", "batch_size=2", "d_model=16", "warmup=0", "repeats=1",
                                   "min_repeats=1", "decode_tokens=2", "memory=false", "plot=false"))


# ---- completion and Hydra's help: no internal groups -------------------------------------------------

def test_completion_offers_no_internal_group():
    offered = complete_overrides("") + [option for group in config_groups() for option in
                                        complete_overrides(f"{group}=")]
    assert offered and not [item for item in offered if "base" in item or "hydra" in item]
    assert (config_dir() / "experiment" / "base").is_dir()  # there is one to hide


def test_completion_offers_what_each_command_takes():
    for command in COMMANDS:
        if command.name != "bench":
            assert complete_overrides("", command.name) == [f"{group}=" for group in sorted(command.groups)]
    assert complete_overrides("", "eval") == ["trainer="] and complete_overrides("model=", "eval") == []
    bench = complete_overrides("", "bench")
    assert "models=" in bench and "model=" not in bench and complete_overrides("seq", "bench") == ["seq_len="]


def test_hydra_help_lists_no_base_folder(tmp_path):
    text = piped(["train", "--", "--help"], tmp_path).stdout
    groups = [line.split(":")[0] for line in text.split("== Config ==")[0].splitlines() if ": " in line]
    assert set(groups) == set(config_groups()), groups


# ---- log lines ---------------------------------------------------------------------------------------

def test_a_sweep_prints_one_log_format_and_our_wandb_line(tmp_path):
    """Hydra's sweep lines, minrnn's and W&B's (offline, not silenced from outside): `HH:MM:SS LEVEL message`."""
    done = piped(["train", "-m", "model=mingru,minlstm", *TINY_SHAKESPEARE, *TINY_TRAINER, "logger=wandb",
                  "logger.mode=offline", "trainer.max_steps=2", "trainer.eval_every=2", "trainer.log_every=1"],
                 tmp_path, WANDB_DIR=str(tmp_path / "wandb-dir"))
    lines = done.stdout.splitlines() + done.stderr.splitlines()
    assert not [line for line in lines if line.lower().startswith("wandb:")], lines
    logged = [line for line in lines if re.match(r"^\[?\d\d[:/-]", line)]  # whatever starts with a time or date
    assert logged and all(LOG_LINE.match(line) for line in logged), logged
    assert any("Launching 2 jobs" in line for line in logged), logged  # Hydra's own line, in our format
    ours = [line for line in logged if "W&B" in line]
    assert len(ours) == 2, ours  # one per job
    for line in ours:
        assert "logger.mode=online" in line and "logger=none" in line, line
        synced = re.search(r"`wandb sync (\S+)`", line)
        assert synced and (tmp_path / synced[1]).is_dir() and "offline-run-" in synced[1], line


def test_log_lines_on_a_terminal_have_the_same_format(tmp_path):
    text = in_terminal(["train", *TINY_SHAKESPEARE, *TINY_TRAINER, "trainer.max_steps=2", "trainer.eval_every=2",
                        "trainer.log_every=1"], tmp_path, COLUMNS="200")
    logged = [line for line in text.splitlines() if re.match(r"^\[?\d\d[:/-]", line)]
    assert logged and all(LOG_LINE.match(line) for line in logged), logged


def test_run_file_log_has_the_format_with_a_date(trained):
    log_file = next(trained.rglob("train.log"))
    lines = log_file.read_text().splitlines()
    assert lines and all(re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|WARNING|ERROR) ", line) for line in lines)
