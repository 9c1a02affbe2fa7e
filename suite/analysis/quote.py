"""`python -m suite.analysis.quote [--check|--write] FILE.md ...`: result tables in markdown, generated from runs files.

A README quotes a report table as a block between two HTML comments; the first names the source and
what to build, and everything up to the second is generated:

    <!-- table: runs.parquet level test_acc mnist columns=0,90,99,nat -->
    (generated)
    <!-- end table -->

Spec: the runs file, relative to the markdown file's folder (as a markdown link is), then a kind and
its arguments (KINDS), then optional filters `rows=A,B` (labels; a speed-up table's methods) and
`columns=X,Y` (headers; a level may be written 90 for "90 %", nat for "natural"); quote a value with
spaces: rows="SGD + fine-tune,BBB". Filters keep the report's order, and bold marks the best of the
rows shown. The table is rendered by `Table.markdown`, as in report.md, followed by the collapsed-run
footnote when a cell carries the dagger.

--write regenerates every block in place; --check (the default) changes nothing and exits 1 naming
each stale block with a diff. Every block of every file is parsed and built before anything is
written: a bad spec is one error naming the file, the line and what is wrong (exit 2).
"""
from __future__ import annotations

import argparse
import difflib
import glob
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import compression, cost, footprint, payoff, scaling
from .levels import METRICS, level_table
from .load import AnalysisError, load_file
from .table import COLLAPSED_NOTE, DAGGER, Table, budget_table, level_name

OPEN = re.compile(r"^<!-- table: (?P<spec>.*?) -->$")
END = "<!-- end table -->"
MARKER = re.compile(r"^<!--\s*(end\s*)?table\b")   # what looks like either comment, so a typo is an error, not ignored
FILTERS = ("rows", "columns")
# kind -> (its arguments, builder(df, *arguments) -> Table)
KINDS = {
    "level": (("metric", "dataset"), level_table),
    "cost": (("dataset",), cost.cost_table),
    "inference": (("dataset",), lambda df, ds: cost.cost_table(df, ds, cost.INFERENCE_COST)),
    "compression": (("dataset",), lambda df, ds: compression.compression_table(df, ds)[0]),
    "bytes": (("dataset",), footprint.bytes_table),
    "latency": (("dataset",), footprint.latency_table),
    "budget": (("dataset",), budget_table),
    "speedup": (("dataset",), payoff.speedup_table),
    "width": (("cost",), scaling.width_table),
    "concurrency": ((), scaling.concurrency_table),
}
SYNTAX = "<!-- table: RUNS.parquet KIND ARGS [rows=A,B] [columns=X,Y] -->"


class SpecError(ValueError):
    """A block that cannot be built; the message names the file, the line and the fix."""


@dataclass
class Block:
    path: Path
    line: int            # 0-based index of the opening comment
    end: int             # 0-based index of the closing comment
    spec: str
    body: list[str]      # the lines between the two comments, as found

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line + 1}"


def blocks_in(path: Path, lines: list[str]) -> list[Block]:
    """The table blocks of a markdown file (fenced code is skipped, so docs can show the syntax)."""
    found, fenced, start = [], False, None
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("```"):
            fenced = not fenced
        if fenced or not MARKER.match(s):
            continue
        if MARKER.match(s)[1] is not None:
            if s != END:
                raise SpecError(f"{path}:{i + 1}: write the end comment as {END}.")
            if start is None:
                raise SpecError(f"{path}:{i + 1}: {END} without a table comment before it.")
            found.append(Block(path, start, i, OPEN.match(lines[start].strip())["spec"], lines[start + 1:i]))
            start = None
        elif not OPEN.match(s):
            raise SpecError(f"{path}:{i + 1}: not a table spec: write {SYNTAX}.")
        elif start is not None:
            raise SpecError(f"{path}:{start + 1}: no {END} before the next table comment (line {i + 1}).")
        else:
            start = i
    if start is not None:
        raise SpecError(f"{path}:{start + 1}: no {END} after this table comment.")
    return found


