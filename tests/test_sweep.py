"""The grid under real Ray and a real (sqlite) MLflow store: end to end, idempotent, resumable, multi-node."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from suite.config import load_grid

CONTRACT = ["test_acc_p{}", "test_nll_p{}", "test_ece_p{}", "sparsity_p{}", "latency_dense_b1_ms_p{}",
            "latency_sparse_b1_ms_p{}", "latency_dense_b1000_ms_p{}", "latency_sparse_b1000_ms_p{}",
            "size_csr_bytes_p{}"]
SCALARS = ["train_wall_s", "total_wall_s", "epochs_to_99pct_best", "weight_std", "n_params"]
TAGS = ["grid_key", "method", "dataset", "dropout", "seed", "git_commit", "device", "suite_version"]


def clean_env():
    """The CLI's defaults must come from its cwd, not from a store another test exported."""
    return {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "RAY_USAGE_STATS_ENABLED": "0"}


def cli(args, cwd, timeout=600):
    env = clean_env()
    return subprocess.run([sys.executable, "-m", "suite.run", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def runs(db: Path, experiment: str):
    c = MlflowClient(f"sqlite:///{db}")
    exp = c.get_experiment_by_name(experiment)
    return c, c.search_runs([exp.experiment_id], max_results=1000)


def tiny_grid(path: Path, epochs: int, seeds: list[int], **fixed) -> Path:
    spec = {"fixed": {"epochs": epochs, "train_subset": 2000, "val_size": 1000, "hidden": [64], "test_samples": 2,
                      "sparsities": [0, 0.9], "compile": False, "lr": 1e-3, **fixed},
            "grid": {"method": ["sgd", "bbb"], "dataset": ["mnist"], "seed": seeds}}
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_smoke_grid_end_to_end_then_nothing_to_do(tmp_path, mnist):
    r = cli(["--grid", "smoke"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    grid = load_grid("smoke")
    c, rs = runs(tmp_path / "mlflow.db", "smoke")
    assert sorted(x.data.tags["grid_key"] for x in rs) == sorted(t.grid_key() for t in grid.trials)
    for run in rs:
        assert run.info.status == "FINISHED"
        m, tags = run.data.metrics, run.data.tags
        for tag in ("00", "50", "90"):
            for name in CONTRACT:
                assert name.format(tag) in m, name.format(tag)
            assert m[f"sparsity_p{tag}"] == pytest.approx(int(tag) / 100, abs=1e-3)
        assert all(s in m for s in SCALARS) and all(t in tags for t in TAGS)
        assert ("test_acc_mc_p90" in m) == (tags["method"] == "bbb")
        assert {"ood_auroc_entropy_p90", "compact_width_l1_p90", "shift_acc_mean_p90"} <= set(m)  # payoff metrics
        assert tags.get("weight_noise") == ("threefry4x32-20" if tags["method"] == "bbb" else None)
        assert tags["denormals_flushed"] == "true"  # the Ray worker set it before torch's pool started
        assert m["test_acc_p00"] > 0.5
        assert [h.step for h in c.get_metric_history(run.info.run_id, "val_acc")] == [1]
        arts = {a.path for a in c.list_artifacts(run.info.run_id)}
        assert {"model.pt", "weights_hist.npz", "config.json"} <= arts
        assert ("snr_hist.npz" in arts) == (tags["method"] == "bbb")
        state = torch.load(c.download_artifacts(run.info.run_id, "model.pt", str(tmp_path)), weights_only=True)
        assert state
    assert "SGD" in r.stdout and "FINISHED" in r.stdout  # the summary table
    again = cli(["--grid", "smoke"], tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert len(runs(tmp_path / "mlflow.db", "smoke")[1]) == len(rs)


@pytest.mark.slow  # a CLI subprocess
def test_dry_run_and_bad_grid_fail_before_ray(tmp_path, monkeypatch, capsys):
    r = cli(["--grid", "full", "--dry-run"], tmp_path)
    assert r.returncode == 0 and "50 trials" in r.stdout and "30 invalid combinations dropped" in r.stdout
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()
    # the rejections in-process (each CLI start costs seconds): exit code 2 and the message
    from suite.run import main
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def rejected(args) -> str:
        try:
            code = main(args)
        except SystemExit as e:  # argparse's error
            code = e.code
        assert code == 2, args
        return capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid:\n  methd: [sgd]\n")
    err = rejected(["--grid", str(bad)])
    assert "unknown key 'methd'" in err and "Did you mean method" in err
    assert not (tmp_path / "ray_results").exists()
    assert "--cpus-per-trial=0.0 is invalid" in rejected(["--grid", "smoke", "--cpus-per-trial", "0"])
    assert "--concurrency='1,x' is invalid" in rejected(["--grid", "smoke", "--concurrency", "1,x"])
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow  # a CLI subprocess
def test_a_second_driver_for_the_same_experiment_is_refused(tmp_path):
    from suite import locks
    db = tmp_path / "mlflow.db"
    with locks.file_lock(locks.experiment_file(db, "smoke"), locks.Holder.me(tmp_path / "elsewhere"), "held"):
        r = cli(["--grid", "smoke"], tmp_path)
    assert r.returncode == 2 and f"experiment 'smoke' in sqlite:///{db} is already being driven by pid {os.getpid()}" in r.stderr
    assert not db.exists()  # refused before it touched the store


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_concurrency_mode_times_the_grid_at_each_level(tmp_path, mnist):
    grid = tiny_grid(tmp_path / "g.yaml", epochs=1, seeds=[0])
    r = cli(["--grid", str(grid), "--concurrency", "1,2"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    c, rs = runs(tmp_path / "mlflow.db", "g-concurrency")
    assert len(rs) == 4 and all(x.info.status == "FINISHED" for x in rs)  # 2 trials x 2 levels
    assert sorted(x.data.tags["concurrency"] for x in rs) == ["1", "1", "2", "2"]
    assert len({x.data.tags["sweep"] for x in rs}) == 2
    for x in rs:
        assert x.data.metrics["sweep_trials_per_hour"] > 0 and x.data.metrics["sweep_wall_s"] > 0


@pytest.mark.slow
def test_a_retrained_levels_weights_reach_the_store(tmp_path, mnist):
    """levels/pNN.npz travels with the other artifacts: the trial's checkpoint to the driver, which logs it."""
    grid = tiny_grid(tmp_path / "ft.yaml", epochs=1, seeds=[0], protocol="finetune", finetune_epochs=1, hidden=[32])
    r = cli(["--grid", str(grid)], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    c, rs = runs(tmp_path / "mlflow.db", "ft")
    assert len(rs) == 2 and all(x.info.status == "FINISHED" for x in rs)
    for x in rs:
        assert [a.path for a in c.list_artifacts(x.info.run_id, "levels")] == ["levels/p90.npz"]


def _trial_hosts(nodes: set[str]) -> set[str]:
    """The nodes among `nodes` on which an actor (on a worker: a trial) is alive. From the GCS table that
    ray.util.state lists too; that API needs the dashboard, which the suite's `ray[tune]` does not install."""
    from ray._private.state import actors
    return {a["Address"]["NodeID"] for a in actors().values() if a["State"] == "ALIVE"} & nodes


def _resume_epochs(storage: Path) -> list[int]:
    out = []
    for p in storage.glob("*/resume/*/state.pt"):
        try:
            out.append(len(torch.load(p, weights_only=True)["history"]))
        except Exception:  # being replaced right now
            pass
    return out


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_killed_driver_resumes_without_duplicates(tmp_path, mnist):
    grid = tiny_grid(tmp_path / "g.yaml", epochs=12, seeds=[0])  # SGD and BBB side by side, killed at epoch >= 3
    args = ["--grid", str(grid), "--experiment", "resume", "--max-concurrent", "2"]
    env = clean_env()
    p = subprocess.Popen([sys.executable, "-m", "suite.run", *args], cwd=tmp_path, env=env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 400
    while time.time() < deadline and not any(e >= 3 for e in _resume_epochs(tmp_path / "ray_results")):
        time.sleep(0.3)
    assert p.poll() is None, "the sweep ended before it could be interrupted"
    os.killpg(p.pid, signal.SIGKILL)  # the driver and everything it started
    p.wait()
    # mid-training, each epoch's state was written once: the resume file, no Ray checkpoint copy
    assert not list((tmp_path / "ray_results").rglob("checkpoint_*"))
    time.sleep(2)
    r = cli(args, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resumed at epoch" in r.stdout
    c, rs = runs(tmp_path / "mlflow.db", "resume")
    finished = [x for x in rs if x.info.status == "FINISHED"]
    assert sorted(x.data.tags["grid_key"] for x in finished) == sorted(t.grid_key() for t in load_grid(str(grid)).trials)
    assert not [x for x in rs if x.info.status == "RUNNING"]
    assert [x for x in rs if x.info.status == "KILLED"], "the interrupted runs must be marked KILLED"
    for x in finished:  # every epoch logged exactly once in the finished run
        assert [h.step for h in c.get_metric_history(x.info.run_id, "val_acc")] == list(range(1, 13))
    assert not list((tmp_path / "ray_results").glob("*/resume/*/state.pt"))  # cleaned up once logged


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_multinode_spread_and_worker_loss(tmp_path, mnist):
    import ray
    from ray.cluster_utils import Cluster

    from suite import tracking
    from suite.sweep import Resources, Setup, run_sweep

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # trials only on workers
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    epochs = 40
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        trials = load_grid(str(tiny_grid(tmp_path / "g.yaml", epochs=epochs, seeds=[0]))).trials  # one per worker
        client = tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
        exp_id = tracking.ensure_experiment(client, "multinode")
        out = {}

        def sweep():
            try:
                out["rows"] = run_sweep(Setup(client, exp_id, tmp_path / "ray", Resources(1, 0, None), {"mnist": mnist}),
                                        trials, "multinode", {})
            except BaseException as e:  # surfaced by the assertion below
                out["error"] = e
        t = threading.Thread(target=sweep)
        t.start()
        # Remove a worker only while every live trial is mid-way (at least 3 epochs saved, 10 to go), found in
        # Ray's actor table: which trial trains where, and when, depends on worker start-up, not on the suite.
        victim, deadline = None, time.time() + 300
        while victim is None and time.time() < deadline and t.is_alive():
            hosts = _trial_hosts({w.node_id for w in workers})
            mid = [e for e in _resume_epochs(tmp_path / "ray") if 3 <= e <= epochs - 10]
            if hosts and len(mid) == len(hosts):
                victim = next(w for w in workers if w.node_id in hosts)
            time.sleep(0.2)
        assert "error" not in out, out.get("error")
        assert victim is not None, "no trial was caught mid-way"
        cluster.remove_node(victim)  # a worker machine disappears with a trial mid-way
        t.join(600)
        rows = out["rows"]
        assert [r.status for r in rows] == ["FINISHED"] * len(trials)
        rs = client.search_runs([exp_id])
        assert len(rs) == len(trials) and all(r.info.status == "FINISHED" for r in rs)
        assert len(set().union(*(r.nodes for r in rows))) == 2  # both 1-CPU workers trained
        moved = [r for r in rows if len(r.nodes) == 2]
        assert moved and all(r.resumed_from >= 3 for r in moved)  # retried elsewhere, from its resume file
        for r in rs:
            assert [h.step for h in client.get_metric_history(r.info.run_id, "val_acc")] == list(range(1, epochs + 1))
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_eta_counts_ended_trials_as_done_and_expects_asha_stops_in_a_search(tmp_path):
    """An ASHA-stopped recipe has nothing left to train; in a search a pending recipe is expected to
    run as many epochs as the ended ones did on average, not the whole budget."""
    from suite.config import from_dict
    from suite.sweep import Resources, Row, Setup, SweepCallback
    trials = [from_dict({"method": "sgd", "epochs": 30, "lr": lr}) for lr in (1e-3, 2e-3, 3e-3, 4e-3)]
    keys = [t.grid_key() for t in trials]

    def eta(select):
        cb = SweepCallback(Setup(None, "0", tmp_path, Resources(1, 0, None), {}), trials, "x", {}, select=select)
        cb.epoch_s = {"sgd": [2.0]}                          # 2 s per epoch
        cb.rows = {"a": Row(keys[0], "a", "STOPPED", "r0"), "b": Row(keys[1], "b", "FINISHED", "r1"),
                   "c": Row(keys[2], "c", "RUNNING", "r2")}
        cb.done_epochs = {keys[0]: 3, keys[1]: 30, keys[2]: 5}
        return cb._eta()
    # one running trial at a time; ended: 3 and 30 epochs, mean 16.5: running 5 -> 16.5, pending 0 -> 16.5
    assert eta("val_acc_mean") == pytest.approx((11.5 + 16.5) * 2.0)
    # a grid (no scheduler) expects every epoch: running 25 left, pending 30
    assert eta(None) == pytest.approx((25 + 30) * 2.0)


def test_reports_carry_new_epochs_only_and_each_epoch_is_logged_once_across_a_retry_and_a_driver_restart(
        tmp_path, mnist, monkeypatch):
    """The real trainable and callback, with Tune's delivery played by hand: a trial crashes after
    saving epoch 4's state, before reporting it; its retry (same driver, same run) crashes after saving
    epoch 6; a new driver (a new run; the old one is KILLED) finishes it. A per-epoch report holds one
    epoch (a resumed trial's first report: every epoch of its state too), so its bytes do not grow with
    the epochs trained; and every run holds each of its epochs exactly once."""
    import pickle
    import shutil
    import types
    from numbers import Number

    from ray import tune
    from ray._private.dict import flatten_dict  # what Tune keeps statistics of: every number, dicts flattened

    from suite import dense, sweep, tracking
    from suite.config import TrialConfig
    from suite.sweep import Resources, Setup, SweepCallback, trainable

    cfg = TrialConfig(method="sgd", hidden=(8,), train_subset=200, val_size=200, sparsities=(0.0,), compile=False,
                      epochs=8)
    client = tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    setup = Setup(client, tracking.ensure_experiment(client, "x"), tmp_path, Resources(1, 0, None), {"mnist": mnist})
    config = {"trial": cfg.to_dict(), "threads": 1, "resume_root": str(sweep.resume_dir(tmp_path, "x", "")),
              "dense_root": str(dense.dense_dir(tmp_path, "x")), "evaluate": True, "until": None}
    monkeypatch.setattr(sweep.ray, "get_runtime_context", lambda: types.SimpleNamespace(get_node_id=lambda: "n"))
    reports = []

    class Crash(Exception):
        pass

    def attempt(cb, trial_id, crash_at=None):
        trial = types.SimpleNamespace(trial_id=trial_id, config=config, checkpoint=None)
        cb.on_trial_start(0, [], trial)

        def report(result, checkpoint=None):
            if result["epoch"] == crash_at:  # its state is saved, its report lost
                raise Crash
            reports.append(result)
            if checkpoint is not None:  # Tune keeps it past the trainable's temporary folder
                trial.checkpoint = tune.Checkpoint.from_directory(shutil.copytree(checkpoint.path, tmp_path / trial_id))
            cb.on_trial_result(0, [], trial, result)
        monkeypatch.setattr(sweep.tune, "report", report)
        try:
            trainable(config, {"mnist": mnist})
        except Crash:
            return
        cb.on_trial_complete(0, [], trial)

    first = SweepCallback(setup, [cfg], "x", {})
    attempt(first, "a", crash_at=4)
    attempt(first, "a", crash_at=6)  # Tune's retry: the same trial, from the state of epoch 4
    first.close()                    # the driver stops; the next one starts a new run
    second = SweepCallback(setup, [cfg], "x", {})
    attempt(second, "b")             # from the state of epoch 6

    assert [[h["epoch"] for h in r["new_epochs"]] for r in reports] == [
        [1], [2], [3], [1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6, 7], [8], []]
    assert [r["resumed_from"] for r in reports] == [0, 0, 0, 4, 6, 6, 6]
    one_epoch = [len(pickle.dumps(r)) for r in reports if len(r["new_epochs"]) == 1]  # epochs 1, 2, 3 and 8
    assert len(one_epoch) == 4 and len(set(one_epoch)) == 1
    assert sorted(k for k, v in flatten_dict(reports[-1]).items() if isinstance(v, Number)) == ["epoch", "resumed_from"]

    killed, done = (client.get_run(first.rows[cfg.grid_key()].run_id), client.get_run(second.rows[cfg.grid_key()].run_id))
    assert (killed.info.status, done.info.status) == ("KILLED", "FINISHED")
    before = [(m.step, m.value) for m in client.get_metric_history(killed.info.run_id, "val_acc")]
    after = [(m.step, m.value) for m in client.get_metric_history(done.info.run_id, "val_acc")]
    assert [s for s, _ in sorted(before)] == [1, 2, 3, 4, 5] and [s for s, _ in sorted(after)] == list(range(1, 9))
    assert sorted(after)[:5] == sorted(before)  # the new run re-logs the old one's epochs from the resume state
    assert done.data.metrics["total_wall_s"] > 0 and "test_acc_p00" in done.data.metrics
    assert not (tmp_path / "x" / "resume" / cfg.grid_key()).exists()  # removed once FINISHED
