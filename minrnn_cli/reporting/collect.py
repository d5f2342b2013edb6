"""Finding runs: every results.json under the given run or multirun folders, with the config beside it, and
which command wrote it (a training run or an evaluation)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from minrnn_cli.errors import UserError
from minrnn_cli.reporting.paper import matching_figure
from minrnn_cli.tracking.records import RESULTS_FILE

REPORT_COLUMNS = ("run", "model", "task", "layers", "seed", "steps", "wall_time_s", "metric", "ours", "paper",
                  "paper_note")
EVALUATION_COLUMNS = ("run", "model", "task", "steps", "metric", "ours", "checkpoint")


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Folders holding a results.json, found recursively under each path (a results.json path counts too)."""
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise UserError(f"{path} does not exist; pass run or multirun folders (e.g. outputs/runs/<run>)")
        candidates = [path] if path.is_file() and path.name == RESULTS_FILE else sorted(path.rglob(RESULTS_FILE))
        found += [candidate.parent for candidate in candidates if candidate.parent not in found]
    if not found:
        shown = ", ".join(str(path) for path in paths)
        raise UserError(f"no {RESULTS_FILE} under {shown}; train something first (minrnn train ...)")
    return found


LEAVE_OUT = "remove that run folder or leave it out of the paths given"


def run_config(run_dir: Path) -> dict:
    """The run's composed config from .hydra/config.yaml ({} when it is missing)."""
    config_file = run_dir / ".hydra" / "config.yaml"
    if not config_file.is_file():
        return {}
    from omegaconf import OmegaConf

    try:
        config = OmegaConf.to_container(OmegaConf.load(config_file), resolve=False)
    except Exception as error:  # YAML or OmegaConf errors of a truncated or hand-edited file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{config_file} is damaged ({reason}); {LEAVE_OUT}") from None
    if not isinstance(config, dict):
        raise UserError(f"{config_file} holds a {type(config).__name__}, not a config; {LEAVE_OUT}")
    return config


def read_run_results(run_dir: Path) -> dict:
    path = run_dir / RESULTS_FILE
    try:
        results = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path} is damaged or unreadable ({error}); {LEAVE_OUT}") from None
    if not isinstance(results, dict):
        raise UserError(f"{path} holds a {type(results).__name__}, not a run's results; {LEAVE_OUT}")
    return results


def headline_metric(results: dict) -> str | None:
    """D4RL's normalised score or accuracy where the task has them, loss otherwise (Shakespeare)."""
    for metric in ("test_score", "test_accuracy", "test_loss", "val_score", "val_accuracy", "val_loss"):
        if metric in results:
            return metric
    return None


def run_command(run_dir: Path) -> str:
    """The command that wrote the folder's results.json: its `command` field (`train`, `eval`). A results.json
    written before that field: `eval` when the folder's config has a `checkpoint` key (eval's), else `train`."""
    command = read_run_results(run_dir).get("command")
    if isinstance(command, str):
        return command
    return "eval" if "checkpoint" in run_config(run_dir) else "train"


def natural_key(text: str) -> list:
    """Folder names in their numbers' order: a sweep's job 2 before its job 10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def shown_path(run_dir: Path, root: Path | None) -> str:
    return str(run_dir.relative_to(root) if root and run_dir.is_relative_to(root) else run_dir)


def evaluation_row(run_dir: Path, root: Path | None = None) -> dict:
    """An evaluation (`minrnn eval`) of a checkpoint: listed apart from the training runs."""
    results = read_run_results(run_dir)
    metric = headline_metric(results)
    return {"run": shown_path(run_dir, root), "model": results.get("model"), "task": results.get("task"),
            "steps": results.get("steps"), "metric": metric, "ours": results.get(metric) if metric else None,
            "checkpoint": results.get("checkpoint")}


def report_row(run_dir: Path, root: Path | None = None) -> dict:
    results = read_run_results(run_dir)
    config = run_config(run_dir)
    model_cfg, trainer_cfg = config.get("model"), config.get("trainer")
    layers = model_cfg.get("n_layers") if isinstance(model_cfg, dict) else None
    metric = headline_metric(results)
    figure = matching_figure(results.get("task", ""), results.get("model", ""), layers)
    row = {
        "run": shown_path(run_dir, root),
        "model": results.get("model"),
        "task": results.get("task"),
        "layers": layers,
        "seed": trainer_cfg.get("seed") if isinstance(trainer_cfg, dict) else None,
        "steps": results.get("steps"),
        "wall_time_s": results.get("wall_time_s"),
        "metric": metric,
        "ours": results.get(metric) if metric else None,
        "paper": figure.value if figure and figure.compared == metric else "",
        "paper_note": figure.note if figure and figure.compared == metric else "",
    }
    if "test_scaled_accuracy" in results:
        row["test_scaled_accuracy"] = results["test_scaled_accuracy"]
    return row
