"""Compression ratio of each pruned level: dense weights / nonzero weights, weights only (biases are not
counted, as in Han et al. 2015 Table 1 and Molchanov et al. 2017 Table 1's |W| / |W != 0|).

Counted on the point-estimate net the accuracy is measured on: from `flops_nonzero_<level>` /
`flops_dense_<level>` (2 FLOPs per weight, so exactly nonzero / dense weights) where logged. Older runs:
from the per-layer weight sparsities `sparsity_l{i}_<level>` (layers weighted by their sizes 784 x h1,
h1 x h2, ..., hL x 10 from the `hidden` param), measured on one weight sample (the same zeros as the
point estimate for every method but L0, load.weights_removed), else the overall `sparsity_<level>`,
which also counts biases when the run pruned them (flagged in `exact`).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .load import by_level

IN_FEATURES, CLASSES = 784, 10  # both datasets are 28 x 28 grey images of 10 classes


def layer_sizes(hidden: str) -> list[int]:
    """Weights per linear layer of 784-hidden...-10, from the `hidden` param (a JSON list)."""
    dims = [IN_FEATURES, *json.loads(hidden), CLASSES]
    return [a * b for a, b in zip(dims, dims[1:])]


def _nonzero_fraction(run: pd.Series, level: str) -> tuple[float, bool]:
    """(fraction of weights left, exact?) of one run at one level (pNN or nat)."""
    flops = run.get(f"flops_nonzero_{level}", np.nan) / run.get(f"flops_dense_{level}", np.nan)
    if not np.isnan(flops):
        return float(flops), True
    sizes = layer_sizes(run["hidden"])
    per_layer = [run.get(f"sparsity_l{i}_{level}", np.nan) for i in range(1, len(sizes) + 1)]
    if not np.isnan(per_layer).any():
        return float(np.dot(sizes, 1 - np.asarray(per_layer)) / sum(sizes)), True
    biases = str(run.get("param.prune_biases", "False")).lower() == "true"
    return 1 - float(run.get(f"sparsity_{level}", np.nan)), not biases


def levels(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run and level: run_id, label, dataset, seed, level, error (1 - test_acc), compression,
    removed (fraction of weights that are zero), exact (False: biases counted in the sparsity)."""
    acc = by_level(df, "test_acc")
    runs = df.set_index("run_id")
    left = [_nonzero_fraction(runs.loc[r], lv) for r, lv in zip(acc.run_id, acc.level)]
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
