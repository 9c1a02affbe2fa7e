"""Bytes and latency: at equal error, which arm stores its network in the fewest bytes and which runs it fastest,
and whether that arm is Bayesian.

Per dataset and arm (label; the protocol is part of it), over its levels (pNN and the natural level), each level at
its mean over seeds, among the levels whose mean test error meets the dataset's target (compression.error_target,
the compression table's threshold: one definition for both sections):
- fewest bytes: the smallest mean `stored_bytes_<level>` (the compacted net in fixed point, sparse layers with relative
  indices: suite/evaluate/bits.py, docs/bits.md; logged from evaluation version 3 on), beside the compression after
  pruning and after precision reduction, the bits per weight and the stored (quantised) net's test error;
- lowest latency: the lowest mean compacted forward at batch 1000 (`latency_compact_b1000_ms_<level>`,
  suite/evaluate/latency.py), with its speed-up over dense as payoff.levels reads it (per-round median, quartiles).
Arms whose runs logged no bytes metrics are named, with why and how to add them: never dropped silently.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import compression, payoff
from .document import Block, Section, footnote, table, text
from .load import DATASET_NAMES, NAT, Experiment, bayesian, level_key, ordered_datasets, ordered_labels
from .table import (
    DAGGER,
    EPOCHS_MODEL,
    EPOCHS_TRIAL,
    Table,
    cell,
    collapsed_cells,
    level_name,
    model_epochs_text,
    trial_epochs_text,
)

BITS_SINCE = 3   # the evaluation version (tag eval_version) that added stored_bytes_<level> (suite.evaluate.EVAL_VERSION)
GATHER_SINCE = 4  # ... that times the compacted forward both ways (window, gather) and reports the faster
BYTES = ("stored_bytes", "compression_pruned", "compression_bits", "bits", "quant_acc")
LATENCY = "latency_compact_b1000_ms"

INTRO = ("At equal error, which arm stores its network in the fewest bytes and which runs it fastest. Per arm, among its "
         "levels (the natural one included) whose mean test error meets the dataset's target (the compression table's "
         "threshold), the level stored in the fewest bytes and the level whose compacted forward (dead units removed, "
         "suite/evaluate/compact.py) is fastest at batch 1000; mean ± std over seeds. Stored kB: the compacted net in fixed "
         "point, each layer dense or sparse with relative indices, biases float32 (docs/bits.md); x after pruning = dense "
         "weights / nonzero weights; x after precision = the float32 dense net's bits / bits stored; bits / weight = mean "
         "value bits of the kept weights; quantised error = the stored net's test error, beside the float net's. Speed-up = "
         "dense / compacted forward time in the same run, [q25, q75] of its per-round ratios (as in 'What compression "
         "buys'). Bayesian = an objective with a KL term to a prior (BBB, Sparse VD, L0, Bayesian Compression). Budgets as "
         "in the compression table.")
NONE = "No run logged the bytes metrics (stored_bytes_pNN: suite/evaluate/bits.py, evaluation version 3 on)."
TARGET = "Error target: {words}."
MISSING = "No bytes metrics for {labels}: {why}."
REEVALUATE = ("evaluated before version {since}, which added them; `python -m suite.run --grid GRID` re-evaluates such "
              "runs from their stored weights (or `python -m suite.evaluate --experiment NAME`)")
RETRAIN = ("evaluated before version {since}, which added them, and {which} no weights (runs imported from a runs file): "
           "retrain them (`python -m suite.run --grid GRID --rerun`)")
NO_RULE = ("evaluated at version {since} or later, but with no precision rule: a point-estimate method chooses its bits "
           "on the validation split, and these runs had none (val_size 0; docs/bits.md)")
NO_LATENCY = "No compacted-forward latency ({metric}_pNN) for {labels}: runs before the compaction metrics."
WINDOW_ONLY = ("Compacted forward of {labels} timed reading the input window only (evaluation version < {since}; from "
               "{since} on the faster of the window and a gather of the live pixels, which wins when a few hundred "
               "pixels are scattered over a wide window, docs/performance.md). `python -m suite.evaluate` times again "
               "the runs that kept their weights; runs imported from a runs file keep these figures.")
NONE_MEETS = "none meets the target"
FEWEST = "{name}: the fewest bytes within the error target are {label}'s ({kind}), {kb:.1f} kB at {level}{other}."
FEWEST_OTHER = "; the fewest of a {kind} arm: {label}'s, {kb:.1f} kB ({ratio:.1f}x as many)"
FASTEST = ("{name}: the lowest latency at batch 1000 within the error target is {label}'s ({kind}), {ms:.3f} ms at {level}, "
           "{x:.2f}x the dense forward's speed{other}.")
FASTEST_OTHER = "; the lowest of a {kind} arm: {label}'s, {ms:.3f} ms ({ratio:.2f}x as long)"
NO_OTHER = "; no {kind} arm has a level within the target to compare"
KIND = {True: "Bayesian", False: "not Bayesian"}       # the winner, in brackets
ARM_KIND = {True: "Bayesian", False: "non-Bayesian"}   # "a ... arm"


def present(df: pd.DataFrame) -> bool:
    """Did any run log the stored size of a level?"""
    return any(c.startswith("stored_bytes_") for c in df.columns) and bool(
        df[[c for c in df.columns if c.startswith("stored_bytes_")]].notna().any(axis=None))


def levels(df: pd.DataFrame) -> pd.DataFrame:
    """payoff.levels' rows (error, compacted latency and speed-ups) with the bytes metrics of BYTES and
    quant_error = 1 - quant_acc; NaN where a run did not log them."""
    out = payoff.joined(payoff.levels(df), df, list(BYTES))
    return out.assign(quant_error=1 - out["quant_acc"])


def _best(g: pd.DataFrame, bar: float, col: str) -> str | None:
    """The level of one arm's rows g with the smallest mean `col` among those whose mean error meets the bar."""
    means = g.groupby("level")[["error", col]].mean()
    means = means.loc[sorted(means.index, key=level_key)]
    ok = means[compression.within(means.error, bar) & means[col].notna()]
    return ok[col].idxmin() if not ok.empty else None


