import copy
import json
import subprocess
import sys

import pytest

from suite.config import TrialConfig
from suite.trial import run_trial

TIMING = ("latency_", "_wall_s", "epoch_time_s", "step_time_ms", "peak_mem_mb", "compile_s")


def tiny(**kw):
    if kw.get("method") == "bbb" and not kw.get("dropout"):
        kw.pop("dropout", None)  # a setting of sgd only
    base = dict(epochs=1, train_subset=3000, val_size=2000, hidden=(64,), test_samples=2,
                sparsities=(0.0, 0.9), compile=False)
    return TrialConfig(**{**base, **kw})


def numbers(result):
    m = {k: v for k, v in result.metrics.items() if not any(t in k for t in TIMING)}
    h = [{k: v for k, v in e.items() if k not in TIMING} for e in result.history]
    return m, h


@pytest.mark.parametrize("method,dropout", [pytest.param("sgd", 0.0, marks=pytest.mark.slow),
                                            pytest.param("sgd", 0.5, marks=pytest.mark.slow), ("bbb", 0.0)])
def test_same_config_same_numbers(method, dropout, mnist):
    cfg = tiny(method=method, dropout=dropout)
    first = numbers(run_trial(cfg, arrays=mnist))
    assert numbers(run_trial(cfg, arrays=mnist)) == first
    assert numbers(run_trial(tiny(method=method, dropout=dropout, seed=1), arrays=mnist)) != first


@pytest.mark.parametrize("method,dropout,dataset,floor", [
    ("sgd", 0.0, "mnist", 0.8), ("sgd", 0.5, "mnist", 0.6), ("bbb", 0.0, "mnist", 0.6), ("bbb", 0.0, "fmnist", 0.5)])
@pytest.mark.slow
def test_short_real_training_beats_chance(method, dropout, dataset, floor, request):
    cfg = TrialConfig(method=method, **({"dropout": dropout} if dropout else {}), dataset=dataset, epochs=2,
                      train_subset=5000, val_size=5000,
                      sparsities=(0.0,), test_samples=2, compile=False)
    r = run_trial(cfg, arrays=request.getfixturevalue(dataset))
    assert r.metrics["test_acc_p00"] > floor  # chance is 0.1
    assert r.history[-1]["val_acc"] > floor
    if method == "bbb":
        assert r.metrics["test_acc_mc_p00"] > floor and r.history[-1]["train_kl"] > 0


def test_resume_reproduces_the_uninterrupted_run(mnist):
    cfg = tiny(method="bbb", epochs=2)
    states = []
    full = run_trial(cfg, on_epoch=lambda log, state: states.append(copy.deepcopy(state())), arrays=mnist)
    first = states[0]
    first = {**first, "history": first["history"][:1]}
    resumed = run_trial(cfg, arrays=mnist, resume=first)
    assert numbers(resumed) == numbers(full)


CONTRACT = ["test_acc_p{}", "test_nll_p{}", "test_ece_p{}", "sparsity_p{}", "latency_dense_b1_ms_p{}",
            "latency_sparse_b1_ms_p{}", "latency_dense_b1000_ms_p{}", "latency_sparse_b1000_ms_p{}", "size_csr_bytes_p{}"]


@pytest.mark.slow
def test_cli_writes_every_contract_metric(tmp_path):
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "suite.trial", "--method", "bbb", "--epochs", "1", "--train-subset", "1000",
                        "--hidden", "32", "--sparsities", "0,0.5,0.9", "--test-samples", "2", "--compile", "false",
                        "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "p90" in r.stdout
    res = json.loads(out.read_text())
    m = res["metrics"]
    for tag in ("00", "50", "90"):
        for name in CONTRACT + ["test_acc_mc_p{}", "test_nll_mc_p{}", "test_ece_mc_p{}"]:
            assert name.format(tag) in m, name.format(tag)
        assert m[f"sparsity_p{tag}"] == pytest.approx(int(tag) / 100, abs=1e-4)
    for tag in ("00", "50", "90"):
        assert f"latency_mc_b1000_ms_p{tag}" in m
    for name in ("train_wall_s", "total_wall_s", "epochs_to_99pct_best", "weight_std", "n_params", "step_time_ms",
                 "peak_mem_mb", "compile_s", "eval_wall_s"):
        assert name in m
    assert set(res["history"][0]) == {"epoch", "train_loss", "train_nll", "train_kl", "val_acc", "step_time_ms",
                                      "epoch_time_s"}


def test_cli_prints_a_line_per_level_as_it_goes_and_records_the_evaluation_version(tmp_path, capsys, mnist, fmnist):
    from suite.evaluate import EVAL_VERSION
    from suite.trial import main
    out = tmp_path / "r.json"
    assert main(["--epochs", "1", "--train-subset", "1000", "--hidden", "32", "--sparsities", "0,0.5,0.9",
                 "--compile", "false", "--threads", "1", "--json", str(out)]) == 0
    lines = [ln.split() for ln in capsys.readouterr().out.splitlines() if ln.startswith("level ")]
    assert [ln[1:4] for ln in lines] == [["p00", "1/3", "acc"], ["p50", "2/3", "acc"], ["p90", "3/3", "acc"]]
    assert all(ln[5].endswith("s") for ln in lines)
    assert json.loads(out.read_text())["info"]["eval_version"] == str(EVAL_VERSION)
