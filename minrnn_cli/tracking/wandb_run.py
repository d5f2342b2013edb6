"""A W&B run per job, with its mode taken from the config (offline by default: no account, no network).

The run lives in `<run dir>/wandb/`; `wandb sync <run dir>/wandb/offline-run-*` uploads an offline run.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from minrnn_cli.errors import UserError

log = logging.getLogger("minrnn")


@contextlib.contextmanager
def wandb_run(cfg: DictConfig, run_dir: Path, name: str, group: str | None = None) -> Iterator[object | None]:
    """Yields a W&B run, or None when `logger=none` or `logger.mode=disabled`. `group`: the W&B group when
    `logger.group` names none (a sweep's jobs share their sweep's)."""
    logger = cfg.logger
    if logger.name != "wandb" or logger.mode == "disabled":
        yield None
        return
    import wandb

    options = dict(
        project=logger.project,
        entity=logger.entity,
        group=logger.group or group,
        tags=list(logger.tags),
        name=name,
        dir=str(run_dir),
        config=OmegaConf.to_container(cfg, resolve=True),
        settings=wandb.Settings(console="off", quiet=True, init_timeout=float(logger.get("init_timeout", 30))),
    )
    with _start(wandb, logger, options) as run:
        yield run


def _start(wandb, logger: DictConfig, options: dict):
    """wandb.init in the configured mode; an online run that cannot start (no login, no network within
    `logger.init_timeout` seconds) goes offline with one warning, or stops when `logger.on_error=stop`."""
    if logger.mode != "online":
        return wandb.init(mode=logger.mode, **options)
    try:
        if not wandb.login(prompt=False, verify=False):  # never prompt for a key: that would wait forever
            raise wandb.errors.UsageError("no W&B login (run `wandb login` or set WANDB_API_KEY)")
        return wandb.init(mode="online", **options)
    except wandb.errors.Error as error:
        reason = " ".join(str(error).split("Consider increasing")[0].split())
        if logger.get("on_error", "offline") == "stop":
            raise UserError(f"logger.mode=online but W&B cannot start ({reason}); log in, check the network, "
                            "or use logger.mode=offline (or logger.on_error=offline to fall back)") from None
        log.warning(f"W&B cannot go online ({reason}); logging offline instead, upload later with "
                    f"`wandb sync {options['dir']}/wandb/offline-run-*`")
        return wandb.init(mode="offline", **options)
