"""bayes-prune-bench: do Bayes-by-Backprop networks survive unstructured pruning better than SGD and Dropout?"""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__version__ = "0.1.0"

UNKNOWN_COMMIT = "unknown (not built from a git clone)"
_CHECKOUT = Path(__file__).resolve().parent.parent


def _checkout_state() -> tuple[str, bool] | None:
    """(HEAD, tracked files changed) when this package is imported from a git clone's top folder (a
    checkout, an editable install), else None (an installed wheel: site-packages is no clone's top)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=_CHECKOUT, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != _CHECKOUT:
            return None
        commit = git("rev-parse", "HEAD")
        return (commit, bool(git("status", "--porcelain", "--untracked-files=no"))) if len(commit) == 40 else None
    except (OSError, subprocess.SubprocessError):
        return None


@functools.cache  # once per process: the commit and the dirty flag of one moment, and git asked once
def _state() -> tuple[str, bool | None]:
    live = _checkout_state()
    if live is not None:
        return live
    try:  # written by setup.py's build hook into a wheel (or sdist) built from a clone; never in git
        from . import _build_commit
    except ImportError:
        return UNKNOWN_COMMIT, None
    return str(_build_commit.COMMIT), bool(_build_commit.DIRTY)


def build_commit() -> str:
    """The git commit of the code being run: HEAD of the checkout it is imported from, else the commit the
    installed package was built from (recorded by setup.py), else UNKNOWN_COMMIT (built from an archive
    without .git)."""
    return _state()[0]


def build_dirty() -> bool | None:
    """Whether tracked files differed from that commit (in the checkout now, or when the package was
    built); None when the commit is unknown."""
    return _state()[1]
