"""The model registry: every model name, its mixer class and the options it takes, with their types and
ranges, in one table. Adding a model is one mixer module, one row of MODELS and one conf/model/*.yaml.

Options are checked here, once, for every way in: the config (`model.dropout=1.5 is invalid: ...`) and the
Python API (`build_lm("mingru", 65, dropout=1.5)`) give the same message. Defaults live where the option is
consumed (the constructors) and, for the CLI, in conf/model/*.yaml.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from torch import nn

from minrnn_cli.models.blocks import NORMS, ResidualBlock
from minrnn_cli.models.cells import MinGRU, MinLSTM
from minrnn_cli.models.mamba import MambaMixer
from minrnn_cli.models.rnn_baselines import FusedGRU, FusedLSTM, LoopGRU, LoopLSTM
from minrnn_cli.models.transformer import CausalSelfAttention
from minrnn_cli.scans import BACKENDS


@dataclass(frozen=True)
class Option:
    """One setting's type and range: `accepts(value)` and the words that say what is allowed."""

    accepts: Callable[[object], bool]
    allowed: str

    def error(self, key: str, value) -> str | None:
        return None if self.accepts(value) else f"{key}={value!r} is invalid: {self.allowed}"


def _is_number(value) -> bool:
    """A finite int or float (inf and nan pass every `>` check they should fail)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(at_least: int) -> Option:
    return Option(lambda v: _is_number(v) and isinstance(v, int) and v >= at_least,
                  f"it must be an integer >= {at_least}")


def number(above: float | None = None, at_least: float | None = None, below: float | None = None) -> Option:
    def accepts(value) -> bool:
        return (_is_number(value) and (above is None or value > above) and (at_least is None or value >= at_least)
                and (below is None or value < below))

    if at_least is not None and below is not None:
        allowed = f"it must be in [{at_least}, {below})"
    else:
        bounds = [f"{sign} {bound}" for sign, bound in ((">", above), (">=", at_least), ("<", below))
                  if bound is not None]
        allowed = "it must be a number" + (" " + " and ".join(bounds) if bounds else "")
    return Option(accepts, allowed)


def flag() -> Option:
    return Option(lambda v: isinstance(v, bool), "it must be true or false")


def choice(options: tuple[str, ...]) -> Option:
    return Option(lambda v: v in options, f"choose one of {', '.join(options)}")


# Every model is a stack of residual blocks around its mixer (models.blocks); these options shape the stack.
BLOCK_OPTIONS: dict[str, Option] = {
    "d_model": integer(at_least=1),
    "n_layers": integer(at_least=1),
    "conv": flag(),
    "mlp": flag(),
    "mlp_ratio": number(above=0),
    "dropout": number(at_least=0, below=1),
    "norm": choice(tuple(NORMS)),
}

_MINIMAL_RNN: dict[str, Option] = {
    "expansion": number(above=0),
    "learned_h0": flag(),
    "log_space": flag(),
    "scan_backend": choice(BACKENDS),
}


# Checks across options (each valid alone): `check(options, prefix)` gets every option with the constructors'
# defaults filled in, and returns what is wrong (None: nothing).
Relation = Callable[[Mapping[str, object], str], "str | None"]


def _inner_width(options: Mapping[str, object], p: str) -> str | None:
    d_model, expansion = options["d_model"], options["expansion"]
    if round(d_model * expansion) < 1:
        return (f"{p}expansion={expansion} with {p}d_model={d_model} gives an inner width of "
                f"{round(d_model * expansion)}: {p}d_model * {p}expansion must be at least 1")
    return None


def _mlp_width(options: Mapping[str, object], p: str) -> str | None:
    d_model, ratio = options["d_model"], options["mlp_ratio"]
    if options["mlp"] and int(d_model * ratio) < 1:
        return (f"{p}mlp_ratio={ratio} with {p}d_model={d_model} gives the MLP a width of {int(d_model * ratio)}: "
                f"{p}d_model * {p}mlp_ratio must be at least 1 (or {p}mlp=false)")
    return None


def _head_size(options: Mapping[str, object], p: str) -> str | None:
    d_model, heads = options["d_model"], options["n_heads"]
    if d_model % heads or (d_model // heads) % 2:
        fits = [n for n in range(1, min(d_model, 64) + 1) if d_model % n == 0 and (d_model // n) % 2 == 0]
        allowed = f"one of {', '.join(map(str, fits))}" if fits else f"none: {p}d_model must be even"
        return (f"{p}n_heads={heads} does not fit {p}d_model={d_model}: the heads split d_model into equal, even "
                f"head sizes; with {p}d_model={d_model} {p}n_heads can be {allowed}")
    return None


BLOCK_RELATIONS: tuple[Relation, ...] = (_mlp_width,)


@dataclass(frozen=True)
class ModelEntry:
    """A row of the registry: the mixer class (`mixer(x, state) -> (y, state)`, `mixer.step(x_t, state)`),
    the mixer's own options (beyond BLOCK_OPTIONS), passed to its constructor by name, and the checks across
    options that each pass alone (`relations`)."""

    mixer: type[nn.Module]
    options: dict[str, Option] = field(default_factory=dict)
    relations: tuple[Relation, ...] = ()


MODELS: dict[str, ModelEntry] = {
    "mingru": ModelEntry(MinGRU, _MINIMAL_RNN, (_inner_width,)),
    "minlstm": ModelEntry(MinLSTM, {**_MINIMAL_RNN, "normalize": flag(), "forget_bias": number()}, (_inner_width,)),
    "gru": ModelEntry(FusedGRU),
    "lstm": ModelEntry(FusedLSTM),
    "gru_loop": ModelEntry(LoopGRU),
    "lstm_loop": ModelEntry(LoopLSTM),
    "mamba": ModelEntry(MambaMixer, {"d_state": integer(at_least=1), "expansion": integer(at_least=1),
                                     "d_conv": integer(at_least=1)}),
    "transformer": ModelEntry(CausalSelfAttention, {"n_heads": integer(at_least=1)}, (_head_size,)),
}
MODEL_NAMES = tuple(MODELS)  # the models minrnn ships (tests may register more in MODELS)


def model_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name]


def takes_option(name: str, option: str) -> bool:
    """Whether model `name`'s mixer takes `option` (e.g. which models take `scan_backend`)."""
    return option in model_entry(name).options


