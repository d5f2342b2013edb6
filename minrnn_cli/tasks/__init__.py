"""Tasks: where batches come from and how predictions are scored.

Every task gives a language model `(inputs, targets)` batches of token ids and scores its logits with
`score(logits, targets) -> (loss, correct, counted)`; `evaluate` averages those over a fixed set. A task
with `num_classes` (ListOps, LRA) is read by a classifier instead, of pairs where the task is `paired`
(LRA Retrieval), and D4RL, with `action_dim`, by a return-conditioned policy (training.model_setup).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from minrnn_cli.errors import UserError

CHOMSKY_TASKS = ("parity_check", "even_pairs", "cycle_nav", "bucket_sort", "majority", "majority_count",
                 "missing_duplicate")
EXTERNAL_TASKS = ("lra_image", "lra_retrieval", "d4rl")  # need a user-supplied task.data_path
TASK_NAMES = ("shakespeare", "selective_copying", *CHOMSKY_TASKS, "listops", *EXTERNAL_TASKS)


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
    if name in CHOMSKY_TASKS:
        from minrnn_cli.tasks.chomsky import ChomskyTask

        return ChomskyTask(name, **options)
    if name == "listops":
        from minrnn_cli.tasks.listops import ListOps

        return ListOps(**options)
    if name == "lra_image":
        from minrnn_cli.tasks.external import LRAImage

        return LRAImage(**options)
    if name == "lra_retrieval":
        from minrnn_cli.tasks.lra_retrieval import LRARetrieval

        return LRARetrieval(**options)
    if name == "d4rl":
        from minrnn_cli.tasks.d4rl import D4RL

        return D4RL(**options)
    raise UserError(f"unknown task {name!r}; choose one of {', '.join(TASK_NAMES)}")
