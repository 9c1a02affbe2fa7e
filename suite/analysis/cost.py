"""What training and inference cost: per dataset, each method's total training epochs (budget.py) beside
its wall times and epochs to fit, and its dense / sparse latency, speed-up and size; the cost and latency figures."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from . import figure
from .document import Section, table, text
from .files import replacing
from .load import NAT, Experiment, by_level, ordered_labels
from .payoff import SINGLE_NOTE, single, spread
from .table import Table, cell, epochs_text

TRAINING_NOTE = ("train = the training epochs only; compile = torch.compile warm-up before training; eval = pruning sweep, "
                 "evaluation and latency after training; total = all of it with setup. Columns no run logged are left out.")
NEVER_FITTED = ("No trial reached its validation-accuracy fit target\n(param fit_target; default per dataset) within its "
                "{epochs} epoch(s):\nnothing to show. See the cost table's \"epochs to fit\".")
# (metric column, header, digits); a column no run of the dataset logged is left out
TRAINING_COST = [("time_per_epoch_s", "s / epoch", 2), ("train_wall_s", "train s", 1), ("compile_s", "compile s", 1),
                 ("eval_wall_s", "eval s", 1), ("total_wall_s", "total s", 1), ("epochs_to_fit", "epochs to fit", 1),
                 ("epochs_to_99pct_best", "epochs to 99 % best", 1)]
INFERENCE_COST = [("latency_dense_b1_ms_p00", "dense b1 ms @0 %", 3), ("latency_sparse_b1_ms_p90", "sparse b1 ms @90 %", 3),
                  ("latency_dense_b1000_ms_p00", "dense b1000 ms @0 %", 2),
                  ("latency_sparse_b1000_ms_p90", "sparse b1000 ms @90 %", 2),
                  *((f"x_sparse_b{b}_p90", f"CSR x b{b} @90 %", 2) for b in (1, 1000)),
                  ("size_dense_bytes_p00", "dense MB", 2), ("size_csr_bytes_p90", "CSR MB @90 %", 2)]


def cost_table(df: pd.DataFrame, dataset: str, columns=TRAINING_COST) -> Table:
    """Per label, its total training epochs (training + retraining) and, mean ± std: TRAINING_COST (time
    per epoch; train, compile, eval and total wall time; epochs to fit with how many seeds got there) or
    INFERENCE_COST (latency; the CSR speed-up over dense at 90 %, measured in one run at that level, with its
    per-round quartiles where logged, payoff.spread; size); empty when no run logged any of `columns`."""
    d = df[df.dataset == dataset].copy()
    d["time_per_epoch_s"] = d["train_wall_s"] / d["epochs"]
    d = d.join(speedups(df, dataset))
    for col in ("size_dense_bytes_p00", "size_csr_bytes_p90"):
        if col in d:
            d[col] = d[col] / 1e6
    present = [(c, name, dg) for c, name, dg in columns if c in d and d[c].notna().any() or c == "epochs_to_fit"]
    if not present:
        return Table(pd.DataFrame())
    rows = {}
    for label in ordered_labels(d):
        g = d[d.label == label]
        # the arm's whole budget (training + every retraining epoch), so arms are read at equal epochs
        row = {"total epochs": epochs_text(g["total_epochs"])} if "total_epochs" in g else {}
        for col, name, digits in present:
            v = g[col].dropna() if col in g else pd.Series(dtype=float)
            if v.empty:
                row[name] = f"never (0/{len(g)} fitted)" if col == "epochs_to_fit" else "-"
                continue
            row[name] = cell(v.mean(), v.std(), len(v), digits, spread(g, col))
            if col == "epochs_to_fit" and len(v) < len(g):
                row[name] += f" [{len(v)}/{len(g)} fitted]"
        rows[label] = row
    return Table(pd.DataFrame.from_dict(rows, orient="index").dropna(axis=1, how="all"))


def speedups(df: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Per run of the dataset, the CSR speed-up over dense at 90 % and batch B, `x_sparse_bB_p90`: the per-round
    median where logged, else the ratio of the two medians (both from the same run and level), with its
    quartiles `_q25` / `_q75` (NaN where not logged); no columns where a run logged no latency at 90 %."""
    d = df[df.dataset == dataset]
    out = pd.DataFrame(index=d.index)
    for b in (1, 1000):
        x, dense, csr = f"x_sparse_b{b}_p90", f"latency_dense_b{b}_ms_p90", f"latency_sparse_b{b}_ms_p90"
        if dense in d and csr in d:
            logged = [d.get(f"latency_speedup_sparse_b{b}{q}_p90", pd.Series(float("nan"), index=d.index))
                      for q in ("", "_q25", "_q75")]
            out[x], out[x + "_q25"], out[x + "_q75"] = logged[0].fillna(d[dense] / d[csr]), logged[1], logged[2]
    return out


