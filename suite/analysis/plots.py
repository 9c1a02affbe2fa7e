"""The report's figures (seaborn). Every plot: title, labelled axes with units, legend, and the
same colour for a label in every figure (its `color` tag, else a qualitative palette). A panel with
nothing to show says why. Each function returns the paths it wrote."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from . import compression, payoff, references, trust  # noqa: E402
from .load import DATASET_NAMES, NAT, Experiment, by_level, level_key, npz_artifact, ordered_datasets, ordered_labels  # noqa: E402
from .tables import concurrency_frame, epochs_text, level_name, widths  # noqa: E402


def palette(df: pd.DataFrame) -> dict[str, str]:
    """Each label's `color` tag; labels without one get the unused colours of a qualitative map, in label order."""
    tagged = df.dropna(subset=["color"]).groupby("label")["color"].first().to_dict() if "color" in df else {}
    free = [c for c in sns.color_palette("tab10").as_hex() if c not in tagged.values()] or sns.color_palette("tab10").as_hex()
    rest = [lab for lab in ordered_labels(df) if lab not in tagged]
    return {**tagged, **{lab: free[i % len(free)] for i, lab in enumerate(rest)}}


def budget_label(df: pd.DataFrame, ds: str, label: str) -> str:
    """"SGD + fine-tune (62 ep)": a legend entry with the arm's total training epochs (training + retraining),
    so curves are read at equal budgets, and how many of its runs collapsed (tag collapsed=true)."""
    g = df[(df.dataset == ds) & (df.label == label)]
    e = epochs_text(g["total_epochs"]) if "total_epochs" in g else "-"
    dead = int(g.collapsed.sum()) if "collapsed" in g else 0
    notes = [f"{e} ep"] * (e != "-") + [f"† {dead} of {len(g)} runs collapsed"] * (dead > 0)
    return f"{label} ({', '.join(notes)})" if notes else label


def empty_panel(ax, why: str) -> None:
    """Say on the axes why they hold no data, instead of leaving an empty frame."""
    ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True, transform=ax.transAxes, fontsize=10, color="dimgrey")
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _datasets(df: pd.DataFrame) -> list[str]:
    return ordered_datasets(df)


def _order(df: pd.DataFrame, present) -> list[str]:
    return [lab for lab in ordered_labels(df) if lab in set(present)]


def _draw_vs_sparsity(ax, df: pd.DataFrame, ds: str, metric: str, ylabel: str, what: str) -> None:
    """One line per label of a per-level metric vs the pruned fraction; band = ±1 std over seeds. The
    natural level is a star at its measured sparsity (error bars: ±1 std both ways)."""
    pal = palette(df)
    long = by_level(df[df.dataset == ds], metric)
    fixed, nat = long[long.level != NAT], long[long.level == NAT]
    sns.lineplot(fixed, x="sparsity", y=metric, hue="label", hue_order=_order(df, fixed.label), palette=pal,
                 errorbar="sd", marker="o", ax=ax)
    for label, g in nat.groupby("label"):
        ax.errorbar(g.sparsity.mean(), g[metric].mean(), xerr=g.sparsity.std() if len(g) > 1 else None,
                    yerr=g[metric].std() if len(g) > 1 else None, marker="*", ms=13, color=pal[label],
                    ls="none", label=f"{label} (natural sparsity)")
    if metric == "test_acc":
        ax.axhline(0.1, color="grey", ls=":", lw=1, label="chance")
        ax.set_ylim(0, 1.02)
    ax.set(title=f"{DATASET_NAMES.get(ds, ds)}: {what}", xlabel="fraction of weights pruned", ylabel=ylabel)
    ax.legend(title="method (band: ±1 std over seeds)", fontsize=8)


def _vs_sparsity(exp: Experiment, out: Path, metric: str, ylabel: str, what: str, stem: str) -> list[Path]:
    paths = []
    for ds in _datasets(exp.runs):
        if by_level(exp.runs[exp.runs.dataset == ds], metric).empty:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        _draw_vs_sparsity(ax, exp.runs, ds, metric, ylabel, what)
        paths.append(_save(fig, out / f"{stem}_{ds}.png"))
    return paths


