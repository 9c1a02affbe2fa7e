"""Recipes: each method at this experiment's recipe and at another's (`--against`, e.g. searched vs the
study's, on the same test split), and the recipe searches (`suite.search`) behind the experiment."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .document import Section, table, text
from .load import DATASET_NAMES, Experiment, by_level, ordered_datasets
from .table import Table, cell, level_name, summarize

AGAINST = ("Each method at the recipe of experiment `{ours}` and at that of `{other}` (FINISHED runs of `{other}`: {n} grid "
           "points). Test error in % after pruning, final epoch, mean ± std over seeds; the lower of a method's rows in "
           "bold. A method's rows are matched by method, protocol and whether dropout is on; each row keeps its own label.")
FIELDS = "The recipe fields that differ (first run of each method):"
SEARCHES = ("The `suite.search` runs in this store for this experiment's methods: the budget each got, what it trained "
            "(successive halving stopped the others early) and its wall time. Winners are chosen by the final epoch's "
            "validation metric; `suite/grids/tuned.yaml` names each winner's MLflow run.")
# recipe fields never shown as a difference: the seed axis, and what only the search sets
_NOT_RECIPE = {"seed", "dataset", "val_sparsities", "device", "data_dir", "compile"}


def family(df: pd.DataFrame) -> pd.Series:
    """What makes runs of two experiments "the same method at different recipes": the method and
    protocol tags and whether dropout is on (the dropout rate itself is part of the recipe)."""
    return df.method.astype(str) + "|" + df.protocol.astype(str) + "|" + (df.dropout > 0).map({True: "dropout", False: ""})


def recipe_comparison(runs: dict[str, pd.DataFrame], dataset: str) -> tuple[Table, Table]:
    """Each method family (see `family`) at each experiment's recipe: test error (%) after pruning at
    every level either has, mean ± std over seeds, best per family in bold; and a second table of the
    recipe fields whose values differ between the experiments (first run of each family)."""
    parts = {name: d.assign(family=family(d)) for name, d in ((n, r[r.dataset == dataset]) for n, r in runs.items())
             if not d.empty}
    order: list[str] = []
    for d in parts.values():
        order += [f for f in d.sort_values("label_order").family.unique() if f not in order]
    rows, means, groups, diffs = [], [], [], []
    for fam in order:
        fields, labels = {}, []
        for name, d in parts.items():
            g = d[d.family == fam]
            if g.empty:
                continue
            s = summarize(by_level(g, "test_acc").assign(err=lambda x: 100 * (1 - x.test_acc)), "err", ["level"])
            row = {"method": g.label.iloc[0], "recipe": name, "seeds": int(g.seed.nunique())}
            mrow = {}
            for lv, m, sd, n in zip(s.level, s["mean"], s["std"], s["n"]):
                row[level_name(lv)], mrow[level_name(lv)] = cell(m, sd, n, digits=2), m
            rows.append(row)
            means.append(mrow)
            groups.append(fam)
            labels.append(g.label.iloc[0])
            fields[name] = {k[6:]: v for k, v in g.iloc[0].items() if k.startswith("param.") and k[6:] not in _NOT_RECIPE}
        if len(fields) == 2:
            (a, fa), (b, fb) = fields.items()
            diffs += [{"method": " / ".join(dict.fromkeys(labels)), "field": k, a: fa.get(k, "-"), b: fb.get(k, "-")}
                      for k in sorted(set(fa) | set(fb)) if str(fa.get(k)) != str(fb.get(k))]
    if not rows:
        return Table(pd.DataFrame()), Table(pd.DataFrame())
    cells = pd.DataFrame(rows).set_index(["method", "recipe"])
    levels = sorted(set(cells.columns) - {"seeds"}, key=lambda c: np.inf if c == "natural" else float(c.split()[0]))
    cells = cells[["seeds", *levels]].fillna("-")
    m = pd.DataFrame(means, index=cells.index).reindex(columns=cells.columns)
    return (Table(cells, m, False, groups=pd.Series(groups, index=cells.index)),
            Table(pd.DataFrame(diffs, columns=["method", "field", *parts]).fillna("-"), index=False))


def against_section(exp: Experiment, against: Experiment, tdir: Path) -> Section:
    """Each method at this experiment's recipe and at another's, per dataset."""
    sec = Section(f"Recipes: {exp.name} vs {against.name}",
                  [text(AGAINST.format(ours=exp.name, other=against.name, n=len(against.runs)))])
    runs = {exp.name: exp.runs, against.name: against.runs}
    for ds in ordered_datasets(pd.concat([exp.runs[["dataset"]], against.runs[["dataset"]]])):
        errors, fields = recipe_comparison(runs, ds)
        if errors.empty:
            continue
        blocks = [table(errors.write(tdir, f"recipes_{ds}"))]
        if not fields.empty:
            blocks += [text(FIELDS, note=True), table(fields.write(tdir, f"recipe_fields_{ds}"))]
        sec.subsections.append(Section(DATASET_NAMES.get(ds, ds), blocks))
    return sec


def search_table(s: pd.DataFrame) -> Table:
    """The recipe searches behind an experiment: the budget each method got and what it used."""
    # columns by [name]: DataFrame attributes shadow some (s.select is a pandas method)
    cells = pd.DataFrame({
        "search": s["search"], "method": s["method"],
        "budget": [f"{a} recipes x {b} epochs, halving grace {c}" for a, b, c in zip(s["samples"], s["max_epochs"],
                                                                                  s["grace_period"])],
        "selection (validation)": s["select"],
        "recipes done": [f"{a} ({b} to the last epoch)" for a, b in zip(s["recipes_finished"], s["trained_full"])],
        "epochs trained": s["epochs_trained"],
        "wall h": s["wall_h"].map(lambda h: "-" if np.isnan(h) else f"{h:.2f}"),
        "trial h": s["trial_h"].map("{:.2f}".format),
        "best value": s["best"].map(lambda v: "-" if np.isnan(v) else f"{v:.4f}"),
        "status": s["status"]})
    return Table(cells, index=False)


def searches_section(exp: Experiment, tdir: Path) -> Section:
    """The searches in the store (or summarised in the runs file) of this experiment's methods; empty if none."""
    found = exp.source.searches(set(exp.runs.method.dropna()))
    if found.empty:
        return Section("Recipe searches")
    return Section("Recipe searches", [text(SEARCHES), table(search_table(found).write(tdir, "searches"))])
