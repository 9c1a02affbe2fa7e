"""Build hook: a wheel or sdist built from a git clone records the commit it was built from.

pyproject.toml holds all the metadata; this file only adds two commands. `build_py` (run for every wheel,
so for `pip install .`) writes suite/_build_commit.py into the build folder, never into the source tree;
`sdist` writes it into the archive's tree, so a wheel later built from that sdist (no .git) still knows the
commit. The file holds COMMIT (`git rev-parse HEAD`) and DIRTY (tracked files differed from HEAD:
`git status --porcelain --untracked-files=no` printed something). Git is asked only when this folder is the
top of its own clone (an sdist unpacked inside some other repository must not take that repository's
commit); without git, or outside a clone, nothing is written and `suite.build_commit()` says the commit is
unknown.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
MODULE = Path("suite") / "_build_commit.py"
TEMPLATE = ('"""Written by setup.py when this package was built: the git commit of the clone it was built from."""\n'
            "COMMIT = {commit!r}\nDIRTY = {dirty!r}\n")


def git_state(root: Path = ROOT) -> tuple[str, bool] | None:
    """(HEAD's commit, tracked files changed) of the clone whose top folder is `root`, else None."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60,
                              check=True).stdout.strip()
    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root.resolve():
            return None
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit, dirty) if len(commit) == 40 else None


def write_record(folder: Path) -> None:
    """folder/suite/_build_commit.py from git, if this source tree is a clone; else leave what is there
    (an sdist's record) or nothing."""
    state = git_state()
    if state is not None:
        path = folder / MODULE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # an sdist's tree hard-links the sources: never write through into them
        path.write_text(TEMPLATE.format(commit=state[0], dirty=state[1]))


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:  # an editable install imports the checkout, which asks git itself
            write_record(Path(self.build_lib))


class Sdist(sdist):
    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        write_record(Path(base_dir))


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist})
