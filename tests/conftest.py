"""Shared fixtures: real datasets (fetched and verified once into the user cache), tiny configs."""
import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def mnist():
    from suite.data import load_arrays
    return load_arrays("mnist")


@pytest.fixture(scope="session")
def fmnist():
    from suite.data import load_arrays
    return load_arrays("fmnist")
