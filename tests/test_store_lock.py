"""One driver per experiment per store, whatever its storage path (suite/locks.py): a second driver is
refused with one line naming the first one's host and pid; a dead driver's lock is taken over; a new
sqlite store is created by one process at a time. Only loopback, only real MLflow and Ray."""
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient

from suite import locks, tracking
from suite.driver import Runtime, lock
from suite.preflight import PreflightError

HOST = socket.gethostname()


def runtime(tmp_path, storage="a"):
    return Runtime(f"sqlite:///{tmp_path / 'mlflow.db'}", storage=tmp_path / storage)


def test_a_second_driver_on_the_store_is_refused_whatever_its_storage_path(tmp_path):
    with lock(runtime(tmp_path, "a"), "exp"):
        with pytest.raises(PreflightError) as e, lock(runtime(tmp_path, "b"), "exp"):
            pass
        line = str(e.value)
        assert f"experiment 'exp' in sqlite:///{tmp_path / 'mlflow.db'} is already being driven by pid {os.getpid()} " \
               f"on host {HOST} (storage path {tmp_path / 'a'}" in line and "run this command again to resume" in line
        with lock(runtime(tmp_path, "b"), "other"):  # one lock per experiment
            pass
    with lock(runtime(tmp_path, "b"), "exp"):  # released with the first
        pass
    assert not (tmp_path / "mlflow.db").exists()  # the lock is taken before the store is created


def test_a_second_driver_on_the_storage_path_is_refused_whatever_its_store(tmp_path):
    """Resume folders are per storage path: two stores sharing one would delete each other's states."""
    other = dataclasses.replace(runtime(tmp_path), tracking_uri=f"sqlite:///{tmp_path / 'other.db'}")
    with lock(runtime(tmp_path), "exp"):
        with pytest.raises(PreflightError, match=f"the resume folders of experiment 'exp' in {tmp_path / 'a'} is "
                                                 f"already being driven by pid {os.getpid()}"), lock(other, "exp"):
            pass


def test_a_dead_drivers_lock_file_is_taken_over(tmp_path):
    """An flock ends with its process: a record left by a killed driver does not hold the lock."""
    path = locks.experiment_file(tmp_path / "mlflow.db", "exp")
    path.parent.mkdir()
    path.write_text(dataclasses.replace(locks.Holder.me(tmp_path), pid=999999, host="gone").record())
    with lock(runtime(tmp_path), "exp"):
        assert locks.Holder.parse(path.read_text()).pid == os.getpid()


def test_an_experiment_name_any_file_name_cannot_hold_gets_its_own_lock_file(tmp_path):
    a, b = (locks.experiment_file(tmp_path / "m.db", n) for n in ("a/b", "a_b"))
    assert a != b and a.parent == b.parent == tmp_path / "m.db.locks"


@pytest.fixture
def lease(tmp_path, monkeypatch):
    """A Lease on an experiment of a real (sqlite) store, settling and renewing fast."""
    monkeypatch.setattr(locks, "SETTLE_S", 0.05)
    monkeypatch.setattr(locks, "RENEW_S", 0.1)
    client = tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp_id = tracking.ensure_experiment(client, "exp")

    def make(storage="a"):
        return locks.Lease(client, exp_id, locks.Holder.me(tmp_path / storage), "experiment 'exp'")

    def write(**changes):
        other = dataclasses.replace(locks.Holder.me(tmp_path / "z"), **{"host": "elsewhere", "pid": 4242, **changes})
        client.set_experiment_tag(exp_id, locks.TAG, other.record())
    make.write, make.tag = write, lambda: client.get_experiment(exp_id).tags.get(locks.TAG)
    return make


def test_an_expired_lease_is_taken_over_and_a_live_one_refused(lease):
    lease.write(expires=time.time() - 1)  # a driver that died more than LEASE_S ago
    with lease() as mine:
        assert locks.Holder.parse(lease.tag()).token == mine.me.token
        with pytest.raises(PreflightError, match=f"already being driven by pid {os.getpid()} on host {HOST}.*"
                                                 "its lease runs out at"), lease("b"):
            pass
    assert lease.tag() is None  # released
    lease.write(expires=time.time() + 60)
    with pytest.raises(PreflightError, match="already being driven by pid 4242 on host elsewhere"), lease():
        pass