def subsections(df: pd.DataFrame, ds: str, tdir: Path) -> list[Section]:
    """Training cost, and inference cost where runs logged latency or size."""
    out = [Section("Training cost", [table(cost_table(df, ds).write(tdir, f"cost_{ds}")), text(TRAINING_NOTE, note=True)])]
    inference = cost_table(df, ds, INFERENCE_COST)
    if not inference.empty:
        note = [text(SINGLE_NOTE, note=True)] if single(speedups(df, ds)) else []
        out.append(Section("Inference cost", [table(inference.write(tdir, f"inference_{ds}")), *note]))
    return out


def cost_figure(runs: pd.DataFrame):
    """Time per epoch and epochs to fit per label and dataset (±1 std over seeds)."""
    df = runs.assign(time_per_epoch_s=runs.train_wall_s / runs.epochs)
    pal, order = figure.palette(df), ordered_labels(df)
    fig, axes = figure.subplots(2, width=13)
    sns.barplot(df, x="dataset", y="time_per_epoch_s", hue="label", hue_order=order, palette=pal, errorbar="sd",
                ax=axes[0])
    axes[0].set(title="Training time per epoch (±1 std over seeds)", xlabel="dataset", ylabel="seconds per epoch")
    axes[1].set_title("Epochs until validation accuracy reaches the fit target")
    if "epochs_to_fit" in df and df.epochs_to_fit.notna().any():
        sns.barplot(df, x="dataset", y="epochs_to_fit", hue="label", hue_order=order, palette=pal, errorbar="sd",
                    ax=axes[1])
        axes[1].set(xlabel="dataset", ylabel="epochs")
    else:
        figure.empty_panel(axes[1], NEVER_FITTED.format(epochs=", ".join(map(str, sorted(df.epochs.unique())))))
    figure.legend_below(fig, axes, "method (missing bar: never fitted)", ncol=4)
    return fig


def latency_figure(exp: Experiment, out: Path) -> list[Path]:
    """Inference latency against the pruned fraction, dense / CSR / compacted forward, batch 1 and 1000."""
    df = exp.runs
    rows = []
    for kind, name in (("dense", "dense"), ("sparse", "CSR"), ("compact", "compacted")):
        for b in (1, 1000):
            long = by_level(df, f"latency_{kind}_b{b}_ms")
            rows.append(long.rename(columns={f"latency_{kind}_b{b}_ms": "ms"}).assign(kind=name, batch=f"batch {b}"))
    d = pd.concat(rows)
    d = d[d.level != NAT]
    if d.empty:
        return []
    g = sns.relplot(d, x="sparsity", y="ms", hue="kind", col="batch", kind="line", errorbar="sd", marker="o",
                    facet_kws={"sharey": False}, height=4, aspect=1.3)
    g.set_titles(col_template="{col_name}")
    g.set_axis_labels("fraction of weights pruned", "inference latency (ms, median)")
    g.figure.suptitle("Inference latency of the pruned networks: dense, CSR and compacted (all methods)", y=1.03)
    g.legend.set_title(f"forward ({figure.BAND})")
    with replacing(out / "latency.png") as tmp:
        g.figure.savefig(tmp, dpi=figure.DPI, bbox_inches="tight")
    plt.close(g.figure)
    return [out / "latency.png"]


def figures(exp: Experiment, out: Path) -> list[Path]:
    return [figure.save(cost_figure(exp.runs), out / "cost.png"), *latency_figure(exp, out)]
