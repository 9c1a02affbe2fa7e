"""python -m suite.bench: its CLI, the side-by-side timing, the per-kernel table, the targets, the
peers' absence, the inference model, and (slow) one tiny run end to end."""
from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from suite.bench import __main__ as cli
from suite.bench import inference, kernels, machine, peers, processes, race, targets, widths
from suite.config import GRID_DIR
from suite.evaluate import latency

# /proc/cpuinfo of a 2-core KVM guest (the machine of docs/performance.md), trimmed: two processors
XEON = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 207
model name\t: Intel(R) Xeon(R) Processor
stepping\t: 2
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_bf16 amx_tile amx_bf16 avx_vnni

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Some Other Processor
stepping\t: 8
flags\t\t: fpu sse2
"""
# an Arm core: no vendor_id / family / model name, features instead of flags
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes sve
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""


def test_cli_defaults_and_a_removed_flag_is_an_error():
    args = cli.parser().parse_args([])
    assert (args.rounds, args.steps, args.samples, args.threads, args.isolation, args.processes, args.widths) == (
        15, 15, 1, None, False, None, None)
    assert args.json == "bench_results/bench.json"
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["--batched-seeds"])


def test_processes_below_two_is_one_clear_error(capsys):
    assert cli.parser().parse_args(["--processes", "3"]).processes == 3
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["--processes", "1"])
    assert "--processes: 1: a range over processes needs at least 2" in capsys.readouterr().err


@pytest.mark.parametrize("value, message", [
    ("100,x", "--widths: 'x' is not a width: give positive integers separated by commas"),
    ("100,0", "--widths: '0' is not a width"),
    ("100,-5", "--widths: '-5' is not a width"),
    ("100,,400", "--widths: '' is not a width"),
    ("400,100,400", "--widths: 400,100,400: a width is repeated; give each width once"),
])
def test_a_bad_widths_value_is_one_clear_error(value, message, capsys):
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["--widths", value])
    assert message in capsys.readouterr().err


def test_widths_are_parsed_in_order_and_scaling_is_the_scaling_grids_widths(capsys):
    assert cli.parser().parse_args(["--widths", "1200, 100,400"]).widths == [1200, 100, 400]
    grid = yaml.safe_load((GRID_DIR / "scaling.yaml").read_text())["grid"]["hidden"]
    assert all(len(h) == 2 and h[0] == h[1] for h in grid)  # two hidden layers of one width
    assert cli.parser().parse_args(["--widths", "scaling"]).widths == sorted(h[0] for h in grid)
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["--widths", "100", "--processes", "2"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_the_widths_table_has_one_row_per_width_with_the_ratios_of_the_medians(monkeypatch):
    """Fake steps advance a fake clock by known durations per width and method; each row's ms are the
    medians of those durations and its ratios their quotients, worked out by hand below."""
    clock = [0.0]
    ms = {(7, "sgd"): [1.0, 3.0, 2.0, 1.5], (7, "bbb"): [2.0, 2.6, 9.0, 2.2], (7, "sparse_vd"): [3.1, 2.9, 3.3, 8.0],
          (30, "sgd"): [4.0, 4.4, 3.9, 20.0], (30, "bbb"): [13.0, 12.0, 11.0, 12.5],
          (30, "sparse_vd"): [15.0, 14.0, 16.0, 13.0]}

    def fake_ours(method, x, y, samples, hidden):
        assert samples == 1 and hidden[0] == hidden[1]
        durations = iter([0.0] * 10 + ms[hidden[0], method])  # the warm-up first

        def step():
            clock[0] += next(durations) / 1000
        return step
    monkeypatch.setattr(widths, "ours", fake_ours)
    monkeypatch.setattr(race.time, "perf_counter", lambda: clock[0])
    rows = widths.race_widths(None, None, [30, 7], rounds=2, steps=2, samples=1)
    assert [r["width"] for r in rows] == [30, 7]
    # medians of four: the mean of the middle two
    for r, (sgd, bbb, svd) in zip(rows, [(4.2, 12.25, 14.5), (1.75, 2.4, 3.2)]):
        assert (r["sgd_ms"], r["bbb_ms"], r["sparse_vd_ms"]) == pytest.approx((sgd, bbb, svd))
        assert r["bbb_over_sgd"] == pytest.approx(bbb / sgd) and r["sparse_vd_over_sgd"] == pytest.approx(svd / sgd)
    # 784-w-w-10 weights and biases, counted by hand
    assert [r["n_params"] for r in rows] == [784 * 30 + 30 + 30 * 30 + 30 + 30 * 10 + 10,
                                             784 * 7 + 7 + 7 * 7 + 7 + 7 * 10 + 10]


def test_cpuinfo_gives_the_first_processors_identity_and_its_vector_flags():
    cpu = machine.parse_cpuinfo(XEON)
    assert cpu == {"cpu_model": "Intel(R) Xeon(R) Processor", "cpu_vendor": "GenuineIntel", "cpu_family": 6,
                   "cpu_model_number": 207, "cpu_stepping": 2, "avx512f": True,
                   "cpu_flags": ["amx_bf16", "amx_tile", "avx512_bf16", "avx512bw", "avx512dq", "avx512f", "avx512vl"]}


def test_cpuinfo_of_other_platforms_degrades_to_unknown_fields():
    blank = {"cpu_model": "unknown", "cpu_vendor": None, "cpu_family": None, "cpu_model_number": None,
             "cpu_stepping": None, "avx512f": False, "cpu_flags": []}
    assert machine.parse_cpuinfo(ARM) == blank
    assert machine.parse_cpuinfo("") == blank


def test_machine_description_names_the_isas_compiler_and_torch():
    m = machine.describe(XEON)
    assert (m["cpu_family"], m["cpu_model_number"], m["cpu_stepping"]) == (6, 207, 2)
    assert m["vector_isa"] == torch.backends.cpu.get_cpu_capability() and m["torch"] == torch.__version__
    bits = {"AVX512": 512, "AVX2": 256}.get(m["vector_isa"])  # inductor follows torch's dispatch by default
    if bits is not None:
        assert m["inductor_vec_bits"] == bits and m["inductor_arch_flags"]
    assert m["cxx"] is None or m["cxx_version"]
    text = machine.header(m)
    assert "(GenuineIntel family 6 model 207 stepping 2)" in text and "amx_tile" in text
    assert "no AVX-512 / AMX" in machine.header({**m, "cpu_flags": []})


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


@pytest.mark.slow
def test_breakdown_times_every_kernel_of_each_method():
    """One round of the per-kernel table on random data (it compiles BBB's and Sparse VD's kernels):
    every method's kernels are there and each got a positive, finite time. ("other" is the step minus
    its kernels and shares are ms / step by construction, so neither is asserted.)"""
    torch.manual_seed(0)
    x, y = torch.rand(300, 784), torch.randint(0, 10, (300,))
    bd = kernels.breakdown(x, y, rounds=1, steps=2)
    assert set(bd["BBB"]) == {"noise", "sample+KL fwd", "sample+KL bwd", "matmuls fwd", "matmuls bwd",
                              "optimizer", "other", "step"}
    assert set(bd["Sparse VD"]) == {"terms fwd", "terms bwd", "matmuls fwd", "matmuls bwd", "optimizer", "other", "step"}
    assert set(bd["SGD"]) == {"matmuls fwd", "matmuls bwd", "optimizer", "other", "step"}
    for method in ("SGD", "BBB", "Sparse VD", "ref"):
        timed = {k: v["ms"] for k, v in bd[method].items() if k != "other"}
        assert all(0 < ms < math.inf for ms in timed.values()), (method, timed)


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


def _table(step_ms: float, fwd_ms: float) -> dict:
    return {"BBB": {"sample+KL fwd": {"ms": fwd_ms, "share": None, "x_exp": 1.0},
                    "other": {"ms": 0.0, "share": None, "x_exp": 0.0},
                    "step": {"ms": step_ms, "share": 1.0, "x_exp": 1.0}}}


def test_spread_over_processes_gives_median_and_range_and_marks_what_varies():
    sp = processes.spread([_table(5.5, 0.9), _table(5.4, 1.8), _table(5.6, 1.0)])
    fwd, step = sp["BBB"]["sample+KL fwd"], sp["BBB"]["step"]
    assert (fwd["median_ms"], fwd["min_ms"], fwd["max_ms"], fwd["max_over_min"]) == (1.0, 0.9, 1.8, 2.0)
    assert step["median_ms"] == 5.5 and step["max_over_min"] == pytest.approx(5.6 / 5.4)
    assert sp["BBB"]["other"]["max_over_min"] is None  # 0 ms: no ratio
    assert processes.varying(sp) == ["BBB/sample+KL fwd"]


def test_a_busy_machine_is_named_in_a_warning():
    assert cli.load_warning(1.9, 2) == "" and cli.load_warning(0.5, None) == ""
    assert cli.load_warning(2.0, 2).startswith("WARNING: load average 2.0 on 2 cores")


def test_processes_mode_writes_the_spread_and_the_machine(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "in_processes", lambda n, *a: [_table(5.5, 0.9), _table(5.4, 1.8)][:n])
    monkeypatch.setattr(cli.os, "getloadavg", lambda: (99.0, 0.0, 0.0))
    out = tmp_path / "p.json"
    assert cli.main(["--processes", "2", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["processes"] == 2 and d["varying_kernels"] == ["BBB/sample+KL fwd"]
    assert d["kernel_processes"]["BBB"]["sample+KL fwd"]["ms"] == [0.9, 1.8]
    assert {"cpu_family", "cpu_model_number", "cpu_stepping", "cpu_flags", "inductor_vec_isa", "cxx_version",
            "vector_isa", "torch", "load_average"} <= set(d)
    printed = capsys.readouterr().out
    assert "<-- varies" in printed and "WARNING: load average 99.0" in printed


def test_widths_mode_writes_the_table_and_the_kernels_at_the_narrowest_and_widest(tmp_path, monkeypatch, capsys):
    rows = [{"width": w, "n_params": 1, "sgd_ms": 1.0, "bbb_ms": 2.0, "sparse_vd_ms": 3.0, "bbb_over_sgd": 2.0,
             "sparse_vd_over_sgd": 3.0} for w in (400, 100, 1200)]
    broken_down = []
    monkeypatch.setattr(cli, "mnist", lambda root: (None, None))
    monkeypatch.setattr(cli, "race_widths", lambda x, y, ws, *a: [r for r in rows if r["width"] in ws])
    monkeypatch.setattr(cli, "breakdown", lambda *a, hidden: broken_down.append(hidden) or _table(5.0, 1.0))
    monkeypatch.setattr(cli.os, "getloadavg", lambda: (99.0, 0.0, 0.0))
    out = tmp_path / "w.json"
    assert cli.main(["--widths", "400,100,1200", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["widths"] == rows and broken_down == [(100, 100), (1200, 1200)]
    assert set(d["kernel_breakdown_by_width"]) == {"100", "1200"} and d["samples"] == 1
    assert {"cpu_model", "cpu_family", "cpu_model_number", "vector_isa", "load_average", "denormals_flushed"} <= set(d)
    printed = capsys.readouterr().out
    assert "WARNING: load average 99.0" in printed and "width 1200: BBB / SGD = 2.00, Sparse VD / SGD = 3.00" in printed


@pytest.mark.slow
def test_the_kernel_table_runs_in_fresh_processes():
    tables = processes.in_processes(2, None, rounds=1, steps=1, threads=1)
    assert len(tables) == 2 and all(set(t) == {"SGD", "BBB", "Sparse VD", "ref"} for t in tables)
    assert processes.spread(tables)["BBB"]["noise"]["ms"] == [t["BBB"]["noise"]["ms"] for t in tables]


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
            "load_average", "samples", "torch", "not_measured", "cpu_family", "cpu_model_number", "cpu_stepping",
            "cpu_flags", "inductor_vec_isa", "cxx", "cxx_version"} <= set(d)
    assert {"ours SGD", "ours BBB (1 sample)", "ours BBB eager (1 sample)", "ours Sparse VD",
            "plain SGD (tensor loop)", "plain SGD (DataLoader)",
            "tutorial BBB (DataLoader, 1 sample)"} <= set(d["train_ms_per_step"])
    measured_peers = [k for k in d["train_ms_per_step"] if k.startswith(("BLiTZ", "bayesian-torch"))]
    assert len(measured_peers) + len(d["not_measured"]) == 2  # each peer is measured or says why not
    assert d["threads"] == 1 and d["samples"] == 1
    printed = capsys.readouterr().out
    assert "RATIOS: ours BBB / ours SGD = " in printed


@pytest.mark.slow
def test_a_tiny_widths_run_writes_a_row_per_width_and_the_kernels_at_both_ends(tmp_path):
    out = tmp_path / "widths.json"
    assert cli.main(["--widths", "8,4", "--rounds", "1", "--steps", "1", "--threads", "1", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert [r["width"] for r in d["widths"]] == [8, 4]
    assert all(r["sgd_ms"] > 0 and r["bbb_over_sgd"] == r["bbb_ms"] / r["sgd_ms"] for r in d["widths"])
    assert set(d["kernel_breakdown_by_width"]) == {"4", "8"}
    assert set(d["kernel_breakdown_by_width"]["4"]) == {"SGD", "BBB", "Sparse VD", "ref"}


def test_compact_mode_times_nets_that_compute_the_window_forward(tmp_path, capsys):
    """--compact: the padded and unpadded nets it times, and the gather forward, compute the same logits as
    a plain forward over the input window with their unpadded weights, whose columns are zero exactly at
    the window's dead pixels (--live of 681 live), and the JSON holds one row per width."""
    from suite.bench import compacted
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(7, 784, generator=gen)
    for padded in (False, True):
        net = compacted.compacted(67, padded, torch.Generator().manual_seed(2), live=300)
        assert len(net.index) == 300 and net.lo == 67 and net.hi == 748
        assert int((net.weight_0 != 0).any(0).sum()) == 300  # random weights are never 0
        h = x[:, 67:748]
        for k, (w, b) in enumerate(net.layers()):
            h = h @ w.T + b
            h = h.clamp_min(0) if k < 2 else h
        torch.testing.assert_close(net(x), h, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(net.gather_forward(x), h, rtol=1e-5, atol=1e-4)
        assert net._run_weight_0.shape[0] == (80 if padded else 67)  # 67 units pad to 5 x 16
    out = tmp_path / "c.json"
    assert cli.main(["--compact", "60,67", "--live", "300", "--threads", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["compact"]
    assert [r["width"] for r in rows] == [60, 67]
    for r in rows:
        assert r["padded_speedup"] == pytest.approx(r["dense_ms"] / r["padded_ms"])
        assert r["gather_speedup"] == pytest.approx(r["dense_ms"] / r["gather_ms"]) and r["live"] == 300
    assert "681 (300 live)-67-49-10" in capsys.readouterr().out
    for bad in ("1", "682", "many"):   # one line naming the range, before anything is timed
        with pytest.raises(SystemExit):
            cli.main(["--compact", "60", "--live", bad, "--json", str(out)])
        assert "from 2 (its two ends) to 681" in capsys.readouterr().err
