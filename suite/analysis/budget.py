"""Each run's training budget in epochs, so arms are compared at the epochs they really trained:
training proper (`epochs`) plus every retraining epoch its pruning protocol spent after it.

A run that logged the metric `total_epochs` is taken at its word. Otherwise the budget is computed
from the params and the `protocol` tag as the protocols count it (suite/protocols/*.py `extra_epochs`;
this package imports nothing from the training code, so the rule is restated here):
  oneshot, natural: nothing after training;
  finetune, gradual: finetune_epochs per level > 0 (one retrained copy per level);
  iterative: finetune_epochs per pruning round, the rounds of iterative.round_targets (each prunes
  iterative_fraction of the remaining weights, a level's last round stops at the level).
A protocol not listed here without a `total_epochs` metric has no known budget (NaN).
"""
from __future__ import annotations

import json
import math


def iterative_rounds(levels: list[float], fraction: float) -> int:
    """Pruning rounds of the iterative protocol over the levels > 0 (ascending)."""
    rounds, s = 0, 0.0
    for p in levels:
        while s < p:
            s = min(p, 1 - (1 - s) * (1 - fraction))
            rounds += 1
    return rounds


def total_epochs(protocol: str, params: dict[str, str], metrics: dict[str, float]) -> float:
    """Training epochs plus the protocol's retraining epochs of one run (NaN when unknown)."""
    if "total_epochs" in metrics:
        return float(metrics["total_epochs"])
    try:
        epochs = int(params["epochs"])
        if protocol in ("oneshot", "natural"):
            return float(epochs)
        k = int(params["finetune_epochs"])
        levels = [p for p in json.loads(params["sparsities"]) if p != 0]
        if protocol in ("finetune", "gradual"):
            return float(epochs + k * len(levels))
        if protocol == "iterative":
            return float(epochs + k * iterative_rounds(levels, float(params["iterative_fraction"])))
    except (KeyError, ValueError, TypeError):
        pass
    return math.nan
