"""Uncertainty under pruning: what pruning costs in trust (suite/evaluate/ood.py's metrics). OOD detection by
predictive entropy (Hendrycks and Gimpel 2017) and by the ensemble's mutual information; accuracy and
calibration on rotated images (Ovadia et al. 2019). Sentences from the numbers, one level table per
metric of levels.TRUST, the metrics against compression and accuracy per rotation angle."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from . import compression, figure
from .document import Block, Section, footnote, images, table, text
from .levels import TRUST, level_table
from .load import DATASET_NAMES, LEVEL, NAT, PROBES_SINCE, Experiment, by_level, level_key, ordered_datasets
from .table import level_name

OMITTED = ("Omitted: no run logged the OOD or rotation metrics (ood_auroc_*, shift_*); runs of this version of the suite "
           "log them.")
DROPPED = ("Not shown: the OOD and rotation figures of {n} of {total} runs, since figures of runs evaluated before version "
           "{since} used the first 2000 test images only, a biased subset; re-evaluate with `python -m suite.evaluate`.")
ABOUT = "**{title}**: {what}; mean ± std over seeds (n); best per column in bold."
CAPTION_METRICS = "{name}: OOD AUROC and rotation vs compression"
CAPTION_ANGLES = "{name}: accuracy per rotation angle, unpruned and pruned"
BEST_OOD = ("{name}: at {level} pruned, OOD detection by predictive entropy is best for {best} (AUROC {at_best:.3f}"
            "{change_best})")
WORST_OOD = " and worst for {worst} (AUROC {at_worst:.3f}{change_worst})."
ROTATION = ("{name}: under rotation (mean over angles) at {level} pruned, {best} keeps the highest accuracy "
            "({at_best:.1%}{unpruned}).")
PANELS = [(("ood_auroc_entropy", "ood_auroc_mi_mc"), "OOD detection AUROC (dashed: mutual information)"),
          (("shift_acc_mean",), "accuracy under rotation (mean over angles)"),
          (("shift_ece_mean",), "ECE under rotation (mean over angles)")]

ANGLE = re.compile(r"^shift_acc_r(?P<angle>\d+)$")


def present(df: pd.DataFrame) -> bool:
    """Did any run log an OOD or rotation-shift metric?"""
    return any((m := LEVEL.match(c)) and m["metric"] in TRUST for c in df.columns)


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
    level every method has, each with its change from unpruned; the best accuracy under rotation there;
    nothing where fewer than two methods have the metric."""
    lines = []
    for ds in ordered_datasets(df):
        d = df[df.dataset == ds]
        name = DATASET_NAMES.get(ds, ds)
        # a ranking needs two methods: with one (e.g. the only runs of the current evaluation version) it says nothing
        top, at, dense = _at(d, "ood_auroc_entropy")
        if top is not None and len(at) > 1:
            def change(lab: str) -> str:
                return f", {at[lab] - dense[lab]:+.3f} vs unpruned" if lab in dense.index else ""
            best, worst = at.idxmax(), at.idxmin()
            s = BEST_OOD.format(name=name, level=level_name(top), best=best, at_best=at[best], change_best=change(best))
            lines.append(s + (WORST_OOD.format(worst=worst, at_worst=at[worst], change_worst=change(worst))
                              if worst != best else "."))
        top, at, dense = _at(d, "shift_acc_mean")
        if top is not None and len(at) > 1:
            best = at.idxmax()
            lines.append(ROTATION.format(name=name, level=level_name(top), best=best, at_best=at[best],
                                         unpruned=f"; {dense[best]:.1%} unpruned" if best in dense.index else ""))
    return lines


