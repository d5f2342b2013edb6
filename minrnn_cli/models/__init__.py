"""Every model kind behind one registry keyed by name (torch only: no hydra, wandb or datasets here)."""

from __future__ import annotations

from torch import nn

from minrnn_cli.models.blocks import ResidualBlock
from minrnn_cli.models.cells import MinGRU, MinLSTM
from minrnn_cli.models.decision import DecisionModel, Steps
from minrnn_cli.models.mamba import MambaMixer
from minrnn_cli.models.rnn_baselines import FusedGRU, FusedLSTM, LoopGRU, LoopLSTM
from minrnn_cli.models.sequence_models import Backbone, LanguageModel, PairClassifier, SequenceClassifier
from minrnn_cli.models.transformer import CausalSelfAttention

_MINIMAL_RNN_OPTIONS = ("expansion", "learned_h0", "log_space", "scan_backend")

# name -> (mixer class, the options it takes)
MIXERS: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    "mingru": (MinGRU, _MINIMAL_RNN_OPTIONS),
    "minlstm": (MinLSTM, (*_MINIMAL_RNN_OPTIONS, "normalize", "forget_bias")),
    "gru": (FusedGRU, ()),
    "lstm": (FusedLSTM, ()),
    "gru_loop": (LoopGRU, ()),
    "lstm_loop": (LoopLSTM, ()),
    "mamba": (MambaMixer, ("d_state", "expansion", "d_conv")),
    "transformer": (CausalSelfAttention, ("n_heads",)),
}
MODEL_NAMES = tuple(MIXERS)
BLOCK_OPTIONS = ("conv", "mlp", "mlp_ratio", "dropout", "norm")


def build_mixer(name: str, d_model: int, **options) -> nn.Module:
    """One sequence mixer: `mixer(x, state) -> (y, state)` over (B, T, d_model), `mixer.step(x_t, state)`."""
    if name not in MIXERS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    mixer_class, allowed = MIXERS[name]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        takes = ", ".join((*allowed, *BLOCK_OPTIONS, "d_model", "n_layers"))
        raise ValueError(f"model {name!r} does not take option {unknown[0]!r}; it takes: {takes}")
    return mixer_class(d_model, **options)


def build_backbone(name: str, vocab_size: int | None, d_model: int = 128, n_layers: int = 2, **options) -> Backbone:
    if d_model < 1 or n_layers < 1:
        raise ValueError(f"d_model and n_layers must be >= 1; got d_model={d_model}, n_layers={n_layers}")
    dropout = options.get("dropout", 0.0)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout} is outside [0, 1)")
    block_options = {key: options.pop(key) for key in BLOCK_OPTIONS if key in options}
    blocks = [
        ResidualBlock(build_mixer(name, d_model, **options), d_model, **block_options)
        for _ in range(n_layers)
    ]
    return Backbone(vocab_size, d_model, blocks, block_options.get("norm", "rms"))


def build_lm(name: str, vocab_size: int, **options) -> LanguageModel:
    """A next-token model over a vocabulary: embedding, `n_layers` residual blocks, norm, linear head."""
    return LanguageModel(build_backbone(name, vocab_size, **options), vocab_size)


def build_classifier(name: str, vocab_size: int, num_classes: int, pool: str = "last", paired: bool = False,
                     **options):
    """A sequence classifier reading the last position (`pool="last"`) or the mean (`pool="mean"`); with
    `paired`, a two-tower classifier of sequence pairs (LRA Retrieval)."""
    classifier = PairClassifier if paired else SequenceClassifier
    return classifier(build_backbone(name, vocab_size, **options), num_classes, pool)


def build_decision_model(name: str, state_dim: int, action_dim: int, max_timestep: int, **options) -> DecisionModel:
    """A return-conditioned policy (offline RL): the blocks read embedded (return, state, action) tokens."""
    return DecisionModel(build_backbone(name, None, **options), state_dim, action_dim, max_timestep)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "BLOCK_OPTIONS", "MIXERS", "MODEL_NAMES", "DecisionModel", "LanguageModel", "MinGRU", "MinLSTM", "PairClassifier",
    "SequenceClassifier", "Steps",
    "build_backbone", "build_classifier", "build_decision_model", "build_lm", "build_mixer", "count_params",
]