def accuracy_vs_sparsity(exp: Experiment, out: Path) -> list[Path]:
    return _vs_sparsity(exp, out, "test_acc", "test accuracy", "test accuracy after pruning", "accuracy_vs_sparsity")


def calibration(exp: Experiment, out: Path) -> list[Path]:
    return _vs_sparsity(exp, out, "test_ece", "expected calibration error (15 bins)", "calibration after pruning",
                        "ece_vs_sparsity")


def _draw_compression(ax, df: pd.DataFrame, ds: str, bar: float | None = None) -> None:
    """Test error vs compression ratio (log x), one line per label with ±1 std bands over seeds (fixed
    levels; the natural level is a star), the published results whose dataset and architecture match
    ours as labelled black diamonds, and the compression table's error bar as a dashed line. The y axis
    stops a few points above the best dense error: the region the field compares in."""
    pal = palette(df)
    s = compression.summary(df[df.dataset == ds])
    ax.set_title(f"{DATASET_NAMES.get(ds, ds)}: test error vs compression (final epoch)")
    if s.empty:
        empty_panel(ax, "No level with a finite compression ratio\n(every run pruned all weights, or logged no test_acc_pNN)")
        return
    for label in _order(df, s.label):
        g = s[(s.label == label) & (s.level != NAT)].sort_values("compression")
        sd = g.error_std.fillna(0)
        ax.plot(g.compression, 100 * g.error, marker="o", color=pal[label], label=budget_label(df, ds, label))
        ax.fill_between(g.compression, 100 * (g.error - sd), 100 * (g.error + sd), color=pal[label], alpha=0.2, lw=0)
        for _, n in s[(s.label == label) & (s.level == NAT)].iterrows():
            ax.errorbar(n.compression, 100 * n.error, yerr=100 * n.error_std if n.n > 1 else None, marker="*", ms=14,
                        color=pal[label], ls="none", label=f"{label} (natural sparsity)")
    pub = references.published_markers(df[df.dataset == ds]).sort_values("compression")
    for i, (_, r) in enumerate(pub.iterrows()):
        ax.plot(r.compression, 100 * r.test_error, marker="D", color="black", ls="none", ms=6)
        # neighbours sit within a few tenths of a point: stagger the labels so they stay legible
        ax.annotate(r.label, (r.compression, 100 * r.test_error), textcoords="offset points", fontsize=8,
                    xytext=(4, [-14, 8, 20][i % 3]), arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "grey"})
    if not pub.empty:
        ax.plot([], [], marker="D", color="black", ls="none", label="published (same architecture)")
    if bar is not None:
        ax.axhline(100 * bar, color="grey", ls="--", lw=1, label=f"error bar of the compression table ({bar:.2%})")
    dense = s[s.level == "p00"].error.min() if (s.level == "p00").any() else s.error.min()
    # every method's best level stays on the axes, however far behind it is
    worst_best = s.groupby("label").error.min().max()
    top = 100 * max(dense * 1.5, dense + 0.03, (bar or 0) * 1.15, worst_best + 0.15 * (worst_best - dense))
    lo = 100 * min([s.error.min(), *pub.test_error, *([bar] if bar is not None else [])])
    ax.set_ylim(max(0.0, lo - 0.1 * (top - lo)), top)
    ax.set_xscale("log")
    ax.set(xlabel="compression = dense / nonzero weights (log; biases not counted)",
           ylabel=f"test error (%, axis cut at {top:.1f})")
    ax.legend(title="method, total training epochs\n(band: ±1 std over seeds)", fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0))


def error_vs_compression(exp: Experiment, out: Path, bars: dict[str, float]) -> list[Path]:
    """One figure per dataset; `bars` = the compression table's error bar per dataset."""
    paths = []
    for ds in _datasets(exp.runs):
        fig, ax = plt.subplots(figsize=(10, 5))  # the legend sits right of the axes
        _draw_compression(ax, exp.runs, ds, bars.get(ds))
        paths.append(_save(fig, out / f"error_vs_compression_{ds}.png"))
    return paths


