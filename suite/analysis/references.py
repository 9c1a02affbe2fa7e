"""Against the published numbers: published results (suite/analysis/reference/<name>.csv), compared
like for like with our runs, and the report's section that shows the comparison.

A reference file's first line is `# source: ...`. Its protocol columns (PROTOCOL) state the setup the
published numbers were obtained under; a published cell is compared only with runs whose params (and
`protocol` tag) equal every stated protocol value. An empty protocol cell is "not stated" and not checked.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from .document import Block, Section, table, text
from .load import baseline_label, by_level, ordered_labels
from .table import Table, summarize

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
STUDY_TABLES = ("prasad2021", "blundell2015")   # accuracy per label and pruned fraction
PROTOCOL = ("hidden", "epochs", "optimizer", "lr", "batch_size", "val_size", "train_subset", "prune_scope",
            "prune_biases", "input_dropout", "protocol", "train_samples", "test_samples")
INTRO = ("A published cell is compared only with runs whose protocol (architecture, epochs, optimizer, learning rate, "
         "data split, pruning scope and biases, as the reference file states them) matches; otherwise the fields that "
         "differ are named and no difference is shown.")
SOURCE = "Source: {source}"
DIFFERS = ("Not compared: our runs of {runs} differ from the published protocol in these fields (our values; `-` = "
           "matches, or not stated for that method):")
NONE = "No run shares a dataset and label with a published table."
RANGE = ("{ds}, {label}: the study reports {first:.4f} unpruned -> {last:.4f} at {top:.0%}; measured here "
         "{ours_first:.4f} -> {ours_last:.4f}.")
VERDICT = ("{ds}, {top:.0%}: {label} does {verdict} than {base} here ({ours:.4f} vs {ours_base:.4f}); the study found "
           "it {study} ({published:.4f} vs {published_base:.4f}).")


def load_reference(name: str) -> pd.DataFrame:
    return pd.read_csv(REFERENCE_DIR / f"{name}.csv", comment="#", dtype=str, keep_default_na=False)


def source(name: str) -> str:
    return (REFERENCE_DIR / f"{name}.csv").read_text().splitlines()[0].lstrip("# ").removeprefix("source:").strip()


def _value(v):
    """A param or CSV cell as a comparable value: JSON lists/numbers/bools parsed, else the string."""
    s = str(v).strip()
    try:
        return json.loads(s.lower() if s.lower() in ("true", "false") else s)
    except ValueError:
        return s


def _show(v) -> str:
    """One spelling for both sides: true/false, [500, 500], 0.0001."""
    v = _value(v)
    return json.dumps(v) if isinstance(v, (bool, list)) else str(v)


def _same(ours, published) -> bool:
    a, b = _value(ours), _value(published)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def differences(run: pd.Series, stated: dict[str, str]) -> dict[str, tuple[str, str]]:
    """{field: (ours, published)} for every stated protocol field the run does not match."""
    out = {}
    for f, pub in stated.items():
        ours = run["protocol"] if f == "protocol" else run.get(f"param.{f}")
        if ours is None or (isinstance(ours, float) and math.isnan(ours)) or not _same(ours, pub):
            out[f] = ("not logged" if ours is None or isinstance(ours, float) else _show(ours), _show(pub))
    return out


def compare(df: pd.DataFrame, ref: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Published accuracy cells beside ours from like runs only. Returns the table (status per row:
    compared / level not run / protocol differs / not run) and, for every (dataset, label) whose runs
    all differ from the published protocol, the differing fields: rows = field, columns = `published`
    and "<label> (<dataset>)" with our values ("-": matches, or not stated for that label)."""
    rows, differ = [], {}
    for (ds, label), g in ref.groupby(["dataset", "label"], sort=False):
        stated = {f: g[f].iloc[0] for f in PROTOCOL if f in g and g[f].iloc[0] != ""}
        runs = df[(df.dataset == ds) & (df.label == label)]
        diffs = [differences(r, stated) for _, r in runs.iterrows()]
        like = runs[[not d for d in diffs]]
        ours = summarize(by_level(like, "test_acc"), "test_acc", ["sparsity"]).set_index("sparsity")
        status = "compared" if len(like) else "protocol differs" if len(runs) else "not run"
        if status == "protocol differs":
            for f in sorted({f for d in diffs for f in d}):
                differ.setdefault(f, {"published": _show(stated[f])})[f"{label} ({ds})"] = \
                    ", ".join(sorted({d[f][0] for d in diffs if f in d}))
        for _, r in g.iterrows():
            p, pub = float(r.sparsity), float(r.test_acc)
            row = {"dataset": ds, "label": label, "sparsity": p, "published": pub, "status": status}
            if status == "compared" and p not in ours.index:
                row["status"] = "level not run"
            elif status == "compared":
                o = ours.loc[p]
                inside = "n/a (1 seed)" if o["n"] == 1 else "yes" if abs(o["mean"] - pub) <= 2 * o["std"] else "no"
                row.update(ours_mean=o["mean"], ours_std=o["std"], n_seeds=int(o["n"]), diff=o["mean"] - pub,
                           inside_spread=inside)
            rows.append(row)
    cols = ["dataset", "label", "sparsity", "published", "ours_mean", "ours_std", "n_seeds", "diff", "inside_spread", "status"]
    return pd.DataFrame(rows, columns=cols), pd.DataFrame.from_dict(differ, orient="index").fillna("-")


