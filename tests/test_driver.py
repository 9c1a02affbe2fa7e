"""The driver's pieces on their own (no Ray): the runtime spec built from CLI options, a job's pending
grid points, a dry run that creates nothing, the lock."""
import argparse
import dataclasses

import pytest

from suite import run
from suite.config import ConfigError, from_dict
from suite.driver import Job, Runtime, add_runtime_options, drive, driver_lock, lock, runtime_from
from suite.preflight import PreflightError


def parse_runtime(argv):
    ap = argparse.ArgumentParser()
    add_runtime_options(ap, default_experiment="x")
    return runtime_from(ap, ap.parse_args(argv))


def test_runtime_is_built_from_the_cli_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    rt = parse_runtime([])
    assert rt == Runtime(tracking_uri=f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}", storage=tmp_path.resolve() / "ray_results")
    assert rt.overrides() == {}
    rt = parse_runtime(["--tracking-uri", "http://h:5000", "--address", "auto", "--cpus-per-trial", "2",
                        "--gpus-per-trial", "0.5", "--max-concurrent", "3", "--device", "cpu", "--data-dir", "d",
                        "--storage-path", "s", "--dry-run"])
    assert (rt.tracking_uri, rt.address, rt.cpus_per_trial, rt.gpus_per_trial, rt.max_concurrent, rt.dry_run) == (
        "http://h:5000", "auto", 2.0, 0.5, 3, True)
    assert rt.storage == tmp_path.resolve() / "s"
    # absolute: Ray moves trials' working directories
    assert rt.overrides() == {"device": "cpu", "data_dir": str(tmp_path.resolve() / "d")}
    with pytest.raises(dataclasses.FrozenInstanceError):  # frozen: built once, the same for every step
        rt.dry_run = False


@pytest.mark.parametrize("argv, says", [
    (["--cpus-per-trial", "0.5"], "--cpus-per-trial=0.5 is invalid: use a number >= 1."),
    (["--gpus-per-trial", "-1"], "--gpus-per-trial=-1.0 is invalid: use a number >= 0 (fractions share a GPU)."),
    (["--max-concurrent", "0"], "--max-concurrent=0 is invalid: use an integer >= 1."),
])
def test_nonsense_runtime_options_are_one_usage_error(argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        parse_runtime(argv)
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert e.value.code == 2 and len(errors) == 1 and errors[0].endswith(says)
    with pytest.raises(ConfigError, match="--device=gpu is invalid: use one of auto, cpu, cuda"):
        Runtime("sqlite:///m.db", storage=".", device="gpu")  # built in code, checked the same way


def trials(*seeds, method="sgd"):
    return [from_dict({"method": method, "seed": s, "epochs": 2, "lr": 1e-3 * (i + 1)}) for i, s in enumerate(seeds)]


def test_pending_is_the_unfinished_grid_points_seed_major():
    ts = trials(2, 0, 1, 0, 2)
    job = Job(ts, "e", "grid g")
    # by hand: seeds 0, 0, 1, 2, 2, each seed's points in grid order
    assert job.pending(set()) == [ts[1], ts[3], ts[2], ts[0], ts[4]]
    finished = {ts[1].grid_key(), ts[4].grid_key()}
    assert job.pending(finished) == [ts[3], ts[2], ts[0]]
    # --rerun trains everything again; a concurrency sweep times the whole grid at every level
    assert Job(ts, "e", "g", rerun=True).pending(finished) == [ts[1], ts[3], ts[2], ts[0], ts[4]]
    assert len(Job(ts, "e", "g", concurrency=[1, 2]).pending(finished)) == 5


@pytest.mark.parametrize("kwargs, says", [
    ({"concurrency": [1, 0]}, "--concurrency='1,0' is invalid"),
    ({"concurrency": [2], "select": "val_acc_mean"}, "cannot run in sweep-scaling mode"),
    ({"grace_period": 0}, "grace_period=0 is invalid"),
    ({"experiment": ""}, "pass --experiment NAME"),
])
def test_a_nonsense_job_is_one_clear_error(kwargs, says):
    with pytest.raises(ConfigError, match=says):
        Job(**{"trials": trials(0), "experiment": "e", "title": "t", **kwargs})


def test_dry_run_prints_the_table_and_creates_nothing(tmp_path, capsys):
    rt = Runtime(f"sqlite:///{tmp_path / 'mlflow.db'}", storage=tmp_path / "ray_results", dry_run=True)
    ts = trials(0, 1)
    seen = []

    def table(finished):
        seen.append(finished)
        return "THE TABLE"
    assert drive(rt, Job(ts, "e", "t"), table) is None
    assert capsys.readouterr().out == "THE TABLE\n" and seen == [set()]
    assert list(tmp_path.iterdir()) == []  # no store, no lock, no Ray folder


def test_dry_run_marks_what_the_store_holds_as_finished(tmp_path, capsys):
    from suite import tracking
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ts = trials(0, 1)
    client = tracking.connect(uri)
    exp_id = tracking.ensure_experiment(client, "e")
    client.set_terminated(tracking.start_run(client, exp_id, ts[1], {}), "FINISHED")
    client.set_terminated(tracking.start_run(client, exp_id, ts[0], {}), "KILLED")  # not finished: trained again
    seen = []
    drive(Runtime(uri, storage=tmp_path / "ray_results", dry_run=True), Job(ts, "e", "t"), lambda f: seen.append(f) or "")
    assert seen == [{ts[1].grid_key()}]
    assert not (tmp_path / "ray_results").exists()


def test_a_second_lock_on_the_experiment_is_refused(tmp_path):
    rt = Runtime("sqlite:///m.db", storage=tmp_path)
    with lock(rt, "exp"):
        with pytest.raises(PreflightError, match=f"another suite.run is already driving experiment 'exp' from {tmp_path}"):
            lock(rt, "exp")
        assert lock(rt, "other") is not None  # one lock per experiment
    assert driver_lock(tmp_path / "exp") is not None  # released with the first


def test_the_grid_cli_builds_its_job_from_the_options(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(run, "drive", lambda rt, job, table: seen.update(rt=rt, job=job))
    assert run.main(["--grid", "smoke", "--concurrency", "1,2", "--device", "cpu", "--storage-path", str(tmp_path)]) == 0
    job, rt = seen["job"], seen["rt"]
    assert (job.experiment, job.title, job.concurrency, job.rerun) == ("smoke-concurrency", "grid smoke", (1, 2), False)
    assert rt.storage == tmp_path and all(t.device == "cpu" for t in job.trials)
