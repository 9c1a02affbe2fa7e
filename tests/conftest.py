"""Shared fixtures: real datasets (fetched and verified once into the user cache), tiny configs."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# subprocesses (CLI tests, Ray workers) import this checkout's suite, not whatever copy is installed
_ROOT = str(Path(__file__).resolve().parent.parent)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p)


@pytest.fixture(scope="session")
def mnist():
    from suite.data import load_arrays
    return load_arrays("mnist")


@pytest.fixture(scope="session")
def fmnist():
    from suite.data import load_arrays
    return load_arrays("fmnist")
