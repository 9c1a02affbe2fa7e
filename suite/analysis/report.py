"""`python -m suite.analysis.report --experiment NAME`: tables + plots + report.md + index.html from MLflow or a runs file.

    python -m suite.analysis.report --experiment paper [--tracking-uri URI] [--out reports/paper]
    python -m suite.analysis.report --experiment tuned --against full     # + each method at both recipes
    python -m suite.analysis.report --runs results/paper/runs.parquet --out results/paper   # from an export

A runs file (suite.analysis.results export) gives the same report as the store it was exported from.

The report is built once as sections of blocks (text, bullet list, Table, image); report.md and the
self-contained index.html are two renderings of that one structure, so they always agree.
"""
from __future__ import annotations

import argparse
import base64
import html
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import markupsafe
import pandas as pd

from . import payoff, plots, references, tables, trust
from .load import (
    DATASET_NAMES,
    NAT,
    AnalysisError,
    Experiment,
    baseline_label,
    default_uri,
    history,
    load,
    load_file,
    ordered_datasets,
    ordered_labels,
)
from .tables import Table

TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass
class Block:
    kind: str                     # text | list | table | image
    text: str = ""
    items: list[str] = field(default_factory=list)
    table: Table | None = None
    path: str = ""                # image, relative to the report folder
    caption: str = ""
    note: bool = False            # text: a side remark (smaller, grey in HTML)


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    subsections: list[Section] = field(default_factory=list)
    headline: bool = False
    anchor: str = ""


def text(s: str, note: bool = False) -> Block:
    return Block("text", text=s, note=note)


def images(paths: list[Path], root: Path, caption) -> list[Block]:
    return [Block("image", path=str(p.relative_to(root)), caption=caption(p)) for p in paths]


def study_check(ref: pd.DataFrame, df: pd.DataFrame) -> list[str]:
    """The study's claims against our like-protocol numbers, in words: each compared label's range, and
    every other label against the baseline label (tag baseline=true) at the highest compared level."""
    lines = []
    ok = ref[ref.status == "compared"].dropna(subset=["ours_mean"])
    for ds, g in ok.groupby("dataset"):
        for label, h in g.groupby("label", sort=False):
            h = h.set_index("sparsity")
            if len(h) > 1:
                lines.append(f"{ds}, {label}: the study reports {h.published.iloc[0]:.4f} unpruned -> {h.published.iloc[-1]:.4f} "
                             f"at {h.index[-1]:.0%}; measured here {h.ours_mean.iloc[0]:.4f} -> {h.ours_mean.iloc[-1]:.4f}.")
        base = baseline_label(df[df.dataset == ds])
        if base is None or base not in set(g.label):
            continue
        top = g[g.label == base].sparsity.max()
        at = g[g.sparsity == top].set_index("label")
        for label in [lab for lab in ordered_labels(df[df.dataset == ds]) if lab in at.index and lab != base]:
            verdict = "better" if at.ours_mean[label] > at.ours_mean[base] else "worse"
            study = "better" if at.published[label] > at.published[base] else "worse"
            lines.append(f"{ds}, {top:.0%}: {label} does {verdict} than {base} here ({at.ours_mean[label]:.4f} vs "
                         f"{at.ours_mean[base]:.4f}); the study found it {study} ({at.published[label]:.4f} vs "
                         f"{at.published[base]:.4f}).")
    return lines


def _uses_compression(df: pd.DataFrame) -> bool:
    """Experiments that prune to 95 % or more, or let a method choose its sparsity, are read as compression
    benchmarks: their headline is error vs compression ratio."""
    levels = [c.rsplit("_", 1)[1] for c in df.columns if c.startswith("test_acc_") and c.count("_") == 2]
    return any(lv == NAT or (lv.startswith("p") and lv[1:].isdigit() and int(lv[1:]) >= 95) for lv in levels)


