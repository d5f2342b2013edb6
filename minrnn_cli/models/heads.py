"""What a task asks of a model: the head on the shared stack of residual blocks. A task declares one as
`task.head`; `build_model(name, head, **options)` puts it on the named model's backbone.

- `TokenHead`: next-token logits at every position (language modelling, Selective Copying, Chomsky tasks).
- `ClassHead`: one label per right-padded sequence, read at its last real token or pooled over its tokens;
  `paired` reads two sequences with one encoder (LRA Retrieval).
- `ActionHead`: a return-conditioned policy over (return, state, action) tokens (offline RL).

Each built model is called the same way by training and evaluation: `model(inputs) -> (outputs, state)`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from minrnn_cli.models.decision import DecisionModel
from minrnn_cli.models.sequence_models import Backbone, LanguageModel, PairClassifier, SequenceClassifier, check_pool


@dataclass(frozen=True)
class TokenHead:
    vocab_size: int

    def build(self, backbone: Backbone) -> nn.Module:
        return LanguageModel(backbone, self.vocab_size)


class PaddedClassifier(nn.Module):
    """A Sequence- or PairClassifier behind the `model(idx) -> (logits, state)` call: each right-padded
    sequence is read at its own last token (or pooled over its own tokens)."""

    def __init__(self, classifier: nn.Module, pad_token: int):
        super().__init__()
        self.classifier, self.pad_token = classifier, pad_token

    def forward(self, idx: Tensor, state=None) -> tuple[Tensor, None]:
        return self.classifier(idx, lengths=(idx != self.pad_token).sum(dim=-1)), None


@dataclass(frozen=True)
class ClassHead:
    vocab_size: int
    num_classes: int
    pool: str = "last"
    pad_token: int = 0
    paired: bool = False

    def __post_init__(self) -> None:
        check_pool(self.pool)

    def build(self, backbone: Backbone) -> nn.Module:
        classifier = (PairClassifier if self.paired else SequenceClassifier)(backbone, self.num_classes, self.pool)
        return PaddedClassifier(classifier, self.pad_token)


@dataclass(frozen=True)
class ActionHead:
    state_dim: int
    action_dim: int
    max_timestep: int
    vocab_size = None  # the policy embeds its own (return, state, action) tokens

    def build(self, backbone: Backbone) -> nn.Module:
        return DecisionModel(backbone, self.state_dim, self.action_dim, self.max_timestep)


Head = TokenHead | ClassHead | ActionHead