def _num(h: pd.DataFrame, col: str, digits: int, scale: float = 1.0, note: str = "") -> str:
    v = h[col].dropna() * scale
    return cell(v.mean(), v.std(), len(v), digits, note) if len(v) else "-"


def _pick(df: pd.DataFrame, dataset: str, col: str, header: str, columns) -> Table:
    """Per arm with `col` logged: its level of smallest mean `col` within the error target, as `columns(h)` cells
    (h its runs at that level; `header` the cell of `col`) after level and test error, with the budgets; the
    smallest mean in bold. An arm with no level within the target says so, its cells "-"."""
    d = df[df.dataset == dataset]
    lv = levels(d)
    lv = lv[lv.label.isin(lv.loc[lv[col].notna(), "label"])]
    if lv.empty:
        return Table(pd.DataFrame())
    bar, _ = compression.error_target(df, dataset)
    dead = collapsed_cells(d, lv, ["label", "level"])
    rows, means = {}, {}
    for label in [lab for lab in ordered_labels(d) if lab in set(lv.label)]:
        g = lv[lv.label == label]
        level = _best(g, bar, col)
        if level is None:
            low = g.groupby("level").error.mean()
            rows[label] = {"level": "-", "test error %": f"{NONE_MEETS} (lowest {low.min():.2%} at {level_name(low.idxmin())})",
                           **columns(g.iloc[:0]), EPOCHS_MODEL: "-", EPOCHS_TRIAL: trial_epochs_text(d, label)}
            means[label] = np.nan
            continue
        h = g[g.level == level]
        rows[label] = {"level": level_name(level) + (f" {DAGGER}" if dead[(label, level)] else ""),
                       "test error %": _num(h, "error", 2, 100), **columns(h),
                       EPOCHS_MODEL: model_epochs_text(d, label, level), EPOCHS_TRIAL: trial_epochs_text(d, label)}
        means[label] = h[col].mean()
    cells = pd.DataFrame.from_dict(rows, orient="index")
    return Table(cells, pd.DataFrame({header: pd.Series(means)}), False)


def bytes_table(df: pd.DataFrame, dataset: str) -> Table:
    """Per arm that logged stored_bytes: the level stored in the fewest bytes within the error target, with its
    compression after pruning and after precision reduction, bits per weight and quantised test error."""
    return _pick(df, dataset, "stored_bytes", "stored kB", lambda h: {
        "stored kB": _num(h, "stored_bytes", 1, 1e-3), "x after pruning": _num(h, "compression_pruned", 1),
        "x after precision": _num(h, "compression_bits", 1), "bits / weight": _num(h, "bits", 1),
        "quantised error %": _num(h, "quant_error", 2, 100)})


def latency_table(df: pd.DataFrame, dataset: str) -> Table:
    """Per arm that logged the compacted forward's latency: the level of the lowest at batch 1000 within the error
    target, its speed-up over dense with the per-round quartiles (payoff.spread), and the same at batch 1."""
    def columns(h: pd.DataFrame) -> dict[str, str]:
        out = {}
        for b in payoff.BATCHES[::-1]:
            out[f"compacted ms b{b}"] = _num(h, f"latency_compact_b{b}_ms", 3)
            out[f"speed-up x b{b}"] = _num(h, f"x_compact_b{b}", 2, note=payoff.spread(h, f"x_compact_b{b}"))
        return out
    t = _pick(df, dataset, LATENCY, "compacted ms b1000", columns)
    unlogged = [c for c in t.cells.columns if c.endswith("b1") and (t.cells[c] == "-").all()]
    return Table(t.cells.drop(columns=unlogged), t.means, t.higher) if unlogged else t