def build_sections(exp: Experiment, out: Path, against: Experiment | None = None) -> tuple[list[str], list[Section]]:
    """Write tables/ and plots/ under out; return the intro paragraphs and the sections that show them."""
    tdir, pdir = out / "tables", out / "plots"
    pdir.mkdir(parents=True, exist_ok=True)
    df = exp.runs
    seeds = df.groupby(["dataset", "label"]).seed.nunique()
    intro = [f"Runs in the store by status: {', '.join(f'{k} {v}' for k, v in sorted(exp.status_counts.items()))}. "
             f"Only FINISHED runs are used, one per grid point ({len(df)} grid points"
             + (f"; {exp.duplicates_dropped} older duplicate run(s) of the same grid point ignored"
                if exp.duplicates_dropped else "")
             + f"). Seeds per cell: {seeds.min()}..{seeds.max()}"
             + (" (one seed: no spread is shown; cells say so)." if seeds.max() == 1 else ".")
             + f" Code: {', '.join(sorted(set(df.git_commit.dropna().str[:10])))};"
             + f" device: {', '.join(sorted(set(df.device.dropna())))}."]
    sweeps = sorted(s for s in df.sweep.unique() if s)
    if sweeps:
        intro.append(f"This experiment holds {len(sweeps)} concurrency sweeps ({', '.join(sweeps)}) of the same grid: the tables "
                     "pool their repeated runs of each grid point; the throughput of each level is under "
                     "'Throughput vs concurrent trials'.")
    clash = df.groupby(["dataset", "label", "seed"]).grid_key.nunique()
    if not sweeps and (clash > 1).any():
        intro.append("Note: some cells pool grid points that differ in more than the seed (e.g. epochs or width); "
                     "their spread is not a seed spread.")
    sections = [headline_section(exp, out)]
    if against is not None:
        sections.append(recipe_section(exp, against, tdir))
    found = exp.source.searches(set(df.method.dropna()))
    if not found.empty:
        sections.append(Section("Recipe searches", [
            text("The `suite.search` runs in this store for this experiment's methods: the budget each got, what it "
                 "trained (successive halving stopped the others early) and its wall time. Winners are chosen by the "
                 "final epoch's validation metric; `suite/grids/tuned.yaml` names each winner's MLflow run."),
            Block("table", table=tables.search_table(found).write(tdir, "searches"))]))
    for ds in ordered_datasets(df):
        sec = Section(DATASET_NAMES.get(ds, ds))
        for metric, (title, what, higher) in tables.LEVEL_TABLES.items():
            t = tables.level_table(df, metric, ds)
            if t.empty:
                continue
            best = "; best per column in bold" if higher is not None else ""
            about = text(f"{what[0].upper() + what[1:]}; mean ± std over seeds (n){best}.", note=True)
            sec.subsections.append(Section(title, [about, Block("table", table=t.write(tdir, f"{metric}_{ds}")),
                                                   *footnote(df, ds)]))
        sec.subsections.append(Section("Training cost", [
            Block("table", table=tables.cost_table(df, ds).write(tdir, f"cost_{ds}")),
            text("train = the training epochs only; compile = torch.compile warm-up before training; eval = pruning "
                 "sweep, evaluation and latency after training; total = all of it with setup. Columns no run logged "
                 "are left out.", note=True)]))
        inference = tables.cost_table(df, ds, tables.INFERENCE_COST)
        if not inference.empty:
            sec.subsections.append(Section("Inference cost", [Block("table", table=inference.write(tdir, f"inference_{ds}"))]))
        sections.append(sec)
    if scaled := width_blocks(df, tdir):
        sections.append(Section("Cost vs width", scaled))
    if not (levels := tables.concurrency_table(df)).empty:
        sections.append(Section("Throughput vs concurrent trials", [
            Block("table", table=levels.write(tdir, "concurrency")),
            text("Each level of the `--concurrency` sweep trained the whole grid with that many trials at once. "
                 "Speed-up = trials per hour / the lowest level's; efficiency = speed-up / the added concurrency "
                 "(1 = linear scaling); median trial = the median run's own total_wall_s, which grows when trials "
                 "share cores, memory bandwidth and caches; slots busy = the runs' total_wall_s summed / (wall x "
                 "concurrent trials), the rest being worker start-up, the driver, and slots idle while the last "
                 "trials finish.", note=True)]))
    sections.append(compression_section(exp, out))
    sections.append(payoff_section(exp, out))
    sections.append(trust_section(exp, out))
    sections.append(reference_section(df, tdir))
    sections.append(plot_section(exp, out))
    return intro, sections


