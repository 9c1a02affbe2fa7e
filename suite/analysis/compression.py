"""Compression: the ratio dense weights / nonzero weights of each pruned level, weights only (biases are
not counted, as in Han et al. 2015 Table 1 and Molchanov et al. 2017 Table 1's |W| / |W != 0|), the
highest ratio whose error stays within a dataset's threshold, and test error against compression beside
the published LeNet-300-100 results.

Counted on the point-estimate net the accuracy is measured on (load.weights_left: one definition for
this module, the natural level's sparsity and the plots).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import figure, references
from .document import Section, images, table, text
from .load import DATASET_NAMES, NAT, Experiment, baseline_label, by_level, ordered_datasets, ordered_labels, weights_left
from .table import (
    BUDGET_NOTE,
    DAGGER,
    EPOCHS_MODEL,
    EPOCHS_TRIAL,
    Table,
    collapsed_cells,
    level_name,
    model_epochs_text,
    trial_epochs_text,
)

INTRO = ("Compression ratio = dense weights / nonzero weights of the network whose accuracy is shown (the point "
         "estimate), weights only (biases not counted), counted by the compaction metrics where logged, else from the "
         "measured per-layer sparsities. Final-epoch numbers.")
THRESHOLD = ("Highest compression at which {threshold} (any level, the natural one included); beside it the epochs "
             "behind the model at that level and the epochs its trial summed.")
PUBLISHED = ("Published on the same architecture (sources and how each ratio is counted: "
             "`suite/analysis/reference/lenet300100.csv`):")
UNPUBLISHED = ("No published results for this dataset and architecture (suite/analysis/reference/lenet300100.csv "
               "covers 784-300-100-10 on MNIST), so no markers are drawn.")
THRESHOLD_LINE = "error threshold of the compression table (value at right)"
NAME_SIZE = 9   # published names, pt
LEGEND = f"method, total training epochs\n({figure.BAND})"
CAPTION = "{name}: test error vs compression ratio (log scale), band ±1 std over seeds; stars: natural sparsity"
EMPTY = "No level with a finite compression ratio\n(every run pruned all weights, or logged no test_acc_pNN)"
INEXACT = ("; * = computed from the overall sparsity, which counts pruned biases too (no per-layer "
           "weight sparsities logged)")
# Error thresholds: MNIST LeNet papers quote error <= 2.0 % (Han et al. 2015, Molchanov et al. 2017); Fashion-MNIST has no
# published threshold, so "within 1 percentage point of the dense baseline".
ERROR_TARGETS = {"mnist": ("absolute", 0.02)}
DEFAULT_TARGET = ("above dense", 0.01)


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


def error_target(df: pd.DataFrame, dataset: str) -> tuple[float, str]:
    """(error threshold, how it was set) for the compression table of a dataset."""
    kind, value = ERROR_TARGETS.get(dataset, DEFAULT_TARGET)
    if kind == "absolute":
        return value, f"mean test error <= {value:.1%}"
    base = baseline_label(df[df.dataset == dataset])
    ref = by_level(df[(df.dataset == dataset) & ((df.label == base) if base else True)], "test_acc")
    dense = 1 - ref.loc[ref.level == "p00", "test_acc"].mean()
    who = f"{base}'s" if base else "all methods'"
    return dense + value, f"mean test error <= {dense:.2%} ({who} dense error) + {value * 100:g} pp = {dense + value:.2%}"


def within(error, bar: float):
    """Does a mean test error meet the threshold (float noise of a mean that lands on it counts as meeting it)?"""
    return error <= bar + 1e-12


def thresholds(df: pd.DataFrame) -> dict[str, float]:
    """The compression table's error threshold per dataset (drawn as a line in the compression plots)."""
    return {ds: error_target(df, ds)[0] for ds in ordered_datasets(df)}


