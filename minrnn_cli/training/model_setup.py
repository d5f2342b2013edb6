"""Building the model a config names (a one-line error for a bad name or option)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from minrnn_cli.errors import UserError


class PaddedClassifier(nn.Module):
    """A Sequence- or PairClassifier behind the `model(idx) -> (logits, state)` call of training and
    evaluation: each right-padded sequence is read at its own last token (or pooled over its own tokens)."""

    def __init__(self, classifier: nn.Module, pad_token: int):
        super().__init__()
        self.classifier, self.pad_token = classifier, pad_token

    def forward(self, idx: Tensor, state=None) -> tuple[Tensor, None]:
        return self.classifier(idx, lengths=(idx != self.pad_token).sum(dim=-1)), None


def build_task_model(model_cfg: Mapping[str, Any], task):
    """A policy for a task with `action_dim` (D4RL), a classifier for a task with `num_classes` (ListOps, LRA;
    of pairs for a `paired` task), a language model for every other task."""
    if hasattr(task, "action_dim"):
        return build_policy(model_cfg, task.state_dim, task.action_dim, task.max_timestep)
    num_classes = getattr(task, "num_classes", None)
    if num_classes is None:
        return build_model(model_cfg, task.vocab_size)
    return build_model(model_cfg, task.vocab_size, num_classes=num_classes, pool=task.pool, pad_token=task.pad_token,
                       paired=getattr(task, "paired", False))


def _model_name(options: dict) -> str:
    from minrnn_cli.models import MODEL_NAMES

    name = options.pop("name", None)
    if name not in MODEL_NAMES:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return name


def build_policy(model_cfg: Mapping[str, Any], state_dim: int, action_dim: int, max_timestep: int):
    from minrnn_cli.models import build_decision_model

    options = dict(model_cfg)
    name = _model_name(options)
    try:
        return build_decision_model(name, state_dim, action_dim, max_timestep, **options)
    except (ValueError, TypeError) as error:
        raise UserError(f"model {name}: {error}") from None


def build_model(model_cfg: Mapping[str, Any], vocab_size: int, num_classes: int | None = None, pool: str = "last",
                pad_token: int = 0, paired: bool = False):
    from minrnn_cli.models import build_classifier, build_lm

    options = dict(model_cfg)
    name = _model_name(options)
    try:
        if num_classes is None:
            return build_lm(name, vocab_size, **options)
        classifier = build_classifier(name, vocab_size, num_classes, pool, paired, **options)
        return PaddedClassifier(classifier, pad_token)
    except (ValueError, TypeError) as error:
        raise UserError(f"model {name}: {error}") from None
