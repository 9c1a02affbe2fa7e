"""oneshot (the default): prune a fresh copy of the trained model at each level by the score, no
retraining (the original study's protocol); the interface's defaults are exactly this."""
from __future__ import annotations

from . import register
from .base import Protocol


@register
class Oneshot(Protocol):
    name, order = "oneshot", 0.0
    is_baseline = True  # plain SGD pruned one-shot is what every other configuration is compared against
