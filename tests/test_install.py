"""The wheel users get from `pip install .` works without the checkout.

Checks: the wheel builds from a copy of the source tree; it holds the package data (grids, search
spaces, report templates and reference numbers) and no top-level `analysis` or `tests` package; installed
without -e into a folder of its own and run from an empty folder, its copy of `suite` is the one
imported (not the checkout, not an editable install's finder), `suite.run --grid smoke --dry-run`
lists the smoke grid's 3 trials (SGD, Dropout 0.5, BBB), `suite.search --space bbb --dry-run` its 40
recipes, and the report CLI starts. The commit a wheel was built from: a wheel built from a git clone (and a
wheel built from an sdist of that clone, no .git) reports the clone's HEAD and whether tracked files were
changed, checked against `git rev-parse HEAD` of a repository made here; a wheel built from a tree without
.git says the commit is unknown; the checkout itself reports its HEAD.
Does not check: dependency resolution (the wheel is installed with --no-deps and borrows this
environment's torch, Ray, MLflow; a fresh venv with dependencies takes minutes and a network), other
Python versions or platforms.
"""
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^\s*\d+ [0-9a-f]{16} ", re.MULTILINE)  # a dry-run table row: index, grid_key


def run(args, cwd, env=None, timeout=300):
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{args}\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel path, site folder, environment that imports only from it, an empty working folder)."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"  # a copy, so the build leaves no build/ or egg-info in the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info",
                                                               "__pycache__", "results", "mlruns", "ray_results"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", str(src),
         "-w", str(tmp / "dist")], tmp)
    (wheel,) = (tmp / "dist").glob("bayes_prune_bench-*.whl")
    site = tmp / "site"
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], tmp)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "BPB_PLUGINS")}
    env.update(PYTHONPATH=str(site), PYTHONNOUSERSITE="1", RAY_USAGE_STATS_ENABLED="0")
    work = tmp / "work"
    work.mkdir()
    return wheel, site, env, work


@pytest.mark.slow
def test_wheel_holds_the_package_data_and_no_stray_packages(installed):
    wheel = installed[0]
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"suite"}, top
    for data in ("suite/grids/smoke.yaml", "suite/grids/search/bbb.yaml"):
        assert data in names, data
    assert any(n.startswith("suite/analysis/templates/") for n in names)
    assert any(n.startswith("suite/analysis/reference/") and n.endswith(".csv") for n in names)
    assert re.search(r"^Requires-Dist: torch", meta, re.MULTILINE)


@pytest.mark.slow
def test_installed_wheel_runs_the_clis_from_any_folder(installed):
    _, site, env, work = installed
    where = run([sys.executable, "-c", "import suite; print(suite.__file__)"], work, env).strip()
    assert Path(where).resolve().is_relative_to(site.resolve()), where

    out = run([sys.executable, "-m", "suite.run", "--grid", "smoke", "--dry-run"], work, env)
    rows = ROW.findall(out)
    assert len(rows) == 3 and "3 trials" in out, out
    table = out.splitlines()
    for label in ("SGD", "Dropout 0.5", "BBB"):
        assert any(ROW.match(line) and f" {label} " in line for line in table), (label, out)

    out = run([sys.executable, "-m", "suite.search", "--space", "bbb", "--dry-run"], work, env)
    assert len(ROW.findall(out)) == 40 and "40 distinct recipes" in out, out

    assert "--experiment" in run([sys.executable, "-m", "suite.analysis.report", "--help"], work, env)
    assert sorted(p.name for p in work.iterdir()) == []  # a dry run writes nothing where it is run


COMMIT = "import suite; print(suite.build_commit(), suite.build_dirty())"
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false"]


def wheel_commit(src: Path, tmp: Path, name: str) -> str:
    """Build a wheel of `src` (pip, as `pip install .` does), install it alone into a folder and ask it,
    from an empty folder, for the commit it was built from: "COMMIT DIRTY"."""
    dist, site, work = tmp / f"{name}-dist", tmp / f"{name}-site", tmp / f"{name}-work"
    work.mkdir()
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", str(src), "-w", str(dist)], tmp)
    (wheel,) = dist.glob("bayes_prune_bench-*.whl")
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], tmp)
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE")}
    env.update(PYTHONPATH=str(site), PYTHONNOUSERSITE="1")
    return run([sys.executable, "-c", COMMIT], work, env).strip()


@pytest.mark.slow
def test_a_wheel_built_without_git_says_its_commit_is_unknown(installed):
    _, _, env, work = installed   # built from a copy of the tree without .git
    import suite
    assert run([sys.executable, "-c", COMMIT], work, env).strip() == f"{suite.UNKNOWN_COMMIT} None"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_wheel_built_from_a_clone_knows_its_commit(tmp_path):
    src = tmp_path / "clone"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info",
                                                               "__pycache__", "results", "mlruns", "ray_results",
                                                               "_build_commit.py"))
    run(["git", "init", "-q"], src)
    run(["git", "add", "-A"], src)
    run([*GIT, "commit", "-q", "-m", "snapshot"], src)
    head = run(["git", "rev-parse", "HEAD"], src).strip()
    assert re.fullmatch(r"[0-9a-f]{40}", head)
    assert wheel_commit(src, tmp_path, "clean") == f"{head} False"
    assert not (src / "suite" / "_build_commit.py").exists()  # the record goes into the build, not the sources

    # an sdist carries the record to a wheel built where there is no .git
    run([sys.executable, "-c", "from setuptools import build_meta; build_meta.build_sdist('sdist')"], src)
    (tarball,) = (src / "sdist").glob("*.tar.gz")
    unpacked = tmp_path / "unpacked"
    shutil.unpack_archive(tarball, unpacked)
    (tree,) = unpacked.iterdir()
    assert not (tree / ".git").exists()
    assert wheel_commit(tree, tmp_path, "sdist") == f"{head} False"

    with open(src / "README.md", "a") as f:   # a tracked file changed since HEAD
        f.write("\nedited\n")
    assert wheel_commit(src, tmp_path, "dirty") == f"{head} True"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_checkout_reports_its_head():
    import suite
    r = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0 or Path(r.stdout.split()[0]).resolve() != ROOT:
        pytest.skip("not run from a git clone")
    assert suite.build_commit() == r.stdout.split()[1]
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True)
    assert suite.build_dirty() is bool(dirty.stdout.strip())
