"""Subnormals flushed to zero in processes that train (suite/fpmode.py): every thread of torch's
pool flushes when it is set first, and the check reports it when the pool started earlier."""
import subprocess
import sys


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_flush_set_first_reaches_every_thread_of_the_pool():
    code = ("import torch; from suite.fpmode import flush_denormals; torch.set_num_threads(2); ok = flush_denormals(); "
            "x = torch.full((1 << 21,), 1e-30) * 1e-10; print(ok, int((x != 0).sum()))")
    assert _run(code) == "True 0"


def test_a_pool_started_before_is_reported_not_assumed():
    code = ("import torch; torch.set_num_threads(2); (torch.rand(1 << 21) * 2).sum(); "
            "from suite.fpmode import flush_denormals; print(flush_denormals())")
    assert _run(code) == "False"
