"""Faults injected into a real sweep (real Ray, real MLflow, real MNIST): a storage path that fills up, a
tracking server that dies and comes back, a worker node lost mid-trial. After each, the same command (or
the same sweep) completes, and nothing finished is lost or duplicated: exactly one FINISHED run per grid
point, none left RUNNING, finished runs' metrics unchanged by the rerun."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from test_sweep import clean_env, cli

from suite.config import load_grid

# Long enough epochs (about 0.5 s each on one thread) for a fault to land mid-trial, short enough trials
# (10 epochs) for a whole test to take a minute or two.
FIXED = {"method": "sgd", "dataset": "mnist", "epochs": 10, "train_subset": 30000, "val_size": 1000, "hidden": [64],
         "test_samples": 2, "sparsities": [0, 0.9], "compile": False, "lr": 1e-3}


def grid(folder: Path, seeds: list[int]) -> tuple[Path, list[str]]:
    """A grid of one SGD point per seed, and its grid keys in the order a sweep trains them (seed-major)."""
    path = folder / "g.yaml"
    path.write_text(yaml.safe_dump({"fixed": FIXED, "grid": {"seed": seeds}}))
    return path, [t.grid_key() for t in sorted(load_grid(str(path)).trials, key=lambda t: t.seed)]


def state_epochs(storage: Path, key: str) -> int:
    """Epochs in a grid point's resume state of experiment g (0 if it has none yet)."""
    path = storage / "g" / "resume" / key / "state.pt"
    return len(torch.load(path, weights_only=True)["history"]) if path.is_file() else 0


def finished(client: MlflowClient, experiment: str) -> dict[str, dict]:
    """grid_key -> the run_id and metrics of its FINISHED run; asserts one at most per grid point, with
    every epoch logged exactly once."""
    exp = client.get_experiment_by_name(experiment)
    out = {}
    for r in client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'", max_results=1000):
        key = r.data.tags["grid_key"]
        assert key not in out, f"grid point {key} has two FINISHED runs"
        assert [h.step for h in client.get_metric_history(r.info.run_id, "val_acc")] == list(range(1, FIXED["epochs"] + 1))
        out[key] = {"run_id": r.info.run_id, **r.data.metrics}
    return out


def outcome(client: MlflowClient, experiment: str, keys: list[str]) -> dict[str, dict]:
    """finished(), asserting exactly one FINISHED run per grid point of `keys` and none left RUNNING (other
    runs of a grid point must be FAILED or KILLED)."""
    exp = client.get_experiment_by_name(experiment)
    assert not client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'"), "a run left RUNNING"
    out = finished(client, experiment)
    assert sorted(out) == sorted(keys), "not exactly one FINISHED run per grid point"
    return out


def wait_for(cond, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert proc is None or proc.poll() is None, f"the sweep ended before {what}"
        assert time.time() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.05)


def drive_through(args: list[str], cwd: Path, env: dict, ready, what: str, fault) -> tuple[int, str]:
    """Start `python -m suite.run ARGS` in `cwd`; once ready(its output so far) holds, inject fault(); wait
    for the driver to end. Returns its exit code and output."""
    log = cwd / "first.log"
    with log.open("w") as f:
        p = subprocess.Popen([sys.executable, "-m", "suite.run", *args], cwd=cwd, env=env, stdout=f,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: ready(log.read_text()), 300, what, p)
        t0 = time.time()
        fault()
        rc = p.wait(timeout=400)
        print(f"the driver ended {time.time() - t0:.1f} s after the fault ({what}), exit {rc}")
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    return rc, log.read_text()


