"""The model a config names, under the head its task declares (a one-line error for a bad name or option)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from minrnn_cli.errors import UserError


def check_model_config(model_cfg: Mapping[str, Any]) -> None:
    """The model's name and every option against the model registry's table, before anything is built."""
    from minrnn_cli.models import MODELS, check_options

    options = dict(model_cfg)
    name = options.pop("name", None)
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    try:
        check_options(name, options, prefix="model.")
    except ValueError as error:
        raise UserError(str(error)) from None


def build_task_model(model_cfg: Mapping[str, Any], task) -> nn.Module:
    """The configured model with the head `task.head` asks for (a language model, a classifier, a policy)."""
    from minrnn_cli.models import build_model

    check_model_config(model_cfg)
    options = dict(model_cfg)
    name = options.pop("name")
    try:
        return build_model(name, task.head, **options)
    except (ValueError, TypeError) as error:  # options valid one by one that do not fit together
        raise UserError(f"model {name}: {error}") from None
