"""Runs grouped by their whole config but for the seed and what does not change the result
(tracking.records.RESULT_NEUTRAL_KEYS): per group, n seeds, mean ± std of each final metric, and the step and
the seconds (metrics.jsonl's elapsed_s) at which each run first reached a target."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from minrnn_cli.errors import UserError
from minrnn_cli.reporting.collect import natural_key, read_run_results, run_config, shown_path
from minrnn_cli.tasks import CHOMSKY_TASKS
from minrnn_cli.tracking.records import METRICS_FILE, RESULT_NEUTRAL_KEYS, read_metrics

TARGET_FORM = ("give METRIC=VALUE, e.g. --target val_loss=1.6 or --target val_accuracy=0.95 (a loss, bpc or bpb "
               "is reached at or below VALUE; an accuracy, score or return at or above)")


def lower_is_better(metric: str) -> bool | None:
    """Decided by the metric's name: losses and bits per character/byte go down, accuracies and scores up."""
    if any(word in metric for word in ("loss", "bpc", "bpb")):
        return True
    if any(word in metric for word in ("accuracy", "score", "return")):
        return False
    return None


@dataclass(frozen=True)
class Target:
    metric: str
    value: float

    @property
    def label(self) -> str:
        return f"{self.metric}{'<=' if lower_is_better(self.metric) else '>='}{self.value:g}"

    def reached(self, value: float) -> bool:
        return value <= self.value if lower_is_better(self.metric) else value >= self.value


# Per-task targets (shared notes, paper.md): Shakespeare 1.88 is nanoGPT's CPU baby GPT's val loss (its README's
# "about 3 minutes ... 1.88"), 1.575 the paper's regime (its worst test loss of the four models, Mamba's; the
# paper's test split is our val split); 90% accuracy on Selective Copying (the paper's 3-layer minRNNs: 96-99.5%)
# and the Chomsky tasks; ListOps 0.35, between the xLSTM table's Mamba (0.325) and Llama (0.379).
DEFAULT_TARGETS: dict[str, tuple[Target, ...]] = {
    "shakespeare": (Target("val_loss", 1.88), Target("val_loss", 1.575)),
    "selective_copying": (Target("val_accuracy", 0.9),),
    **{name: (Target("val_accuracy", 0.9),) for name in CHOMSKY_TASKS},
    "listops": (Target("val_accuracy", 0.35),),
}


def parse_target(text: str) -> Target:
    """`--target METRIC=VALUE`; a bad one is a one-line UserError."""
    metric, equals, number = text.partition("=")
    metric = metric.strip()
    if not equals or not metric:
        raise UserError(f"--target {text!r} is invalid: {TARGET_FORM}")
    if lower_is_better(metric) is None:
        raise UserError(f"--target {text!r} is invalid: {metric!r} is neither a loss, bpc or bpb nor an accuracy, "
                        f"score or return, so which way is better is unknown; {TARGET_FORM}")
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise UserError(f"--target {text!r} is invalid: {number.strip()!r} is not a finite number; {TARGET_FORM}")
    if "accuracy" in metric and not 0 <= value <= 1:
        raise UserError(f"--target {text!r} is invalid: an accuracy is a fraction from 0 to 1 (0.95 for 95%), as in "
                        "results.json")
    if lower_is_better(metric) and value < 0:
        raise UserError(f"--target {text!r} is invalid: a loss, bpc or bpb is never below 0; {TARGET_FORM}")
    return Target(metric, value)


def targets_for(task: str, given: tuple[Target, ...]) -> tuple[Target, ...]:
    """The targets given on the command line (every task), else the task's defaults."""
    return given or DEFAULT_TARGETS.get(task, ())


@dataclass
class TrainedRun:
    """One training run's folder as the report reads it."""

    run_dir: Path
    shown: str
    results: dict
    config: dict
    metrics: list[dict]

    @property
    def timed(self) -> bool:
        """Whether every row of its metrics.jsonl has elapsed_s (files written before it was recorded do not)."""
        return all("elapsed_s" in row for row in self.metrics)

    def first_reached(self, target: Target) -> tuple[int, float | None] | None:
        """(step, elapsed_s) of the first evaluation that reached the target; None if none did."""
        for row in sorted(self.metrics, key=lambda row: row["step"]):
            value = row.get(target.metric)
            if isinstance(value, (int, float)) and math.isfinite(value) and target.reached(value):
                return row["step"], row.get("elapsed_s")
        return None


