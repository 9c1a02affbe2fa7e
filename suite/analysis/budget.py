"""Each run's training budget in epochs, so arms are compared at the epochs they really trained.

Trials log their budget as metrics: `total_epochs` (every epoch the trial trained: training plus every
retraining epoch) and `model_epochs_<level>` (per evaluated level, tagged as test_acc_<level>: the epochs
behind the model evaluated there, i.e. training plus that model's own retraining, an iterative model's
earlier rounds included). They are read as logged. Runs logged before trials recorded their budget
have neither: their total comes from `budget_from_params`, and a level's budget is the run's total.
"""
from __future__ import annotations

import json
import math

import pandas as pd


def total_epochs(protocol: str, params: dict[str, str], metrics: dict[str, float]) -> float:
    """All epochs one run trained: its `total_epochs` metric, else budget_from_params (NaN when unknown)."""
    if "total_epochs" in metrics:
        return float(metrics["total_epochs"])
    return budget_from_params(protocol, params)


def model_epochs(runs: pd.DataFrame, level: str) -> pd.Series:
    """Per run, the epochs behind its model at `level` (pNN or nat): the `model_epochs_<level>` metric where
    logged, else the run's total_epochs."""
    col = f"model_epochs_{level}"
    return runs[col].fillna(runs["total_epochs"]) if col in runs else runs["total_epochs"]


def budget_from_params(protocol: str, params: dict[str, str]) -> float:
    """The fallback for runs logged before trials recorded their budget: training epochs plus the built-in
    protocols' retraining epochs, restated from suite/protocols (the analysis imports no training code):
      oneshot, natural: nothing after training;
      finetune, gradual: finetune_epochs per level > 0 (one retrained copy per level);
      iterative: finetune_epochs per pruning round; each round prunes iterative_fraction of the remaining
      weights, a level's last round stops at the level (suite/protocols/iterative.round_targets).
    Another protocol, or a missing param, gives NaN."""
    try:
        epochs = int(params["epochs"])
        if protocol in ("oneshot", "natural"):
            return float(epochs)
        k = int(params["finetune_epochs"])
        levels = [p for p in json.loads(params["sparsities"]) if p != 0]
        if protocol in ("finetune", "gradual"):
            return float(epochs + k * len(levels))
        if protocol == "iterative":
            fraction, rounds, s = float(params["iterative_fraction"]), 0, 0.0
            for p in levels:
                while s < p:
                    s = min(p, 1 - (1 - s) * (1 - fraction))
                    rounds += 1
            return float(epochs + k * rounds)
    except (KeyError, ValueError, TypeError):
        pass
    return math.nan
