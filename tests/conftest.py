"""Shared test setup: offline W&B and HF datasets, and `minrnn` run in-process in a folder of its own."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports datasets or wandb: no network, no user caches or W&B account touched.
_HF_CACHE = tempfile.mkdtemp(prefix="minrnn-tests-hf-")
os.environ["HF_DATASETS_CACHE"] = _HF_CACHE
os.environ["HF_HUB_OFFLINE"] = "1"
# minrnn's own cache (prepared corpora, compiled CPU kernels: built once per session) in a folder of the session
_MINRNN_CACHE = tempfile.mkdtemp(prefix="minrnn-tests-cache-")
os.environ["MINRNN_CACHE_DIR"] = _MINRNN_CACHE
os.environ.pop("MINRNN_OUTPUTS", None)  # outputs/ of each test's own folder, whatever the shell has set
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.setdefault("COLUMNS", "200")
# Triton reads TRITON_INTERPRET when it is first imported (torch may import it from any test), so without a
# GPU the whole session uses the interpreter that tests/test_triton_scan.py needs.
if not os.environ.get("CUDA_VISIBLE_DEVICES") and not Path("/dev/nvidiactl").exists():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The small settings every end-to-end run starts from (seconds on a 2-core CPU).
TINY_MODEL = ["model.d_model=16", "model.n_layers=1"]
TINY_SHAKESPEARE = [*TINY_MODEL, "task.seq_len=16", "task.batch_size=4", "task.eval_batches=2",
                    "task.sample_chars=20"]
TINY_COPYING = [*TINY_MODEL, "task=selective_copying", "task.seq_len=24", "task.n_memorize=4",
                "task.batch_size=4", "task.eval_batches=2"]
TINY_TRAINER = ["trainer.max_steps=6", "trainer.eval_every=3", "trainer.log_every=3", "trainer.device=cpu",
                "logger=none"]


def pytest_unconfigure(config) -> None:
    shutil.rmtree(_HF_CACHE, ignore_errors=True)
    shutil.rmtree(_MINRNN_CACHE, ignore_errors=True)


@contextlib.contextmanager
def inside(folder: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def run_minrnn(folder: Path, *args: str):
    """`minrnn ARGS` run in-process in `folder` (typer's CliRunner: exit_code, stdout, stderr).

    Hydra keeps global state between runs, leaves its log handlers on the root logger and may disable
    loggers (hydra_logging=disabled, as `minrnn config` uses): all of it is reset afterwards.
    """
    from hydra.core.global_hydra import GlobalHydra
    from typer.testing import CliRunner

    from minrnn_cli.cli import app

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    loggers = [logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)]
    disabled = {logger: logger.disabled for logger in loggers}
    try:
        with inside(folder):
            return CliRunner().invoke(app, list(args))
    finally:
        GlobalHydra.instance().clear()
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        for logger in logging.Logger.manager.loggerDict.values():
            if isinstance(logger, logging.Logger):
                logger.disabled = disabled.get(logger, False)


def run_ok(folder: Path, *args: str):
    result = run_minrnn(folder, *args)
    assert result.exit_code == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n{result.exception!r}"
    return result


def only_run_dir(root: Path, kind: str = "runs") -> Path:
    """The single run folder under root/outputs/<kind> (fails when there are none or several). kind: runs
    (train), evals, samples (generate), bench."""
    runs = sorted((root / "outputs" / kind).iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def newest_run_dir(root: Path, kind: str = "runs") -> Path:
    return sorted((root / "outputs" / kind).iterdir())[-1]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder for one test: outputs/ lands in it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def task_config(name: str, **settings) -> dict:
    """conf/task/<name>.yaml as Hydra composes it (the one source of a task's defaults), with `settings` on top."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from minrnn_cli.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        composed = compose("train", overrides=[f"task={name}"])
    return {**OmegaConf.to_container(composed.task), **settings}


def make_task(name: str, **settings):
    """The task `name` built from its shipped defaults and `settings`."""
    from minrnn_cli.tasks import build_task

    return build_task(task_config(name, **settings))
