"""Checkpoints: everything needed to continue a run exactly (model, optimiser, scheduler, step, RNG
states) plus the config and the task's vocabulary, so `eval` and `generate` need nothing else.

Files are written to a temporary name and renamed, so an interrupted save never leaves a torn file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
from pathlib import Path

import torch
from omegaconf import OmegaConf

from minrnn_cli.errors import UserError, cannot_write, write_failure
from minrnn_cli.tracking.records import RESULT_NEUTRAL_KEYS

log = logging.getLogger("minrnn")

FORMAT = "minrnn-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("model", "optimizer", "scheduler", "step", "config", "rng")


def rng_states() -> dict:
    """The global RNGs (dropout, sampling). Training batches need no state: their generator is reseeded from
    (seed, rank, step) at every step (minrnn_cli.training.distributed.batch_seed)."""
    states = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: Path, *, model, optimizer, scheduler, step: int, best: dict | None, config,
                    vocabulary: dict, elapsed_s: float = 0.0) -> None:
    """`elapsed_s`: the run's training seconds so far, which a resumed run's metrics.jsonl continues from."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "elapsed_s": elapsed_s,
        "best": best,
        "config": OmegaConf.to_container(config, resolve=True),
        "vocabulary": vocabulary,
        "rng": rng_states(),
    }
    _write_whole(path, lambda handle: torch.save(payload, handle))


def copy_checkpoint(source: Path, target: Path) -> None:
    """`source` copied to `target` whole or not at all (a resumed run carries the earlier best.pt over)."""
    with source.open("rb") as original:
        _write_whole(target, lambda handle: shutil.copyfileobj(original, handle))


def _write_whole(path: Path, write) -> None:
    """`write(handle)` into `<path>.partial`, renamed to `path` once complete. A failed write removes the
    partial file; a full disk or an unwritable folder is one line that says what is kept and how to go on.
    `write` gets a file object: torch.save then keeps a failed write's OSError as its error's context."""
    partial = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("wb") as handle:
            write(handle)
        os.replace(partial, path)
    except BaseException as error:  # a full disk, an unwritable folder, or a kill while writing
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        failure = write_failure(error)
        if failure is None:
            raise
        last = path.with_name("last.pt")
        if not last.is_file():
            raise cannot_write(path, failure, then="; no checkpoint was saved") from None
        raise cannot_write(path, failure, then=f"; the previous save is kept ({path.name} unchanged)",
                           advice=f"free some space, then continue with the same command plus "
                                  f"trainer.resume={last}") from None