def compression_table(df: pd.DataFrame, dataset: str) -> tuple[Table, str]:
    """Per label: the highest compression (dense weights / nonzero weights) among levels whose mean test
    error meets the dataset's threshold (final-epoch numbers), with the epochs per model at that level (at the
    lowest-error level when none meets it) and per trial. Returns the table and the threshold in words."""
    s = summary(df[df.dataset == dataset])
    if s.empty:
        return Table(pd.DataFrame()), ""
    bar, words = error_target(df, dataset)
    d = df[df.dataset == dataset]
    dead = collapsed_cells(d, by_level(d, "test_acc"), ["label", "level"])
    rows, means = {}, {}
    for label in [lab for lab in ordered_labels(d) if lab in set(s.label)]:
        g = s[s.label == label]
        ok = g[within(g.error, bar)]
        if ok.empty:
            low = g.loc[g.error.idxmin()]
            rows[label] = {"compression": "none meets the bar", "weights removed": "-", "level": "-",
                           "test error": f"lowest {low.error:.2%} at {level_name(low.level)}",
                           EPOCHS_MODEL: model_epochs_text(d, label, low.level), EPOCHS_TRIAL: trial_epochs_text(d, label)}
            means[label] = {"compression": np.nan}
            continue
        top = ok.loc[ok.compression.idxmax()]
        err = f"{top.error:.2%}" + (f" ± {top.error_std:.2%} (n={top.n})" if top.n > 1 else " (1 seed)")
        rows[label] = {"compression": f"{top.compression:.1f}x" + ("" if top.exact else " *"),
                       "weights removed": f"{top.removed:.1%}", "test error": err,
                       "level": level_name(top.level) + (f" {DAGGER}" if dead[(label, top.level)] else ""),
                       EPOCHS_MODEL: model_epochs_text(d, label, top.level), EPOCHS_TRIAL: trial_epochs_text(d, label)}
        means[label] = {"compression": top.compression}
    cells = pd.DataFrame.from_dict(rows, orient="index")
    if not s.exact.all():
        words += INEXACT
    return Table(cells, pd.DataFrame.from_dict(means, orient="index"), True), words


def draw(ax, df: pd.DataFrame, ds: str, threshold: float | None = None) -> None:
    """Test error vs compression ratio (log x), one line per label with ±1 std bands over seeds (fixed
    levels; the natural level is a star), the published results whose dataset and architecture match
    ours as black diamonds named in a strip below the data, and the compression table's error threshold
    as a dashed line, its value on the right edge. The y axis stops a few points above the best dense error: the region the field
    compares in."""
    pal = figure.palette(df)
    s = summary(df[df.dataset == ds])
    name = DATASET_NAMES.get(ds, ds)
    ax.set_title(f"{name}: test error vs compression (final epoch)")
    if s.empty:
        figure.empty_panel(ax, EMPTY)
        return
    for label in figure.order(df, s.label):
        g = s[(s.label == label) & (s.level != NAT)].sort_values("compression")
        figure.mean_line(ax, g.compression, 100 * g.error, 100 * g.error_std, pal[label], figure.budget_label(df, ds, label))
        for _, n in s[(s.label == label) & (s.level == NAT)].iterrows():
            ax.errorbar(n.compression, 100 * n.error, yerr=100 * n.error_std if n.n > 1 else None, marker="*", ms=14,
                        color=pal[label], ls="none", label=f"{label} (natural sparsity)")
    pub = references.published_markers(df[df.dataset == ds]).sort_values("compression")
    if threshold is not None:
        ax.axhline(100 * threshold, color="grey", ls="--", lw=1, label=THRESHOLD_LINE)
        # its value as a tick on the right edge, outside the curves (the panels of a figure differ in it)
        ax.secondary_yaxis("right").set_yticks([100 * threshold], [f"{threshold:.2%}"], color="dimgrey")
    dense = s[s.level == "p00"].error.min() if (s.level == "p00").any() else s.error.min()
    # every method's best level stays on the axes, however far behind it is
    worst_best = s.groupby("label").error.min().max()
    top = 100 * max(dense * 1.5, dense + 0.03, (threshold or 0) * 1.15, worst_best + 0.15 * (worst_best - dense))
    lo = 100 * min([s.error.min(), *pub.test_error, *([threshold] if threshold is not None else [])])
    # published names go in a strip below every curve, so no name sits on a line
    strip = 0.4 if not pub.empty else 0.1
    ax.set_ylim(max(0.0, lo - strip * (top - lo)), top)
    ax.set_xscale("log")
    _published(ax, pub)
    ax.set(xlabel="compression = dense / nonzero weights (log; biases not counted)",
           ylabel=f"test error (%, axis cut at {top:.1f})")