def build(block: Block, runs: dict[Path, pd.DataFrame]) -> list[str]:
    """The block's generated lines: a blank line, the table, a blank line (and the dagger's footnote)."""
    where = block.where
    try:
        words = shlex.split(block.spec)
    except ValueError as e:
        raise SpecError(f"{where}: {e} in {block.spec!r}.") from None
    filters = dict(w.split("=", 1) for w in words if "=" in w)
    args = [w for w in words if "=" not in w]
    bad = sorted(set(filters) - set(FILTERS))
    if bad:
        raise SpecError(f"{where}: unknown filter {bad[0]}=; the filters are {', '.join(FILTERS)}.")
    if len(args) < 2 or args[1] not in KINDS:
        kinds = "; ".join(f"{k} {' '.join(a.upper() for a in names)}" for k, (names, _) in KINDS.items())
        raise SpecError(f"{where}: {'unknown kind ' + repr(args[1]) if len(args) > 1 else 'no kind'}; write "
                        f"{SYNTAX} with KIND ARGS one of: {kinds}.")
    file, kind, values = args[0], args[1], args[2:]
    names, builder = KINDS[kind]
    if len(values) != len(names):
        takes = " ".join(n.upper() for n in names) or "no arguments"
        raise SpecError(f"{where}: {kind} takes {takes}; got {' '.join(values) or 'nothing'}.")
    given = dict(zip(names, values))
    if "metric" in given and given["metric"] not in METRICS:
        raise SpecError(f"{where}: no level table of {given['metric']!r}; metrics: {', '.join(METRICS)}.")
    if "cost" in given and given["cost"] not in scaling.WIDTH_METRICS:
        raise SpecError(f"{where}: no width table of {given['cost']!r}; costs: {', '.join(scaling.WIDTH_METRICS)}.")
    path = (block.path.parent / file).resolve()
    if path not in runs:
        try:
            runs[path] = load_file(path).runs
        except AnalysisError as e:
            raise SpecError(f"{where}: {e} (the path is relative to the markdown file's folder)") from None
    df = runs[path]
    if "dataset" in given and given["dataset"] not in set(df.dataset):
        raise SpecError(f"{where}: {file} has no dataset {given['dataset']!r}; it has {', '.join(sorted(set(df.dataset)))}.")
    t = builder(df, *values)
    if t.empty:
        about = (f" for {given['dataset']}" if "dataset" in given else " (runs of one width only)" if kind == "width"
                 else " (no --concurrency sweep level finished)")
        raise SpecError(f"{where}: {file} has no run that logged a {kind} table{about}.")
    t = select(t, filters, where)
    text = t.markdown()
    note = [COLLAPSED_NOTE, ""] if DAGGER in text else []
    return ["", *text.splitlines(), "", *note]


def _items(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _header(token: str, headers) -> str:
    """A column by its header, or a level by its short name (90 -> "90 %", nat -> "natural")."""
    if token in headers:
        return token
    return level_name(token if token == "nat" else f"p{token}") if token.isdigit() or token == "nat" else token


def select(t: Table, filters: dict[str, str], where: str) -> Table:
    """The table restricted to the rows (first index level) and columns the filters name."""
    keys = t.cells.index.get_level_values(0)
    rows = _items(filters.get("rows", "")) or list(dict.fromkeys(keys))
    cols = [_header(c, t.cells.columns) for c in _items(filters.get("columns", ""))] or list(t.cells.columns)
    for kind, want, have in (("row", rows, list(dict.fromkeys(keys))), ("column", cols, list(t.cells.columns))):
        missing = [w for w in want if w not in have]
        if missing:
            raise SpecError(f"{where}: no {kind} {missing[0]!r} in the table; its {kind}s: {', '.join(map(str, have))}.")
    keep = keys.isin(rows)
    cols = [c for c in t.cells.columns if c in cols]
    cells = t.cells.loc[keep, cols]
    means = None if t.means is None else t.means.loc[cells.index, [c for c in cols if c in t.means.columns]]
    groups = None if t.groups is None else t.groups[keep]
    return Table(cells, means, t.higher, t.index, groups)


def expand(patterns: list[str]) -> list[Path]:
    """Files named or matched by a glob pattern (so `results/*/README.md` works without a shell)."""
    paths = []
    for p in patterns:
        hits = sorted(glob.glob(p)) if glob.has_magic(p) else [p]
        if not hits:
            raise SpecError(f"no file matches {p!r}.")
        for h in hits:
            if not Path(h).is_file():
                raise SpecError(f"no markdown file {h!r}.")
            paths.append(Path(h))
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m suite.analysis.quote", description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 naming every stale block, with a diff (the default)")
    mode.add_argument("--write", action="store_true", help="regenerate every block in place")
    ap.add_argument("files", nargs="+", metavar="FILE.md", help="markdown files; glob patterns are expanded here")
    args = ap.parse_args(argv)
    runs: dict[Path, pd.DataFrame] = {}
    try:
        files = expand(args.files)
        plan = []   # (file, its lines, [(block, generated lines)]): everything is built before anything is written
        for path in files:
            lines = path.read_text().split("\n")
            plan.append((path, lines, [(b, build(b, runs)) for b in blocks_in(path, lines)]))
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stale = [(path, b, new) for path, _, built in plan for b, new in built if b.body != new]
    if args.write:
        for path, lines, built in plan:
            for b, new in reversed(built):
                lines[b.line + 1:b.end] = new
            if any(b.body != new for b, new in built):
                path.write_text("\n".join(lines))
        for _, b, _ in stale:
            print(f"updated {b.where} ({b.spec})")
        print(f"{len(stale)} of {sum(len(built) for _, _, built in plan)} table(s) in {len(files)} file(s) rewritten")
        return 0
    for path, b, new in stale:
        diff = list(difflib.unified_diff(b.body, new, lineterm="", n=0))[2:]
        shown = diff[:12] + ([f"... {len(diff) - 12} more lines"] if len(diff) > 12 else [])
        print(f"{b.where}: the table ({b.spec}) differs from its runs file:", *(f"    {d}" for d in shown),
              f"  fix: python -m suite.analysis.quote --write {path}", sep="\n")
    n = sum(len(built) for _, _, built in plan)
    print(f"{len(stale)} of {n} table(s) in {len(files)} file(s) out of date" if stale else
          f"{n} table(s) in {len(files)} file(s) match their runs files")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
