"""Scaling: what a method costs as the network widens (the scaling grid: per-width tables with the
ratio to the baseline's, and curves against width) and how a sweep's throughput grows with concurrent
trials (a `--concurrency` sweep's levels)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from . import figure
from .document import Section, table, text
from .load import Experiment, baseline_label, ordered_labels
from .table import Table

WIDTH_ABOUT = ("**{what}** by the first hidden layer's width, mean over the runs (seeds, datasets); in brackets the "
               "ratio to the baseline's at the same width.")
CONCURRENCY_NOTE = ("Each level of the `--concurrency` sweep trained the whole grid with that many trials at once. "
                    "Speed-up = trials per hour / the lowest level's; efficiency = speed-up / the added concurrency "
                    "(1 = linear scaling); median trial = the median run's own total_wall_s, which grows when trials "
                    "share cores, memory bandwidth and caches; slots busy = the runs' total_wall_s summed / (wall x "
                    "concurrent trials), the rest being worker start-up, the driver, and slots idle while the last "
                    "trials finish.")
# the scaling grid's per-width columns: (metric, what it is, digits)
WIDTH_METRICS = {"step_time_ms": ("median ms per training step", 2), "time_per_epoch_s": ("seconds per epoch", 2),
                 "peak_mem_mb": ("peak memory added by training, MB", 0)}
WIDTH_PANELS = [("time_per_epoch_s", "seconds per epoch (incl. validation)"), ("step_time_ms", "ms per training step (median)"),
                ("peak_mem_mb", "peak memory added by training (MB)"), ("n_params", "weights + biases")]


def widths(df: pd.DataFrame) -> pd.Series:
    """The first hidden layer's width of each run ("[400, 400]" -> 400)."""
    return df.hidden.map(lambda h: int(str(h).strip("[]").split(",")[0]) if pd.notna(h) else np.nan)


def width_table(df: pd.DataFrame, metric: str) -> Table:
    """Per label and first hidden width (the scaling grid's runs): the metric, mean over the runs, and
    beside it the ratio to the baseline label's (SGD's) at the same width, so how a method's cost grows
    against SGD's reads along a row. Empty unless the runs span more than one width."""
    d = df.copy()
    d["width"], d["time_per_epoch_s"] = widths(d), d["train_wall_s"] / d["epochs"]
    if d.width.nunique() < 2 or metric not in d:
        return Table(pd.DataFrame())
    means = d.groupby(["label", "width"])[metric].mean().unstack()
    base_label = baseline_label(d)
    base = means.loc[base_label] if base_label in means.index else None
    digits = WIDTH_METRICS[metric][1]
    cells = pd.DataFrame(index=[lb for lb in ordered_labels(d) if lb in means.index], columns=means.columns, dtype=object)
    for label in cells.index:
        for w in cells.columns:
            v = means.at[label, w]
            ratio = f" ({v / base[w]:.2f}×)" if base is not None and label != base_label and pd.notna(v) else ""
            cells.at[label, w] = "-" if pd.isna(v) else f"{v:.{digits}f}{ratio}"
    cells.columns = [str(w) for w in cells.columns]
    return Table(cells)


