"""Compression ratio of each pruned level: dense weights / nonzero weights, weights only (biases are not
counted, as in Han et al. 2015 Table 1 and Molchanov et al. 2017 Table 1's |W| / |W != 0|).

Counted on the point-estimate net the accuracy is measured on (load.weights_left: one definition for
this module, the natural level's sparsity and the plots).
"""
from __future__ import annotations

import pandas as pd

from .load import by_level, weights_left


def levels(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run and level: run_id, label, dataset, seed, level, error (1 - test_acc), compression,
    removed (fraction of weights that are zero), exact (False: biases counted in the sparsity)."""
    acc = by_level(df, "test_acc")
    runs = df.set_index("run_id")
    left = [weights_left(runs.loc[r], lv) for r, lv in zip(acc.run_id, acc.level)]
    out = acc.assign(error=1 - acc["test_acc"], removed=[1 - f for f, _ in left], exact=[e for _, e in left])
    # a level with every weight pruned has no finite ratio; it cannot be plotted or ranked
    out["compression"] = 1 / (1 - out["removed"]).where(out["removed"] < 1)
    return out.drop(columns=["test_acc", "sparsity"]).dropna(subset=["compression"])


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, label and level: mean compression and removed fraction, mean/std/n of the error."""
    lv = levels(df)
    g = lv.groupby(["dataset", "label", "level"])
    return g.agg(compression=("compression", "mean"), removed=("removed", "mean"), error=("error", "mean"),
                 error_std=("error", "std"), n=("error", "count"), exact=("exact", "all")).reset_index()
