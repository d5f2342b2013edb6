"""Building the model a config names (a one-line error for a bad name or option)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from minrnn_cli.errors import UserError


def build_model(model_cfg: Mapping[str, Any], vocab_size: int):
    from minrnn_cli.models import MODEL_NAMES, build_lm

    options = dict(model_cfg)
    name = options.pop("name", None)
    if name not in MODEL_NAMES:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    try:
        return build_lm(name, vocab_size, **options)
    except (ValueError, TypeError) as error:
        raise UserError(f"model {name}: {error}") from None
