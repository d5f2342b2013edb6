"""The value checks of the trainer, optimiser, logger and generation keys of a composed config, made before
anything is built or written. Model options are the model registry's (training.model_setup), task options
each task's own.

Each failed check is a one-line UserError naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig

from minrnn_cli.device import DEVICE_CHOICES, PRECISIONS
from minrnn_cli.errors import UserError
from minrnn_cli.training.numerics import POLICIES as NONFINITE_POLICIES

LOGGER_NAMES = ("wandb", "none")
WANDB_MODES = ("online", "offline", "disabled")
WANDB_ON_ERROR = ("offline", "stop")
MAX_NEW_TOKENS = 1_000_000  # a Transformer's key/value cache grows with every token: a bound that fits in RAM


def _check(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise UserError(f"{key}={value!r} is invalid: {allowed}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A finite int or float (inf and nan pass every `>` check they should fail)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _choice(key: str, value, choices: tuple[str, ...]) -> None:
    _check(value in choices, key, value, f"choose one of {', '.join(choices)}")


def check_runtime(trainer: DictConfig) -> None:
    """The keys every command uses: precision (device is checked when it is resolved)."""
    _choice("trainer.precision", trainer.precision, PRECISIONS)
    _check(isinstance(trainer.device, str), "trainer.device", trainer.device, f"choose {DEVICE_CHOICES}")


def check_train_config(cfg: DictConfig) -> None:
    check_trainer(cfg.trainer)
    check_optim(cfg.optim)
    check_logger(cfg.logger)


def check_trainer(trainer: DictConfig) -> None:
    check_runtime(trainer)
    for key in ("max_steps", "eval_every", "log_every"):
        value = trainer[key]
        _check(_is_int(value) and value >= 1, f"trainer.{key}", value, "it must be an integer >= 1")
    _check(_is_number(trainer.grad_clip) and trainer.grad_clip >= 0, "trainer.grad_clip", trainer.grad_clip,
           "it must be >= 0 (0 disables clipping)")
    _check(_is_int(trainer.seed), "trainer.seed", trainer.seed, "it must be an integer")
    _check(isinstance(trainer.compile, bool), "trainer.compile", trainer.compile, "it must be true or false")
    _check(trainer.resume is None or (isinstance(trainer.resume, str) and trainer.resume != ""), "trainer.resume",
           trainer.resume, "use null, auto or the path of a checkpoint")
    _choice("trainer.on_nonfinite", trainer.get("on_nonfinite", "stop"), NONFINITE_POLICIES)


def check_optim(optim: DictConfig) -> None:
    _check(_is_number(optim.lr) and optim.lr > 0, "optim.lr", optim.lr, "it must be a number > 0")
    _check(_is_number(optim.weight_decay) and optim.weight_decay >= 0, "optim.weight_decay",
           optim.weight_decay, "it must be >= 0")
    betas = list(optim.betas) if hasattr(optim.betas, "__len__") and not isinstance(optim.betas, str) else None
    _check(betas is not None and len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas),
           "optim.betas", optim.betas, "give two numbers in [0, 1), e.g. [0.9,0.99]")
    _check(_is_int(optim.warmup_steps) and optim.warmup_steps >= 0, "optim.warmup_steps", optim.warmup_steps,
           "it must be an integer >= 0")
    _check(_is_number(optim.min_lr_ratio) and 0 <= optim.min_lr_ratio <= 1, "optim.min_lr_ratio",
           optim.min_lr_ratio, "it must be in [0, 1]")


def check_logger(logger: DictConfig) -> None:
    _choice("logger", logger.name, LOGGER_NAMES)
    if logger.name == "wandb":
        _choice("logger.mode", logger.mode, WANDB_MODES)
        _choice("logger.on_error", logger.get("on_error", "offline"), WANDB_ON_ERROR)
        project = logger.get("project", "minrnn")
        _check(isinstance(project, str) and project.strip() != "", "logger.project", project,
               "give a W&B project name, e.g. logger.project=minrnn")
        timeout = logger.get("init_timeout", 30)
        _check(_is_number(timeout) and timeout > 0, "logger.init_timeout", timeout, "it must be seconds > 0")


def check_generate_config(cfg: DictConfig) -> None:
    _check(_is_int(cfg.max_new_tokens) and 1 <= cfg.max_new_tokens <= MAX_NEW_TOKENS, "max_new_tokens",
           cfg.max_new_tokens, f"it must be an integer from 1 to {MAX_NEW_TOKENS:,}")
    _check(_is_number(cfg.temperature) and cfg.temperature >= 0, "temperature", cfg.temperature,
           "it must be a number >= 0 (0 is greedy)")
    _check(cfg.top_k is None or (_is_int(cfg.top_k) and cfg.top_k >= 1), "top_k", cfg.top_k,
           "use null (all tokens) or an integer >= 1")
    _check(_is_int(cfg.seed), "seed", cfg.seed, "it must be an integer")
    _check(isinstance(cfg.prompt, str), "prompt", cfg.prompt, "it must be text, e.g. prompt='ROMEO:'")