def width_blocks(df: pd.DataFrame, tdir: Path) -> list[Block]:
    """The scaling grid's tables: each cost metric per method and width, with its ratio to SGD's."""
    blocks = []
    for metric, (what, _digits) in tables.WIDTH_METRICS.items():
        t = tables.width_table(df, metric)
        if not t.empty:
            blocks += [text(f"**{what[0].upper() + what[1:]}** by the first hidden layer's width, mean over the runs "
                            "(seeds, datasets); in brackets the ratio to the baseline's at the same width.", note=True),
                       Block("table", table=t.write(tdir, f"width_{metric}"))]
    return blocks


def footnote(df: pd.DataFrame, ds: str) -> list[Block]:
    """The dagger's footnote under a level table, when a run of the dataset collapsed."""
    note = tables.collapsed_note(df, ds)
    return [text(note, note=True)] if note else []


def payoff_section(exp: Experiment, out: Path) -> Section:
    """Speed-up, FLOPs, widths and sizes vs compression, the break-even levels, and a headline from the numbers."""
    df, sec = exp.runs, Section("What compression buys")
    if not payoff.present(df):
        sec.blocks.append(text("Omitted: no run logged the compaction metrics (compact_width_*, flops_*, "
                               "latency_compact_*); runs of this version of the suite log them at every level."))
        return sec
    sec.blocks += [Block("list", items=payoff.headline(df)),
                   text("Speed-up = dense latency / latency of the same pruned network run as the compacted dense MLP "
                        "(dead units removed, suite/compact.py) or with the fastest CSR kernel, measured in the same run "
                        "at that level; > 1 is faster. FLOPs x = dense FLOPs / FLOPs of the nonzero weights or of the "
                        "compacted net: the theoretical speed-up beside the compression ratio (Blalock et al. 2020). "
                        "Compacted widths: live input pixels, then each hidden layer. Total epochs: training plus every "
                        "retraining epoch of the protocol.", note=True)]
    figs = {p.stem.removeprefix("speedup_vs_compression_"): p for p in plots.speedup_vs_compression(exp, out / "plots")}
    for ds in ordered_datasets(df):
        t = payoff.speedup_table(df, ds)
        if t.empty:
            continue
        name = DATASET_NAMES.get(ds, ds)
        blocks = [Block("table", table=t.write(out / "tables", f"speedup_{ds}")), *footnote(df, ds),
                  text("Break-even: the lowest pruning level from which on the forward beats dense (mean speed-up > 1 "
                       "there and at every higher level).", note=True),
                  Block("table", table=payoff.break_even(df, ds).write(out / "tables", f"break_even_{ds}"))]
        if ds in figs:
            blocks += images([figs[ds]], out, lambda p: f"{name}: speed-up over dense vs compression, batch 1 and 1000 "
                                                        "(solid: compacted, dashed: CSR)")
        sec.subsections.append(Section(name, blocks))
    return sec


