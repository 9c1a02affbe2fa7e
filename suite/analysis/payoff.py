"""What compression buys: speed-up, FLOPs, widths and sizes of the pruned networks (suite/evaluate/compact.py,
suite/evaluate/latency.py), beside the compression ratio, as Blalock et al. 2020 ask (theoretical speed-up =
dense FLOPs / remaining FLOPs next to the measured one): the tables, the break-even levels, sentences
from the numbers, and speed-up against compression.

Speed-up at a level = dense latency / latency of the same pruned network run another way, both
measured in the same run at that level (so on the same machine, under the same lock): the compacted
dense MLP (`latency_compact_*`) or the fastest CSR kernel (`latency_sparse_*`). > 1 = faster than dense.
A run that logged per-round ratios (`latency_speedup_*`) is read at their median, with their quartiles
beside it; an older run logged two medians only, so its speed-up is their ratio, one figure per run
with no spread of its own: its cell shows no quartiles and a note under the table says so (SINGLE_NOTE;
the cell itself reads as before, so quoted tables of committed runs stay valid).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from .. import collapse
from . import compression, figure
from .budget import model_epochs
from .document import Block, Section, footnote, images, table, text
from .load import DATASET_NAMES, NAT, Experiment, by_level, level_key, ordered_datasets, ordered_labels
from .table import DAGGER, Table, cell, collapsed_cells, epochs_text, level_name

OMITTED = ("Omitted: no run logged the compaction metrics (compact_width_*, flops_*, latency_compact_*); runs of this "
           "version of the suite log them at every level.")
ABOUT = ("Speed-up = dense latency / latency of the same pruned network run as the compacted dense MLP (dead units "
         "removed, suite/evaluate/compact.py) or with the fastest CSR kernel, measured in the same run at that level; > 1 is "
         "faster; the median over timing rounds of dense time / that forward's time in the same round, mean ± std over "
         "seeds, and in brackets the 25th and 75th percentiles of the per-round ratios (mean over seeds): how much one "
         "run's speed-up moved from round to round. FLOPs x = dense FLOPs / FLOPs of the nonzero weights, of the "
         "compacted net (live units) or of the compacted forward that runs (its input window and padded widths): the "
         "theoretical speed-up beside the compression ratio (Blalock et al. 2020). Compacted widths: live input pixels, "
         "then each hidden layer. Total epochs: training plus every retraining epoch of the protocol.")
SINGLE_NOTE = ("A speed-up without [q25, q75] is 1 measurement per run: its runs logged no per-round ratios (runs before "
               "latency_speedup_*), so it is the ratio of the dense and the other forward's median latencies, with no spread "
               "of its own.")
BREAK_EVEN = ("Break-even: the lowest pruning level from which on the forward beats dense (mean speed-up > 1 there and at "
              "every higher level).")
CAPTION = "{name}: speed-up over dense vs compression, batch 1 and 1000 (solid: compacted, dashed: CSR)"
AT_LEVEL = "{name}: at {level} pruned, the compacted {label} net "
AT_NATURAL = "{name}: at its natural level (the mask it learns), the compacted {label} net "
GAIN = ("runs {b1000} than dense at batch 1000{b1}, with {compression:.1f}x fewer weights{flops}, at {error:.1%} test "
        "error (mean over {n} run(s){budget}).")
BATCHES = (1, 1000)
KERNELS = {"compact": "compacted", "sparse": "CSR"}   # metric infix -> display name
SIZES = ("size_dense_bytes", "size_csr_bytes")


def present(df: pd.DataFrame) -> bool:
    """Did any run log the compaction / latency-of-the-compacted-net metrics?"""
    return any(c.startswith(("latency_compact_", "compact_width_", "flops_")) for c in df.columns)


def levels(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run and level (compression.levels' rows, error included) with the speed-ups `x_{kernel}_b{B}` (the
    per-round median where logged, else the ratio of the medians) and their quartiles `x_{kernel}_b{B}_q25` / `_q75`
    (NaN where not logged), the FLOPs ratios `flops_x_nonzero`, `flops_x_compact` and `flops_x_run`, the sizes in MB
    and the compacted widths `width_l{i}`."""
    out = joined(compression.levels(df), df,
                 [*(f"latency_{k}_b{b}_ms" for k in ("dense", *KERNELS) for b in BATCHES), *SIZES,
                  *(f"latency_speedup_{k}_b{b}{q}" for k in KERNELS for b in BATCHES for q in ("", "_q25", "_q75")),
                  *(f"flops_{k}" for k in ("dense", "nonzero", "compact", "run")),
                  *sorted({m[: m.rindex("_")] for m in df.columns if m.startswith("compact_width_l")})])
    for k in KERNELS:
        for b in BATCHES:
            of_medians = out[f"latency_dense_b{b}_ms"] / out[f"latency_{k}_b{b}_ms"]
            out[f"x_{k}_b{b}"] = out[f"latency_speedup_{k}_b{b}"].fillna(of_medians)
            for q in ("_q25", "_q75"):
                out[f"x_{k}_b{b}{q}"] = out[f"latency_speedup_{k}_b{b}{q}"]
    for k in ("nonzero", "compact", "run"):
        out[f"flops_x_{k}"] = out["flops_dense"] / out[f"flops_{k}"]
    for s in SIZES:
        out[s] = out[s] / 1e6
    out = out.rename(columns={c: "width_" + c.removeprefix("compact_width_") for c in out if c.startswith("compact_width_")})
    return out