# --- 1. the storage path fills up mid-trial ----------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs as the storage path: a filler file takes its free space at the moment the test chooses."""
    mnt = tmp_path / "storage"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"a full disk needs a tmpfs and mounting one is not permitted here (run as root): {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill(folder: Path) -> None:
    """Write folder/filler until the file system has no space left."""
    filler, block = folder / "filler", b"\0" * (1 << 20)
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as e:
            assert e.errno == 28, e  # ENOSPC


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_full_disk_fails_the_trial_clearly_and_the_same_command_completes_once_space_is_freed(tmp_path, small_disk, mnist):
    """Seed 0 finishes, then the disk fills while seed 1 trains: its next state write fails, and the
    driver ends (no hang) saying why. Every state on the disk is a complete one, and after the filler is
    deleted the same command resumes seed 1 from its last good state and leaves seed 0's run alone."""
    path, keys = grid(tmp_path, [0, 1])
    args = ["--grid", str(path), "--max-concurrent", "1", "--storage-path", str(small_disk)]
    rc, out = drive_through(args, tmp_path, clean_env(), lambda _: state_epochs(small_disk, keys[1]) >= 2,
                            "the disk filled at the second trial's epoch 2", lambda: fill(small_disk))
    # the driver ends with its summary (exit 1: not everything finished), the failure said in one line
    assert rc == 1 and "\n1/2 finished. Browse:" in out, out[-3000:]
    said = [line for line in out.splitlines() if " FAILED: " in line]
    assert len(said) == 1 and "OSError: [Errno 28] No space left on device: the resume state of epoch" in said[0], out[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    first = finished(client, "g")
    assert list(first) == keys[:1]  # seed 0 FINISHED before the disk filled; seed 1 FAILED
    # no half-written state is there to be taken for a good one: the one left holds whole epochs
    state = torch.load(small_disk / "g" / "resume" / keys[1] / "state.pt", weights_only=True)
    reached = len(state["history"])
    assert state["grid_key"] == keys[1] and [h["epoch"] for h in state["history"]] == list(range(1, reached + 1))
    assert 2 <= reached < FIXED["epochs"]
    assert not list(small_disk.rglob(".state.pt.tmp")), "a failed write's temporary file was left behind"

    (small_disk / "filler").unlink()
    r = cli(args, tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "1 already finished, 1 to run" in r.stdout and f"resumed at epoch {reached}" in r.stdout
    after = outcome(client, "g", keys)
    assert after[keys[0]] == first[keys[0]]  # the finished run untouched
    assert not list(small_disk.glob("g/resume/*/state.pt"))


# --- 2. the tracking server dies mid-grid and comes back ----------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TrackingServer:
    """`mlflow server` on loopback with a sqlite store in `folder`; stop() kills it (SIGKILL, no goodbye),
    start() brings it back on the same port and store."""

    def __init__(self, folder: Path):
        self.folder, self.port, self.proc = folder, free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        mlflow = str(Path(sys.executable).parent / "mlflow")
        self.proc = subprocess.Popen(
            [mlflow, "server", "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
             "--default-artifact-root", str(self.folder / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1"],
            cwd=self.folder, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

        def healthy() -> bool:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(healthy, 60, "tracking server answering /health", self.proc)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def tracking_server(tmp_path):
    server = TrackingServer(tmp_path)
    server.start()
    yield server
    if server.proc.poll() is None:
        server.stop()


def kill_mid_grid(server: TrackingServer, tmp_path: Path, env: dict, outage_s: float | None) -> tuple[list, list, int, str]:
    """Run a grid of two points, one at a time, against `server`, and kill the server once the first
    point FINISHED and the second started; it comes back `outage_s` later (None: once the driver ended).
    Returns the grid keys, the driver's arguments, its exit code and its output."""
    path, keys = grid(tmp_path, [0, 1])
    args = ["--grid", str(path), "--max-concurrent", "1", "--tracking-uri", server.uri]

    def outage():
        server.stop()
        if outage_s is not None:
            time.sleep(outage_s)
            server.start()
    rc, out = drive_through(args, tmp_path, env, lambda out: " finished: " in out and out.count(" started (") == 2,
                            f"tracking server killed, back {outage_s} s later", outage)
    if outage_s is None:
        server.start()
    return keys, args, rc, out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_tracking_server_outage_of_seconds_is_ridden_out(tmp_path, tracking_server, mnist):
    """The server is back 5 s after it was killed: the driver's MLflow calls retry (MLflow's HTTP client:
    7 retries with exponential backoff, about 4 minutes in all; the trials' reports wait meanwhile), so
    the sweep completes with one FINISHED run per grid point, and the same command has nothing to do."""
    keys, args, rc, out = kill_mid_grid(tracking_server, tmp_path, clean_env(), outage_s=5)
    assert rc == 0 and "2/2 finished." in out, out[-3000:]
    client = MlflowClient(tracking_server.uri)
    first = outcome(client, "g", keys)
    again = cli(args, tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr
    assert outcome(client, "g", keys) == first


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_tracking_server_gone_past_the_retries_ends_the_driver_in_one_line_and_the_same_command_resumes(
        tmp_path, tracking_server, mnist):
    """The server stays down past the client's retries (cut to 2 here, about 2 s, for the test's sake):
    the driver ends with one line saying what happened and how to resume, exit 2, without waiting out
    the retries again per run. With the server back, the same command marks the second point's run
    (left RUNNING) KILLED, resumes it from its state, and leaves the first point's run alone."""
    env = {**clean_env(), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    keys, args, rc, out = kill_mid_grid(tracking_server, tmp_path, env, outage_s=None)
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert rc == 2 and len(errors) == 1, out[-3000:]
    assert f"the tracking store at {tracking_server.uri} failed mid-sweep" in errors[0]
    assert errors[0].endswith("once the store answers, run the same command again to resume.")
    client = MlflowClient(tracking_server.uri)
    exp = client.get_experiment_by_name("g")
    status = {r.data.tags["grid_key"]: r.info.status for r in client.search_runs([exp.experiment_id])}
    assert status == {keys[0]: "FINISHED", keys[1]: "RUNNING"}  # no store to mark it in
    first = finished(client, "g")
    r = cli(args, tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "marked 1 run(s) left RUNNING by an interrupted sweep as KILLED" in r.stdout and "resumed at epoch" in r.stdout
    assert outcome(client, "g", keys)[keys[0]] == first[keys[0]]


# --- 3. a worker node is lost mid-trial ---------------------------------------------------------

TIMING = ("wall_s", "latency", "time", "compile_s", "peak_mem")  # metrics that measure the machine, not the model


def model_metrics(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "run_id" and not any(t in k for t in TIMING)}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_trial_whose_node_is_lost_resumes_on_a_new_node_to_the_same_numbers(tmp_path, mnist):
    """One trial trains on the only worker (the head has no CPU for trials); the worker is removed
    mid-trial and a new one added: Tune retries the trial there (FailureConfig), it resumes from its
    state on the shared storage path at the epoch reached, finishes once, and gives exactly the numbers
    of the same grid point trained without interruption."""
    import ray
    from ray.cluster_utils import Cluster

    from suite import tracking
    from suite.sweep import Resources, Setup, run_sweep

    path, keys = grid(tmp_path, [0])
    trials = load_grid(str(path)).trials
    storage = tmp_path / "ray"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    first = cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        client = tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
        setup = Setup(client, tracking.ensure_experiment(client, "g"), storage, Resources(1, 0, None), {"mnist": mnist})
        out = {}

        def sweep():
            try:
                out["rows"] = run_sweep(setup, trials, "g", {})
            except BaseException as e:  # surfaced by the assertion below
                out["error"] = e
        t = threading.Thread(target=sweep)
        t.start()
        wait_for(lambda: state_epochs(storage, keys[0]) >= 3 or not t.is_alive(), 300, "trial at epoch 3")
        reached = state_epochs(storage, keys[0])
        assert t.is_alive() and reached < FIXED["epochs"], "the trial ended before its node could be removed"
        cluster.remove_node(first)  # the machine goes, with the trial on it
        second = cluster.add_node(num_cpus=1)
        t.join(600)
        assert "error" not in out, out.get("error")
        [row] = out["rows"]
        assert row.status == "FINISHED" and row.nodes == {first.node_id, second.node_id}
        assert reached <= row.resumed_from < FIXED["epochs"]  # from its state, not from scratch
        lost = outcome(client, "g", keys)[keys[0]]

        # the same grid point, uninterrupted (its own experiment: its own resume folder)
        setup = Setup(client, tracking.ensure_experiment(client, "ref"), storage, Resources(1, 0, None), {"mnist": mnist})
        assert [r.status for r in run_sweep(setup, trials, "ref", {})] == ["FINISHED"]
        ref = outcome(client, "ref", keys)[keys[0]]
        assert model_metrics(lost) == model_metrics(ref)
        for metric in ("val_acc", "train_loss"):
            assert ([(h.step, h.value) for h in client.get_metric_history(lost["run_id"], metric)]
                    == [(h.step, h.value) for h in client.get_metric_history(ref["run_id"], metric)])
    finally:
        ray.shutdown()
        cluster.shutdown()
