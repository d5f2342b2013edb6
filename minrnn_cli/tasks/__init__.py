"""Tasks: where batches come from, how outputs are scored and which model head they need (tasks.base.Task).

The registry maps each task name to the class that builds it, imported only when that task is built.
Adding a task is one module with a Task subclass, one row of TASKS and one conf/task/<name>.yaml.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from minrnn_cli.errors import UserError


@dataclass(frozen=True)
class TaskEntry:
    factory: str  # "module:Class" of a tasks.base.Task subclass
    fixed: dict[str, Any] = field(default_factory=dict)  # arguments the row fixes (a Chomsky task's problem)
    needs_data: bool = False  # the data are files the user supplies (nothing is downloaded)


CHOMSKY_TASKS = ("parity_check", "even_pairs", "cycle_nav", "bucket_sort", "majority", "majority_count",
                 "missing_duplicate")

TEXT_TASKS = ("shakespeare", "text", "enwik8", "wikitext103")  # language modelling: one task, its presets
CORPUS_PRESETS = ("enwik8", "wikitext103")  # their corpus is the user's (a file, or the local HF cache)

TASKS: dict[str, TaskEntry] = {
    **{name: TaskEntry("minrnn_cli.tasks.text:TextTask", {"name": name}, needs_data=name in CORPUS_PRESETS)
       for name in TEXT_TASKS},
    "selective_copying": TaskEntry("minrnn_cli.tasks.selective_copying:SelectiveCopying"),
    **{name: TaskEntry("minrnn_cli.tasks.chomsky:ChomskyTask", {"name": name}) for name in CHOMSKY_TASKS},
    "listops": TaskEntry("minrnn_cli.tasks.listops:ListOps"),
    "lra_image": TaskEntry("minrnn_cli.tasks.external:LRAImage", needs_data=True),
    "lra_retrieval": TaskEntry("minrnn_cli.tasks.lra_retrieval:LRARetrieval", needs_data=True),
    "d4rl": TaskEntry("minrnn_cli.tasks.d4rl:D4RL", needs_data=True),
}
TASK_NAMES = tuple(TASKS)  # the tasks minrnn ships (tests may register more in TASKS)
EXTERNAL_TASKS = tuple(name for name, entry in TASKS.items() if entry.needs_data)


def build_task(task_cfg: Mapping[str, Any]):
    """The task named by `task_cfg["name"]`, built from the rest of its settings (conf/task/<name>.yaml)."""
    options = dict(task_cfg)
    name = options.pop("name", None)
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    entry = TASKS[name]
    if name == "shakespeare" and "data_path" in options:  # a checkpoint from before task=text
        from minrnn_cli.tasks.text import upgrade_shakespeare

        options = upgrade_shakespeare(options)
    module_name, _, class_name = entry.factory.partition(":")
    task_class = getattr(importlib.import_module(module_name), class_name)
    try:
        inspect.signature(task_class).bind(**entry.fixed, **options)
    except TypeError as error:  # a key the task does not take, or one its config lacks
        raise UserError(f"task {name}: {error}") from None
    if "eval_seed" in options:  # every task that fixes its evaluation sets by a seed
        from minrnn_cli.tasks.base import require_at_least

        require_at_least("task.eval_seed", options["eval_seed"], 0)
    return task_class(**entry.fixed, **options)
