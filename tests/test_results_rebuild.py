"""The committed results rebuild from their runs files, and the prose quotes only what they rebuild.

Each results/<grid>/ that holds a runs file shows in its README the command that rebuilds its report;
run into a temporary folder, it must give the committed report.md and tables/*.csv byte for byte.
Every `mean ± std` figure in the README and the results READMEs, outside the generated table blocks
(test_quote checks those) and quotes of other texts (`>` lines), must be a figure of one of the
rebuilt reports: a number typed by hand that the data does not hold fails here.
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_docs import commands_in

ROOT = Path(__file__).resolve().parent.parent
GRIDS = sorted(p.parent for p in ROOT.glob("results/*/runs.parquet"))
FIGURE = re.compile(r"(\d+\.\d+)\s*±\s*(\d+\.\d+)")
BLOCK = re.compile(r"^<!-- table: .*?^<!-- end table -->$", re.S | re.M)

pytestmark = pytest.mark.slow


def rebuild_command(folder: Path) -> list[str]:
    runs = (folder / "runs.parquet").relative_to(ROOT).as_posix()
    found = [argv for argv in commands_in((folder / "README.md").read_text())
             if argv[:3] == ["python", "-m", "suite.analysis.report"] and argv[argv.index("--runs") + 1] == runs]
    assert found, f"{folder.relative_to(ROOT)}/README.md shows no `python -m suite.analysis.report --runs {runs}`"
    return found[0]


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory) -> dict[Path, Path]:
    out = {}
    for folder in GRIDS:
        argv = rebuild_command(folder)
        target = tmp_path_factory.mktemp(folder.name)
        argv[argv.index("--out") + 1] = str(target)
        subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, check=True, capture_output=True)
        out[folder] = target
    return out


def test_every_results_folder_with_a_runs_file_is_checked():
    assert {p.name for p in GRIDS} >= {"full", "lenet", "scaling", "tuned"}


@pytest.mark.parametrize("folder", GRIDS, ids=[p.name for p in GRIDS])
def test_the_report_rebuilds_byte_for_byte(folder, rebuilt):
    new = rebuilt[folder]
    assert (new / "report.md").read_text() == (folder / "report.md").read_text()
    committed = sorted(p.name for p in (folder / "tables").glob("*.csv"))
    assert committed == sorted(p.name for p in (new / "tables").glob("*.csv"))
    for name in committed:
        assert (new / "tables" / name).read_text() == (folder / "tables" / name).read_text(), name


def prose(text: str) -> str:
    text = BLOCK.sub("", text)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(">"))


def test_the_figure_pattern_reads_wrapped_figures():
    assert FIGURE.findall("at 0.9813 ±\n  0.0002 and 11.84 ± 0.11 %") == [("0.9813", "0.0002"), ("11.84", "0.11")]


def test_the_readmes_quote_only_figures_the_reports_rebuild(rebuilt):
    known = set()
    for new in rebuilt.values():
        for f in [new / "report.md", *(new / "tables").glob("*.csv")]:
            known |= set(FIGURE.findall(f.read_text()))
    unknown = []
    for readme in [ROOT / "README.md", *sorted(ROOT.glob("results/*/README.md"))]:
        for mean, std in FIGURE.findall(prose(readme.read_text())):
            if (mean, std) not in known:
                unknown.append(f"{readme.relative_to(ROOT)}: {mean} ± {std}")
    assert not unknown, "figures no rebuilt report holds:\n" + "\n".join(unknown)