WANTED = "give a checkpoint written by `minrnn train` (outputs/runs/<run>/checkpoints/last.pt or best.pt)"


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint's contents; a missing, corrupt or foreign file is a one-line UserError."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist; {WANTED}")
    if not path.is_file():
        raise UserError(f"checkpoint {path} is not a file; {WANTED}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        reason = reason.split(". ")[0]  # torch's advice on weights_only=False is not for a file minrnn wrote
        raise UserError(f"checkpoint {path} is not readable: damaged, truncated or not a PyTorch file ({reason}); "
                        f"{WANTED}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} is not a minrnn checkpoint; {WANTED}")
    if payload.get("version") != VERSION or any(key not in payload for key in REQUIRED_KEYS):
        raise UserError(f"checkpoint {path} has an incompatible format (version {payload.get('version')}, "
                        f"this minrnn reads version {VERSION})")
    damaged = _damaged_field(payload)
    if damaged:
        raise UserError(f"checkpoint {path} is damaged: {damaged}; {WANTED}")
    return payload


def _damaged_field(payload: dict) -> str | None:
    """What is wrong with the fields eval, generate and resume read (None: nothing)."""
    step, config = payload["step"], payload["config"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return f"its step is {step!r}, not a count of steps"
    if not isinstance(payload["model"], dict):
        return f"its model weights are a {type(payload['model']).__name__}, not a state dict"
    if not isinstance(config, dict):
        return f"its config is a {type(config).__name__}, not a mapping"
    for group in ("model", "task"):
        if not isinstance(config.get(group), dict) or not isinstance(config[group].get("name"), str):
            return f"its config has no {group} with a name"
    if not isinstance(payload.get("vocabulary", {}), dict):
        return f"its vocabulary is a {type(payload['vocabulary']).__name__}, not a mapping"
    return None


def load_model_state(model, payload: dict, path: str | Path) -> None:
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise UserError(f"checkpoint {path} does not fit the model in its config ({first})") from None


def find_latest(root: Path, filename: str) -> Path | None:
    """The newest `checkpoints/<filename>` under root."""
    candidates = sorted(root.glob(f"**/checkpoints/{filename}"), key=lambda p: p.stat().st_mtime, reverse=True)
    return candidates[0] if candidates else None


ELSEWHERE = "point elsewhere with outputs_dir=DIR or MINRNN_OUTPUTS=DIR"  # where runs are looked up


def resolve_checkpoint(checkpoint: str, outputs: Path) -> Path:
    """The file `checkpoint=` names: `latest` (the newest checkpoints/best.pt under the outputs folder), a .pt
    file, a run folder (its checkpoints/best.pt) or a run's name (a folder of <outputs>/runs, or <sweep>/<job>
    of <outputs>/multirun). A run folder or a name that gives nothing is a one-line UserError saying where
    it looked; a missing .pt file is load_checkpoint's to report."""
    where = outputs.absolute()
    if not str(checkpoint).strip():
        raise UserError("checkpoint= is empty; give checkpoint=latest, a .pt file, a run folder or a run name")
    if checkpoint == "latest":
        found = find_latest(outputs, "best.pt")
        if found is None:
            raise UserError(f"checkpoint=latest but there is no checkpoints/best.pt under {where}; train one with "
                            f"`minrnn train`, {ELSEWHERE}, or pass checkpoint=PATH")
        return found.absolute()  # recorded in results.json: a path that holds from anywhere
    given = Path(checkpoint).expanduser()
    if given.is_dir() and given.name == "checkpoints" and not (given / "checkpoints").is_dir():
        given = given.parent  # a run's checkpoints folder stands for the run
    if given.is_dir():
        return run_best_checkpoint(given, checkpoint)
    if given.suffix == ".pt" or given.exists():
        return given
    for folder in (outputs / "runs" / checkpoint, outputs / "multirun" / checkpoint):
        if folder.is_dir():
            return run_best_checkpoint(folder, checkpoint)
    raise UserError(f"checkpoint={checkpoint} is not a .pt file, a run folder or a run name (looked in {where}/runs "
                    f"and {where}/multirun); give checkpoint=latest, a .pt file, a run folder or a run name, or "
                    f"{ELSEWHERE}")


def run_best_checkpoint(run_dir: Path, checkpoint: str) -> Path:
    """A run folder's checkpoints/best.pt (one line when it has none)."""
    best = run_dir.absolute() / "checkpoints" / "best.pt"
    if best.is_file():
        return best
    last = best.with_name("last.pt")
    advice = f"pass checkpoint={last} to use its last one" if last.is_file() else "it holds no checkpoint at all"
    raise UserError(f"checkpoint={checkpoint}: the run folder {run_dir.absolute()} has no checkpoints/best.pt; "
                    f"{advice}")


# Keys a resumed run may set differently from the run it continues: where and how long it runs, how often it
# reports, where it logs. Everything else must match for `trainer.resume=auto` to pick a run up.
MAY_CHANGE_ON_RESUME = {**RESULT_NEUTRAL_KEYS, "trainer": (*RESULT_NEUTRAL_KEYS["trainer"], "max_steps")}


def resume_identity(config) -> dict:
    """The part of a composed config that identifies a run for `trainer.resume=auto`."""
    container = OmegaConf.to_container(config, resolve=False) if not isinstance(config, dict) else dict(config)
    identity = {}
    for key, value in container.items():
        if key in MAY_CHANGE_ON_RESUME and MAY_CHANGE_ON_RESUME[key] is None:
            continue
        if key in MAY_CHANGE_ON_RESUME and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in MAY_CHANGE_ON_RESUME[key]}
        identity[key] = value
    return identity


def latest_resumable(root: Path, config) -> Path | None:
    """The newest `checkpoints/last.pt` under root of an unfinished run (no results.json) whose config is this
    one but for MAY_CHANGE_ON_RESUME: what `trainer.resume=auto` continues. So the jobs of a sweep each find
    their own run, never another job's. Files are renamed into place whole, so every last.pt is complete.
    An earlier run whose config or checkpoint is damaged is skipped with a warning, never the end of this one."""
    wanted = resume_identity(config)
    candidates = sorted(root.glob("**/checkpoints/last.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for candidate in candidates:
        run_dir = candidate.parent.parent
        config_file = run_dir / ".hydra" / "config.yaml"
        if not config_file.is_file() or (run_dir / "results.json").exists():
            continue
        try:
            earlier = resume_identity(OmegaConf.load(config_file))
        except Exception as error:  # YAML or OmegaConf errors of a truncated or hand-edited file
            log.warning(f"trainer.resume=auto: skipped {run_dir}: its {config_file.name} is damaged "
                        f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})")
            continue
        if earlier != wanted:
            continue
        try:
            load_checkpoint(candidate)
        except UserError as error:
            log.warning(f"trainer.resume=auto: skipped {run_dir}: {str(error).removeprefix('error: ')}")
            continue
        return candidate
    return None
