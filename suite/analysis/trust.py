"""Uncertainty under pruning, in words: what pruning costs in trust (suite/ood.py's metrics). OOD
detection by predictive entropy (Hendrycks and Gimpel 2017) and by the ensemble's mutual information;
accuracy and calibration on rotated images (Ovadia et al. 2019). The tables are tables.level_table
over tables.TRUST_TABLES; this module says which exist and the headline from the numbers."""
from __future__ import annotations

import re

import pandas as pd

from .load import DATASET_NAMES, LEVEL, NAT, by_level, level_key, ordered_datasets
from .tables import TRUST_TABLES, level_name

ANGLE = re.compile(r"^shift_acc_r(?P<angle>\d+)$")


def present(df: pd.DataFrame) -> bool:
    """Did any run log an OOD or rotation-shift metric?"""
    return any((m := LEVEL.match(c)) and m["metric"] in TRUST_TABLES for c in df.columns)


def per_angle(df: pd.DataFrame) -> pd.DataFrame:
    """Long format of the per-angle rotated accuracy: by_level's columns plus `angle` (degrees) and `acc`."""
    parts = []
    for metric in sorted({m["metric"] for c in df.columns if (m := LEVEL.match(c)) and ANGLE.match(m["metric"])}):
        long = by_level(df, metric).rename(columns={metric: "acc"})
        parts.append(long.assign(angle=int(ANGLE.match(metric)["angle"])))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _at(df: pd.DataFrame, metric: str) -> tuple[str | None, pd.Series, pd.Series]:
    """(highest pruned level every method with `metric` has, means per label there, means per label
    unpruned); collapsed runs left out."""
    long = by_level(df[~df.collapsed], metric)
    long = long[long.level != NAT]
    if long.empty:
        return None, pd.Series(dtype=float), pd.Series(dtype=float)
    labels = set(long.label)
    common = [lv for lv in long.level.unique() if set(long.label[long.level == lv]) == labels and lv != "p00"]
    if not common:
        return None, pd.Series(dtype=float), pd.Series(dtype=float)
    top = max(common, key=level_key)
    means = long.groupby(["level", "label"])[metric].mean()
    dense = means.loc["p00"] if "p00" in means.index.get_level_values(0) else pd.Series(dtype=float)
    return top, means.loc[top], dense


def headline(df: pd.DataFrame) -> list[str]:
    """Per dataset, from the numbers: the best and worst OOD AUROC (entropy) at the highest pruned
    level every method has, each with its change from unpruned; the best accuracy under rotation there."""
    lines = []
    for ds in ordered_datasets(df):
        d = df[df.dataset == ds]
        name = DATASET_NAMES.get(ds, ds)
        top, at, dense = _at(d, "ood_auroc_entropy")
        if top is not None:
            def change(lab: str) -> str:
                return f", {at[lab] - dense[lab]:+.3f} vs unpruned" if lab in dense.index else ""
            best, worst = at.idxmax(), at.idxmin()
            s = (f"{name}: at {level_name(top)} pruned, OOD detection by predictive entropy is best for {best} "
                 f"(AUROC {at[best]:.3f}{change(best)})")
            lines.append(s + (f" and worst for {worst} (AUROC {at[worst]:.3f}{change(worst)})." if worst != best else "."))
        top, at, dense = _at(d, "shift_acc_mean")
        if top is not None:
            best = at.idxmax()
            unpruned = f"; {dense[best]:.1%} unpruned" if best in dense.index else ""
            lines.append(f"{name}: under rotation (mean over angles) at {level_name(top)} pruned, {best} keeps the "
                         f"highest accuracy ({at[best]:.1%}{unpruned}).")
    return lines
