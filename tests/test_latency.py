import multiprocessing as mp
import time

import pytest
import torch

from suite import latency, prune
from suite.config import TrialConfig
from suite.methods import build


def pruned(method: str, p: float):
    torch.manual_seed(0)
    m = build(TrialConfig(method=method, hidden=(64, 32), compile=False)).eval()
    keep, _ = prune.keep_mask(prune.scores(m, "magnitude", 0), prune.prunable(m, False), p, "global", m)
    return prune.pruned_copy(m, keep)


def test_sparse_kernels_match_dense_and_sizes_count_what_is_stored():
    m = pruned("sgd", 0.9)
    x = torch.rand(1000, 784)
    for make in (latency._torch_csr, latency._scipy_csr):
        fwd, size = make(m)
        torch.testing.assert_close(fwd(x), m(x), rtol=1e-4, atol=1e-4)
        nnz = sum(int((w != 0).sum()) for w, _ in latency._layers(m))
        rows = sum(w.shape[0] + 1 for w, _ in latency._layers(m))
        biases = sum(b.numel() for _, b in latency._layers(m))
        assert size == 4 * nnz + 4 * nnz + 4 * rows + 4 * biases  # float32 values, int32 columns and row pointers


def test_measure_reports_every_metric_and_bbb_ensemble():
    out, info = latency.measure(pruned("bbb", 0.5), torch.rand(1000, 784), "p50", mc_samples=2)
    for b in (1, 1000):
        for kind in ("dense", "sparse", "mc"):
            assert out[f"latency_{kind}_b{b}_ms_p50"] > 0
        assert info[f"sparse_format_b{b}_p50"] in ("torch_csr", "scipy_csr")
    assert out["size_csr_bytes_p50"] < out["size_dense_bytes_p50"] * 1.1


def _hold(path, seconds, started):
    with latency.exclusive(path):
        started.set()
        time.sleep(seconds)


@pytest.mark.timeout(300)
def test_latency_phases_take_turns(tmp_path):
    """A second process cannot start timing while another holds the node's latency lock."""
    lock = tmp_path / "lat.lock"
    ctx = mp.get_context("spawn")
    started = ctx.Event()
    p = ctx.Process(target=_hold, args=(lock, 1.5, started))
    p.start()
    assert started.wait(60)
    t0 = time.perf_counter()
    with latency.exclusive(lock):
        waited = time.perf_counter() - t0
    p.join()
    assert waited > 1.0