def test_a_lease_of_a_dead_driver_on_this_host_is_taken_over_before_it_runs_out(lease):
    """A driver that ended with its tracking server down could not release its lease: on its own host
    the next driver sees that the process is gone and takes the lock at once, not minutes later."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lease.write(host=HOST, pid=dead.pid, expires=time.time() + 60)
    with lease() as mine:
        assert locks.Holder.parse(lease.tag()).token == mine.me.token


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler, which a driver has when it takes the lock (an earlier test in this
    process may have left another, e.g. Ray Tune's, under which a Ctrl-C stops a sweep instead of raising)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_live_lease_is_renewed_and_a_lost_one_stops_the_driver(lease, monkeypatch, python_sigint):
    # renewals driven by hand (the background renewer sleeps for an hour), so no thread timing decides
    monkeypatch.setattr(locks, "RENEW_S", 3600.0)
    with pytest.raises(KeyboardInterrupt), lease() as mine:  # what Ctrl-C does: the sweep stops, resumable
        first = locks.Holder.parse(lease.tag()).expires
        time.sleep(0.01)
        assert mine.renew_once() and locks.Holder.parse(lease.tag()).expires > first  # renewed
        lease.write(expires=time.time() + 60)  # taken over while this driver stalled
        assert not mine.renew_once()  # interrupts the main thread: raised at the next bytecode here
        for _ in range(100):
            time.sleep(0.01)
    assert locks.Holder.parse(lease.tag()).pid == 4242 and not mine.renewer.is_alive()  # the other's lock stays


CREATE = """
import sys, time
from pathlib import Path
from suite import tracking
Path(sys.argv[2] + sys.argv[3]).touch()  # imported: ready
while not Path(sys.argv[2] + "go").exists():
    time.sleep(0.001)
tracking.connect(sys.argv[1]).search_experiments()
"""


@pytest.mark.slow  # four processes importing MLflow and torch
def test_a_new_sqlite_store_is_created_by_one_process_at_a_time(tmp_path):
    uri, flag = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "flag-")
    procs = [subprocess.Popen([sys.executable, "-c", CREATE, uri, flag, str(i)], stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    deadline = time.monotonic() + 300
    while len(list(tmp_path.glob("flag-?"))) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp_path / "flag-go").touch()  # all four open the new store at once
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(errors)


def tiny_grid(path):
    path.write_text(yaml.safe_dump({"fixed": {"epochs": 1, "train_subset": 1000, "val_size": 500, "hidden": [16],
                                              "test_samples": 2, "sparsities": [0, 0.9], "compile": False},
                                    "grid": {"method": ["sgd"], "dataset": ["mnist"], "seed": [0, 1, 2]}}))
    return path


@pytest.mark.slow  # two drivers, one of them trains under Ray
@pytest.mark.timeout(900)
def test_two_drivers_on_a_new_store_with_their_own_storage_paths_train_each_point_once(tmp_path, mnist):
    grid = tiny_grid(tmp_path / "g.yaml")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    procs = [subprocess.Popen([sys.executable, "-m", "suite.run", "--grid", str(grid), "--tracking-uri",
                               f"sqlite:///{tmp_path / 'mlflow.db'}", "--max-concurrent", "1"],
                              cwd=tmp_path / d, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for d in ("one", "two") if (tmp_path / d).mkdir() is None]
    out = [p.communicate(timeout=850) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], out
    winner, loser = (0, 1) if procs[0].returncode == 0 else (1, 0)
    errors = [line for line in out[loser][1].splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in out[loser][1] + out[winner][1], out
    assert f"already being driven by pid {procs[winner].pid} on host {HOST}" in errors[0]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("g").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3
    assert len({r.data.tags["grid_key"] for r in runs}) == 3


def test_a_refused_driver_waits_briefly_for_the_holders_record(tmp_path):
    """Between the holder's flock and its record the file is empty: the refusal reads it again, so it
    names the holder instead of "another driver", and gives up (None) when no record comes."""
    import threading

    from suite.locks import Holder, holder_of
    path = tmp_path / "x.lock"
    path.write_text("")
    me = Holder.me(tmp_path)
    with open(path, "r+") as f:
        assert holder_of(f, wait_s=0.1) is None
        writer = threading.Timer(0.2, lambda: path.write_text(me.record()))
        writer.start()
        assert holder_of(f, wait_s=2.0) == me
        writer.join()