def read_trained_run(run_dir: Path, root: Path | None) -> TrainedRun:
    metrics = read_metrics(run_dir) if (run_dir / METRICS_FILE).is_file() else []
    return TrainedRun(run_dir, shown_path(run_dir, root), read_run_results(run_dir), run_config(run_dir), metrics)


def group_identity(run: TrainedRun) -> dict:
    """The run's config less trainer.seed and RESULT_NEUTRAL_KEYS (a run without .hydra/config.yaml: its model
    and task names)."""
    config = run.config or {"model": {"name": run.results.get("model")}, "task": {"name": run.results.get("task")}}
    identity = {}
    for key, value in config.items():
        neutral = RESULT_NEUTRAL_KEYS.get(key, ())
        if key in RESULT_NEUTRAL_KEYS and neutral is None:
            continue
        if key == "trainer":
            neutral = (*neutral, "seed")
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in neutral}
        identity[key] = value
    return identity


def flattened(config: dict, prefix: str = "") -> dict[str, object]:
    items: dict[str, object] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            items.update(flattened(value, f"{prefix}{key}."))
        else:
            items[f"{prefix}{key}"] = value
    return items


@dataclass
class Group:
    """Runs with one config but for the seed."""

    identity: dict
    runs: list[TrainedRun] = field(default_factory=list)
    setting: str = ""  # the config keys that tell it from another group of the same model and depth

    @property
    def task(self) -> str:
        return str(self.runs[0].results.get("task"))

    @property
    def model(self) -> str:
        return str(self.runs[0].results.get("model"))

    @property
    def layers(self):
        model = self.identity.get("model")
        return model.get("n_layers") if isinstance(model, dict) else None

    @property
    def label(self) -> str:
        layers = f" {self.layers}L" if self.layers is not None else ""
        return f"{self.model}{layers}{f' ({self.setting})' if self.setting else ''}"

    def sort_key(self) -> tuple:
        return self.task, self.model, str(self.layers), self.setting

    def values(self, key: str) -> list[float]:
        return [run.results[key] for run in self.runs if is_number(run.results.get(key))]


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def group_runs(runs: list[TrainedRun]) -> list[Group]:
    """Groups in a fixed order (task, model, layers, setting), each group's runs sorted by folder."""
    by_identity: dict[str, Group] = {}
    for run in sorted(runs, key=lambda run: natural_key(run.shown)):
        identity = group_identity(run)
        key = json.dumps(identity, sort_keys=True, default=str)
        by_identity.setdefault(key, Group(identity)).runs.append(run)
    groups = list(by_identity.values())
    for group in groups:
        alike = [other for other in groups
                 if (other.task, other.model, other.layers) == (group.task, group.model, group.layers)]
        if len(alike) > 1:
            mine, theirs = flattened(group.identity), [flattened(other.identity) for other in alike]
            differing = sorted(key for key in {k for items in theirs for k in items}
                               if len({json.dumps(items.get(key), default=str) for items in theirs}) > 1)
            group.setting = ", ".join(f"{key}={mine[key]}" for key in differing if key in mine)
    return sorted(groups, key=Group.sort_key)


def mean_std(values: list[float]) -> tuple[float, float | None] | None:
    """Mean and sample standard deviation (n-1; None for one value); None for no values."""
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


@dataclass(frozen=True)
class Reached:
    """A target over a group's runs: how many reached it, and the mean step and seconds of those that did
    (seconds over the runs with elapsed_s)."""

    target: Target
    reached: int
    runs: int
    step: float | None
    seconds: float | None


def reached(group: Group, target: Target) -> Reached:
    firsts = [first for first in (run.first_reached(target) for run in group.runs) if first is not None]
    seconds = [elapsed for _, elapsed in firsts if is_number(elapsed)]
    return Reached(target, len(firsts), len(group.runs),
                   statistics.fmean(step for step, _ in firsts) if firsts else None,
                   statistics.fmean(seconds) if seconds else None)


FINAL_KEYS = ("params", "steps", "wall_time_s", "best_step")  # beside the metrics, mean ± std too


def final_metrics(groups: list[Group]) -> list[str]:
    """The val/test metrics of results.json found in these groups: val first, then test; losses first."""
    names = {key for group in groups for run in group.runs for key, value in run.results.items()
             if key.startswith(("val_", "test_")) and is_number(value)}
    kinds = ("loss", "bpc", "bpb", "accuracy")
    return sorted(names, key=lambda name: (not name.startswith("val_"),
                                           next((i for i, kind in enumerate(kinds) if kind in name), len(kinds)),
                                           name))
