"""The report as one structure, sections of blocks (text, bullet list, Table, image), and its two
renderings: report.md and the self-contained index.html always show the same thing."""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import markupsafe
import pandas as pd

from .table import Table, collapsed_note

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


def table(t: Table) -> Block:
    return Block("table", table=t)


def images(paths: list[Path], root: Path, caption) -> list[Block]:
    return [Block("image", path=str(p.relative_to(root)), caption=caption(p)) for p in paths]


def footnote(df: pd.DataFrame, ds: str) -> list[Block]:
    """The dagger's footnote under a table, when a run of the dataset collapsed."""
    note = collapsed_note(df, ds)
    return [text(note, note=True)] if note else []


def finish(sections: list[Section]) -> list[Section]:
    """Sections and subsections with something to show, each with a unique anchor."""
    sections = [s for s in sections if s.blocks or s.subsections]
    for s in sections:
        s.subsections = [t for t in s.subsections if t.blocks]
    seen: set[str] = set()
    for s in [x for sec in sections for x in (sec, *sec.subsections)]:
        base = re.sub(r"[^a-z0-9]+", "-", s.title.lower()).strip("-") or "section"
        s.anchor, i = base, 1
        while s.anchor in seen:
            i += 1
            s.anchor = f"{base}-{i}"
        seen.add(s.anchor)
    return sections


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