def trust_section(exp: Experiment, out: Path) -> Section:
    """OOD detection and accuracy / calibration under rotation per level, and a headline from the numbers."""
    df, sec = exp.runs, Section("Uncertainty under pruning")
    if not trust.present(df):
        sec.blocks.append(text("Omitted: no run logged the OOD or rotation metrics (ood_auroc_*, shift_*); runs of "
                               "this version of the suite log them."))
        return sec
    sec.blocks.append(Block("list", items=trust.headline(df)))
    figs = {p.stem.rpartition("_")[2] + kind: p for kind, fn in (("", plots.uncertainty), ("/rot", plots.rotation))
            for p in fn(exp, out / "plots")}
    for ds in ordered_datasets(df):
        name, blocks = DATASET_NAMES.get(ds, ds), []
        for metric, (title, what, _) in tables.TRUST_TABLES.items():
            t = tables.level_table(df, metric, ds)
            if not t.empty:
                blocks += [text(f"**{title}**: {what}; mean ± std over seeds (n); best per column in bold.", note=True),
                           Block("table", table=t.write(out / "tables", f"{metric}_{ds}"))]
        if not blocks:
            continue
        blocks += footnote(df, ds)
        blocks += images([p for k, p in figs.items() if k in (ds, ds + "/rot")], out,
                         lambda p: f"{name}: OOD AUROC and rotation vs compression" if p.stem.startswith("uncertainty")
                         else f"{name}: accuracy per rotation angle, unpruned and pruned")
        sec.subsections.append(Section(name, blocks))
    return sec


def error_bars(df: pd.DataFrame) -> dict[str, float]:
    """The compression table's error bar per dataset (drawn as a line in the compression plots)."""
    return {ds: tables.error_target(df, ds)[0] for ds in ordered_datasets(df)}


def headline_section(exp: Experiment, out: Path) -> Section:
    df = exp.runs
    base = baseline_label(df)
    by_compression = _uses_compression(df)
    t, levels = tables.headline_table(df, with_compression=by_compression)
    fig = plots.headline(exp, out / "plots", by_compression, error_bars(df))
    who = (f"every method against the baseline **{base}** (runs tagged `baseline=true`)" if base else
           "every method (no run is tagged `baseline=true`, so no difference to a baseline is shown)")
    squeeze = (" and the highest compression at which its error stays within the bar of the Compression section"
               if by_compression else "")
    blocks = [text(f"The comparison this experiment was run for: {who}, unpruned and at the highest pruning level "
                   f"every method was evaluated at ({levels}){squeeze}; mean ± std over seeds, best per dataset in bold."),
              Block("table", table=t.write(out / "tables", "headline")),
              Block("image", path=str(fig.relative_to(out)),
                    caption="Test error vs compression ratio (published results of the same architecture as black diamonds)"
                    if by_compression else "Test accuracy vs fraction of weights pruned (band: ±1 std over seeds)")]
    return Section("Headline", blocks, headline=True)


def recipe_section(exp: Experiment, against: Experiment, tdir: Path) -> Section:
    """Each method at this experiment's recipe and at another's (e.g. searched vs the study's), same test split."""
    sec = Section(f"Recipes: {exp.name} vs {against.name}")
    sec.blocks.append(text(
        f"Each method at the recipe of experiment `{exp.name}` and at that of `{against.name}` (FINISHED runs of "
        f"`{against.name}`: {len(against.runs)} grid points). Test error in % after pruning, final epoch, mean ± std "
        "over seeds; the lower of a method's rows in bold. A method's rows are matched by method, protocol and "
        "whether dropout is on; each row keeps its own label."))
    runs = {exp.name: exp.runs, against.name: against.runs}
    for ds in ordered_datasets(pd.concat([exp.runs[["dataset"]], against.runs[["dataset"]]])):
        errors, fields = tables.recipe_comparison(runs, ds)
        if errors.empty:
            continue
        blocks = [Block("table", table=errors.write(tdir, f"recipes_{ds}"))]
        if not fields.empty:
            blocks += [text("The recipe fields that differ (first run of each method):", note=True),
                       Block("table", table=fields.write(tdir, f"recipe_fields_{ds}"))]
        sec.subsections.append(Section(DATASET_NAMES.get(ds, ds), blocks))
    return sec


