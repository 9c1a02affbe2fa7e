"""`python -m suite.analysis.report --experiment NAME`: tables + plots + report.md + index.html from MLflow or a runs file.

    python -m suite.analysis.report --experiment paper [--tracking-uri URI] [--out reports/paper]
    python -m suite.analysis.report --experiment tuned --against full     # + each method at both recipes
    python -m suite.analysis.report --runs results/paper/runs.parquet --out results/paper   # from an export

A runs file (suite.analysis.results export) gives the same report as the store it was exported from,
and the same data gives the same files, byte for byte, index.html included. Before any work, a store
is checked (the server answers, a sqlite file is sound) and so is the output folder (it takes files);
each file is written whole or not at all.

Each section of the report is one module holding its tables, figures and prose (headline, accuracy,
cost, scaling, compression, footprint (bytes and latency), payoff, trust, references, recipes, training); this
one puts them in order, with the intro, and writes report.md and index.html, two renderings of one structure (document.py).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..preflight import PreflightError, check_writable_folder, open_store, tracking_uri
from . import accuracy, compression, cost, footprint, headline, payoff, recipes, references, scaling, training, trust
from .document import Section, finish, images, to_html, to_markdown
from .files import replacing
from .load import DATASET_NAMES, AnalysisError, Experiment, history, load, load_file, ordered_datasets

RUNS = ("Runs in the store by status: {counts}. Only FINISHED runs are used, one per grid point ({n} grid points{dropped}). "
        "Seeds per cell: {low}..{high}{one_seed} Code: {commits}; device: {devices}.")
DROPPED = "; {n} older duplicate run(s) of the same grid point ignored"
SWEEPS = ("This experiment holds {n} concurrency sweeps ({sweeps}) of the same grid: the tables pool their repeated runs "
          "of each grid point; the throughput of each level is under 'Throughput vs concurrent trials'.")
POOLED = ("Note: some cells pool grid points that differ in more than the seed (e.g. epochs or width); their spread is "
          "not a seed spread.")
NO_TEST_METRICS = ("experiment {name!r} has no test metrics: a recipe search (suite.search) logs validation metrics only. "
                   "Report the grid its winners ran in (e.g. --experiment tuned); that report lists the searches of its methods.")


HEX = re.compile(r"[0-9a-f]{40}")  # a commit hash, shortened; anything else (an unknown commit) as it is


def intro(exp: Experiment) -> list[str]:
    """What the report is built from: runs by status, seeds per cell, code and device; sweeps and pooled cells."""
    df = exp.runs
    seeds = df.groupby(["dataset", "label"]).seed.nunique()
    out = [RUNS.format(counts=", ".join(f"{k} {v}" for k, v in sorted(exp.status_counts.items())), n=len(df),
                       dropped=DROPPED.format(n=exp.duplicates_dropped) if exp.duplicates_dropped else "",
                       low=seeds.min(), high=seeds.max(),
                       one_seed=" (one seed: no spread is shown; cells say so)." if seeds.max() == 1 else ".",
                       commits=", ".join(sorted({c[:10] if HEX.fullmatch(c) else c for c in df.git_commit.dropna()})),
                       devices=", ".join(sorted(set(df.device.dropna()))))]
    sweeps = sorted(s for s in df.sweep.unique() if s)
    if sweeps:
        out.append(SWEEPS.format(n=len(sweeps), sweeps=", ".join(sweeps)))
    clash = df.groupby(["dataset", "label", "seed"]).grid_key.nunique()
    if not sweeps and (clash > 1).any():
        out.append(POOLED)
    return out


def plots_section(exp: Experiment, out: Path) -> Section:
    """The figures no section shows next to its tables, grouped."""
    pdir = out / "plots"
    hist = history(exp)
    groups = [*accuracy.plot_groups(exp, pdir), *training.plot_groups(exp, pdir, hist),
              ("Cost, latency and scaling", [*cost.figures(exp, pdir), *scaling.figures(exp, pdir)])]
    return Section("Plots", subsections=[Section(title, images(paths, out, _caption)) for title, paths in groups if paths])


def _caption(p: Path) -> str:
    """plots/accuracy_vs_sparsity_fmnist.png -> "accuracy vs sparsity, Fashion-MNIST"."""
    stem, _, ds = p.stem.rpartition("_")
    return f"{stem.replace('_', ' ')}, {DATASET_NAMES[ds]}" if ds in DATASET_NAMES else p.stem.replace("_", " ")


def sections(exp: Experiment, out: Path, against: Experiment | None = None) -> list[Section]:
    """Every section in report order; each writes its tables/ and plots/ under out."""
    tdir = out / "tables"
    (out / "plots").mkdir(parents=True, exist_ok=True)
    df = exp.runs
    per_dataset = [Section(DATASET_NAMES.get(ds, ds), subsections=[*accuracy.subsections(df, ds, tdir),
                                                                   *cost.subsections(df, ds, tdir)])
                   for ds in ordered_datasets(df)]
    return [headline.section(exp, out),
            *([recipes.against_section(exp, against, tdir)] if against is not None else []),
            recipes.searches_section(exp, tdir),
            *per_dataset,
            *scaling.sections(df, tdir),
            compression.section(exp, out),
            footprint.section(exp, out),
            payoff.section(exp, out),
            trust.section(exp, out),
            references.section(df, tdir),
            plots_section(exp, out)]


def build(exp: Experiment, out: Path, against: Experiment | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    found = finish(sections(exp, out, against))
    paragraphs = intro(exp)
    with replacing(out / "report.md") as tmp:
        tmp.write_text(to_markdown(f"Report: experiment `{exp.name}`", paragraphs, found))
    with replacing(out / "index.html") as tmp:
        tmp.write_text(to_html(f"Report: experiment {exp.name}", paragraphs, found, out))
    return out / "report.md"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m suite.analysis.report", description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--experiment", help="MLflow experiment name (the sweep's --experiment)")
    src.add_argument("--runs", metavar="FILE", help="a runs file (python -m suite.analysis.results export) instead of a store")
    ap.add_argument("--tracking-uri", default=None,
                    help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///<cwd>/mlflow.db)")
    ap.add_argument("--out", default=None, help="report folder (default: reports/<experiment>/)")
    ap.add_argument("--against", default=None, metavar="EXPERIMENT|FILE",
                    help="another experiment in the same store (e.g. full, the study's recipe), or with --runs another "
                         "runs file: adds a table of each method at both experiments' recipes")
    args = ap.parse_args(argv)
    uri = tracking_uri(args.tracking_uri)
    try:
        if args.experiment:   # within seconds, before MLflow would retry an absent server for minutes; a reader
            open_store(uri)   # never creates a store

        def get(name: str) -> Experiment:
            return load_file(Path(name)) if args.runs else load(name, uri)
        exp = get(args.runs or args.experiment)
        against = get(args.against) if args.against else None
        for e in (exp, against):
            if e is not None and not any(c.startswith("test_acc_") for c in e.runs.columns):
                raise AnalysisError(NO_TEST_METRICS.format(name=e.name))
        out = Path(args.out or Path("reports") / exp.name)
        check_writable_folder(out, "--out")
    except (AnalysisError, PreflightError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = build(exp, out, against)
    print(f"wrote {path} (and index.html, tables/, plots/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
