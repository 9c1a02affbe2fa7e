"""Comparison tables: the study's layout (method x level, mean ± std over seeds), costs, compression,
the headline. Each builder returns a `Table`; the same object renders markdown (report.md), HTML
(index.html), CSV and LaTeX, so every format shows the same numbers."""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import compression
from .load import DATASET_NAMES, NAT, baseline_label, by_level, level_key, ordered_datasets, ordered_labels

# metric -> (title, what it is, higher is better; None = no "best")
LEVEL_TABLES = {
    "test_acc": ("Test accuracy", "one deterministic forward pass (posterior mean for Bayesian methods)", True),
    "oneshot_acc": ("Test accuracy before fine-tuning", "one-shot pruned, before the fine-tune protocol retrained it", True),
    "test_acc_mc": ("Ensemble test accuracy", "Monte Carlo ensemble of sampled networks (methods that sample)", True),
    "test_nll": ("Test NLL", "negative log-likelihood, nats per example", False),
    "test_nll_mc": ("Ensemble test NLL", "Monte Carlo ensemble, nats per example", False),
    "test_ece": ("Test ECE", "expected calibration error, 15 bins", False),
    "test_ece_mc": ("Ensemble test ECE", "Monte Carlo ensemble, expected calibration error, 15 bins", False),
    "sparsity": ("Measured sparsity",
                 ("fraction of zeros among the weights one forward pass multiplies with, on a weight sample for "
                  "stochastic methods (L0's sampled gates close more weights than its deterministic net, "
                  "whose count the Compression section uses)"), None),
}
# the uncertainty section's level tables (suite/ood.py): OOD = the other dataset's test images
TRUST_TABLES = {
    "ood_auroc_entropy": ("OOD detection AUROC, predictive entropy",
                          "AUROC of telling the other dataset's test images from this one's by predictive entropy", True),
    "ood_auroc_mi_mc": ("OOD detection AUROC, mutual information",
                        "AUROC by the Monte Carlo ensemble's mutual information (epistemic part; methods that sample)", True),
    "shift_acc_mean": ("Accuracy under rotation", "test accuracy on rotated images, mean over 0..180 degrees", True),
    "shift_ece_mean": ("ECE under rotation", "expected calibration error on rotated images, mean over the angles", False),
}
DAGGER = "†"
COLLAPSED_NOTE = (f"{DAGGER} at chance: collapsed. A run of the cell ended training at chance validation accuracy "
                  "(tag collapsed=true); it is in the mean, but the cell is no result.")
# (metric column, header, digits); a column no run of the dataset logged is left out
TRAINING_COST = [("time_per_epoch_s", "s / epoch", 2), ("train_wall_s", "train s", 1), ("compile_s", "compile s", 1),
                 ("eval_wall_s", "eval s", 1), ("total_wall_s", "total s", 1), ("epochs_to_fit", "epochs to fit", 1),
                 ("epochs_to_99pct_best", "epochs to 99 % best", 1)]
INFERENCE_COST = [("latency_dense_b1_ms_p00", "dense b1 ms @0 %", 3), ("latency_sparse_b1_ms_p90", "sparse b1 ms @90 %", 3),
                  ("latency_dense_b1000_ms_p00", "dense b1000 ms @0 %", 2),
                  ("latency_sparse_b1000_ms_p90", "sparse b1000 ms @90 %", 2),
                  ("size_dense_bytes_p00", "dense MB", 2), ("size_csr_bytes_p90", "CSR MB @90 %", 2)]
# Compression targets: MNIST LeNet papers quote error <= 2.0 % (Han et al. 2015, Molchanov et al. 2017); Fashion-MNIST has no
# published bar, so "within 1 percentage point of the dense baseline".
ERROR_TARGETS = {"mnist": ("absolute", 0.02)}
DEFAULT_TARGET = ("above dense", 0.01)


