"""What every figure shares: one colour per label (the runs' `color` column, set by labels.py), type
sizes that stay legible when a figure is shown at a page's width, a mean line with its ±1 std band over
seeds, one legend outside the panels, and saving. A panel with nothing to show says why."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .files import replacing  # noqa: E402
from .load import ordered_labels  # noqa: E402
from .table import epochs_text  # noqa: E402

DPI = 110
matplotlib.rcParams.update({"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
                            "legend.title_fontsize": 10, "xtick.labelsize": 10, "ytick.labelsize": 10})
BAND = "band: ±1 std over seeds"


def palette(df: pd.DataFrame) -> dict[str, str]:
    """Each label's colour (labels.py, else its `color` tag); labels without one get the unused colours of a
    qualitative map, in label order."""
    tagged = df.dropna(subset=["color"]).groupby("label")["color"].first().to_dict() if "color" in df else {}
    free = [c for c in sns.color_palette("tab10").as_hex() if c not in tagged.values()] or sns.color_palette("tab10").as_hex()
    rest = [lab for lab in ordered_labels(df) if lab not in tagged]
    return {**tagged, **{lab: free[i % len(free)] for i, lab in enumerate(rest)}}


def order(df: pd.DataFrame, present) -> list[str]:
    """The labels of df that occur in `present`, in label order."""
    return [lab for lab in ordered_labels(df) if lab in set(present)]


def budget_label(df: pd.DataFrame, ds: str, label: str) -> str:
    """"SGD + fine-tune (62 ep)": a legend entry with the arm's total training epochs (training + retraining),
    so curves are read at equal budgets, and how many of its runs collapsed (tag collapsed=true)."""
    g = df[(df.dataset == ds) & (df.label == label)]
    e = epochs_text(g["total_epochs"]) if "total_epochs" in g else "-"
    dead = int(g.collapsed.sum()) if "collapsed" in g else 0
    notes = [f"{e} ep"] * (e != "-") + [f"† {dead} of {len(g)} runs collapsed"] * (dead > 0)
    return f"{label} ({', '.join(notes)})" if notes else label


def subplots(ncols: int = 1, width: float = 7.7, height: float = 4.5):
    """A figure of `ncols` panels side by side (constrained layout, which leaves room for an outside legend); the
    default width stays under 850 px, so index.html shows two such figures side by side."""
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False, layout="constrained")
    return fig, list(axes[0])


def mean_line(ax, x, mean, std, color: str, label: str, **line) -> None:
    """A mean line and its ±1 std band (no band where std is unknown: one seed; on a log y axis, set before,
    none where mean - std <= 0, which the axis cannot show)."""
    x, mean, std = np.asarray(x, float), np.asarray(mean, float), np.nan_to_num(np.asarray(std, float))
    ax.plot(x, mean, color=color, label=label, **{"marker": "o", **line})
    low = mean - std
    if ax.get_yscale() == "log":
        low = np.where(low > 0, low, np.nan)
    ax.fill_between(x, low, mean + std, color=color, alpha=0.18, lw=0)


def legend_right(ax, title: str) -> None:
    """The legend of a one-panel figure outside, right of the panel and of its right-hand labels."""
    if ax.get_legend():
        ax.get_legend().remove()
    ax.figure.legend(*ax.get_legend_handles_labels(), title=title, loc="outside right upper")


def legend_below(fig, axes, title: str, ncol: int = 3, size: float | None = None) -> None:
    """One legend for all panels, below them: every entry once, in the order the panels drew them."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(text, handle)
        if ax.get_legend():
            ax.get_legend().remove()
    if seen:
        fig.legend(list(seen.values()), list(seen), title=title, loc="outside lower center", ncol=ncol,
                   fontsize=size, title_fontsize=size)


def empty_panel(ax, why: str) -> None:
    """Say on the axes why they hold no data, instead of leaving an empty frame."""
    ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True, transform=ax.transAxes, fontsize=10, color="dimgrey")
    ax.set_xticks([])
    ax.set_yticks([])


def save(fig, path: Path) -> Path:
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", pad_inches=0.1)   # an outside legend wider than the panels stays whole
    plt.close(fig)
    return path
