"""suite.bench.scale: its arithmetic against hand computations, its counts against MLflow's own API and
against folders of known sizes, and (slow) a real two-trial driver sweep whose report adds up."""
import json
import math
import subprocess
import sys
import types

import pytest

from suite.bench import scale


def test_overhead_and_per_epoch_are_the_hand_arithmetic():
    # a 100 s sweep of trials that took 10, 20 and 30 s themselves: (100 - 60) / 3 s outside the trials each
    assert math.isclose(scale.overhead(100.0, [10.0, 20.0, 30.0]), 40.0 / 3)
    # 2.0 s per trial at 1 epoch, 3.0 s at 5 epochs: 1.0 s more for 4 more epochs
    assert math.isclose(scale.per_epoch({1: 2.0, 5: 3.0}), 0.25)
    assert math.isclose(scale.per_epoch({5: 3.0, 1: 2.0, 3: 99.0}), 0.25)  # the extremes, in any order
    with pytest.raises(ValueError, match="two different epoch counts"):
        scale.per_epoch({1: 2.0})


def test_timing_counts_calls_through_the_module_and_restores_it():
    mod = types.SimpleNamespace(f=lambda x: x + 1, g=lambda: None)
    original = mod.f
    with scale.timing(mod, ("f",)) as spent:
        assert mod.f(1) == 2 and mod.f(2) == 3
    assert spent["f"][0] == 2 and spent["f"][1] >= 0
    assert mod.f is original


def test_store_report_counts_what_mlflow_itself_returns(tmp_path):
    from mlflow.entities import Metric, Param

    from suite.tracking import connect
    client = connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("e", artifact_location=str(tmp_path / "artifacts"))
    done = client.create_run(exp, tags={"grid_key": "k1", "a": "1"}).info.run_id
    client.log_batch(done, params=[Param("epochs", "3"), Param("lr", "0.1")],
                     metrics=[Metric("val_acc", 0.5, 0, e) for e in (1, 2, 3)] + [Metric("total_wall_s", 12.5, 0, 0)])
    (tmp_path / "f.bin").write_bytes(b"x" * 1234)
    client.log_artifact(done, str(tmp_path / "f.bin"))
    client.set_terminated(done, "FINISHED")
    client.create_run(exp)  # a run left RUNNING: counted in the file, not per finished run
    run = client.get_run(done)

    r = scale.store_report(tmp_path / "mlflow.db")
    per = {k: v["median"] for k, v in r["per_finished_run"].items()}
    assert (r["runs"], r["finished"]) == (2, 1)
    assert per["params"] == len(run.data.params) == 2
    assert per["tags"] == len(run.data.tags)
    assert per["metric_keys"] == len(run.data.metrics) == 2
    assert per["metric_rows"] == sum(len(client.get_metric_history(done, k)) for k in run.data.metrics) == 4
    assert per["artifact_bytes"] == 1234 and per["epochs"] == 3 and per["total_wall_s"] == 12.5
    assert r["file_bytes_per_run"] == (tmp_path / "mlflow.db").stat().st_size / 2


def test_storage_report_sizes_trial_folders_resume_states_and_tune_state(tmp_path):
    def put(rel, n):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * n)
    put("grid-20260101-000000/experiment_state-2026.json", 300)
    put("grid-20260101-000000/0123456789abcdef_00000/checkpoint_000003/model.pt", 100)   # finished: artifacts
    put("grid-20260101-000000/fedcba9876543210_00001/checkpoint_000002/state.pt", 500)   # still training
    put("grid/resume/fedcba9876543210/state.pt", 700)
    r = scale.storage_report(tmp_path)
    assert r["total_bytes"] == 300 + 100 + 500 + 700
    assert r["finished_trial_folder_bytes"]["median"] == 100
    assert r["unfinished_trial_folder_bytes"]["median"] == 500
    assert r["resume_state_bytes"]["median"] == 700
    assert r["experiment_state_bytes_per_trial"]["median"] == 150  # 300 bytes for two trials


@pytest.mark.slow
def test_a_two_trial_driver_sweep_reports_consistent_figures(tmp_path):
    out = tmp_path / "scale.json"
    r = subprocess.run([sys.executable, "-m", "suite.bench.scale", "--trials", "2", "--epochs", "1,2", "--repeat", "1",
                        "--json", str(out)], capture_output=True, text=True, timeout=540)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(out.read_text())
    by_epochs = {s["epochs"]: s for s in rep["sweeps"]}
    assert sorted(by_epochs) == [1, 2]
    for e, s in by_epochs.items():
        assert s["trials"] == 2 and 0 < s["trial_wall_s_sum"] < s["wall_s"]
        assert math.isclose(s["overhead_s_per_trial"], (s["wall_s"] - s["trial_wall_s_sum"]) / 2)
        calls = {k: v["calls"] for k, v in s["mlflow_s"].items()}
        assert calls == {"start_run": 2, "log_epochs": 2 * e, "finish_run": 2}  # one log_epochs per epoch result
        assert s["driver_cpu_s_per_trial"] > 0 and s["experiment_state_bytes_per_trial"] > 0
    cost = {e: by_epochs[e]["overhead_s_per_trial"] for e in (1, 2)}
    assert math.isclose(rep["overhead_s_per_logged_epoch"], cost[2] - cost[1])
