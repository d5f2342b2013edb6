"""A Hydra callback: never write a run into a folder that already holds one.

The default folders are timestamped to the microsecond, so two runs started in the same second get their
own; this guard covers the rest (a reused `hydra.run.dir`/`hydra.sweep.dir`, a clock set back). It runs
before Hydra writes `.hydra/` into the folder, so the earlier run's record stays intact.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from minrnn_cli.job_failures import UserAbort

RUN_MARKERS = (".hydra", "results.json", "metrics.jsonl", "checkpoints", "error.txt")


def earlier_run(folder: Path) -> list[str]:
    """The names in `folder` that show a run was already written there."""
    return [name for name in RUN_MARKERS if (folder / name).exists()]


def _refuse(kind: str, folder: Path, found: list[str]) -> None:
    raise UserAbort(f"error: the {kind} folder {folder} already holds a run ({', '.join(found)}); give a new "
                    f"hydra.{kind}.dir=..., or leave it out for a fresh timestamped folder")


class FreshOutputFolder(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        if int(os.environ.get("RANK", "0")) > 0:
            return  # torchrun: the other ranks share rank 0's folder by design
        folder = Path(config.hydra.run.dir).absolute()
        found = earlier_run(folder)
        if found:
            _refuse("run", folder, found)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        folder = Path(config.hydra.sweep.dir).absolute()
        found = sorted({name for job in folder.glob("*") if job.is_dir() for name in earlier_run(job)})
        if found:
            _refuse("sweep", folder, found)
