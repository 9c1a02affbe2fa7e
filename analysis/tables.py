"""Comparison tables: the study's layout (method x sparsity, mean ± std over seeds), costs, references."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .load import by_level, method_order

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
# (metric column, higher is better) for the per-sparsity tables
LEVEL_TABLES = {"test_acc": True, "test_acc_mc": True, "test_nll": False, "test_ece": False, "sparsity": None}


def summarize(long: pd.DataFrame, value: str, keys: list[str]) -> pd.DataFrame:
    """mean, std (ddof=1; NaN for one seed) and n of `value` per group."""
    g = long.groupby(keys)[value]
    return g.agg(mean="mean", std="std", n="count").reset_index()


def cell(mean: float, std: float, n: int, digits: int = 4) -> str:
    if np.isnan(mean):
        return "-"
    spread = f" ± {std:.{digits}f}" if n > 1 else " (1 seed)"
    return f"{mean:.{digits}f}{spread}" + (f" (n={n})" if n > 1 else "")


def level_table(df: pd.DataFrame, metric: str, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows = method, columns = sparsity levels; returns (formatted cells, numeric means).
    The best mean per column is marked with ** (md) by the writers."""
    s = summarize(by_level(df[df.dataset == dataset], metric), metric, ["label", "sparsity"])
    if s.empty:
        return pd.DataFrame(), pd.DataFrame()
    means = s.pivot(index="label", columns="sparsity", values="mean")
    cells = s.assign(cell=[cell(m, sd, n) for m, sd, n in zip(s["mean"], s["std"], s["n"])]) \
        .pivot(index="label", columns="sparsity", values="cell").fillna("-")  # a level some methods lack
    order = method_order(means.index)
    cols = sorted(means.columns)
    names = [f"{round(c * 100)} %" for c in cols]
    means, cells = means.loc[order, cols], cells.loc[order, cols]
    means.columns = cells.columns = names
    return cells, means


def mark_best(cells: pd.DataFrame, means: pd.DataFrame, higher: bool | None, bold=("**", "**")) -> pd.DataFrame:
    """Wrap the best mean of each column in bold markers (ties all marked); None = no best."""
    if higher is None or means.empty:
        return cells
    out = cells.copy()
    for c in means.columns:
        best = means[c].max() if higher else means[c].min()
        for i in means.index[np.isclose(means[c], best, rtol=0, atol=1e-12)]:
            out.loc[i, c] = f"{bold[0]}{cells.loc[i, c]}{bold[1]}"
    return out


COST_METRICS = [("train_wall_s", "train wall s", 1), ("time_per_epoch_s", "s / epoch", 2),
                ("epochs_to_fit", "epochs to fit", 1), ("epochs_to_99pct_best", "epochs to 99 % best", 1),
                ("latency_dense_b1_ms_p00", "dense b1 ms @0 %", 3), ("latency_sparse_b1_ms_p90", "sparse b1 ms @90 %", 3),
                ("latency_dense_b1000_ms_p00", "dense b1000 ms @0 %", 2),
                ("latency_sparse_b1000_ms_p90", "sparse b1000 ms @90 %", 2),
                ("size_dense_bytes_p00", "dense MB", 2), ("size_csr_bytes_p90", "CSR MB @90 %", 2)]


def cost_table(df: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Per method: time, epochs to fit (with how many seeds got there), latency, size; mean ± std."""
    d = df[df.dataset == dataset].copy()
    d["time_per_epoch_s"] = d["train_wall_s"] / d["epochs"]
    for col in ("size_dense_bytes_p00", "size_csr_bytes_p90"):
        if col in d:
            d[col] = d[col] / 1e6
    rows = {}
    for label in method_order(d.label):
        g = d[d.label == label]
        row = {}
        for col, name, digits in COST_METRICS:
            if col not in g or g[col].isna().all():
                row[name] = f"never (0/{len(g)} fitted)" if col == "epochs_to_fit" else "-"
                continue
            v = g[col].dropna()
            row[name] = cell(v.mean(), v.std(), len(v), digits)
            if col == "epochs_to_fit" and len(v) < len(g):
                row[name] += f" [{len(v)}/{len(g)} fitted]"
        rows[label] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def load_reference(name: str) -> pd.DataFrame:
    """A published table from analysis/reference/<name>.csv (its first line names the source)."""
    return pd.read_csv(REFERENCE_DIR / f"{name}.csv", comment="#")


def reference_source(name: str) -> str:
    return (REFERENCE_DIR / f"{name}.csv").read_text().splitlines()[0].lstrip("# ").removeprefix("source:").strip()


def reference_table(df: pd.DataFrame, ref: pd.DataFrame) -> pd.DataFrame:
    """Ours beside the published numbers on the same cells: difference, and whether it lies within
    two standard deviations of our seed spread (n/a with one seed)."""
    ours = summarize(by_level(df, "test_acc"), "test_acc", ["dataset", "label", "sparsity"])
    m = ref.merge(ours, on=["dataset", "label", "sparsity"], how="left")
    m["diff"] = m["mean"] - m["test_acc"]
    m["inside_spread"] = [("n/a (1 seed)" if n == 1 else "yes" if abs(dv) <= 2 * sd else "no") if n == n and n >= 1
                          else "not run" for dv, sd, n in zip(m["diff"], m["std"], m["n"])]
    m = m.rename(columns={"test_acc": "published", "mean": "ours_mean", "std": "ours_std", "n": "n_seeds"})
    return m[["dataset", "label", "sparsity", "published", "ours_mean", "ours_std", "n_seeds", "diff", "inside_spread"]]


def write(table: pd.DataFrame, out: Path, stem: str, means: pd.DataFrame | None = None,
          higher: bool | None = None, index: bool = True) -> str:
    """Write <stem>.md, .csv and .tex; return the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"{stem}.csv", index=index)
    md_table = mark_best(table, means, higher) if means is not None else table
    tex_table = mark_best(table, means, higher, ("\\textbf{", "}")) if means is not None else table
    md = md_table.to_markdown(index=index)
    (out / f"{stem}.md").write_text(md + "\n")
    (out / f"{stem}.tex").write_text(tex_table.to_latex(index=index).replace("±", "$\\pm$") + "\n")
    return md