def compression_section(exp: Experiment, out: Path) -> Section:
    df, sec = exp.runs, Section("Compression")
    figs = {p.stem.removeprefix("error_vs_compression_"): p
            for p in plots.error_vs_compression(exp, out / "plots", error_bars(df))}
    sec.blocks.append(text("Compression ratio = dense weights / nonzero weights of the network whose accuracy is "
                           "shown (the point estimate), weights only (biases not counted), counted by the compaction "
                           "metrics where logged, else from the measured per-layer sparsities. Final-epoch numbers."))
    for ds in ordered_datasets(df):
        t, bar = tables.compression_table(df, ds)
        if t.empty:
            continue
        name = DATASET_NAMES.get(ds, ds)
        blocks = [text(f"Highest compression at which {bar} (any level, the natural one included)."),
                  Block("table", table=t.write(out / "tables", f"compression_{ds}"))]
        pub = references.published_markers(df[df.dataset == ds])
        if not pub.empty:
            cells = pub.assign(test_error=(100 * pub.test_error).map("{:.2f} %".format),
                               compression=pub.compression.map("{:g}x".format), removed=pub.removed.map("{:.1%}".format))
            blocks += [text("Published on the same architecture (sources and how each ratio is counted: "
                            "`suite/analysis/reference/lenet300100.csv`):"),
                       Block("table", table=Table(cells[["label", "test_error", "compression", "removed", "paper"]]
                                                  .set_index("label").fillna("")))]
        else:
            blocks.append(text("No published results for this dataset and architecture (suite/analysis/reference/lenet300100.csv "
                               "covers 784-300-100-10 on MNIST), so no markers are drawn.", note=True))
        blocks += images([figs[ds]], out, lambda p: f"{name}: test error vs compression ratio (log scale), "
                                                    "band ±1 std over seeds; stars: natural sparsity")
        sec.subsections.append(Section(name, blocks))
    return sec


def reference_section(df: pd.DataFrame, tdir: Path) -> Section:
    sec = Section("Against the published numbers")
    sec.blocks.append(text("A published cell is compared only with runs whose protocol (architecture, epochs, optimizer, "
                           "learning rate, data split, pruning scope and biases, as the reference file states them) "
                           "matches; otherwise the fields that differ are named and no difference is shown."))
    for name in references.STUDY_TABLES:
        ref, differ = references.compare(df, references.load_reference(name))
        if (ref.status == "not run").all():
            continue
        blocks = [text(f"Source: {references.source(name)}", note=True)]
        if not differ.empty:
            blocks += [text(f"Not compared: our runs of {', '.join(differ.columns[1:])} differ from the published "
                            "protocol in these fields (our values; `-` = matches, or not stated for that method):"),
                       Block("table", table=Table(differ).write(tdir, f"protocol_{name}"))]
        if (ref.status == "compared").any():
            t = Table(ref[ref.status != "not run"].round(4).fillna(""), index=False).write(tdir, f"reference_{name}")
            blocks.append(Block("table", table=t))
            checks = study_check(ref, df) if name == "prasad2021" else []
            if checks:
                blocks.append(Block("list", items=checks))
        sec.subsections.append(Section(name, blocks))
    if not sec.subsections:
        sec.blocks.append(text("No run shares a dataset and label with a published table.", note=True))
    return sec


def plot_section(exp: Experiment, out: Path) -> Section:
    pdir = out / "plots"
    hist = history(exp)
    sec = Section("Plots")
    groups = [("Accuracy after pruning", plots.accuracy_vs_sparsity(exp, pdir)),
              ("Calibration after pruning", plots.calibration(exp, pdir)),
              ("Training curves", plots.training_curves(exp, pdir, hist)),
              ("Weights", [*plots.weight_distributions(exp, pdir), *plots.snr_distribution(exp, pdir),
                           *plots.prior(exp, pdir, hist)]),
              ("Cost, latency and scaling", [*plots.cost(exp, pdir), *plots.latency_plot(exp, pdir), *plots.scaling(exp, pdir)])]
    for title, paths in groups:
        if paths:
            sec.subsections.append(Section(title, images(paths, out, _caption)))
    return sec