def headline(exp: Experiment, out: Path, by_compression: bool, bars: dict[str, float]) -> Path:
    """The experiment's comparison in one figure, one panel per dataset: test error vs compression, or
    test accuracy vs the pruned fraction."""
    sets = _datasets(exp.runs)
    fig, axes = plt.subplots(1, len(sets), figsize=(max(10.0, 8.5 * len(sets)), 5.0), squeeze=False)
    for ax, ds in zip(axes[0], sets):
        if by_compression:
            _draw_compression(ax, exp.runs, ds, bars.get(ds))
        else:
            _draw_vs_sparsity(ax, exp.runs, ds, "test_acc", "test accuracy", "test accuracy after pruning")
    return _save(fig, out / "headline.png")


def training_curves(exp: Experiment, out: Path, hist: pd.DataFrame) -> list[Path]:
    paths = []
    pal = palette(exp.runs)
    for ds in _datasets(exp.runs):
        h = hist[hist.dataset == ds]
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for ax, metric, ylabel in ((axes[0], "train_nll", "training NLL per example (nats)"),
                                   (axes[1], "val_acc", "validation accuracy")):
            d = h[h.metric == metric]
            ax.set_title(f"{DATASET_NAMES.get(ds, ds)}: {ylabel} per epoch")
            if d.empty:
                empty_panel(ax, f"no run logged {metric} per epoch")
                continue
            sns.lineplot(d, x="epoch", y="value", hue="label", hue_order=_order(exp.runs, d.label), palette=pal,
                         errorbar="sd", marker="o" if d.epoch.nunique() == 1 else None, ax=ax)
            ax.set(xlabel="epoch", ylabel=ylabel)
            ax.legend(title="method")
        paths.append(_save(fig, out / f"training_curves_{ds}.png"))
    return paths


def _label_artifacts(exp: Experiment, d: pd.DataFrame, label: str, name: str) -> list[dict[str, np.ndarray]]:
    """The .npz artifact `name` of every run of `label` in d that saved one."""
    return [a for a in (npz_artifact(exp, r, name) for r in d[d.label == label].run_id) if a is not None]


def weight_distributions(exp: Experiment, out: Path) -> list[Path]:
    """Unpruned weight values per label (the study's Fig. 8/9), summed over seeds, as densities."""
    paths = []
    pal = palette(exp.runs)
    for ds in _datasets(exp.runs):
        d = exp.runs[exp.runs.dataset == ds]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label in ordered_labels(d):
            arrays = _label_artifacts(exp, d, label, "weights_hist.npz")
            if not arrays:
                continue
            edges = arrays[0]["edges"]
            counts = sum(a["counts"] for a in arrays).astype(float)
            density = counts / (counts.sum() * np.diff(edges))
            ax.plot((edges[:-1] + edges[1:]) / 2, density, color=pal[label], label=label)
        if not ax.lines:
            plt.close(fig)
            continue
        ax.set_yscale("log")
        ax.set(title=f"{DATASET_NAMES.get(ds, ds)}: weight values of the unpruned networks (Bayesian: posterior mean)",
               xlabel="weight value", ylabel="density (log scale)", xlim=(-0.6, 0.6))
        ax.legend(title="method")
        paths.append(_save(fig, out / f"weights_{ds}.png"))
    return paths


