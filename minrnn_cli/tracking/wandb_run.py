"""A W&B run per job, with its mode taken from the config (offline by default: no account, no network).

The run lives in `<run dir>/wandb/`; `wandb sync <run dir>/wandb/offline-run-*` uploads an offline run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


@contextlib.contextmanager
def wandb_run(cfg: DictConfig, run_dir: Path, name: str) -> Iterator[object | None]:
    """Yields a W&B run, or None when `logger=none` or `logger.mode=disabled`."""
    logger = cfg.logger
    if logger.name != "wandb" or logger.mode == "disabled":
        yield None
        return
    import wandb

    with wandb.init(
        project=logger.project,
        entity=logger.entity,
        group=logger.group,
        tags=list(logger.tags),
        name=name,
        mode=logger.mode,
        dir=str(run_dir),
        config=OmegaConf.to_container(cfg, resolve=True),
        settings=wandb.Settings(console="off", quiet=True),
    ) as run:
        yield run
