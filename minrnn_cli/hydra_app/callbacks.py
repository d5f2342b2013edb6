"""Hydra callbacks (named in conf/hydra/default.yaml): a fresh folder for every run, and the sweep summary.

They hold nothing unpicklable (no Console): launchers such as joblib pickle the callbacks with each job.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from minrnn_cli.errors import UserAbort
from minrnn_cli.tracking.records import earlier_run
from minrnn_cli.tracking.sweep_summary import summarise_sweep

log = logging.getLogger("minrnn")


def _refuse(kind: str, folder: Path, found: list[str]) -> None:
    raise UserAbort(f"error: the {kind} folder {folder} already holds a run ({', '.join(found)}); give a new "
                    f"hydra.{kind}.dir=..., or leave it out for a fresh timestamped folder")


def _require_named(kind: str, folder) -> None:
    """An empty hydra.run.dir would write the run into the current folder, among whatever is there."""
    if not str(folder).strip():
        raise UserAbort(f"error: hydra.{kind}.dir={str(folder)!r} is empty; give a folder, or leave it out for a "
                        "fresh timestamped one")


class FreshOutputFolder(Callback):
    """Never write a run into a folder that already holds one. The default folders are timestamped to the
    microsecond, so two runs started in the same second get their own; this covers the rest (a reused
    `hydra.run.dir`/`hydra.sweep.dir`, a clock set back). It runs before Hydra writes `.hydra/` into the
    folder, so the earlier run's record stays intact."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        if int(os.environ.get("RANK", "0")) > 0:
            return  # torchrun: the other ranks share rank 0's folder by design
        _require_named("run", config.hydra.run.dir)
        folder = Path(config.hydra.run.dir).absolute()
        found = earlier_run(folder)
        if found:
            _refuse("run", folder, found)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _require_named("sweep", config.hydra.sweep.dir)
        folder = Path(config.hydra.sweep.dir).absolute()
        found = sorted({name for job in folder.glob("*") if job.is_dir() for name in earlier_run(job)})
        if found and not _same_sweep_again(config, folder):
            _refuse("sweep", folder, found)


def _same_sweep_again(config: DictConfig, folder: Path) -> bool:
    """A `minrnn train -m` sweep started again in its folder with the same overrides: its jobs keep what is
    finished and continue what is not (minrnn_cli.training.sweep_jobs). The same folder with other overrides
    is refused in one line naming both."""
    earlier_file = folder / "multirun.yaml"  # Hydra's record of the sweep, written before its first job
    if config.hydra.job.name != "train" or not earlier_file.is_file():
        return False
    try:
        earlier = list(OmegaConf.load(earlier_file).hydra.overrides.task)
    except Exception:  # a damaged or hand-edited record: the folder is refused as any other that holds runs
        return False
    ours = list(config.hydra.overrides.task)
    if earlier != ours:
        raise UserAbort(f"error: the sweep folder {folder} holds a sweep of other overrides ({' '.join(earlier)}), "
                        f"not these ({' '.join(ours)}); to continue it, give its overrides; to run this sweep, "
                        "give a new hydra.sweep.dir=...")
    log.info(f"continuing the sweep in {folder}: finished jobs are kept, unfinished ones continue from their "
             "last.pt, the rest run")
    return True


class SweepSummary(Callback):
    """After a multirun: every job's results in one table and summary.csv (tracking.sweep_summary)."""

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self.sweep_dir is not None and self.sweep_dir.is_dir():
            summarise_sweep(self.sweep_dir)
