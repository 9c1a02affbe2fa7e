"""The README and the docs site cannot rot: every `python -m suite.…` command they show is run.

Commands are the lines of fenced code blocks that start with `python -m suite.` (a line continuing
another command, e.g. inside `ray job submit ... \\`, is part of that command, not one of its own).
Each runs from an empty folder against an empty MLflow store, cut down so it finishes in seconds:
grids and searches with `--dry-run` (a grid file named by path is the repository's), one trial
with tiny sizes, the report against a store that lacks the experiment or a runs file that is not
there (it must fail with its own one-line error, which it reaches only after its flags parsed; so
must runs-file export / import, the model export and the re-evaluation, which need a store or a
file with runs), the
bench with `--help` (every flag shown must be one it lists).
"""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CLIS = {"suite.run", "suite.search", "suite.trial", "suite.analysis.report", "suite.analysis.results", "suite.export",
        "suite.evaluate", "suite.bench", "suite.config", "suite.analysis.quote"}
TINY_TRIAL = ["--epochs", "1", "--train-subset", "2000", "--hidden", "32", "--compile", "false",
              "--sparsities", "0,0.5", "--test-samples", "2"]


def commands_in(text: str) -> list[list[str]]:
    """argv of every command starting with `python -m suite.` in the fenced code blocks of a page."""
    found, fenced, logical = [], False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced, logical = not fenced, ""
        elif fenced:
            logical += line.rstrip().removesuffix("\\") + " "
            if not line.rstrip().endswith("\\"):
                if logical.strip().startswith("python -m suite."):
                    found.append(shlex.split(logical, comments=True))
                logical = ""
    return found


def documented() -> list[tuple[str, list[str]]]:
    seen, out = set(), []
    for page in PAGES:
        for argv in commands_in(page.read_text()):
            if tuple(argv) not in seen:
                seen.add(tuple(argv))
                out.append((page.relative_to(ROOT).as_posix(), argv))
    return out


def test_extraction_finds_the_documented_commands():
    readme = [" ".join(a) for a in commands_in((ROOT / "README.md").read_text())]
    assert "python -m suite.run --grid full" in readme
    assert "python -m suite.search --space bbb --samples 8 --max-epochs 10 --dry-run" in readme
    # a continued `ray job submit ... python -m suite.run ...` is not a command of its own
    block = "```bash\nray job submit -- \\\n    python -m suite.run --grid full --address auto\nx\n```"
    assert commands_in(block) == []
    block = "```bash\npython -m suite.run --grid full \\\n    --dry-run   # note\n```"
    assert commands_in(block) == [["python", "-m", "suite.run", "--grid", "full", "--dry-run"]]
    modules = {argv[2] for _, argv in documented()}
    assert modules == CLIS, "every CLI is shown somewhere, and nothing else is run as `python -m suite.`"


def test_the_field_table_page_holds_the_generated_table():
    from suite.config import field_table
    assert field_table() in (ROOT / "docs" / "fields.md").read_text(), (
        "docs/fields.md is out of date: paste the output of `python -m suite.config` into it")


def test_readme_is_short_and_its_links_exist():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    targets = re.findall(r"\]\(([^)#\s]+)", text)
    assert targets
    missing = [t for t in targets if "://" not in t and not (ROOT / t).exists()]
    assert not missing


def test_the_grid_table_counts_every_shipped_grid():
    """docs/grids.md's trial counts are the expansions of the grid files, and every grid is listed."""
    from suite.config import load_grid
    rows = dict(re.findall(r"^\| `([\w-]+)` \| (\d+) \|", (ROOT / "docs" / "grids.md").read_text(), re.M))
    shipped = {p.stem for p in (ROOT / "suite" / "grids").glob("*.yaml")}
    assert set(rows) == shipped
    assert {g: len(load_grid(g).trials) for g in shipped} == {g: int(n) for g, n in rows.items()}


def test_every_page_is_in_the_site_navigation():
    nav = set(re.findall(r":\s*([\w-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M))
    assert {p.name for p in PAGES[1:]} <= nav


def _run(argv, cwd, env_uri, timeout=600):
    env = {**os.environ, "MLFLOW_TRACKING_URI": env_uri}
    return subprocess.run([sys.executable, *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _with_value(argv, flag, value):
    """argv with `flag`'s value replaced by value (the flag added if absent)."""
    if flag in argv:
        i = argv.index(flag)
        return [*argv[:i + 1], value, *argv[i + 2:]]
    return [*argv, flag, value]


@pytest.mark.slow
@pytest.mark.parametrize("page,argv", documented(), ids=[" ".join(a) for _, a in documented()])
def test_documented_command_runs(page, argv, tmp_path):
    module, uri = argv[2], f"sqlite:///{tmp_path / 'mlflow.db'}"
    if module in ("suite.run", "suite.search"):
        if "--export-grid" in argv:
            argv = _with_value(argv, "--export-grid", str(tmp_path / "exported.yaml"))
        if "--grid" in argv and argv[argv.index("--grid") + 1].endswith(".yaml"):   # a grid file in the repository
            argv = _with_value(argv, "--grid", str(ROOT / argv[argv.index("--grid") + 1]))
        r = _run(argv if "--dry-run" in argv else [*argv, "--dry-run"], tmp_path, uri)
        assert r.returncode == 0, f"{page}: {' '.join(argv)}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        assert " pending" in r.stdout, "the dry run lists the expanded points, none finished in an empty store"
    elif module == "suite.trial":
        argv = _with_value(argv, "--json", str(tmp_path / "out.json"))
        r = _run([*argv, *TINY_TRIAL], tmp_path, uri)
        assert r.returncode == 0, f"{page}: {' '.join(argv)}\n{r.stderr[-3000:]}"
        assert "test_acc_p00" in json.loads((tmp_path / "out.json").read_text())["metrics"]
    elif module == "suite.analysis.report":
        r = _run(argv, tmp_path, uri)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
        expected = "error: no runs file" if "--runs" in argv else "error: no MLflow store"  # a reader creates none
        assert expected in r.stderr, f"{page}: flags did not parse\n{r.stderr[-2000:]}"
        assert not (tmp_path / "mlflow.db").exists()
    elif module in ("suite.analysis.results", "suite.export", "suite.evaluate"):
        r = _run(argv, tmp_path, uri)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
        assert r.stderr.startswith("error: no "), f"{page}: flags did not parse\n{r.stderr[-2000:]}"
    elif module == "suite.analysis.quote":   # on the repository's own files, so never with --write
        r = _run(["--check" if a == "--write" else a for a in argv], ROOT, uri)
        assert r.returncode == 0, f"{page}: {' '.join(argv)}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    elif module == "suite.bench":
        r = _run([*argv[:3], "--help"], tmp_path, uri)
        assert r.returncode == 0, r.stderr[-3000:]
        unknown = [a for a in argv[3:] if a.startswith("--") and not re.search(rf"{re.escape(a)}\b", r.stdout)]
        assert not unknown, f"{page}: flags suite.bench does not have: {unknown}"
    else:
        r = _run(argv, tmp_path, uri)
        assert r.returncode == 0 and "| field |" in r.stdout, r.stderr[-3000:]