def snr_distribution(exp: Experiment, out: Path) -> list[Path]:
    """Signal-to-noise ratio |mu|/sigma in dB of every label whose runs saved one (methods with a
    posterior std), with the pruning thresholds of the first such label's levels."""
    paths = []
    pal = palette(exp.runs)
    for ds in _datasets(exp.runs):
        d = exp.runs[exp.runs.dataset == ds]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        thresholds, lo, hi = None, np.inf, -np.inf
        for label in ordered_labels(d):
            arrays = _label_artifacts(exp, d, label, "snr_hist.npz")
            if not arrays:
                continue
            edges = arrays[0]["edges_db"]
            counts = sum(a["counts"] for a in arrays).astype(float)
            ax.stairs(counts / counts.sum(), edges, fill=True, color=pal[label], alpha=0.5, label=f"{label} weights")
            used = np.nonzero(counts)[0]
            lo, hi = min(lo, edges[used[0]]), max(hi, edges[used[-1] + 1])
            # runs with another sparsity list cannot share the threshold lines; they still add to the histogram
            thresholds = thresholds or [a for a in arrays if np.array_equal(a["sparsities"], arrays[0]["sparsities"])]
        if thresholds is None:
            plt.close(fig)
            continue
        ax.set_xlim(lo - 5, hi + 5)
        thr = np.stack([a["thresholds_db"] for a in thresholds])  # [runs, levels]; NaN where nothing was pruned
        for p, col in zip(thresholds[0]["sparsities"], thr.T):
            t = float(np.mean(col[np.isfinite(col)])) if np.isfinite(col).any() else float("nan")
            if p > 0 and np.isfinite(t):
                ax.axvline(t, color="black", ls="--", lw=1)
                ax.text(t, ax.get_ylim()[1] * 0.9, f" {p:.0%}", rotation=90, va="top", fontsize=8)
        ax.set(title=f"{DATASET_NAMES.get(ds, ds)}: signal-to-noise ratio (dashed: pruning thresholds)",
               xlabel="SNR = 10 log10(|mu| / sigma) (dB)", ylabel="fraction of weights")
        ax.legend()
        paths.append(_save(fig, out / f"snr_{ds}.png"))
    return paths


def prior(exp: Experiment, out: Path, hist: pd.DataFrame) -> list[Path]:
    """The scale-mixture prior (Blundell eq. 7) and its two components, from the configured values of the
    runs that trained against it (a KL term logged, prior params present)."""
    keys = [f"param.{k}" for k in ("prior_pi", "prior_sigma1", "prior_sigma2")]
    kl_runs = set(hist.loc[hist.metric == "train_kl", "run_id"])
    runs = exp.runs[exp.runs.run_id.isin(kl_runs)] if set(keys) <= set(exp.runs.columns) else exp.runs.iloc[:0]
    runs = runs.dropna(subset=keys) if not runs.empty else runs
    if runs.empty:
        return []
    priors = sorted({tuple(float(v) for v in row) for row in runs[keys].itertuples(index=False)})
    pi, s1, s2 = priors[0]
    note = f" (1st of {len(priors)} priors in this experiment)" if len(priors) > 1 else ""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, half in ((axes[0], 3 * max(s1, s2)), (axes[1], 6 * min(s1, s2))):
        w = np.linspace(-half, half, 2001)
        n1 = np.exp(-w ** 2 / (2 * s1 ** 2)) / (s1 * math.sqrt(2 * math.pi))
        n2 = np.exp(-w ** 2 / (2 * s2 ** 2)) / (s2 * math.sqrt(2 * math.pi))
        mix = pi * n1 + (1 - pi) * n2
        ax.plot(w, mix, color="black", lw=2, label=f"mixture (pi = {pi:g})")
        ax.plot(w, pi * n1, ls="--", label=f"pi N(0, {s1:.3g}^2)")
        ax.plot(w, (1 - pi) * n2, ls=":", label=f"(1 - pi) N(0, {s2:.3g}^2)")
        ax.set_yscale("log")
        ax.set(xlabel="weight value", ylabel="density (log scale)", ylim=(1e-3, 3 * mix.max()),
               title=f"Scale-mixture prior, |w| < {half:.3g}{note}")
        ax.legend(loc="lower center")
    return [_save(fig, out / "prior.png")]


def cost(exp: Experiment, out: Path) -> list[Path]:
    return [_save(cost_figure(exp.runs), out / "cost.png")]


