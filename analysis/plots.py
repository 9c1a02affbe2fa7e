"""The report's figures (seaborn). Every plot: title, labelled axes with units, legend, and the
same colour for a method in every figure. Each function returns the paths it wrote."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .load import Experiment, by_level, history, method_order, npz_artifact  # noqa: E402

DATASET_NAMES = {"mnist": "MNIST", "fmnist": "Fashion-MNIST"}
_BASE = {"SGD": "#1f77b4", "Dropout 0.5": "#ff7f0e", "Dropout 0.75": "#2ca02c", "Dropout 0.9": "#9467bd",
         "BBB": "#d62728"}


def palette(labels) -> dict[str, str]:
    """Fixed colours per method; unknown labels get the next colours of a qualitative map, in order."""
    extra = [c for c in sns.color_palette("tab10").as_hex() if c not in _BASE.values()]
    out = dict(_BASE)
    for i, lab in enumerate(sorted(set(labels) - set(_BASE))):
        out[lab] = extra[i % len(extra)]
    return out


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _datasets(df: pd.DataFrame) -> list[str]:
    return sorted(df.dataset.unique())


def _vs_sparsity(exp: Experiment, out: Path, metric: str, ylabel: str, what: str, stem: str) -> list[Path]:
    """One line per method of a per-level metric vs the pruned fraction; band = ±1 std over seeds."""
    df, paths = exp.runs, []
    pal = palette(df.label)
    for ds in _datasets(df):
        long = by_level(df[df.dataset == ds], metric)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        sns.lineplot(long, x="sparsity", y=metric, hue="label", hue_order=method_order(long.label), palette=pal,
                     errorbar="sd", marker="o", ax=ax)
        if metric == "test_acc":
            ax.axhline(0.1, color="grey", ls=":", lw=1, label="chance")
            ax.set_ylim(0, 1.02)
        ax.set(title=f"{DATASET_NAMES.get(ds, ds)}: {what}", xlabel="fraction of weights pruned", ylabel=ylabel)
        ax.legend(title="method (band: ±1 std over seeds)")
        paths.append(_save(fig, out / f"{stem}_{ds}.png"))
    return paths


def accuracy_vs_sparsity(exp: Experiment, out: Path) -> list[Path]:
    """The headline plot."""
    return _vs_sparsity(exp, out, "test_acc", "test accuracy", "test accuracy after pruning (no fine-tuning)",
                        "accuracy_vs_sparsity")


def calibration(exp: Experiment, out: Path) -> list[Path]:
    return _vs_sparsity(exp, out, "test_ece", "expected calibration error (15 bins)", "calibration after pruning",
                        "ece_vs_sparsity")


def training_curves(exp: Experiment, out: Path, hist: pd.DataFrame) -> list[Path]:
    paths = []
    pal = palette(exp.runs.label)
    for ds in _datasets(exp.runs):
        h = hist[hist.dataset == ds]
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for ax, metric, ylabel in ((axes[0], "train_nll", "training NLL per example (nats)"),
                                   (axes[1], "val_acc", "validation accuracy")):
            d = h[h.metric == metric]
            sns.lineplot(d, x="epoch", y="value", hue="label", hue_order=method_order(d.label), palette=pal,
                         errorbar="sd", ax=ax)
            ax.set(xlabel="epoch", ylabel=ylabel, title=f"{DATASET_NAMES.get(ds, ds)}: {ylabel} per epoch")
            ax.legend(title="method")
        paths.append(_save(fig, out / f"training_curves_{ds}.png"))
    return paths


def weight_distributions(exp: Experiment, out: Path) -> list[Path]:
    """Unpruned weight values per method (the study's Fig. 8/9), summed over seeds, as densities."""
    paths = []
    pal = palette(exp.runs.label)
    for ds in _datasets(exp.runs):
        d = exp.runs[exp.runs.dataset == ds]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label in method_order(d.label):
            arrays = [npz_artifact(exp, r, "weights_hist.npz") for r in d[d.label == label].run_id]
            arrays = [a for a in arrays if a is not None]
            if not arrays:
                continue
            edges = arrays[0]["edges"]
            counts = sum(a["counts"] for a in arrays).astype(float)
            density = counts / (counts.sum() * np.diff(edges))
            ax.plot((edges[:-1] + edges[1:]) / 2, density, color=pal[label], label=label)
        ax.set_yscale("log")
        ax.set(title=f"{DATASET_NAMES.get(ds, ds)}: weight values of the unpruned networks (BBB: posterior mean)",
               xlabel="weight value", ylabel="density (log scale)", xlim=(-0.6, 0.6))
        ax.legend(title="method")
        paths.append(_save(fig, out / f"weights_{ds}.png"))
    return paths


def snr_distribution(exp: Experiment, out: Path) -> list[Path]:
    """BBB signal-to-noise ratio |mu|/sigma in dB, with the pruning thresholds of each level."""
    paths = []
    for ds in _datasets(exp.runs):
        d = exp.runs[(exp.runs.dataset == ds) & (exp.runs.method == "bbb")]
        arrays = [a for a in (npz_artifact(exp, r, "snr_hist.npz") for r in d.run_id) if a is not None]
        if not arrays:
            continue
        # runs with another sparsity list cannot share the threshold lines; they still add to the histogram
        edges = arrays[0]["edges_db"]
        counts = sum(a["counts"] for a in arrays).astype(float)
        arrays = [a for a in arrays if np.array_equal(a["sparsities"], arrays[0]["sparsities"])]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.stairs(counts / counts.sum(), edges, fill=True, color=_BASE["BBB"], alpha=0.5, label="BBB weights")
        used = np.nonzero(counts)[0]
        ax.set_xlim(edges[used[0]] - 5, edges[used[-1] + 1] + 5)
        thr = np.stack([a["thresholds_db"] for a in arrays])  # [runs, levels]; NaN where nothing was pruned
        for p, col in zip(arrays[0]["sparsities"], thr.T):
            t = float(np.mean(col[np.isfinite(col)])) if np.isfinite(col).any() else float("nan")
            if p > 0 and np.isfinite(t):
                ax.axvline(t, color="black", ls="--", lw=1)
                ax.text(t, ax.get_ylim()[1] * 0.9, f" {p:.0%}", rotation=90, va="top", fontsize=8)
        ax.set(title=f"{DATASET_NAMES.get(ds, ds)}: BBB signal-to-noise ratio (dashed: pruning thresholds)",
               xlabel="SNR = 10 log10(|mu| / sigma) (dB)", ylabel="fraction of weights")
        ax.legend()
        paths.append(_save(fig, out / f"snr_{ds}.png"))
    return paths


def prior(exp: Experiment, out: Path) -> list[Path]:
    """The scale-mixture prior (Blundell eq. 7) and its two components, from the configured values."""
    client = exp.client
    bbb = exp.runs[exp.runs.method == "bbb"]
    if bbb.empty:
        return []
    priors = sorted({tuple(float(client.get_run(r).data.params[k]) for k in ("prior_pi", "prior_sigma1", "prior_sigma2"))
                     for r in bbb.run_id})
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
    df = exp.runs.assign(time_per_epoch_s=exp.runs.train_wall_s / exp.runs.epochs)
    pal = palette(df.label)
    order = method_order(df.label)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    sns.barplot(df, x="dataset", y="time_per_epoch_s", hue="label", hue_order=order, palette=pal, errorbar="sd",
                ax=axes[0])
    axes[0].set(title="Training time per epoch (±1 std over seeds)", xlabel="dataset", ylabel="seconds per epoch")
    axes[0].legend(title="method")
    if "epochs_to_fit" in df and df.epochs_to_fit.notna().any():
        sns.barplot(df, x="dataset", y="epochs_to_fit", hue="label", hue_order=order, palette=pal, errorbar="sd",
                    ax=axes[1])
        axes[1].legend(title="method (missing bar: never fitted)")
    axes[1].set(title="Epochs until validation accuracy reaches the fit target", xlabel="dataset", ylabel="epochs")
    return [_save(fig, out / "cost.png")]


def latency_plot(exp: Experiment, out: Path) -> list[Path]:
    df = exp.runs
    rows = []
    for kind in ("dense", "sparse"):
        for b in (1, 1000):
            long = by_level(df, f"latency_{kind}_b{b}_ms")
            rows.append(long.rename(columns={f"latency_{kind}_b{b}_ms": "ms"}).assign(kind=kind, batch=f"batch {b}"))
    d = pd.concat(rows)
    if d.empty:
        return []
    g = sns.relplot(d, x="sparsity", y="ms", hue="kind", col="batch", kind="line", errorbar="sd", marker="o",
                    facet_kws={"sharey": False}, height=4, aspect=1.3)
    g.set_titles(col_template="{col_name}")
    g.set_axis_labels("fraction of weights pruned", "inference latency (ms, median)")
    g.figure.suptitle("Inference latency of the pruned networks: dense vs CSR weights (all methods)", y=1.03)
    g.legend.set_title("weights")
    g.figure.savefig(out / "latency.png", dpi=110, bbox_inches="tight")
    plt.close(g.figure)
    return [out / "latency.png"]


def scaling(exp: Experiment, out: Path) -> list[Path]:
    """Time per epoch vs width (scaling grid) and sweep throughput vs concurrent workers."""
    df = exp.runs.copy()
    paths = []
    widths = df.hidden.dropna().map(lambda h: int(str(h).strip("[]").split(",")[0]))
    if widths.nunique() > 1:
        df["width"] = widths
        df["time_per_epoch_s"] = df.train_wall_s / df.epochs
        panels = [("time_per_epoch_s", "seconds per epoch (incl. validation, compile)"),
                  ("step_time_ms", "ms per training step (median)"), ("peak_mem_mb", "peak memory added by training (MB)"),
                  ("n_params", "weights + biases")]
        panels = [(c, lab) for c, lab in panels if c in df and df[c].notna().any()]
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
        for ax, (col, ylabel) in zip(axes[0], panels):
            sns.lineplot(df, x="width", y=col, hue="label", hue_order=method_order(df.label),
                         palette=palette(df.label), marker="o", errorbar="sd", ax=ax)
            ax.set(xscale="log", yscale="log", xlabel="hidden units per layer (two layers)", ylabel=ylabel,
                   title=ylabel.split(" (")[0].capitalize() + " vs width")
            ax.legend(title="method")
        paths.append(_save(fig, out / "scaling_width.png"))
    # a sweep interrupted before its level finished has no throughput yet: it is left out
    sw = df[df.concurrency.notna() & (df.sweep != "")] if "sweep_trials_per_hour" in df else df.iloc[:0]
    sw = sw[sw.sweep_trials_per_hour.notna()] if not sw.empty else sw
    if not sw.empty:
        agg = []
        for (sweep, conc), g in sw.groupby(["sweep", "concurrency"]):
            agg.append({"concurrency": int(conc), "trials_per_hour": float(g["sweep_trials_per_hour"].iloc[0])})
        a = pd.DataFrame(agg).sort_values("concurrency")
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.plot(a.concurrency, a.trials_per_hour, marker="o", label="measured")
        base = a.trials_per_hour.iloc[0] / a.concurrency.iloc[0]
        ax.plot(a.concurrency, base * a.concurrency, ls=":", color="grey", label="linear scaling")
        ax.set(title="Sweep throughput vs concurrent trials", xlabel="concurrent trials", ylabel="trials per hour")
        ax.legend()
        paths.append(_save(fig, out / "scaling_concurrency.png"))
    return paths


def all_plots(exp: Experiment, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    hist = history(exp)
    return [*accuracy_vs_sparsity(exp, out), *training_curves(exp, out, hist), *weight_distributions(exp, out),
            *snr_distribution(exp, out), *prior(exp, out), *cost(exp, out), *latency_plot(exp, out),
            *calibration(exp, out), *scaling(exp, out)]