def _caption(p: Path) -> str:
    """plots/accuracy_vs_sparsity_fmnist.png -> "accuracy vs sparsity, Fashion-MNIST"."""
    stem, _, ds = p.stem.rpartition("_")
    return f"{stem.replace('_', ' ')}, {DATASET_NAMES[ds]}" if ds in DATASET_NAMES else p.stem.replace("_", " ")


def _anchors(sections: list[Section]) -> None:
    seen: set[str] = set()
    for s in [x for sec in sections for x in (sec, *sec.subsections)]:
        base = re.sub(r"[^a-z0-9]+", "-", s.title.lower()).strip("-") or "section"
        s.anchor, i = base, 1
        while s.anchor in seen:
            i += 1
            s.anchor = f"{base}-{i}"
        seen.add(s.anchor)


def to_markdown(title: str, intro: list[str], sections: list[Section]) -> str:
    def blocks(bs: list[Block]) -> list[str]:
        md = []
        for b in bs:
            md += {"text": lambda: [b.text], "list": lambda: [f"- {i}" for i in b.items],
                   "table": lambda: [b.table.markdown()], "image": lambda: [f"![{b.caption}]({b.path})"]}[b.kind]() + [""]
        return md
    md = [f"# {title}", "", *[p + "\n" for p in intro]]
    for s in sections:
        md += [f"## {s.title}", "", *blocks(s.blocks)]
        for t in s.subsections:
            md += [f"### {t.title}", "", *blocks(t.blocks)]
    return "\n".join(md)


def _inline(s: str) -> str:
    """The two markdown spans report text uses (`code`, **bold**) as HTML, everything else escaped."""
    s = html.escape(s)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)


def to_html(title: str, intro: list[str], sections: list[Section], root: Path) -> str:
    """A self-contained page (images inlined as base64, no network): same sections as report.md."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    env.filters["inline"] = lambda s: markupsafe.Markup(_inline(s))
    env.filters["data_uri"] = lambda p: "data:image/png;base64," + base64.b64encode((root / p).read_bytes()).decode()
    # a single-panel figure takes half the page, so two sit side by side; a multi-panel one the full width
    env.filters["png_width"] = lambda p: int.from_bytes((root / p).read_bytes()[16:20], "big")  # PNG IHDR width
    return env.get_template("report.html.j2").render(title=title, intro=intro, sections=sections)


def build(exp: Experiment, out: Path, against: Experiment | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    intro, sections = build_sections(exp, out, against)
    sections = [s for s in sections if s.blocks or s.subsections]
    for s in sections:
        s.subsections = [t for t in s.subsections if t.blocks]
    _anchors(sections)
    title = f"Report: experiment {exp.name}"
    (out / "report.md").write_text(to_markdown(f"Report: experiment `{exp.name}`", intro, sections))
    (out / "index.html").write_text(to_html(title, intro, sections, out))
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
    try:
        def get(name: str) -> Experiment:
            return load_file(Path(name)) if args.runs else load(name, args.tracking_uri or default_uri())
        exp = get(args.runs or args.experiment)
        against = get(args.against) if args.against else None
        for e in (exp, against):
            if e is not None and not any(c.startswith("test_acc_") for c in e.runs.columns):
                raise AnalysisError(f"experiment {e.name!r} has no test metrics: a recipe search (suite.search) logs "
                                    "validation metrics only. Report the grid its winners ran in (e.g. --experiment "
                                    "tuned); that report lists the searches of its methods.")
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = build(exp, Path(args.out or Path("reports") / exp.name), against)
    print(f"wrote {path} (and index.html, tables/, plots/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