def joined(out: pd.DataFrame, df: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """`out` (rows per run and level) with a column per per-level metric of df; NaN where a run did not log it."""
    for metric in metrics:
        long = by_level(df, metric)[["run_id", "level", metric]]
        out = out.merge(long, on=["run_id", "level"], how="left") if not long.empty else out.assign(**{metric: np.nan})
    return out


# (column of levels(), header, digits)
COLUMNS = [("compression", "compression x", 1), ("flops_x_nonzero", "FLOPs x (nonzero)", 1),
           ("flops_x_compact", "FLOPs x (compacted)", 1), ("flops_x_run", "FLOPs x (run)", 1),
           *((f"x_{k}_b{b}", f"speed-up x b{b} {name}", 2) for b in BATCHES for k, name in KERNELS.items()),
           ("size_dense_bytes", "dense MB", 2), ("size_csr_bytes", "CSR MB", 2)]


def spread(h: pd.DataFrame, col: str) -> str:
    """The note of a speed-up cell: "[q25, q75]" (the seeds' mean quartiles) where every run of it logged per-round
    ratios; "" where one did not (its figure is one ratio of medians: single) and for other columns."""
    if f"{col}_q25" not in h:
        return ""
    q = h.loc[h[col].notna(), [f"{col}_q25", f"{col}_q75"]]
    return "" if q.empty or q.isna().any(axis=None) else f"[{q[f'{col}_q25'].mean():.2f}, {q[f'{col}_q75'].mean():.2f}]"


def single(frame: pd.DataFrame) -> bool:
    """Does a speed-up column x of `frame` (one with x_q25 beside it) hold a figure without its quartiles?"""
    return any((frame[c].notna() & frame[f"{c}_q25"].isna()).any() for c in frame if f"{c}_q25" in frame)


def speedup_table(df: pd.DataFrame, dataset: str) -> Table:
    """Rows (method, level) with the epochs behind that level's models (budget.model_epochs); per column mean ± std over seeds,
    speed-ups with their per-round quartiles or SINGLE (spread); compacted widths (input pixels, then each hidden layer) as
    the seeds' mean; a level with a collapsed run is marked † (once per row: the whole row is that net's)."""
    d = df[df.dataset == dataset]
    lv = levels(d)
    if lv.empty:
        return Table(pd.DataFrame())
    dead = collapsed_cells(d, lv, ["label", "level"])
    widths = sorted((c for c in lv if c.startswith("width_l")), key=lambda c: int(c[7:]))
    cols = [(c, h, dg) for c, h, dg in COLUMNS if lv[c].notna().any()]
    rows, index = [], []
    for label in [lab for lab in ordered_labels(d) if lab in set(lv.label)]:
        g = lv[lv.label == label]
        for level in sorted(g.level.unique(), key=level_key):
            h = g[g.level == level]
            row = {"total epochs": epochs_text(model_epochs(d[d.label == label], level))}
            for c, header, digits in cols:
                v = h[c].dropna()
                row[header] = cell(v.mean(), v.std(), len(v), digits, spread(h, c)) if len(v) else "-"
            if widths and h[widths].notna().all(axis=None):
                row["compacted widths"] = "-".join(str(int(round(w))) for w in h[widths].mean())
            rows.append(row)
            index.append((label, level_name(level) + (f" {DAGGER}" if dead[(label, level)] else "")))
    cells = pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["method", "level"])).fillna("-")
    return Table(cells)