def _published(ax, pub: pd.DataFrame) -> None:
    """Black diamonds at the published points, each named in the strip at the bottom of the axes, below every
    curve (up to three rows; a name moves right until it clears its row's last one), with a thin line up to
    its point."""
    if pub.empty:
        return
    x0, x1 = np.log(ax.get_xlim())
    inches = 0.85 * ax.figure.get_figwidth() * ax.get_position().width   # the axes' width, before the legend takes its share
    ends = [0.0, 0.0, 0.0]   # right end of the last name in each row (axes fraction)
    for _, r in pub.iterrows():
        ax.plot(r.compression, 100 * r.test_error, marker="D", color="black", ls="none", ms=6)
        half = len(r.label) * NAME_SIZE * 0.55 / 72 / inches / 2 + 0.01
        want = float(np.clip((np.log(r.compression) - x0) / (x1 - x0), half, 1 - half))
        row = min(range(len(ends)), key=lambda k: (max(ends[k] - want + half, 0), k))
        at = max(want, ends[row] + half)
        ends[row] = at + half
        ax.annotate(r.label, (r.compression, 100 * r.test_error), xytext=(at, 0.03 + 0.075 * row),
                    textcoords="axes fraction", ha="center", va="bottom", fontsize=NAME_SIZE,
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "grey", "shrinkA": 1, "shrinkB": 3})
    ax.plot([], [], marker="D", color="black", ls="none", label="published (same architecture)")


def figures(exp: Experiment, out: Path) -> dict[str, Path]:
    """error_vs_compression_<ds>.png per dataset."""
    paths, limits = {}, thresholds(exp.runs)
    for ds in ordered_datasets(exp.runs):
        fig, (ax,) = figure.subplots(width=11, height=5)  # the legend sits right of the axes
        draw(ax, exp.runs, ds, limits.get(ds))
        figure.legend_right(ax, LEGEND)
        paths[ds] = figure.save(fig, out / f"error_vs_compression_{ds}.png")
    return paths


def section(exp: Experiment, out: Path) -> Section:
    df, sec = exp.runs, Section("Compression", [text(INTRO)])
    figs = figures(exp, out / "plots")
    for ds in ordered_datasets(df):
        t, threshold = compression_table(df, ds)
        if t.empty:
            continue
        name = DATASET_NAMES.get(ds, ds)
        blocks = [text(THRESHOLD.format(threshold=threshold)), table(t.write(out / "tables", f"compression_{ds}")),
                  text(BUDGET_NOTE, note=True)]
        pub = references.published_markers(df[df.dataset == ds])
        if not pub.empty:
            cells = pub.assign(test_error=(100 * pub.test_error).map("{:.2f} %".format),
                               compression=pub.compression.map("{:g}x".format), removed=pub.removed.map("{:.1%}".format))
            blocks += [text(PUBLISHED), table(Table(cells[["label", "test_error", "compression", "removed", "paper"]]
                                                    .set_index("label").fillna("")))]
        else:
            blocks.append(text(UNPUBLISHED, note=True))
        blocks += images([figs[ds]], out, lambda p: CAPTION.format(name=name))
        sec.subsections.append(Section(name, blocks))
    return sec