def missing(exp: Experiment, d: pd.DataFrame) -> list[str]:
    """One sentence per reason: the arms of d none of whose runs logged a stored size, why, and how to add it."""
    cols = [c for c in d.columns if c.startswith("stored_bytes_")]
    logged = d[cols].notna().any(axis=1) if cols else pd.Series(False, index=d.index)
    why: dict[str, list[str]] = {}
    for label in ordered_labels(d):
        runs = d[d.label == label]
        if logged[runs.index].any():
            continue
        old = runs[runs.eval_version < BITS_SINCE]
        if old.empty:
            reason = NO_RULE.format(since=BITS_SINCE)
        else:
            bare = sum(exp.source.artifact(r, "model.pt") is None for r in old.run_id)
            which = "their runs store" if bare == len(old) else f"{bare} of {len(old)} runs store"
            reason = RETRAIN.format(since=BITS_SINCE, which=which) if bare else REEVALUATE.format(since=BITS_SINCE)
        why.setdefault(reason, []).append(label)
    return [MISSING.format(labels=", ".join(labels), why=reason) for reason, labels in why.items()]


def verdict(df: pd.DataFrame, dataset: str) -> list[str]:
    """Sentences from the two tables: the arm with the fewest bytes and the one with the lowest latency, whether
    each is Bayesian, and the best arm of the other kind beside it."""
    name, lines = DATASET_NAMES.get(dataset, dataset), []
    lv, (bar, _) = levels(df[df.dataset == dataset]), compression.error_target(df, dataset)
    for t, col, scale, say, other in ((bytes_table(df, dataset), "stored_bytes", 1e-3, FEWEST, FEWEST_OTHER),
                                      (latency_table(df, dataset), LATENCY, 1.0, FASTEST, FASTEST_OTHER)):
        means = t.means.iloc[:, 0].dropna() if t.means is not None else pd.Series(dtype=float)
        if means.empty:
            continue
        best = means.idxmin()
        rivals = means[[bayesian(df, lab) != bayesian(df, best) for lab in means.index]]
        rest = (NO_OTHER.format(kind=ARM_KIND[not bayesian(df, best)]) if rivals.empty else
                other.format(kind=ARM_KIND[bayesian(df, rivals.idxmin())], label=rivals.idxmin(),
                             kb=rivals.min() * scale, ms=rivals.min(), ratio=rivals.min() / means[best]))
        g = lv[lv.label == best]
        level = _best(g, bar, col)
        where = "its natural level" if level == NAT else f"{level_name(level)} pruned"
        lines.append(say.format(name=name, label=best, kind=KIND[bayesian(df, best)], kb=means[best] * scale,
                                ms=means[best], level=where, x=g.loc[g.level == level, "x_compact_b1000"].mean(),
                                other=rest))
    return lines


def section(exp: Experiment, out: Path) -> Section:
    """Per dataset: the error target, the fewest-bytes and lowest-latency tables, the arms without the metrics, and
    the verdict; one note when no run logged the bytes metrics."""
    df, sec = exp.runs, Section("Bytes and latency", [text(INTRO, note=True)])
    if not present(df):
        sec.blocks = [text(" ".join([NONE, *missing(exp, df)]))]
        return sec
    for ds in ordered_datasets(df):
        d = df[df.dataset == ds]
        blocks = [text(TARGET.format(words=compression.error_target(df, ds)[1]))]
        bt, lt = bytes_table(df, ds), latency_table(df, ds)
        if not bt.empty:
            blocks.append(table(bt.write(out / "tables", f"bytes_{ds}")))
        blocks += [text(s, note=True) for s in missing(exp, d)]
        if not lt.empty:
            blocks.append(table(lt.write(out / "tables", f"latency_{ds}")))
            if payoff.single(levels(d)):
                blocks.append(text(payoff.SINGLE_NOTE, note=True))
        window = [lab for lab in lt.cells.index if (d.loc[d.label == lab, "eval_version"] < GATHER_SINCE).any()]
        if window:
            blocks.append(text(WINDOW_ONLY.format(labels=", ".join(window), since=GATHER_SINCE), note=True))
        slow = [lab for lab in ordered_labels(d) if lab not in set(lt.cells.index)]
        if slow:
            blocks.append(text(NO_LATENCY.format(metric=LATENCY, labels=", ".join(slow)), note=True))
        blocks += [*footnote(df, ds), Block("list", items=verdict(df, ds))]
        sec.subsections.append(Section(DATASET_NAMES.get(ds, ds), blocks))
    return sec
