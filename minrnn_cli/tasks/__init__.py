"""Tasks: where batches come from and how predictions are scored.

Every task gives a language model `(inputs, targets)` batches of token ids and scores its logits with
`score(logits, targets) -> (loss, correct, counted)`; `evaluate` averages those over a fixed set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from minrnn_cli.errors import UserError

TASK_NAMES = ("shakespeare", "selective_copying")


def build_task(task_cfg: Mapping[str, Any]):
    """The task named by `task_cfg["name"]`, built from the rest of its settings."""
    options = dict(task_cfg)
    name = options.pop("name", None)
    if name == "shakespeare":
        from minrnn_cli.tasks.shakespeare import Shakespeare

        return Shakespeare(**options)
    if name == "selective_copying":
        from minrnn_cli.tasks.selective_copying import SelectiveCopying

        return SelectiveCopying(**options)
    raise UserError(f"unknown task {name!r}; choose one of {', '.join(TASK_NAMES)}")
