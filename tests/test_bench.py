"""python -m suite.bench: its CLI, the side-by-side timing, the per-kernel table, the targets, the
peers' absence, the inference model, and (slow) one tiny run end to end."""
from __future__ import annotations

import json

import pytest
import torch

from suite import latency
from suite.bench import __main__ as cli
from suite.bench import inference, kernels, peers, race, targets


def test_cli_defaults_and_a_removed_flag_is_an_error():
    args = cli.parser().parse_args([])
    assert (args.rounds, args.steps, args.samples, args.threads, args.isolation) == (15, 15, 1, None, False)
    assert args.json == "bench_results/bench.json"
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["--batched-seeds"])


def test_race_interleaves_rounds_and_reports_each_contenders_median(monkeypatch):
    """A fake clock that each contender advances by its own durations: the medians are known by hand,
    and the call order shows the rounds interleave after the warm-up."""
    clock, calls = [0.0], []
    durations = {"a": iter([9, 0.001, 0.003, 0.002, 0.010]), "b": iter([9, 0.005, 0.004, 0.006, 0.020])}  # warm-up first

    def contender(name):
        def fn():
            calls.append(name)
            clock[0] += next(durations[name])
        return fn
    monkeypatch.setattr(race.time, "perf_counter", lambda: clock[0])
    ms = race.race({"a": contender("a"), "b": contender("b")}, rounds=2, steps=2, warmup=1)
    assert calls == ["a", "b", "a", "a", "b", "b", "a", "a", "b", "b"]
    assert ms["a"] == pytest.approx(1000 * (0.002 + 0.003) / 2)  # median of 1, 3, 2, 10 ms
    assert ms["b"] == pytest.approx(1000 * (0.005 + 0.006) / 2)  # median of 4, 5, 6, 20 ms


def test_breakdown_covers_each_method_and_its_parts_add_up_to_the_step():
    """One round of the per-kernel table on random data: every method's kernels plus "other" add up
    to its step, shares are of the step, and the exp pass is the unit."""
    torch.manual_seed(0)
    x, y = torch.rand(300, 784), torch.randint(0, 10, (300,))
    bd = kernels.breakdown(x, y, rounds=1, steps=2)
    assert set(bd["BBB"]) == {"noise", "sample+KL fwd", "sample+KL bwd", "matmuls fwd", "matmuls bwd",
                              "optimizer", "other", "step"}
    assert set(bd["Sparse VD"]) == {"terms fwd", "terms bwd", "matmuls fwd", "matmuls bwd", "optimizer", "other", "step"}
    assert set(bd["SGD"]) == {"matmuls fwd", "matmuls bwd", "optimizer", "other", "step"}
    exp_ms = bd["ref"]["exp pass"]["ms"]
    for method in ("SGD", "BBB", "Sparse VD"):
        parts = bd[method]
        assert abs(sum(v["ms"] for k, v in parts.items() if k != "step") - parts["step"]["ms"]) < 1e-9
        for v in parts.values():
            assert v["share"] == pytest.approx(v["ms"] / parts["step"]["ms"])
            assert v["x_exp"] == pytest.approx(v["ms"] / exp_ms)
    assert bd["ref"]["exp pass"]["x_exp"] == 1.0 and bd["ref"]["log pass"]["share"] is None


def test_only_elementwise_kernels_above_the_threshold_are_flagged():
    row = lambda x: {"ms": x, "share": None, "x_exp": x}  # noqa: E731
    bd = {"BBB": {"noise": row(8.5), "sample+KL fwd": row(7.9), "matmuls fwd": row(30.0), "other": row(12.0),
                  "step": row(60.0)}}
    assert kernels.flagged(bd) == ["BBB/noise"]


def test_speed_targets_are_checked_by_hand_values_and_skip_unmeasured_peers():
    t = targets.speed_targets({"ours SGD": 1.0, "ours BBB (1 sample)": 1.9, "ours Sparse VD": 2.6,
                               "BLiTZ BBB (1 sample)": 7.0}, 1)
    assert [(d["name"], d["met"]) for d in t] == [("ours BBB / ours SGD", True), ("ours Sparse VD / ours SGD", False),
                                                  ("BLiTZ BBB / ours BBB", False)]
    assert t[2]["value"] == pytest.approx(7.0 / 1.9)
    t2 = targets.speed_targets({"ours SGD": 2.0, "ours BBB (2 sample)": 4.0, "ours Sparse VD": 5.0,
                                "bayesian-torch BBB (2 sample)": 10.0}, 2)
    assert [(d["name"], d["value"], d["met"]) for d in t2][-1] == ("bayesian-torch BBB / ours BBB", 2.5, True)


def test_missing_peers_are_named_with_the_install_command(monkeypatch):
    monkeypatch.setattr(peers.importlib.util, "find_spec", lambda name: None)
    assert set(peers.missing_peers()) == {"BLiTZ", "bayesian-torch"}
    steps, missing = peers.peer_steps(lambda: None, 1)
    assert steps == {}
    assert len(missing) == 2 and all(".[bench]" in line for line in missing)
    assert missing[0].startswith("BLiTZ BBB (1 sample): blitz-bayesian-pytorch is not installed")


def test_the_inference_model_is_pruned_to_exactly_90_percent_of_its_weights():
    model = inference.pruned_mlp()
    weights = model.theta.detach()[model.weight_entries()]
    assert int((weights == 0).sum()) == round(0.9 * weights.numel())


@pytest.mark.timeout(120)
def test_measure_without_the_lock_does_not_wait_for_it():
    """While this process holds the node's latency lock, measure(lock=False) still completes (with
    the lock it would wait for itself: flock locks belong to each open file)."""
    with latency.exclusive():
        m, info = latency.measure(inference.pruned_mlp(), torch.rand(1000, 784), "p90", lock=False)
    assert set(info) == {f"sparse_format_b{b}_p90" for b in latency.BATCHES}
    assert all(m[f"latency_sparse_b{b}_ms_p90"] > 0 for b in latency.BATCHES)


@pytest.mark.slow
def test_a_tiny_run_writes_every_section_of_the_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli.main(["--rounds", "1", "--steps", "1", "--threads", "1", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert {"train_ms_per_step", "kernel_breakdown", "flagged_kernels", "targets", "inference_p90",
            "latency_isolation", "cpu_model", "vector_isa", "avx512f", "cores", "threads", "denormals_flushed",
            "load_average", "samples", "torch", "not_measured"} <= set(d)
    assert {"ours SGD", "ours BBB (1 sample)", "ours BBB eager (1 sample)", "ours Sparse VD",
            "plain SGD (tensor loop)", "plain SGD (DataLoader)",
            "tutorial BBB (DataLoader, 1 sample)"} <= set(d["train_ms_per_step"])
    measured_peers = [k for k in d["train_ms_per_step"] if k.startswith(("BLiTZ", "bayesian-torch"))]
    assert len(measured_peers) + len(d["not_measured"]) == 2  # each peer is measured or says why not
    assert d["threads"] == 1 and d["samples"] == 1
    printed = capsys.readouterr().out
    assert "RATIOS: ours BBB / ours SGD = " in printed
