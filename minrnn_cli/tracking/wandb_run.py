"""A W&B run per job, with its mode taken from the config (offline by default: no account, no network).

The run lives in `<run dir>/wandb/`; `wandb sync <run dir>/wandb/offline-run-*` uploads an offline run.
W&B itself prints nothing (`silent`: its start lines advise `wandb online`, not minrnn's keys); one line of
ours says where the run goes, how to upload it, and which keys change that.
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
        settings=wandb.Settings(console="off", silent=True, init_timeout=float(logger.get("init_timeout", 30))),
    )
    run, fallback = _start(wandb, logger, options)
    announce(run, fallback)
    try:
        yield run
    except BaseException:  # not `with run:`, whose exit prints the stack trace of a run's one-line error
        run.finish(exit_code=1)
        raise
    run.finish()


def _start(wandb, logger: DictConfig, options: dict) -> tuple[object, str | None]:
    """wandb.init in the configured mode, and why it is offline when it should be online: an online run
    that cannot start (no login, no network within `logger.init_timeout` seconds) goes offline (with that
    reason), or stops when `logger.on_error=stop`."""
    if logger.mode != "online":
        return wandb.init(mode=logger.mode, **options), None
    try:
        if not wandb.login(prompt=False, verify=False):  # never prompt for a key: that would wait forever
            raise wandb.errors.UsageError("no W&B login (run `wandb login` or set WANDB_API_KEY)")
        return wandb.init(mode="online", **options), None
    except wandb.errors.Error as error:
        reason = " ".join(str(error).split("Consider increasing")[0].split())
        if logger.get("on_error", "offline") == "stop":
            raise UserError(f"logger.mode=online but W&B cannot start ({reason}); log in, check the network, "
                            "or use logger.mode=offline (or logger.on_error=offline to fall back)") from None
        return wandb.init(mode="offline", **options), reason


def announce(run, fallback: str | None) -> None:
    """The one line that stands for W&B's own: where the run goes and the keys that change it; a warning
    when an online run fell back to offline (`fallback`: why)."""
    if run.settings.mode == "online":
        log.info(f"W&B: logging online to {run.url} (logger=none turns W&B off)")
        return
    upload = f"upload it later with `wandb sync {_shown(Path(run.settings.sync_dir))}`"  # where it is saved, too
    if fallback is not None:
        log.warning(f"W&B cannot go online ({fallback}); logging offline instead, {upload} (logger=none turns W&B off)")
    else:
        log.info(f"W&B: logging offline, {upload} (logger.mode=online logs live, logger=none turns W&B off)")


def _shown(path: Path) -> Path:
    """`path` relative to the working folder when it lies inside it (shorter to read and to copy)."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path
