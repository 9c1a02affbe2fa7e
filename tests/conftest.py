"""Shared fixtures: real datasets (fetched and verified once into the user cache), tiny configs, and
torch's process-wide state restored after every test."""
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# subprocesses (CLI tests, Ray workers) import this checkout's suite, not whatever copy is installed
_ROOT = str(Path(__file__).resolve().parent.parent)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p)


def _flushes_denormals() -> bool:
    """Whether this thread flushes subnormals (torch has a setter only); a 1-element op runs here."""
    return bool(torch.tensor([1e-30]) * 1e-10 == 0)


@pytest.fixture(autouse=True)
def _restore_torch_state():
    """A test may set threads (one-thread reductions), the default dtype, the global RNG (seeding)
    or flush-to-zero (run_trial's CLI path); each is put back so that the order of tests does not
    change what a test sees."""
    threads, dtype, rng, flush = torch.get_num_threads(), torch.get_default_dtype(), torch.get_rng_state(), _flushes_denormals()
    yield
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
    torch.set_rng_state(rng)
    torch.set_flush_denormal(flush)


@pytest.fixture(scope="session")
def mnist():
    from suite.data import load_arrays
    return load_arrays("mnist")


@pytest.fixture(scope="session")
def fmnist():
    from suite.data import load_arrays
    return load_arrays("fmnist")