@dataclass
class Table:
    """Display cells, plus the numeric means that decide the bold "best" cell of each column."""

    cells: pd.DataFrame
    means: pd.DataFrame | None = None
    higher: bool | None = None
    index: bool = True
    groups: pd.Series | None = None   # best is picked within each group of rows (e.g. per dataset)

    @property
    def empty(self) -> bool:
        return self.cells.empty

    def best(self) -> pd.DataFrame:
        """Bool mask of the best mean per column (ties all marked); all False without a direction."""
        mask = pd.DataFrame(False, index=self.cells.index, columns=self.cells.columns)
        if self.higher is None or self.means is None:
            return mask
        keys = self.groups if self.groups is not None else pd.Series(0, index=self.means.index)
        for c in self.means.columns:
            col = self.means[c].astype(float)
            best = col.groupby(keys).transform("max" if self.higher else "min")
            rivals = col.notna().groupby(keys).transform("sum")  # a lone value is not "best" of anything
            mask[c] = np.isclose(col, best, rtol=0, atol=1e-12) & col.notna() & (rivals > 1)
        return mask

    def _marked(self, left: str, right: str) -> pd.DataFrame:
        out, mask = self.cells.astype(str), self.best()
        return out.mask(mask, left + out + right)

    def markdown(self) -> str:
        t = self._marked("**", "**")
        if isinstance(t.index, pd.MultiIndex):  # tabulate would print tuples
            return t.reset_index().to_markdown(index=False)
        return t.to_markdown(index=self.index)

    def latex(self) -> str:
        return self._marked("\\textbf{", "}").to_latex(index=self.index).replace("±", "$\\pm$")

    def html(self) -> str:
        """A <table class="data">; best cells bold; a cell's seed count goes on a second, smaller line
        so wide level tables fit a screen."""
        def fmt(v) -> str:
            v = html.escape("-" if pd.isna(v) else str(v))
            return re.sub(r" \((n=\d+|1 seed)\)", r'<br><span class="n">(\1)</span>', v)
        styler = self.cells.style.apply(lambda _: self.best().replace({True: "font-weight:bold", False: ""}), axis=None)
        styler = styler.format(fmt).format_index(escape="html", axis=0).format_index(escape="html", axis=1)
        styler = styler.set_table_attributes('class="data"')
        words = [c for c in self.cells.columns if not self.cells[c].astype(str).str.match(r"[-+\d.]").any()]
        # prose columns (sources, notes) read left to right, header included
        styler = styler.set_properties(subset=words, **{"text-align": "left"})
        styler = styler.set_table_styles({c: [{"selector": "th", "props": "text-align: left"}] for c in words}, overwrite=False)
        styler = styler.hide(axis="index", names=True) if self.index else styler.hide(axis="index")
        return styler.to_html()

    def write(self, out: Path, stem: str) -> Table:
        """<stem>.md, .csv and .tex under out."""
        out.mkdir(parents=True, exist_ok=True)
        self.cells.to_csv(out / f"{stem}.csv", index=self.index)
        (out / f"{stem}.md").write_text(self.markdown() + "\n")
        (out / f"{stem}.tex").write_text(self.latex() + "\n")
        return self


def summarize(long: pd.DataFrame, value: str, keys: list[str]) -> pd.DataFrame:
    """mean, std (ddof=1; NaN for one seed) and n of `value` per group."""
    g = long.groupby(keys)[value]
    return g.agg(mean="mean", std="std", n="count").reset_index()


def cell(mean: float, std: float, n: int, digits: int = 4, note: str = "") -> str:
    """"0.9812 ± 0.0010 (n=3)" or "0.9812 (1 seed)"; `note` goes before the seed count."""
    if np.isnan(mean):
        return "-"
    spread = f" ± {std:.{digits}f}" if n > 1 else ""
    return f"{mean:.{digits}f}{spread}{' ' + note if note else ''}" + (f" (n={int(n)})" if n > 1 else " (1 seed)")


def level_name(level: str) -> str:
    return "natural" if level == NAT else f"{int(level[1:])} %"


