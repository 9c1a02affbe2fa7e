import multiprocessing as mp
import time

import pytest
import torch

from suite import prune
from suite.config import TrialConfig
from suite.evaluate import latency
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


def test_forwards_are_timed_side_by_side_in_rotated_order(monkeypatch):
    """Every round calls each forward once, after each forward's warm-up; round r starts at the (r mod n)-th."""
    calls = []
    clock = iter(range(10**6))
    monkeypatch.setattr(latency.time, "perf_counter", lambda: next(clock) * 1e-3)  # 1 ms per reading
    fns = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    times = latency.round_times_ms(fns, torch.device("cpu"), budget_s=0.0, min_reps=4, warmup=2)
    assert "".join(calls) == "aabbcc" + "abc" + "bca" + "cab" + "abc"
    assert times == {k: pytest.approx([1.0] * 4) for k in "abc"}  # two clock readings per call, 1 ms apart
    assert latency.medians_ms(fns, torch.device("cpu"), budget_s=0.0, min_reps=4, warmup=0) == pytest.approx(
        {k: 1.0 for k in "abc"})


def test_ratio_statistics_are_per_round_median_and_quartiles():
    # per-round ratios 2, 4, 6, 10; numpy's linear interpolation: q25 at position 0.75 -> 2 + 0.75 * 2 = 3.5,
    # median at 1.5 -> 5, q75 at 2.25 -> 6 + 0.25 * 4 = 7 (the ratio of the medians would be 7 / 1.5 = 4.67)
    assert latency.ratio_quartiles([4, 8, 6, 10], [2, 2, 1, 1]) == pytest.approx((5.0, 3.5, 7.0))


def test_measure_logs_per_round_speedups_of_the_fastest_kernel(monkeypatch):
    """Injected per-round times: torch CSR has the lower median (1.5 ms vs scipy's 3), so the sparse
    speed-up is dense / torch CSR per round: 2, 4, 6, 10. Compacted: the gather's median 2 beats the
    window's 3, so its rounds 4, 4, 3, 5 count -> sorted 3, 4, 4, 5: median 4, q25 3 + 0.75 = 3.75,
    q75 4 + 0.25 = 4.25."""
    rounds = {"dense": [4, 8, 6, 10], "sparse/torch_csr": [2, 2, 1, 1], "sparse/scipy_csr": [3, 3, 3, 3],
              "compact/window": [3, 3, 3, 3], "compact/gather": [1, 2, 2, 2]}
    monkeypatch.setattr(latency, "round_times_ms", lambda fns, device, **kw: {k: rounds[k] for k in fns})
    m = pruned("sgd", 0.9)
    out, info = latency.measure(m, torch.rand(1000, 784), "p90", others={"compact": {"window": m.forward, "gather": m.forward}})
    for b in (1, 1000):
        assert info[f"sparse_format_b{b}_p90"] == "torch_csr" and info[f"compact_format_b{b}_p90"] == "gather"
        assert out[f"latency_dense_b{b}_ms_p90"] == 7 and out[f"latency_sparse_b{b}_ms_p90"] == 1.5
        assert out[f"latency_compact_b{b}_ms_p90"] == 2 and out[f"latency_rounds_b{b}_p90"] == 4
        speedups = {k + q: out[f"latency_speedup_{k}_b{b}{q}_p90"] for k in ("sparse", "compact") for q in ("", "_q25", "_q75")}
        assert speedups == pytest.approx({"sparse": 5.0, "sparse_q25": 3.5, "sparse_q75": 7.0}
                                         | {"compact": 4.0, "compact_q25": 3.75, "compact_q75": 4.25})


def test_dense_forward_is_timed_on_weights_computed_before_the_timing(monkeypatch):
    """L0's point weights are theta times a gate computed from log alpha; a deployed dense net
    stores them, so no timed forward may compute them again (at batch 1 that was most of the call)."""
    m = pruned("l0", 0.5)
    state = {"timing": False, "computed_while_timing": 0}
    point_weights = type(m).point_weights

    def counted(self):
        state["computed_while_timing"] += state["timing"]
        return point_weights(self)

    def timing(fns, device, **kw):
        state["timing"] = True
        try:
            return round_times_ms(fns, device, **kw)
        finally:
            state["timing"] = False

    round_times_ms = latency.round_times_ms
    monkeypatch.setattr(type(m), "point_weights", counted)
    monkeypatch.setattr(latency, "round_times_ms", timing)
    out, _ = latency.measure(m, torch.rand(1000, 784), "p50")
    assert out["latency_dense_b1_ms_p50"] > 0
    assert state["computed_while_timing"] == 0


def test_other_forwards_are_timed_beside_dense_only_if_they_agree_with_it():
    m = pruned("sgd", 0.9)
    x = torch.rand(1000, 784)
    out, _ = latency.measure(m, x, "p90", others={"same": {"only": m.forward}})
    assert out["latency_same_b1000_ms_p90"] > 0 and out["latency_same_b1_ms_p90"] > 0
    with pytest.raises(AssertionError):
        latency.measure(m, x, "p90", others={"off": {"only": lambda xb: m(xb) + 1e-2}})


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