def cost_figure(runs: pd.DataFrame):
    """Time per epoch and epochs to fit per label and dataset (±1 std over seeds)."""
    df = runs.assign(time_per_epoch_s=runs.train_wall_s / runs.epochs)
    pal, order = palette(df), ordered_labels(df)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    sns.barplot(df, x="dataset", y="time_per_epoch_s", hue="label", hue_order=order, palette=pal, errorbar="sd",
                ax=axes[0])
    axes[0].set(title="Training time per epoch (±1 std over seeds)", xlabel="dataset", ylabel="seconds per epoch")
    axes[0].legend(title="method")
    axes[1].set_title("Epochs until validation accuracy reaches the fit target")
    if "epochs_to_fit" in df and df.epochs_to_fit.notna().any():
        sns.barplot(df, x="dataset", y="epochs_to_fit", hue="label", hue_order=order, palette=pal, errorbar="sd",
                    ax=axes[1])
        axes[1].set(xlabel="dataset", ylabel="epochs")
        axes[1].legend(title="method (missing bar: never fitted)")
    else:
        empty_panel(axes[1], f"No trial reached its validation-accuracy fit target\n(param fit_target; default "
                             f"per dataset) within its {', '.join(map(str, sorted(df.epochs.unique())))} epoch(s):\n"
                             "nothing to show. See the cost table's \"epochs to fit\".")
    return fig


def latency_plot(exp: Experiment, out: Path) -> list[Path]:
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
    g.legend.set_title("forward")
    g.figure.savefig(out / "latency.png", dpi=110, bbox_inches="tight")
    plt.close(g.figure)
    return [out / "latency.png"]


def scaling(exp: Experiment, out: Path) -> list[Path]:
    """Time per epoch vs width (scaling grid) and sweep throughput vs concurrent workers."""
    df = exp.runs.copy()
    paths = []
    df["width"] = widths(df)
    if df.width.nunique() > 1:
        df["time_per_epoch_s"] = df.train_wall_s / df.epochs
        panels = [("time_per_epoch_s", "seconds per epoch (incl. validation)"),
                  ("step_time_ms", "ms per training step (median)"), ("peak_mem_mb", "peak memory added by training (MB)"),
                  ("n_params", "weights + biases")]
        panels = [(c, lab) for c, lab in panels if c in df and df[c].notna().any()]
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
        for ax, (col, ylabel) in zip(axes[0], panels):
            sns.lineplot(df, x="width", y=col, hue="label", hue_order=ordered_labels(df),
                         palette=palette(df), marker="o", errorbar="sd", ax=ax)
            ax.set(xscale="log", yscale="log", xlabel="hidden units per layer (two layers)", ylabel=ylabel,
                   title=ylabel.split(" (")[0].capitalize() + " vs width")
            ax.legend(title="method")
        paths.append(_save(fig, out / "scaling_width.png"))
    a = concurrency_frame(df)
    if not a.empty:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.plot(a.concurrency, a.trials_per_hour, marker="o", label="measured")
        base = a.trials_per_hour.iloc[0] / a.concurrency.iloc[0]
        ax.plot(a.concurrency, base * a.concurrency, ls=":", color="grey", label="linear scaling")
        ax.set(title="Sweep throughput vs concurrent trials", xlabel="concurrent trials", ylabel="trials per hour",
               xticks=sorted(a.concurrency.unique()))
        ax.legend()
        paths.append(_save(fig, out / "scaling_concurrency.png"))
    return paths


def speedup_vs_compression(exp: Experiment, out: Path) -> list[Path]:
    """Per dataset: speed-up over dense vs compression (log x, log y), batch 1 and batch 1000 panels; per
    method the compacted net (solid) and the CSR kernel (dashed), means over seeds; 1 = as fast as dense."""
    paths = []
    for ds in _datasets(exp.runs):
        d = exp.runs[exp.runs.dataset == ds]
        lv = payoff.levels(d)
        lv = lv[lv.level != NAT]
        if lv[[f"x_{k}_b{b}" for k in payoff.KERNELS for b in payoff.BATCHES]].isna().all(axis=None):
            continue
        pal = palette(exp.runs)
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
        for ax, b in zip(axes, payoff.BATCHES):
            for label in _order(d, lv.label):
                g = lv[lv.label == label].groupby("level").mean(numeric_only=True).sort_values("compression")
                for k, name in payoff.KERNELS.items():
                    if g[f"x_{k}_b{b}"].notna().any():
                        ax.plot(g.compression, g[f"x_{k}_b{b}"], marker="o" if k == "compact" else "x",
                                ls="-" if k == "compact" else "--", color=pal[label],
                                label=f"{budget_label(d, ds, label)}, {name}")
            ax.axhline(1, color="grey", ls=":", lw=1, label="as fast as dense")
            ax.set(xscale="log", yscale="log", title=f"{DATASET_NAMES.get(ds, ds)}: speed-up over dense, batch {b}",
                   xlabel="compression = dense / nonzero weights (log)", ylabel="dense latency / latency (log)")
            for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
                axis(FuncFormatter(lambda v, _: f"{v:g}x"))
            ax.legend(title="method (epochs), forward", fontsize=7)
        paths.append(_save(fig, out / f"speedup_vs_compression_{ds}.png"))
    return paths