def concurrency_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per level of a `--concurrency` sweep, by concurrent trials: its finished trials, wall time
    and trials per hour (logged by the driver on every run of the level), the speed-up over the lowest
    level, the efficiency (speed-up / added concurrency: 1 = linear), the median trial's own
    total_wall_s (how much each trial slows when it shares the machine) and the share of the level's
    slot time (wall x concurrency) spent inside trials (the rest: worker start-up, the driver, and slots
    idle at the end while the last trials finish). A level interrupted before it finished logged no
    throughput and is left out."""
    if "sweep_trials_per_hour" not in df or "concurrency" not in df:
        return pd.DataFrame()
    d = df[(df.sweep != "") & df.concurrency.notna() & df.sweep_trials_per_hour.notna()]
    if d.empty:
        return pd.DataFrame()
    a = (d.groupby("sweep").agg(concurrency=("concurrency", lambda c: int(c.iloc[0])), trials=("run_id", "size"),
                                wall_s=("sweep_wall_s", "first"), trials_per_hour=("sweep_trials_per_hour", "first"),
                                trial_s=("total_wall_s", "median"), busy_s=("total_wall_s", "sum"))
         .sort_values(["concurrency", "sweep"]).reset_index())
    low = a.iloc[0]
    a["speedup"] = a.trials_per_hour / low.trials_per_hour
    a["efficiency"] = a.speedup / (a.concurrency / low.concurrency)
    a["busy"] = a.busy_s / (a.wall_s * a.concurrency)
    return a


def concurrency_table(df: pd.DataFrame) -> Table:
    """The `--concurrency` sweep's levels as a table (concurrency_frame)."""
    a = concurrency_frame(df)
    if a.empty:
        return Table(pd.DataFrame())
    cells = pd.DataFrame({"concurrent trials": a.concurrency.astype(str), "sweep": a.sweep, "trials": a.trials.astype(str),
                          "wall (s)": a.wall_s.map("{:.0f}".format), "trials / hour": a.trials_per_hour.map("{:.1f}".format),
                          "speed-up": a.speedup.map("{:.2f}×".format), "efficiency": a.efficiency.map("{:.0%}".format),
                          "median trial (s)": a.trial_s.map("{:.1f}".format), "slots busy": a.busy.map("{:.0%}".format)})
    return Table(cells, index=False)


def sections(df: pd.DataFrame, tdir: Path) -> list[Section]:
    """Cost vs width (each cost metric per method and width), and Throughput vs concurrent trials."""
    width = Section("Cost vs width")
    for metric, (what, _digits) in WIDTH_METRICS.items():
        t = width_table(df, metric)
        if not t.empty:
            width.blocks += [text(WIDTH_ABOUT.format(what=what[0].upper() + what[1:]), note=True),
                             table(t.write(tdir, f"width_{metric}"))]
    throughput = Section("Throughput vs concurrent trials")
    if not (levels := concurrency_table(df)).empty:
        throughput.blocks += [table(levels.write(tdir, "concurrency")), text(CONCURRENCY_NOTE, note=True)]
    return [width, throughput]


def figures(exp: Experiment, out: Path) -> list[Path]:
    """Time per epoch, step time, memory and size vs width (scaling grid); sweep throughput vs concurrent trials."""
    df = exp.runs.copy()
    paths = []
    df["width"] = widths(df)
    if df.width.nunique() > 1:
        df["time_per_epoch_s"] = df.train_wall_s / df.epochs
        panels = [(c, lab) for c, lab in WIDTH_PANELS if c in df and df[c].notna().any()]
        fig, axes = figure.subplots(len(panels), width=5 * len(panels), height=4.8)
        for ax, (col, ylabel) in zip(axes, panels):
            sns.lineplot(df, x="width", y=col, hue="label", hue_order=ordered_labels(df),
                         palette=figure.palette(df), marker="o", errorbar="sd", ax=ax)
            ax.set(xscale="log", yscale="log", xlabel="hidden units per layer (two layers)", ylabel=ylabel,
                   title=ylabel.split(" (")[0].capitalize() + " vs width")
        figure.legend_below(fig, axes, f"method ({figure.BAND})", ncol=5)
        paths.append(figure.save(fig, out / "scaling_width.png"))
    a = concurrency_frame(df)
    if not a.empty:
        fig, (ax,) = figure.subplots()
        ax.plot(a.concurrency, a.trials_per_hour, marker="o", label="measured")
        base = a.trials_per_hour.iloc[0] / a.concurrency.iloc[0]
        ax.plot(a.concurrency, base * a.concurrency, ls=":", color="grey", label="linear scaling")
        ax.set(title="Sweep throughput vs concurrent trials", xlabel="concurrent trials", ylabel="trials per hour",
               xticks=sorted(a.concurrency.unique()))
        ax.legend()
        paths.append(figure.save(fig, out / "scaling_concurrency.png"))
    return paths
