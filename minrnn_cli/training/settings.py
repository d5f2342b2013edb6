"""Every value check of a composed config, in one place, before anything is built or written."""

from __future__ import annotations

from omegaconf import DictConfig

from minrnn_cli.errors import UserError

PRECISIONS = ("fp32", "bf16")
LOGGER_NAMES = ("wandb", "none")
WANDB_MODES = ("online", "offline", "disabled")


def _check(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise UserError(f"{key}={value!r} is invalid: {allowed}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_runtime(trainer: DictConfig) -> None:
    """The keys every command uses: precision (device is checked when it is resolved)."""
    _check(trainer.precision in PRECISIONS, "trainer.precision", trainer.precision,
           f"choose one of {', '.join(PRECISIONS)}")


def check_train_config(cfg: DictConfig) -> None:
    trainer, optim, model = cfg.trainer, cfg.optim, cfg.model
    check_runtime(trainer)
    for key in ("max_steps", "eval_every", "log_every"):
        value = trainer[key]
        _check(_is_int(value) and value >= 1, f"trainer.{key}", value, "it must be an integer >= 1")
    _check(_is_number(trainer.grad_clip) and trainer.grad_clip >= 0, "trainer.grad_clip", trainer.grad_clip,
           "it must be >= 0 (0 disables clipping)")
    _check(_is_int(trainer.seed), "trainer.seed", trainer.seed, "it must be an integer")
    _check(_is_number(optim.lr) and optim.lr > 0, "optim.lr", optim.lr, "it must be > 0")
    _check(_is_number(optim.weight_decay) and optim.weight_decay >= 0, "optim.weight_decay",
           optim.weight_decay, "it must be >= 0")
    _check(_is_int(optim.warmup_steps) and optim.warmup_steps >= 0, "optim.warmup_steps", optim.warmup_steps,
           "it must be an integer >= 0")
    _check(_is_number(optim.min_lr_ratio) and 0 <= optim.min_lr_ratio <= 1, "optim.min_lr_ratio",
           optim.min_lr_ratio, "it must be in [0, 1]")
    dropout = model.get("dropout", 0.0)
    _check(_is_number(dropout) and 0 <= dropout < 1, "model.dropout", dropout, "it must be in [0, 1)")
    for key in ("d_model", "n_layers"):
        if key in model:
            _check(_is_int(model[key]) and model[key] >= 1, f"model.{key}", model[key],
                   "it must be an integer >= 1")
    check_logger(cfg.logger)


def check_logger(logger: DictConfig) -> None:
    _check(logger.name in LOGGER_NAMES, "logger", logger.name, f"choose one of {', '.join(LOGGER_NAMES)}")
    if logger.name == "wandb":
        _check(logger.mode in WANDB_MODES, "logger.mode", logger.mode, f"choose one of {', '.join(WANDB_MODES)}")