def published_markers(df: pd.DataFrame, name: str = "lenet300100") -> pd.DataFrame:
    """Published (error, compression) points whose dataset and architecture some of our runs share."""
    ref = load_reference(name)
    ours = {(ds, json.dumps(_value(h))) for ds, h in zip(df.dataset, df["param.hidden"])}
    keep = [(ds, json.dumps(_value(h))) in ours for ds, h in zip(ref.dataset, ref.hidden)]
    out = ref[keep].copy()
    for c in ("test_error", "compression", "removed"):
        out[c] = pd.to_numeric(out[c])
    return out


def study_check(ref: pd.DataFrame, df: pd.DataFrame) -> list[str]:
    """The study's claims against our like-protocol numbers, in words: each compared label's range, and
    every other label against the baseline label (tag baseline=true) at the highest compared level."""
    lines = []
    ok = ref[ref.status == "compared"].dropna(subset=["ours_mean"])
    for ds, g in ok.groupby("dataset"):
        for label, h in g.groupby("label", sort=False):
            h = h.set_index("sparsity")
            if len(h) > 1:
                lines.append(RANGE.format(ds=ds, label=label, first=h.published.iloc[0], last=h.published.iloc[-1],
                                          top=h.index[-1], ours_first=h.ours_mean.iloc[0], ours_last=h.ours_mean.iloc[-1]))
        base = baseline_label(df[df.dataset == ds])
        if base is None or base not in set(g.label):
            continue
        top = g[g.label == base].sparsity.max()
        at = g[g.sparsity == top].set_index("label")
        for label in [lab for lab in ordered_labels(df[df.dataset == ds]) if lab in at.index and lab != base]:
            lines.append(VERDICT.format(
                ds=ds, top=top, label=label, base=base, ours=at.ours_mean[label], ours_base=at.ours_mean[base],
                verdict="better" if at.ours_mean[label] > at.ours_mean[base] else "worse",
                study="better" if at.published[label] > at.published[base] else "worse",
                published=at.published[label], published_base=at.published[base]))
    return lines


def section(df: pd.DataFrame, tdir: Path) -> Section:
    sec = Section("Against the published numbers", [text(INTRO)])
    for name in STUDY_TABLES:
        ref, differ = compare(df, load_reference(name))
        if (ref.status == "not run").all():
            continue
        blocks = [text(SOURCE.format(source=source(name)), note=True)]
        if not differ.empty:
            blocks += [text(DIFFERS.format(runs=", ".join(differ.columns[1:]))),
                       table(Table(differ).write(tdir, f"protocol_{name}"))]
        if (ref.status == "compared").any():
            blocks.append(table(Table(ref[ref.status != "not run"].round(4).fillna(""), index=False)
                                .write(tdir, f"reference_{name}")))
            checks = study_check(ref, df) if name == "prasad2021" else []
            if checks:
                blocks.append(Block("list", items=checks))
        sec.subsections.append(Section(name, blocks))
    if not sec.subsections:
        sec.blocks.append(text(NONE, note=True))
    return sec
