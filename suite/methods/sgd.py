"""SGD and Dropout: a deterministic ReLU MLP with weights theta, trained on cross-entropy
(Dropout: Srivastava et al. 2014), pruned by global L1 magnitude (Han et al. 2015)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import register
from .base import Method, Params

# Colours of the study's methods (kept from the first reports so figures stay comparable).
_DROPOUT_COLORS = {0.5: "#ff7f0e", 0.75: "#2ca02c", 0.9: "#9467bd"}


@dataclass(frozen=True)
class SGDParams(Params):
    """Dropout settings of the deterministic baseline."""

    dropout: float = 0.0
    """Dropout probability on hidden layers (and on the input if input_dropout); 0 disables it."""
    input_dropout: bool = True
    """Also apply dropout to the input pixels (the original study did)."""

    def check(self, fail) -> None:
        if not 0.0 <= self.dropout < 1.0:
            fail("dropout", self.dropout, "a probability in [0, 1)")


@register
class SGD(Method):
    """784-hidden-10 ReLU MLP, optionally with dropout; one flat parameter vector theta."""

    name = "sgd"
    Params = SGDParams
    color = "#1f77b4"
    order = 0.0

    def __init__(self, cfg):
        super().__init__(cfg)
        self.dropout, self.input_dropout = self.p.dropout, self.p.input_dropout

    @classmethod
    def label(cls, cfg) -> str:
        return f"Dropout {cfg.params.dropout:g}" if cfg.params.dropout > 0 else "SGD"

    @classmethod
    def label_order(cls, cfg) -> float:
        # SGD, then Dropout by p, all before SGD + fine-tune (order offset 0.5); suite/analysis/labels.py
        # applies the same rule to runs logged before it (a test keeps the two alike)
        return cls.order + cfg.params.dropout / 2

    @classmethod
    def label_color(cls, cfg) -> str:
        """A searched rate (0.5163) takes the colour of the nearest of the study's rates, the one it replaces."""
        p = cfg.params.dropout
        return _DROPOUT_COLORS[min(_DROPOUT_COLORS, key=lambda q: abs(q - p))] if p > 0 else cls.color

    @classmethod
    def is_baseline(cls, cfg) -> bool:
        return cfg.params.dropout == 0

    def init_parameters(self) -> None:
        self.theta = nn.Parameter(self.uniform_init())

    def point_weights(self) -> Tensor:
        return self.theta

    @torch.no_grad()
    def prune_(self, keep: Tensor) -> None:
        self.theta.mul_(keep)