def check_options(name: str, options: Mapping[str, object], prefix: str = "", blocks: bool = True) -> None:
    """ValueError naming the first unknown or out-of-range option of model `name` (`prefix`: `model.` when
    the options come from the config; `blocks=False`: the mixer alone, without the block options)."""
    entry = model_entry(name)
    allowed = {**(BLOCK_OPTIONS if blocks else {"d_model": BLOCK_OPTIONS["d_model"]}), **entry.options}
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"model {name!r} does not take option {prefix + unknown[0]!r}; it takes: "
                         f"{', '.join(allowed)}")
    for key, value in options.items():
        message = allowed[key].error(f"{prefix}{key}", value)
        if message:
            raise ValueError(message)
    if "d_model" not in options:  # the relations are all about the width: checked when the model is built
        return
    filled = {**_defaults(ResidualBlock), **_defaults(entry.mixer), **options}
    for relation in (*(BLOCK_RELATIONS if blocks else ()), *entry.relations):
        message = relation(filled, prefix)
        if message:
            raise ValueError(message)


def _defaults(cls: type) -> dict[str, object]:
    """The constructor's default values, by option name (a subclass's over its bases', which it may pass on
    through **kwargs)."""
    defaults: dict[str, object] = {}
    for klass in reversed(cls.__mro__[:cls.__mro__.index(nn.Module)]):
        if "__init__" in vars(klass):
            defaults.update({name: parameter.default
                             for name, parameter in inspect.signature(klass.__init__).parameters.items()
                             if parameter.default is not inspect.Parameter.empty})
    return defaults