def break_even(df: pd.DataFrame, dataset: str) -> Table:
    """Per method and kernel x batch size: the lowest pruning level from which on that forward beats
    dense (mean speed-up > 1 there and at every higher level measured); natural levels left out."""
    d = df[df.dataset == dataset]
    lv = levels(d)
    lv = lv[lv.level != NAT]
    rows = {}
    for label in [lab for lab in ordered_labels(d) if lab in set(lv.label)]:
        g = lv[lv.label == label].groupby("level")[[f"x_{k}_b{b}" for k in KERNELS for b in BATCHES]].mean()
        g = g.loc[sorted(g.index, key=level_key)]
        row = {}
        for k, name in KERNELS.items():
            for b in BATCHES:
                x = g[f"x_{k}_b{b}"].dropna()
                if x.empty:
                    row[f"{name} b{b}"] = "-"
                    continue
                ahead = (x > 1)[::-1].cummin()[::-1]     # ahead here and at every higher level
                row[f"{name} b{b}"] = level_name(ahead.idxmax()) if ahead.any() else \
                    f"never (up to {level_name(x.index[-1])})"
        rows[label] = row
    return Table(pd.DataFrame.from_dict(rows, orient="index"))


def _times(x: float) -> str:
    return f"{x:.1f}x faster" if x >= 1 else f"{1 / x:.1f}x slower"


def headline(df: pd.DataFrame) -> list[str]:
    """Sentences from the numbers, per dataset: at the highest pruning level with a compacted-net latency,
    the method whose compacted net gains most at batch 1000, among nets that still predict (collapsed runs
    and cells whose mean test accuracy is at chance, suite.collapse's rule, left out); then each method's
    own (natural) level where it has one."""
    lines = []
    for ds in ordered_datasets(df):
        d = df[df.dataset == ds]
        lv = levels(d).dropna(subset=["x_compact_b1000"])
        lv = lv[~lv.run_id.isin(d.run_id[d.collapsed])]
        cols = ["x_compact_b1000", "x_compact_b1", "compression", "flops_x_compact", "error"]
        means = lv.groupby(["level", "label"])[cols].mean()
        n = lv.groupby(["level", "label"]).size()
        means = means[~(1 - means.error).map(collapse.collapsed)]
        fixed = [lvl for lvl in means.index.get_level_values(0).unique() if lvl != NAT]
        name = DATASET_NAMES.get(ds, ds)
        if fixed:
            top = max(fixed, key=level_key)
            best = means.loc[top].x_compact_b1000.idxmax()
            lines.append(AT_LEVEL.format(name=name, level=level_name(top), label=best)
                         + _gain(means.loc[(top, best)], n[(top, best)], d, best, top))
        for label in (means.loc[NAT].index if NAT in means.index else []):
            lines.append(AT_NATURAL.format(name=name, label=label) + _gain(means.loc[(NAT, label)], n[(NAT, label)], d,
                                                                           label, NAT))
    return lines


