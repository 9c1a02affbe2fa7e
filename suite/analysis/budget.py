"""Each run's training budget in epochs, so arms are compared at the epochs they really trained.

Trials log their budget as metrics: `total_epochs` (every epoch the trial trained: training plus every
retraining epoch) and `model_epochs_<level>` (per evaluated level, tagged as test_acc_<level>: the epochs
behind the model evaluated there, i.e. training plus that model's own retraining, an iterative model's
earlier rounds included). They are read as logged. Runs logged before trials recorded their budget
have neither: both come from the run's params (`budget_from_params`, `model_epochs_from_params`), restated
from the built-in protocols; a plug-in protocol's old runs have a total only where it was logged, and a
level's budget is then the run's total.

Two budgets, because they differ: an arm that retrains one copy per level (fine-tune, gradual) trains many
models per trial, each with training plus its own retraining; summed epochs per trial and epochs behind
the model shown are both needed to say what "equal budgets" means.
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
    logged, else model_epochs_from_params on the run's params (`param.*` columns), else the run's total_epochs."""
    col = f"model_epochs_{level}"
    logged = runs[col] if col in runs else pd.Series(math.nan, index=runs.index, dtype=float)
    params = [c for c in runs.columns if c.startswith("param.")]
    derived = pd.Series([model_epochs_from_params(str(r.get("protocol") or "oneshot"),
                                                  {c[6:]: r[c] for c in params if isinstance(r[c], str)}, level)
                         for _, r in runs.iterrows()], index=runs.index, dtype=float)
    total = runs["total_epochs"] if "total_epochs" in runs else pd.Series(math.nan, index=runs.index, dtype=float)
    return logged.astype(float).fillna(derived).fillna(total)


def model_epochs_from_params(protocol: str, params: dict[str, str], level: str) -> float:
    """The fallback for a level's model_epochs_<level> (pNN or nat), restated from suite/protocols:
      oneshot, natural, and level 0 of every built-in protocol: the training epochs (nothing retrains it);
      finetune, gradual: training plus that level's own finetune_epochs;
      iterative: training plus finetune_epochs per round up to this level, earlier levels' rounds included.
    Another protocol, or a missing param, gives NaN."""
    try:
        epochs = int(params["epochs"])
        if protocol in ("oneshot", "natural"):
            return float(epochs)
        if protocol not in ("finetune", "gradual", "iterative") or not level.startswith("p"):
            return math.nan
        pct = int(level[1:])
        if pct == 0:
            return float(epochs)
        k = int(params["finetune_epochs"])
        if protocol in ("finetune", "gradual"):
            return float(epochs + k)
        upto = [p for p in json.loads(params["sparsities"]) if p != 0 and round(p * 100) <= pct]
        return float(epochs + k * _rounds(sorted(upto), float(params["iterative_fraction"])))
    except (KeyError, ValueError, TypeError):
        return math.nan


def _rounds(levels: list[float], fraction: float) -> int:
    """Iterative pruning's rounds to pass the ascending levels: each prunes `fraction` of the remaining
    weights, a level's last round stops at the level (suite/protocols/iterative.round_targets)."""
    rounds, s = 0, 0.0
    for p in levels:
        while s < p:
            s = min(p, 1 - (1 - s) * (1 - fraction))
            rounds += 1
    return rounds


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
            return float(epochs + k * _rounds(sorted(levels), float(params["iterative_fraction"])))
    except (KeyError, ValueError, TypeError):
        pass
    return math.nan
