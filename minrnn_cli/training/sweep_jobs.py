"""A job of a `-m` sweep started again in the same sweep folder (the same command, with the sweep folder named:
`hydra.sweep.dir=...`) continues what its folder holds instead of training from scratch:

- finished (results.json) with this job's config: kept as it is, not trained again;
- unfinished, with a last.pt of this job's config: continued from that checkpoint, in the same folder;
- stopped before its first checkpoint: nothing to continue, so its records are started afresh.

"This job's config" is the one the run recorded (Hydra rewrites `.hydra/config.yaml` before the job starts): a
finished run's results.json holds it, so a finished job is kept even after its checkpoints were deleted to free
the disk; an unfinished run's is its last.pt's. It is compared as `trainer.resume=auto` compares runs
(MAY_CHANGE_ON_RESUME), and for a finished run with the same `trainer.max_steps`. A folder holding a run of
another config (or a finished run that tells no config: a results.json of an older minrnn without its last.pt)
is refused with one line and left as it is: the sweep folder is never a mix of two configs. No Hydra here:
minrnn_cli.hydra_app decides that the job is part of a continued sweep (FreshOutputFolder has checked the
sweep's overrides are the same).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from minrnn_cli.errors import UserError
from minrnn_cli.tracking.records import (
    CHECKPOINTS_DIR,
    ERROR_FILE,
    METRICS_FILE,
    RESULTS_FILE,
    earlier_run,
    read_results,
)
from minrnn_cli.training.checkpoint import load_checkpoint, resume_identity

log = logging.getLogger("minrnn")


@dataclass(frozen=True)
class EarlierJob:
    """What a job's folder holds from the sweep's earlier start: its results, or the last.pt to continue."""

    results: dict | None = None
    checkpoint: Path | None = None


def earlier_job(run_dir: Path, cfg: DictConfig) -> EarlierJob | None:
    """The job's earlier run in `run_dir` (None: nothing to keep or continue, train from scratch)."""
    if not earlier_run(run_dir, ignore=(".hydra",)):
        return None
    last = run_dir / CHECKPOINTS_DIR / "last.pt"
    ours = OmegaConf.to_container(cfg, resolve=True)
    if (run_dir / RESULTS_FILE).is_file():
        results = read_results(run_dir)
        saved = results.get("config") or (load_checkpoint(last)["config"] if last.is_file() else None)
        if not isinstance(saved, dict):
            raise UserError(f"the sweep job folder {run_dir} holds a finished run whose results.json names no config "
                            "and without its checkpoints/last.pt, which would tell it; it is left as it is: run this "
                            "sweep in a new folder (another hydra.sweep.dir=...)")
        require_same_config(run_dir, saved, ours, with_steps=True)
        return EarlierJob(results=results)
    if not last.is_file():  # stopped (or failed) before its first checkpoint: nothing to continue
        for name in (METRICS_FILE, ERROR_FILE):
            (run_dir / name).unlink(missing_ok=True)
        log.info(f"{run_dir} holds no checkpoint of an earlier start: training from scratch")
        return None
    require_same_config(run_dir, load_checkpoint(last)["config"], ours, with_steps=False)
    (run_dir / ERROR_FILE).unlink(missing_ok=True)  # the earlier start's stop, now being continued
    return EarlierJob(checkpoint=last)


def require_same_config(run_dir: Path, saved: dict, ours: dict, with_steps: bool) -> None:
    difference = config_difference(saved, ours, with_steps)
    if difference:
        raise UserError(f"the sweep job folder {run_dir} holds a run of another config ({difference}); it is "
                        "left as it is: run this sweep in a new folder (another hydra.sweep.dir=...)")


def config_difference(saved: dict, ours: dict, with_steps: bool) -> str | None:
    """The first key (dotted) whose value differs as `saved: ours`, or None when the configs are one run's."""
    steps = [config.get("trainer", {}).get("max_steps") for config in (saved, ours)]
    if with_steps and steps[0] != steps[1]:
        return f"trainer.max_steps: {steps[0]!r} there, {steps[1]!r} here"
    return _first_difference(resume_identity(saved), resume_identity(ours), "")


def _first_difference(saved, ours, prefix: str) -> str | None:
    if isinstance(saved, dict) and isinstance(ours, dict):
        for key in sorted({*saved, *ours}, key=str):
            found = _first_difference(saved.get(key), ours.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if saved == ours else f"{prefix.rstrip('.')}: {saved!r} there, {ours!r} here"
