"""Every model behind one registry keyed by name (torch only: no hydra, wandb or datasets here).

    build_model(name, head, **options)   the named model's backbone under a task's head (models.heads)
    build_lm(name, vocab_size, **options) a language model, the common case
"""

from __future__ import annotations

from torch import nn

from minrnn_cli.models.blocks import ResidualBlock
from minrnn_cli.models.cells import MinGRU, MinLSTM
from minrnn_cli.models.decision import DecisionModel, Steps
from minrnn_cli.models.heads import ActionHead, ClassHead, Head, TokenHead
from minrnn_cli.models.registry import BLOCK_OPTIONS, MODEL_NAMES, MODELS, check_options, model_entry, takes_option
from minrnn_cli.models.sequence_models import Backbone, LanguageModel, PairClassifier, SequenceClassifier


def build_mixer(name: str, d_model: int, **options) -> nn.Module:
    """One sequence mixer: `mixer(x, state) -> (y, state)` over (B, T, d_model), `mixer.step(x_t, state)`."""
    check_options(name, {"d_model": d_model, **options}, blocks=False)
    return model_entry(name).mixer(d_model, **options)


def build_backbone(name: str, vocab_size: int | None, d_model: int = 128, n_layers: int = 2, **options) -> Backbone:
    """Embedding (when there is a vocabulary), `n_layers` residual blocks around the named mixer, final norm."""
    check_options(name, {"d_model": d_model, "n_layers": n_layers, **options})
    block_options = {key: options.pop(key) for key in BLOCK_OPTIONS if key in options}
    blocks = [ResidualBlock(model_entry(name).mixer(d_model, **options), d_model, **block_options)
              for _ in range(n_layers)]
    return Backbone(vocab_size, d_model, blocks, block_options.get("norm", "rms"))


def build_model(name: str, head: Head, **options) -> nn.Module:
    """The named model's backbone under `head` (what the task declares it needs)."""
    return head.build(build_backbone(name, head.vocab_size, **options))


def build_lm(name: str, vocab_size: int, **options) -> LanguageModel:
    """A next-token model over a vocabulary: embedding, `n_layers` residual blocks, norm, linear head."""
    return build_model(name, TokenHead(vocab_size), **options)


def build_classifier(name: str, vocab_size: int, num_classes: int, pool: str = "last", paired: bool = False,
                     **options):
    """A sequence classifier reading the last position (`pool="last"`) or the mean (`pool="mean"`); with
    `paired`, a two-tower classifier of sequence pairs (LRA Retrieval). Called as `model(idx, lengths)`."""
    return build_model(name, ClassHead(vocab_size, num_classes, pool, paired=paired), **options).classifier


def build_decision_model(name: str, state_dim: int, action_dim: int, max_timestep: int, **options) -> DecisionModel:
    """A return-conditioned policy (offline RL): the blocks read embedded (return, state, action) tokens."""
    return build_model(name, ActionHead(state_dim, action_dim, max_timestep), **options)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "BLOCK_OPTIONS", "MODELS", "MODEL_NAMES", "ActionHead", "ClassHead", "DecisionModel", "Head", "LanguageModel",
    "MinGRU", "MinLSTM", "PairClassifier", "SequenceClassifier", "Steps", "TokenHead",
    "build_backbone", "build_classifier", "build_decision_model", "build_lm", "build_mixer", "build_model",
    "check_options", "count_params", "takes_option",
]
