"""The report's table type and its cell formats. A `Table` renders markdown (report.md, README quotes),
HTML (index.html), CSV and LaTeX from one set of cells, so every format shows the same numbers; cells
read `mean ± std (n=seeds)` or `mean (1 seed)`; a cell holding a collapsed run is marked †. Every
comparison of methods carries their budgets (budget.py): the epochs behind the model shown and the epochs
summed over the trial, which differ for arms that retrain a copy per level."""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .budget import model_epochs
from .files import replacing
from .load import NAT, by_level, level_key, ordered_labels

DAGGER = "†"
COLLAPSED_NOTE = (f"{DAGGER} at chance: collapsed. A run of the cell ended training at chance validation accuracy "
                  "(tag collapsed=true); it is in the mean, but the cell is no result.")


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

    def html(self, uuid: str) -> str:
        """A <table class="data">; best cells bold; a cell's seed count goes on a second, smaller line
        so wide level tables fit a screen. `uuid` names the table's ids and CSS (Styler's default is random,
        and a report must rebuild byte for byte); unique within a page."""
        def fmt(v) -> str:
            v = html.escape("-" if pd.isna(v) else str(v))
            return re.sub(r" \((n=\d+|1 seed)\)", r'<br><span class="n">(\1)</span>', v)
        styler = self.cells.style.apply(lambda _: self.best().replace({True: "font-weight:bold", False: ""}), axis=None)
        styler = styler.format(fmt).format_index(escape="html", axis=0).format_index(escape="html", axis=1)
        styler = styler.set_table_attributes('class="data"').set_uuid(uuid)
        words = [c for c in self.cells.columns if not self.cells[c].astype(str).str.match(r"[-+\d.]").any()]
        # prose columns (sources, notes) read left to right, header included
        styler = styler.set_properties(subset=words, **{"text-align": "left"})
        styler = styler.set_table_styles({c: [{"selector": "th", "props": "text-align: left"}] for c in words}, overwrite=False)
        styler = styler.hide(axis="index", names=True) if self.index else styler.hide(axis="index")
        return styler.to_html()

    def write(self, out: Path, stem: str) -> Table:
        """<stem>.md, .csv and .tex under out."""
        out.mkdir(parents=True, exist_ok=True)
        with replacing(out / f"{stem}.csv") as tmp:
            self.cells.to_csv(tmp, index=self.index)
        for suffix, text in ((".md", self.markdown()), (".tex", self.latex())):
            with replacing(out / f"{stem}{suffix}") as tmp:
                tmp.write_text(text + "\n")
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
    """A budget in epochs over runs: "60", or "48-60" when the runs differ; "-" when unknown."""
    v = values.dropna()
    if v.empty:
        return "-"
    lo, hi = int(round(v.min())), int(round(v.max()))
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


EPOCHS_MODEL = "epochs per model"
EPOCHS_TRIAL = "epochs per trial"
BUDGET_NOTE = ("Budgets: *epochs per model* = the epochs behind the model a cell evaluates (training plus that model's own "
               "retraining; an iterative model's earlier rounds included; 0 % is never retrained); *epochs per trial* = "
               "every epoch the trial trained, summed over all the copies it retrained (fine-tune and gradual retrain one "
               "copy per level). For arms that retrain the two differ, so \"equal budgets\" must say which of them is equal.")


def model_epochs_text(d: pd.DataFrame, label: str, level: str) -> str:
    """The epochs behind `label`'s models at `level` over its runs in d: "110", "100-110", or "-"."""
    g = d[d.label == label]
    return epochs_text(model_epochs(g, level)) if not g.empty else "-"


def trial_epochs_text(d: pd.DataFrame, label: str) -> str:
    """Every epoch `label`'s trials trained (total_epochs) over its runs in d."""
    g = d[d.label == label]
    return epochs_text(g["total_epochs"]) if "total_epochs" in g else "-"


def budget_table(df: pd.DataFrame, dataset: str) -> Table:
    """Rows = labels in order; one column per level evaluated (headers as level tables': "0 %" ... "natural")
    holding the epochs per model at that level ("-" where the label has no such level), then the epochs
    per trial. Empty when the dataset has no per-level accuracy."""
    d = df[df.dataset == dataset]
    long = by_level(d, "test_acc")
    if long.empty:
        return Table(pd.DataFrame())
    levels = sorted(long.level.unique(), key=level_key)
    has = set(zip(long.label, long.level))
    rows = {}
    for label in [lab for lab in ordered_labels(d) if lab in set(long.label)]:
        row = {level_name(lv): model_epochs_text(d, label, lv) if (label, lv) in has else "-" for lv in levels}
        rows[label] = {**row, EPOCHS_TRIAL: trial_epochs_text(d, label)}
    return Table(pd.DataFrame.from_dict(rows, orient="index"))
