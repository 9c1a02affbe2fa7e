"""Accuracy, likelihood and calibration after pruning: per dataset, the training budget behind every cell
(epochs per model at each level, epochs per trial), one table per metric of levels.ACCURACY (method x level),
and the accuracy and calibration curves against the pruned fraction."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import seaborn as sns

from . import figure
from .document import Section, footnote, table, text
from .levels import ACCURACY, level_table
from .load import DATASET_NAMES, NAT, Experiment, by_level, ordered_datasets
from .table import BUDGET_NOTE, budget_table

ABOUT = "{what}; mean ± std over seeds (n){best}. The epochs behind each cell: the Training budget table."
BEST = "; best per column in bold"
BUDGET = ("Training epochs behind the models of the tables below: per level, the epochs per model evaluated there; "
          "last column, the epochs per trial.")


def subsections(df: pd.DataFrame, ds: str, tdir: Path) -> list[Section]:
    """The training budget, then one subsection per metric of ACCURACY some run of the dataset logged."""
    out = []
    budget = budget_table(df, ds)
    if not budget.empty:
        out.append(Section("Training budget", [text(BUDGET), table(budget.write(tdir, f"budget_{ds}")),
                                               text(BUDGET_NOTE, note=True)]))
    for metric, (title, what, higher) in ACCURACY.items():
        t = level_table(df, metric, ds)
        if t.empty:
            continue
        about = text(ABOUT.format(what=what[0].upper() + what[1:], best=BEST if higher is not None else ""), note=True)
        out.append(Section(title, [about, table(t.write(tdir, f"{metric}_{ds}")), *footnote(df, ds)]))
    return out


def draw_vs_sparsity(ax, df: pd.DataFrame, ds: str, metric: str, ylabel: str, what: str) -> None:
    """One line per label of a per-level metric vs the pruned fraction; band = ±1 std over seeds. The
    natural level is a star at its measured sparsity (error bars: ±1 std both ways)."""
    pal = figure.palette(df)
    long = by_level(df[df.dataset == ds], metric)
    fixed, nat = long[long.level != NAT], long[long.level == NAT]
    sns.lineplot(fixed, x="sparsity", y=metric, hue="label", hue_order=figure.order(df, fixed.label), palette=pal,
                 errorbar="sd", marker="o", ax=ax)
    for label, g in nat.groupby("label"):
        ax.errorbar(g.sparsity.mean(), g[metric].mean(), xerr=g.sparsity.std() if len(g) > 1 else None,
                    yerr=g[metric].std() if len(g) > 1 else None, marker="*", ms=13, color=pal[label],
                    ls="none", label=f"{label} (natural sparsity)")
    if metric == "test_acc":
        ax.axhline(0.1, color="grey", ls=":", lw=1, label="chance")
        ax.set_ylim(0, 1.02)
    ax.set(title=f"{DATASET_NAMES.get(ds, ds)}: {what}", xlabel="fraction of weights pruned", ylabel=ylabel)


def _vs_sparsity(exp: Experiment, out: Path, metric: str, ylabel: str, what: str, stem: str) -> list[Path]:
    paths = []
    for ds in ordered_datasets(exp.runs):
        if by_level(exp.runs[exp.runs.dataset == ds], metric).empty:
            continue
        fig, (ax,) = figure.subplots()
        draw_vs_sparsity(ax, exp.runs, ds, metric, ylabel, what)
        figure.legend_right(ax, f"method ({figure.BAND})")
        paths.append(figure.save(fig, out / f"{stem}_{ds}.png"))
    return paths


def plot_groups(exp: Experiment, out: Path) -> list[tuple[str, list[Path]]]:
    """The Plots section's accuracy and calibration figures."""
    return [("Accuracy after pruning", _vs_sparsity(exp, out, "test_acc", "test accuracy", "test accuracy after pruning",
                                                    "accuracy_vs_sparsity")),
            ("Calibration after pruning", _vs_sparsity(exp, out, "test_ece", "expected calibration error (15 bins)",
                                                       "calibration after pruning", "ece_vs_sparsity"))]
