"""What compression buys: speed-up, FLOPs, widths and sizes of the pruned networks (suite/compact.py,
suite/latency.py), beside the compression ratio, as Blalock et al. 2020 ask (theoretical speed-up =
dense FLOPs / remaining FLOPs next to the measured one).

Speed-up at a level = dense latency / latency of the same pruned network run another way, both
measured in the same run at that level (so on the same machine, under the same lock): the compacted
dense MLP (`latency_compact_*`) or the fastest CSR kernel (`latency_sparse_*`). > 1 = faster than dense.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import collapse
from . import compression
from .load import DATASET_NAMES, NAT, by_level, level_key, ordered_datasets, ordered_labels
from .tables import DAGGER, Table, cell, collapsed_cells, epochs_text, level_name

BATCHES = (1, 1000)
KERNELS = {"compact": "compacted", "sparse": "CSR"}   # metric infix -> display name
SIZES = ("size_dense_bytes", "size_csr_bytes")


def present(df: pd.DataFrame) -> bool:
    """Did any run log the compaction / latency-of-the-compacted-net metrics?"""
    return any(c.startswith(("latency_compact_", "compact_width_", "flops_")) for c in df.columns)


def levels(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run and level (compression.levels' rows, error included) with the speed-ups `x_{kernel}_b{B}`, the FLOPs
    ratios `flops_x_nonzero` and `flops_x_compact`, the sizes in MB and the compacted widths `width_l{i}`."""
    out = compression.levels(df)
    for metric in [*(f"latency_{k}_b{b}_ms" for k in ("dense", *KERNELS) for b in BATCHES), *SIZES,
                   *(f"flops_{k}" for k in ("dense", "nonzero", "compact")),
                   *sorted({m[: m.rindex("_")] for m in df.columns if m.startswith("compact_width_l")})]:
        long = by_level(df, metric)[["run_id", "level", metric]]
        out = out.merge(long, on=["run_id", "level"], how="left") if not long.empty else out.assign(**{metric: np.nan})
    for k in KERNELS:
        for b in BATCHES:
            out[f"x_{k}_b{b}"] = out[f"latency_dense_b{b}_ms"] / out[f"latency_{k}_b{b}_ms"]
    out["flops_x_nonzero"] = out["flops_dense"] / out["flops_nonzero"]
    out["flops_x_compact"] = out["flops_dense"] / out["flops_compact"]
    for s in SIZES:
        out[s] = out[s] / 1e6
    out = out.rename(columns={c: "width_" + c.removeprefix("compact_width_") for c in out if c.startswith("compact_width_")})
    return out


# (column of levels(), header, digits)
COLUMNS = [("compression", "compression x", 1), ("flops_x_nonzero", "FLOPs x (nonzero)", 1),
           ("flops_x_compact", "FLOPs x (compacted)", 1),
           *((f"x_{k}_b{b}", f"speed-up x b{b} {name}", 2) for b in BATCHES for k, name in KERNELS.items()),
           ("size_dense_bytes", "dense MB", 2), ("size_csr_bytes", "CSR MB", 2)]


def speedup_table(df: pd.DataFrame, dataset: str) -> Table:
    """Rows (method, level) with the method's total training epochs; per column mean ± std over seeds;
    compacted widths (input pixels, then each hidden layer) as the seeds' mean; a level with a collapsed
    run is marked † (once per row: the whole row is that net's)."""
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
        budget = epochs_text(d.loc[d.label == label, "total_epochs"])
        for level in sorted(g.level.unique(), key=level_key):
            h = g[g.level == level]
            row = {"total epochs": budget}
            for c, header, digits in cols:
                v = h[c].dropna()
                row[header] = cell(v.mean(), v.std(), len(v), digits) if len(v) else "-"
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
            lines.append(f"{name}: at {level_name(top)} pruned, the compacted {best} net "
                         + _gain(means.loc[(top, best)], n[(top, best)], d, best))
        for label in (means.loc[NAT].index if NAT in means.index else []):
            lines.append(f"{name}: at its natural level (the mask it learns), the compacted {label} net "
                         + _gain(means.loc[(NAT, label)], n[(NAT, label)], d, label))
    return lines


def _gain(r: pd.Series, n: int, d: pd.DataFrame, label: str) -> str:
    """'runs ... faster than dense ..., at E % test error (mean over n run(s), B training epochs).'"""
    budget = epochs_text(d.loc[d.label == label, "total_epochs"])
    b1 = f" and {_times(r.x_compact_b1)} at batch 1" if np.isfinite(r.x_compact_b1) else ""
    flops = f" and {r.flops_x_compact:.1f}x fewer FLOPs" if np.isfinite(r.flops_x_compact) else ""
    return (f"runs {_times(r.x_compact_b1000)} than dense at batch 1000{b1}, with {r.compression:.1f}x fewer "
            f"weights{flops}, at {r.error:.1%} test error (mean over {n} run(s)"
            + (f", {budget} training epochs)." if budget != "-" else ")."))