def uncertainty(exp: Experiment, out: Path) -> list[Path]:
    """Per dataset, vs compression (log x): OOD AUROC (entropy solid, mutual information dashed), and
    accuracy and ECE on rotated images (mean over angles); means over seeds, natural levels left out."""
    paths = []
    panels = [(("ood_auroc_entropy", "ood_auroc_mi_mc"), "OOD detection AUROC (dashed: mutual information)"),
              (("shift_acc_mean",), "accuracy under rotation (mean over angles)"),
              (("shift_ece_mean",), "ECE under rotation (mean over angles)")]
    for ds in _datasets(exp.runs):
        d = exp.runs[exp.runs.dataset == ds]
        comp = compression.levels(d)[["run_id", "level", "compression"]]
        if not trust.present(d):
            continue
        pal = palette(exp.runs)
        fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
        for ax, (metrics, title) in zip(axes, panels):
            ax.set_title(f"{DATASET_NAMES.get(ds, ds)}: {title}", fontsize=10)
            drawn = False
            for metric, ls in zip(metrics, ("-", "--")):
                long = by_level(d, metric).merge(comp, on=["run_id", "level"])
                long = long[long.level != NAT]
                for label in _order(d, long.label):
                    g = long[long.label == label].groupby("level")[["compression", metric]].mean().sort_values("compression")
                    ax.plot(g.compression, g[metric], marker="o", ls=ls, color=pal[label],
                            label=budget_label(d, ds, label) + (" (MI)" if ls == "--" else ""))
                    drawn = True
            if not drawn:
                empty_panel(ax, f"no run logged {' or '.join(m + '_pNN' for m in metrics)}")
                continue
            ax.set(xscale="log", xlabel="compression (log)", ylabel=title.split(" (")[0])
            ax.legend(title="method (epochs)", fontsize=7)
        paths.append(_save(fig, out / f"uncertainty_{ds}.png"))
    return paths


def rotation(exp: Experiment, out: Path) -> list[Path]:
    """Per dataset: accuracy vs rotation angle, unpruned (solid) and at the highest pruned level with
    per-angle numbers (dashed), mean over seeds."""
    paths = []
    for ds in _datasets(exp.runs):
        d = exp.runs[exp.runs.dataset == ds]
        a = trust.per_angle(d)
        a = a[a.level != NAT] if not a.empty else a
        if a.empty:
            continue
        shown = sorted({"p00", max(a.level.unique(), key=level_key)} & set(a.level), key=level_key)
        pal = palette(exp.runs)
        fig, ax = plt.subplots(figsize=(8, 4.8))
        for level, ls in zip(shown, ("-", "--")):
            for label in _order(d, a.label):
                g = a[(a.label == label) & (a.level == level)].groupby("angle").acc.mean()
                ax.plot(g.index, g.values, ls=ls, marker="o", ms=3, color=pal[label],
                        label=f"{budget_label(d, ds, label)}, {level_name(level)}")
        ax.axhline(0.1, color="grey", ls=":", lw=1, label="chance")
        ax.set(title=f"{DATASET_NAMES.get(ds, ds)}: accuracy on rotated test images", xlabel="rotation (degrees)",
               ylabel="test accuracy", ylim=(0, 1.02))
        ax.legend(title="method (epochs), pruned", fontsize=7)
        paths.append(_save(fig, out / f"rotation_{ds}.png"))
    return paths
