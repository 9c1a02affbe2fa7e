"""The headline: the comparison the experiment was run for, first in the report. Every method against
the baseline (tag baseline=true), unpruned and at the highest level every method has, in one table and
one figure (test error vs compression for compression benchmarks, test accuracy vs pruned fraction otherwise).
Every row carries its budget: the epochs behind its dense and pruned models, and the epochs its trial summed."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import accuracy, compression, figure
from .document import Block, Section, table, text
from .load import DATASET_NAMES, NAT, Experiment, baseline_label, by_level, level_key, ordered_datasets, ordered_labels
from .table import (
    BUDGET_NOTE,
    DAGGER,
    EPOCHS_TRIAL,
    Table,
    cell,
    collapsed_cells,
    level_name,
    model_epochs_text,
    summarize,
    trial_epochs_text,
)

WHO = "every method against the baseline **{base}** (runs tagged `baseline=true`)"
NO_BASELINE = "every method (no run is tagged `baseline=true`, so no difference to a baseline is shown)"
SQUEEZE = " and the highest compression at which its error stays within the bar of the Compression section"
INTRO = ("The comparison this experiment was run for: {who}, unpruned and at the highest pruning level every method was "
         "evaluated at ({levels}){squeeze}; mean ± std over seeds, best per dataset in bold. Beside each method its budget: "
         "the epochs per model (dense / pruned) and per trial.")
CAPTION_COMPRESSION = "Test error vs compression ratio (published results of the same architecture as black diamonds)"
CAPTION_SPARSITY = "Test accuracy vs fraction of weights pruned (band: ±1 std over seeds)"
SQUEEZE_COLUMN = "highest compression within the error bar"
MODEL_COLUMN = "epochs per model ({levels})"


def uses_compression(df: pd.DataFrame) -> bool:
    """Experiments that prune to 95 % or more, or let a method choose its sparsity, are read as compression
    benchmarks: their headline is error vs compression ratio."""
    levels = [c.rsplit("_", 1)[1] for c in df.columns if c.startswith("test_acc_") and c.count("_") == 2]
    return any(lv == NAT or (lv.startswith("p") and lv[1:].isdigit() and int(lv[1:]) >= 95) for lv in levels)


def headline_table(df: pd.DataFrame, with_compression: bool = False) -> tuple[Table, str]:
    """One row per dataset and label: dense accuracy, accuracy at the highest level every label has,
    its difference to the baseline label (tag baseline=true) and, for compression benchmarks, the
    compression table's figure. Returns the table and the level per dataset in words."""
    rows, means, words = [], [], []
    for ds in ordered_datasets(df):
        d = df[df.dataset == ds]
        squeeze = compression.compression_table(df, ds)[0].cells if with_compression else pd.DataFrame()
        long = by_level(d, "test_acc")
        s = summarize(long, "test_acc", ["label", "level"]).set_index(["label", "level"])
        dead = collapsed_cells(d, long, ["label", "level"])
        labels = ordered_labels(d)
        fixed = [lv for lv in {lv for _, lv in s.index} if lv != NAT and all((lab, lv) in s.index for lab in labels)]
        top = max(fixed, key=level_key, default=None)
        base = baseline_label(d)
        for lab in labels:
            row, mrow = {"dataset": DATASET_NAMES.get(ds, ds), "method": lab, "seeds": int(d[d.label == lab].seed.nunique())}, {}
            for lv, name in (("p00", "dense"), (top, f"pruned {level_name(top) if top else ''}".strip())):
                if lv is None or (lab, lv) not in s.index:
                    continue
                m = s.loc[(lab, lv)]
                row[f"test acc {name}"] = cell(m["mean"], m["std"], m["n"], note=DAGGER if dead[(lab, lv)] else "")
                mrow[f"test acc {name}"] = m["mean"]
            if base and top and top != "p00":
                diff = s.loc[(lab, top), "mean"] - s.loc[(base, top), "mean"]
                row[f"vs {base} at {level_name(top)}"] = "baseline" if lab == base else f"{diff * 100:+.2f} pp"
            if lab in squeeze.index:
                row[SQUEEZE_COLUMN] = squeeze.loc[lab, "compression"]
                mrow[SQUEEZE_COLUMN] = pd.to_numeric(squeeze.loc[lab, "compression"].split("x")[0], errors="coerce")
            shown = [lv for lv in dict.fromkeys(("p00", top)) if lv is not None]
            names = " / ".join("dense" if lv == "p00" else level_name(lv) for lv in shown)
            # "-" where the method has no model at that level (gradual in training has no dense one)
            row[MODEL_COLUMN.format(levels=names)] = " / ".join(
                model_epochs_text(d, lab, lv) if (lab, lv) in s.index else "-" for lv in shown)
            row[EPOCHS_TRIAL] = trial_epochs_text(d, lab)
            rows.append(row)
            means.append(mrow)
        name = DATASET_NAMES.get(ds, ds)
        words.append(f"{name}: {level_name(top)}" if top else f"{name}: no common pruned level")
    cells = pd.DataFrame(rows).fillna("-").set_index(["dataset", "method"])
    m = pd.DataFrame(means, index=cells.index)
    return Table(cells, m, True, groups=pd.Series(cells.index.get_level_values(0), index=cells.index)), "; ".join(words)


def headline_figure(exp: Experiment, out: Path, by_compression: bool) -> Path:
    """One panel per dataset and one legend below them all, in type that stays legible at a README's width
    (the root README shows this figure about 900 px wide)."""
    sets = ordered_datasets(exp.runs)
    fig, axes = figure.subplots(len(sets), width=max(7.0, 6.5 * len(sets)), height=6.5)
    limits = compression.thresholds(exp.runs)
    for ax, ds in zip(axes, sets):
        if by_compression:
            compression.draw(ax, exp.runs, ds, limits.get(ds))
        else:
            accuracy.draw_vs_sparsity(ax, exp.runs, ds, "test_acc", "test accuracy", "test accuracy after pruning")
    title = f"method, total training epochs ({figure.BAND})" if by_compression else f"method ({figure.BAND})"
    figure.legend_below(fig, axes, title, ncol=3, size=12)
    return figure.save(fig, out / "headline.png")


def section(exp: Experiment, out: Path) -> Section:
    df = exp.runs
    base = baseline_label(df)
    by_compression = uses_compression(df)
    t, levels = headline_table(df, with_compression=by_compression)
    fig = headline_figure(exp, out / "plots", by_compression)
    intro = INTRO.format(who=WHO.format(base=base) if base else NO_BASELINE, levels=levels,
                         squeeze=SQUEEZE if by_compression else "")
    return Section("Headline", [text(intro), table(t.write(out / "tables", "headline")), text(BUDGET_NOTE, note=True),
                                Block("image", path=str(fig.relative_to(out)),
                                      caption=CAPTION_COMPRESSION if by_compression else CAPTION_SPARSITY)],
                   headline=True)