def collapsed_cells(d: pd.DataFrame, long: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Per group of `keys` of a by_level frame: does it hold a run tagged collapsed=true?"""
    flag = long["run_id"].map(d.set_index("run_id")["collapsed"]) if "collapsed" in d else False
    return long.assign(collapsed=flag).groupby(keys)["collapsed"].any()


def collapsed_note(df: pd.DataFrame, dataset: str) -> str:
    """The dagger's footnote when a run of the dataset collapsed, else ""."""
    d = df[df.dataset == dataset]
    return COLLAPSED_NOTE if "collapsed" in d and d.collapsed.any() else ""


def epochs_text(values: pd.Series) -> str:
    """A label's total training epochs: "60", or "48-60" when its runs differ; "-" when unknown."""
    v = values.dropna()
    if v.empty:
        return "-"
    lo, hi = int(round(v.min())), int(round(v.max()))
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def level_table(df: pd.DataFrame, metric: str, dataset: str) -> Table:
    """Rows = labels in tag order, columns = levels (p00 ... then `natural`, whose cells also give the
    measured sparsity the method chose)."""
    d = df[df.dataset == dataset]
    long = by_level(d, metric)
    s = summarize(long, metric, ["label", "level"])
    if s.empty:
        return Table(pd.DataFrame())
    # a natural-level cell also says which sparsity the method chose (not needed in the sparsity table itself)
    nat_sp = long[long.level == NAT].groupby("label")["sparsity"].mean() if metric != "sparsity" else {}
    dead = collapsed_cells(d, long, ["label", "level"])
    s["cell"] = [cell(m, sd, n, note=" ".join(filter(None, (f"@ {nat_sp[lab]:.1%} sparse" if lv == NAT and lab in nat_sp
                                                            else "", DAGGER if dead[(lab, lv)] else ""))))
                 for m, sd, n, lab, lv in zip(s["mean"], s["std"], s["n"], s.label, s.level)]
    order = [lab for lab in ordered_labels(d) if lab in set(s.label)]
    cols = sorted(s.level.unique(), key=level_key)
    means = s.pivot(index="label", columns="level", values="mean").loc[order, cols]
    cells = s.pivot(index="label", columns="level", values="cell").loc[order, cols].fillna("-")
    means.columns = cells.columns = [level_name(c) for c in cols]
    return Table(cells, means, {**LEVEL_TABLES, **TRUST_TABLES}[metric][2])


def cost_table(df: pd.DataFrame, dataset: str, columns=TRAINING_COST) -> Table:
    """Per label, its total training epochs (training + retraining) and, mean ± std: TRAINING_COST (time
    per epoch; train, compile, eval and total wall time; epochs to fit with how many seeds got there) or
    INFERENCE_COST (latency, size); empty when no run logged any of `columns`."""
    d = df[df.dataset == dataset].copy()
    d["time_per_epoch_s"] = d["train_wall_s"] / d["epochs"]
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
            row[name] = cell(v.mean(), v.std(), len(v), digits)
            if col == "epochs_to_fit" and len(v) < len(g):
                row[name] += f" [{len(v)}/{len(g)} fitted]"
        rows[label] = row
    return Table(pd.DataFrame.from_dict(rows, orient="index").dropna(axis=1, how="all"))


# the scaling grid's per-width columns: (metric, what it is, digits)
WIDTH_METRICS = {"step_time_ms": ("median ms per training step", 2), "time_per_epoch_s": ("seconds per epoch", 2),
                 "peak_mem_mb": ("peak memory added by training, MB", 0)}


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


def error_target(df: pd.DataFrame, dataset: str) -> tuple[float, str]:
    """(error bar, how it was set) for the compression table of a dataset."""
    kind, value = ERROR_TARGETS.get(dataset, DEFAULT_TARGET)
    if kind == "absolute":
        return value, f"mean test error <= {value:.1%}"
    base = baseline_label(df[df.dataset == dataset])
    ref = by_level(df[(df.dataset == dataset) & ((df.label == base) if base else True)], "test_acc")
    dense = 1 - ref.loc[ref.level == "p00", "test_acc"].mean()
    who = f"{base}'s" if base else "all methods'"
    return dense + value, f"mean test error <= {dense:.2%} ({who} dense error) + {value * 100:g} pp = {dense + value:.2%}"


def compression_table(df: pd.DataFrame, dataset: str) -> tuple[Table, str]:
    """Per label: the highest compression (dense weights / nonzero weights) among levels whose mean test
    error meets the dataset's bar (final-epoch numbers). Returns the table and the bar in words."""
    s = compression.summary(df[df.dataset == dataset])
    if s.empty:
        return Table(pd.DataFrame()), ""
    bar, words = error_target(df, dataset)
    d = df[df.dataset == dataset]
    dead = collapsed_cells(d, by_level(d, "test_acc"), ["label", "level"])
    rows, means = {}, {}
    for label in [lab for lab in ordered_labels(df[df.dataset == dataset]) if lab in set(s.label)]:
        g = s[s.label == label]
        ok = g[g.error <= bar + 1e-12]
        if ok.empty:
            low = g.loc[g.error.idxmin()]
            rows[label] = {"compression": "none meets the bar", "weights removed": "-", "level": "-",
                           "test error": f"lowest {low.error:.2%} at {level_name(low.level)}"}
            means[label] = {"compression": np.nan}
            continue
        top = ok.loc[ok.compression.idxmax()]
        err = f"{top.error:.2%}" + (f" ± {top.error_std:.2%} (n={top.n})" if top.n > 1 else " (1 seed)")
        rows[label] = {"compression": f"{top.compression:.1f}x" + ("" if top.exact else " *"),
                       "weights removed": f"{top.removed:.1%}", "test error": err,
                       "level": level_name(top.level) + (f" {DAGGER}" if dead[(label, top.level)] else "")}
        means[label] = {"compression": top.compression}
    cells = pd.DataFrame.from_dict(rows, orient="index")
    if not s.exact.all():
        words += ("; * = computed from the overall sparsity, which counts pruned biases too (no per-layer "
                  "weight sparsities logged)")
    return Table(cells, pd.DataFrame.from_dict(means, orient="index"), True), words


def headline_table(df: pd.DataFrame, with_compression: bool = False) -> tuple[Table, str]:
    """One row per dataset and label: dense accuracy, accuracy at the highest level every label has,
    its difference to the baseline label (tag baseline=true) and, for compression benchmarks, the
    compression table's figure. Returns the table and the level per dataset in words."""
    rows, means, words = [], [], []
    for ds in ordered_datasets(df):
        d = df[df.dataset == ds]
        squeeze = compression_table(df, ds)[0].cells if with_compression else pd.DataFrame()
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
                row["highest compression within the error bar"] = squeeze.loc[lab, "compression"]
                mrow["highest compression within the error bar"] = pd.to_numeric(
                    squeeze.loc[lab, "compression"].split("x")[0], errors="coerce")
            rows.append(row)
            means.append(mrow)
        name = DATASET_NAMES.get(ds, ds)
        words.append(f"{name}: {level_name(top)}" if top else f"{name}: no common pruned level")
    cells = pd.DataFrame(rows).fillna("-").set_index(["dataset", "method"])
    m = pd.DataFrame(means, index=cells.index)
    return Table(cells, m, True, groups=pd.Series(cells.index.get_level_values(0), index=cells.index)), "; ".join(words)


def family(df: pd.DataFrame) -> pd.Series:
    """What makes runs of two experiments "the same method at different recipes": the method and
    protocol tags and whether dropout is on (the dropout rate itself is part of the recipe)."""
    return df.method.astype(str) + "|" + df.protocol.astype(str) + "|" + (df.dropout > 0).map({True: "dropout", False: ""})


# recipe fields never shown as a difference: the seed axis, and what only the search sets
_NOT_RECIPE = {"seed", "dataset", "val_sparsities", "device", "data_dir", "compile"}


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
