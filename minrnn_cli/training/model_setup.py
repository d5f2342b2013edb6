"""Building the model a config names (a one-line error for a bad name or option)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from minrnn_cli.errors import UserError


class PaddedClassifier(nn.Module):
    """A SequenceClassifier behind the `model(idx) -> (logits, state)` call of training and evaluation: each
    right-padded sequence is read at its own last token (or pooled over its own tokens)."""

    def __init__(self, classifier: nn.Module, pad_token: int):
        super().__init__()
        self.classifier, self.pad_token = classifier, pad_token

    def forward(self, idx: Tensor, state=None) -> tuple[Tensor, None]:
        return self.classifier(idx, lengths=(idx != self.pad_token).sum(dim=1)), None


def build_task_model(model_cfg: Mapping[str, Any], task):
    """A classifier for a task with `num_classes` (ListOps, LRA), a language model for every other task."""
    num_classes = getattr(task, "num_classes", None)
    if num_classes is None:
        return build_model(model_cfg, task.vocab_size)
    return build_model(model_cfg, task.vocab_size, num_classes=num_classes, pool=task.pool, pad_token=task.pad_token)


def build_model(model_cfg: Mapping[str, Any], vocab_size: int, num_classes: int | None = None, pool: str = "last",
                pad_token: int = 0):
    from minrnn_cli.models import MODEL_NAMES, build_classifier, build_lm

    options = dict(model_cfg)
    name = options.pop("name", None)
    if name not in MODEL_NAMES:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    try:
        if num_classes is None:
            return build_lm(name, vocab_size, **options)
        return PaddedClassifier(build_classifier(name, vocab_size, num_classes, pool, **options), pad_token)
    except (ValueError, TypeError) as error:
        raise UserError(f"model {name}: {error}") from None
