"""What training did and left: per-epoch training NLL and validation accuracy, the unpruned weight
values (the study's Fig. 8/9), the signal-to-noise ratios pruning ranks Bayesian weights by, and the
scale-mixture prior. Figures only; the Plots section shows them."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from . import figure
from .load import DATASET_NAMES, Experiment, npz_artifact, ordered_datasets, ordered_labels


def training_curves(exp: Experiment, out: Path, hist: pd.DataFrame) -> list[Path]:
    paths = []
    pal = figure.palette(exp.runs)
    for ds in ordered_datasets(exp.runs):
        h = hist[hist.dataset == ds]
        fig, axes = figure.subplots(2, width=13, height=5)
        for ax, metric, ylabel in ((axes[0], "train_nll", "training NLL per example (nats)"),
                                   (axes[1], "val_acc", "validation accuracy")):
            d = h[h.metric == metric]
            ax.set_title(f"{DATASET_NAMES.get(ds, ds)}: {ylabel} per epoch")
            if d.empty:
                figure.empty_panel(ax, f"no run logged {metric} per epoch")
                continue
            sns.lineplot(d, x="epoch", y="value", hue="label", hue_order=figure.order(exp.runs, d.label), palette=pal,
                         errorbar="sd", marker="o" if d.epoch.nunique() == 1 else None, ax=ax)
            ax.set(xlabel="epoch", ylabel=ylabel)
        figure.legend_below(fig, axes, f"method ({figure.BAND})", ncol=4)
        paths.append(figure.save(fig, out / f"training_curves_{ds}.png"))
    return paths


def _summed(exp: Experiment, d: pd.DataFrame, label: str, name: str, edges: str):
    """(bin edges, counts summed over the runs, the runs' arrays) of the histogram artifact `name` of every run
    of `label` in d that saved one; None when none did."""
    arrays = [a for a in (npz_artifact(exp, r, name) for r in d[d.label == label].run_id) if a is not None]
    return (arrays[0][edges], sum(a["counts"] for a in arrays).astype(float), arrays) if arrays else None


def weight_distributions(exp: Experiment, out: Path) -> list[Path]:
    """Unpruned weight values per label, summed over seeds, as densities."""
    paths = []
    pal = figure.palette(exp.runs)
    for ds in ordered_datasets(exp.runs):
        d = exp.runs[exp.runs.dataset == ds]
        fig, (ax,) = figure.subplots()
        for label in ordered_labels(d):
            if (hist := _summed(exp, d, label, "weights_hist.npz", "edges")) is None:
                continue
            edges, counts, _ = hist
            density = counts / (counts.sum() * np.diff(edges))
            ax.plot((edges[:-1] + edges[1:]) / 2, density, color=pal[label], label=label)
        if not ax.lines:
            plt.close(fig)
            continue
        ax.set_yscale("log")
        ax.set(title=f"{DATASET_NAMES.get(ds, ds)}: unpruned weight values\n(Bayesian: posterior mean; all seeds)",
               xlabel="weight value", ylabel="density (log scale)", xlim=(-0.6, 0.6))
        figure.legend_right(ax, "method")
        paths.append(figure.save(fig, out / f"weights_{ds}.png"))
    return paths


def snr_distribution(exp: Experiment, out: Path) -> list[Path]:
    """Signal-to-noise ratio |mu|/sigma in dB of every label whose runs saved one (methods with a
    posterior std), with the pruning thresholds of the first such label's levels."""
    paths = []
    pal = figure.palette(exp.runs)
    for ds in ordered_datasets(exp.runs):
        d = exp.runs[exp.runs.dataset == ds]
        fig, (ax,) = figure.subplots()
        thresholds, lo, hi = None, np.inf, -np.inf
        for label in ordered_labels(d):
            if (hist := _summed(exp, d, label, "snr_hist.npz", "edges_db")) is None:
                continue
            edges, counts, arrays = hist
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
                ax.text(t, ax.get_ylim()[1] * 0.9, f" {p:.0%}", rotation=90, va="top", fontsize=9)
        ax.set(title=f"{DATASET_NAMES.get(ds, ds)}: signal-to-noise ratio\n(dashed: pruning thresholds)",
               xlabel="SNR = 10 log10(|mu| / sigma) (dB)", ylabel="fraction of weights")
        ax.legend()
        paths.append(figure.save(fig, out / f"snr_{ds}.png"))
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
    fig, axes = figure.subplots(2, width=13)
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
    return [figure.save(fig, out / "prior.png")]


def plot_groups(exp: Experiment, out: Path, hist: pd.DataFrame) -> list[tuple[str, list[Path]]]:
    """The Plots section's training-curve and weight figures."""
    return [("Training curves", training_curves(exp, out, hist)),
            ("Weights", [*weight_distributions(exp, out), *snr_distribution(exp, out), *prior(exp, out, hist)])]