def uncertainty_figures(exp: Experiment, out: Path) -> dict[str, Path]:
    """Per dataset, vs compression (log x): OOD AUROC (entropy solid, mutual information dashed), and
    accuracy and ECE on rotated images (mean over angles); mean over seeds with its ±1 std band, natural
    levels left out."""
    paths = {}
    pal = figure.palette(exp.runs)
    for ds in ordered_datasets(exp.runs):
        d = exp.runs[exp.runs.dataset == ds]
        if not present(d):
            continue
        comp = compression.levels(d)[["run_id", "level", "compression"]]
        fig, axes = figure.subplots(3, width=17, height=5.4)
        for ax, (metrics, title) in zip(axes, PANELS):
            ax.set_title(f"{DATASET_NAMES.get(ds, ds)}: {title}", fontsize=11)
            drawn = False
            for metric, ls in zip(metrics, ("-", "--")):
                long = by_level(d, metric).merge(comp, on=["run_id", "level"])
                long = long[long.level != NAT]
                for label in figure.order(d, long.label):
                    g = long[long.label == label].groupby("level")[["compression", metric]]
                    mean, std = g.mean().sort_values("compression"), g.std()
                    figure.mean_line(ax, mean.compression, mean[metric], std.loc[mean.index, metric], pal[label],
                                     figure.budget_label(d, ds, label) + (" (MI)" if ls == "--" else ""), ls=ls)
                    drawn = True
            if not drawn:
                figure.empty_panel(ax, f"no run logged {' or '.join(m + '_pNN' for m in metrics)}")
                continue
            ax.set(xscale="log", xlabel="compression (log)", ylabel=title.split(" (")[0])
        figure.legend_below(fig, axes, f"method (epochs); dashed: mutual information ({figure.BAND})", ncol=4)
        paths[ds] = figure.save(fig, out / f"uncertainty_{ds}.png")
    return paths


def rotation_figures(exp: Experiment, out: Path) -> dict[str, Path]:
    """Per dataset: accuracy vs rotation angle, unpruned (solid) and at the highest pruned level with
    per-angle numbers (dashed), mean over seeds with its ±1 std band."""
    paths = {}
    pal = figure.palette(exp.runs)
    for ds in ordered_datasets(exp.runs):
        a = per_angle(exp.runs[exp.runs.dataset == ds])
        a = a[a.level != NAT] if not a.empty else a
        if a.empty:
            continue
        d = exp.runs[exp.runs.dataset == ds]
        shown = sorted({"p00", max(a.level.unique(), key=level_key)} & set(a.level), key=level_key)
        fig, (ax,) = figure.subplots(width=11, height=5)
        for level, ls in zip(shown, ("-", "--")):
            for label in figure.order(d, a.label):
                g = a[(a.label == label) & (a.level == level)].groupby("angle").acc
                mean, std = g.mean(), g.std()
                figure.mean_line(ax, mean.index, mean.values, std.values, pal[label],
                                 f"{figure.budget_label(d, ds, label)}, {level_name(level)}", ls=ls, ms=3)
        ax.axhline(0.1, color="grey", ls=":", lw=1, label="chance")
        ax.set(title=f"{DATASET_NAMES.get(ds, ds)}: accuracy on rotated test images", xlabel="rotation (degrees)",
               ylabel="test accuracy", ylim=(0, 1.02))
        figure.legend_right(ax, f"method (epochs), pruned\n({figure.BAND})")
        paths[ds] = figure.save(fig, out / f"rotation_{ds}.png")
    return paths


def section(exp: Experiment, out: Path) -> Section:
    """OOD detection and accuracy / calibration under rotation per level, and a headline from the numbers."""
    df, sec = exp.runs, Section("Uncertainty under pruning")
    dropped = int(df.probes_dropped.sum())  # runs older than load.PROBES_SINCE: their figures were dropped on load
    if dropped:
        sec.blocks.append(text(DROPPED.format(n=dropped, total=len(df), since=PROBES_SINCE)))
    if not present(df):
        if not dropped:
            sec.blocks.append(text(OMITTED))
        return sec
    sec.blocks.append(Block("list", items=headline(df)))
    metrics, angles = uncertainty_figures(exp, out / "plots"), rotation_figures(exp, out / "plots")
    for ds in ordered_datasets(df):
        name, blocks = DATASET_NAMES.get(ds, ds), []
        for metric, (title, what, _) in TRUST.items():
            t = level_table(df, metric, ds)
            if not t.empty:
                blocks += [text(ABOUT.format(title=title, what=what), note=True),
                           table(t.write(out / "tables", f"{metric}_{ds}"))]
        if not blocks:
            continue
        blocks += footnote(df, ds)
        blocks += images([metrics[ds]] if ds in metrics else [], out, lambda p: CAPTION_METRICS.format(name=name))
        blocks += images([angles[ds]] if ds in angles else [], out, lambda p: CAPTION_ANGLES.format(name=name))
        sec.subsections.append(Section(name, blocks))
    return sec
