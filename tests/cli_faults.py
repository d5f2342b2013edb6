"""Helpers for the fault tests (bad input, interruptions, numerical faults): run `minrnn` in-process or in a
subprocess, with a tiny CPU job, and read what a run left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import run_minrnn

# A one-layer 16-wide minGRU, 4 steps, on Selective Copying with 16 noise tokens: milliseconds a step on a CPU.
TINY_RUN = [
    "model.d_model=16", "model.n_layers=1", "model.conv=false", "model.mlp=false",
    "trainer.max_steps=4", "trainer.eval_every=2", "trainer.log_every=1", "trainer.device=cpu", "logger=none",
]
TINY = [*TINY_RUN, "task=selective_copying", "task.seq_len=16", "task.n_memorize=4", "task.batch_size=4",
        "task.eval_batches=1"]


def invoke(args: list[str]):
    """`minrnn ARGS` in this process, in the current folder (conftest.run_minrnn resets Hydra and logging)."""
    return run_minrnn(Path.cwd(), *args)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def assert_one_line_error(result, exit_code: int = 2) -> str:
    """The command failed with `exit_code`, printing exactly one line to stderr and no traceback anywhere."""
    lines = error_lines(result.stderr)
    assert result.exit_code == exit_code, (result.exit_code, result.stdout[-2000:], result.stderr[-2000:])
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", **extra}
    env.pop("WANDB_MODE", None)
    return env


def sigint_as_in_a_terminal() -> None:
    """For `preexec_fn`: the child gets SIGINT's default back, so Python installs its KeyboardInterrupt handler,
    as for a command started in a terminal. A test run under nohup or `&` in a script ignores SIGINT, every
    child inherits that, and a Ctrl-C sent to it would be lost."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_minrnn(args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    """`python -m minrnn_cli ARGS` as a subprocess (stdout and stderr piped)."""
    return subprocess.Popen([sys.executable, "-m", "minrnn_cli", *args], cwd=cwd, env=subprocess_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# A real `minrnn` process that signals itself at one phase of a run: on the `call`-th call of `function` in
# `module` (the periodic evaluations: minrnn_cli.training.loop.evaluate; the results after training:
# minrnn_cli.training.loop.final_results; the closing text sample:
# minrnn_cli.training.runs.closing_sample). Ctrl-C gets Python's own handler back first, as in a terminal,
# whatever the test runner left it as (a child of a process ignoring SIGINT inherits that).
SIGNAL_AT_PHASE = """
import itertools, os, signal, sys
from importlib import import_module
module_name, function, call, signum, *args = sys.argv[1:]
signal.signal(signal.SIGINT, signal.default_int_handler)
module, calls = import_module(module_name), itertools.count(1)
original = getattr(module, function)
def signalling(*a, **k):
    if next(calls) == int(call):
        os.kill(os.getpid(), int(signum))
    return original(*a, **k)
setattr(module, function, signalling)
sys.argv = ["minrnn", *args]
from minrnn_cli.cli import main
main()
"""


def run_signalled_at(phase: str, call: int, signum: int, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`minrnn ARGS` in a subprocess that receives `signum` at the `call`-th call of `phase`
    ("module:function"; call 0: never)."""
    module, function = phase.split(":")
    return subprocess.run([sys.executable, "-c", SIGNAL_AT_PHASE, module, function, str(call), str(int(signum)),
                           *args], cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
