"""`python -m analysis.report --experiment NAME`: tables + plots + report.md + index.html from MLflow.

    python -m analysis.report --experiment paper [--tracking-uri URI] [--out reports/paper]
"""
from __future__ import annotations

import argparse
import base64
import html
import os
import sys
from pathlib import Path

import pandas as pd

from . import plots, tables
from .load import AnalysisError, Experiment, load

TITLES = {"test_acc": "Test accuracy (posterior mean for BBB)", "test_acc_mc": "BBB Monte Carlo ensemble accuracy",
          "test_nll": "Test NLL (nats per example)", "test_ece": "Test ECE (15 bins)",
          "sparsity": "Measured sparsity (zeros in the forward pass)"}


def default_uri() -> str:
    """The same default as suite.run's (analysis reads MLflow only and imports nothing from suite/)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def study_check(ref: pd.DataFrame) -> list[str]:
    """What our numbers say about the study's claims, in words (only claims we have data for)."""
    lines = []
    for ds, g in ref.groupby("dataset"):
        bbb = g[g.label == "BBB"].dropna(subset=["ours_mean"])
        if bbb.empty:
            continue
        pub, ours = bbb.set_index("sparsity")["published"], bbb.set_index("sparsity")["ours_mean"]
        top = max(ours.index)
        if 0.0 not in ours.index or top == 0.0:
            continue  # no unpruned or no pruned BBB level to compare
        lines.append(
            f"- {ds}: the study reports BBB accuracy {pub.min():.4f}..{pub.max():.4f} at every level up to "
            f"{max(pub.index):.0%} (flat: its pruning never reached the forward pass). Measured here with zeros the forward "
            f"pass really uses: {ours.loc[0.0]:.4f} unpruned -> {ours.loc[top]:.4f} at {top:.0%}.")
        sgd = g[g.label == "SGD"].dropna(subset=["ours_mean"]).set_index("sparsity")["ours_mean"]
        if top in sgd.index:
            verdict = "better" if ours.loc[top] > sgd.loc[top] else "worse"
            lines.append(f"  At {top:.0%}, BBB (SNR pruning) does {verdict} than SGD (L1 pruning): "
                         f"{ours.loc[top]:.4f} vs {sgd.loc[top]:.4f}.")
    return lines


def build(exp: Experiment, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    tdir, pdir = out / "tables", out / "plots"
    df = exp.runs
    seeds = df.groupby(["dataset", "label"]).seed.nunique()
    md = [f"# Report: experiment `{exp.name}`", "",
          f"Runs in the store by status: {', '.join(f'{k} {v}' for k, v in sorted(exp.status_counts.items()))}. "
          f"Only FINISHED runs are used, one per grid point ({len(df)} grid points"
          + (f"; {exp.duplicates_dropped} older duplicate run(s) of the same grid point ignored" if exp.duplicates_dropped else "")
          + f"). Seeds per cell: {seeds.min()}..{seeds.max()}"
          + (" (one seed: no spread is shown; cells say so)." if seeds.max() == 1 else ".")
          + f" Code: {', '.join(sorted(set(df.git_commit.dropna().str[:10])))}; device: {', '.join(sorted(set(df.device.dropna())))}.", ""]
    sweeps = sorted(s for s in df.sweep.unique() if s)
    if sweeps:
        md += [f"This experiment holds {len(sweeps)} concurrency sweeps ({', '.join(sweeps)}) of the same grid: the tables "
               "pool their repeated runs of each grid point; see the throughput plot.", ""]
    clash = df.groupby(["dataset", "label", "seed"]).grid_key.nunique()
    if not sweeps and (clash > 1).any():
        md += ["Note: some cells pool grid points that differ in more than the seed (e.g. epochs or width); "
               "their spread is not a seed spread.", ""]
    for ds in sorted(df.dataset.unique()):
        md.append(f"## {plots.DATASET_NAMES.get(ds, ds)}\n")
        for metric, higher in tables.LEVEL_TABLES.items():
            cells, means = tables.level_table(df, metric, ds)
            if cells.empty:
                continue
            note = " (best per column in bold)" if higher is not None else ""
            md += [f"### {TITLES[metric]}{note}\n", tables.write(cells, tdir, f"{metric}_{ds}", means, higher), ""]
        md += ["### Cost\n", tables.write(tables.cost_table(df, ds), tdir, f"cost_{ds}"), ""]
    md.append("## Against the published numbers\n")
    for name in ("prasad2021", "blundell2015"):
        ref = tables.reference_table(df, tables.load_reference(name))
        if ref.n_seeds.isna().all():
            continue
        md += [f"Source: {tables.reference_source(name)}\n", tables.write(ref.round(4), tdir, f"reference_{name}", index=False), ""]
        if name == "prasad2021":
            md += study_check(ref) + [""]
    md.append("## Plots\n")
    for p in plots.all_plots(exp, pdir):
        md += [f"![{p.stem}](plots/{p.name})", ""]
    text = "\n".join(md)
    (out / "report.md").write_text(text)
    (out / "index.html").write_text(to_html(text, out))
    return out / "report.md"


def to_html(md_text: str, root: Path) -> str:
    """A self-contained page: the markdown tables as preformatted text, images inlined as base64."""
    body = []
    for line in md_text.splitlines():
        if line.startswith("!["):
            src = line[line.index("(") + 1:-1]
            data = base64.b64encode((root / src).read_bytes()).decode()
            body.append(f'<p><img alt="{html.escape(src)}" src="data:image/png;base64,{data}" style="max-width:100%"></p>')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.startswith("|"):
            body.append(f"<pre>{html.escape(line)}</pre>")
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    return ("<!doctype html><meta charset='utf-8'><title>bayes-prune-bench report</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}pre{margin:0}</style>" + "\n".join(body))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", required=True, help="MLflow experiment name (the sweep's --experiment)")
    ap.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///<cwd>/mlflow.db)")
    ap.add_argument("--out", default=None, help="report folder (default: reports/<experiment>/)")
    args = ap.parse_args(argv)
    try:
        exp = load(args.experiment, args.tracking_uri or default_uri())
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = build(exp, Path(args.out or Path("reports") / args.experiment))
    print(f"wrote {path} (and index.html, tables/, plots/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