def _gain(r: pd.Series, n: int, d: pd.DataFrame, label: str, level: str) -> str:
    """'runs ... faster than dense ..., at E % test error (mean over n run(s), B training epochs).'"""
    budget = epochs_text(model_epochs(d[d.label == label], level))
    return GAIN.format(b1000=_times(r.x_compact_b1000), compression=r.compression, error=r.error, n=n,
                       b1=f" and {_times(r.x_compact_b1)} at batch 1" if np.isfinite(r.x_compact_b1) else "",
                       flops=f" and {r.flops_x_compact:.1f}x fewer FLOPs" if np.isfinite(r.flops_x_compact) else "",
                       budget=f", {budget} training epochs" if budget != "-" else "")


def figures(exp: Experiment, out: Path) -> dict[str, Path]:
    """Per dataset: speed-up over dense vs compression (log x, log y), batch 1 and batch 1000 panels; per
    method the compacted net (solid) and the CSR kernel (dashed), mean over seeds with its ±1 std band;
    1 = as fast as dense."""
    paths = {}
    pal = figure.palette(exp.runs)
    for ds in ordered_datasets(exp.runs):
        d = exp.runs[exp.runs.dataset == ds]
        lv = levels(d)
        lv = lv[lv.level != NAT]
        if lv[[f"x_{k}_b{b}" for k in KERNELS for b in BATCHES]].isna().all(axis=None):
            continue
        fig, axes = figure.subplots(2, width=13, height=5.2)
        for ax, b in zip(axes, BATCHES):
            ax.set(xscale="log", yscale="log")
            for label in figure.order(d, lv.label):
                g = lv[lv.label == label].groupby("level")
                mean, std = g.mean(numeric_only=True).sort_values("compression"), g.std(numeric_only=True)
                for k, name in KERNELS.items():
                    col = f"x_{k}_b{b}"
                    if mean[col].notna().any():
                        figure.mean_line(ax, mean.compression, mean[col], std.loc[mean.index, col], pal[label],
                                         f"{figure.budget_label(d, ds, label)}, {name}",
                                         marker="o" if k == "compact" else "x", ls="-" if k == "compact" else "--")
            ax.axhline(1, color="grey", ls=":", lw=1, label="as fast as dense")
            ax.set(title=f"{DATASET_NAMES.get(ds, ds)}: speed-up over dense, batch {b}",
                   xlabel="compression = dense / nonzero weights (log)", ylabel="dense latency / latency (log)")
            for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
                axis(FuncFormatter(lambda v, _: f"{v:g}x"))
        figure.legend_below(fig, axes, f"method (epochs), forward ({figure.BAND})", ncol=3)
        paths[ds] = figure.save(fig, out / f"speedup_vs_compression_{ds}.png")
    return paths


def section(exp: Experiment, out: Path) -> Section:
    """Speed-up, FLOPs, widths and sizes vs compression, the break-even levels, and a headline from the numbers."""
    df, sec = exp.runs, Section("What compression buys")
    if not present(df):
        sec.blocks.append(text(OMITTED))
        return sec
    sec.blocks += [Block("list", items=headline(df)), text(ABOUT, note=True)]
    figs = figures(exp, out / "plots")
    for ds in ordered_datasets(df):
        t = speedup_table(df, ds)
        if t.empty:
            continue
        name = DATASET_NAMES.get(ds, ds)
        blocks = [table(t.write(out / "tables", f"speedup_{ds}")), *footnote(df, ds),
                  *([text(SINGLE_NOTE, note=True)] if single(levels(df[df.dataset == ds])) else []), text(BREAK_EVEN, note=True),
                  table(break_even(df, ds).write(out / "tables", f"break_even_{ds}"))]
        if ds in figs:
            blocks += images([figs[ds]], out, lambda p: CAPTION.format(name=name))
        sec.subsections.append(Section(name, blocks))
    return sec
