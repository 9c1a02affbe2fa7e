"""Cluster paths as far as one machine allows: a sweep through `suite.run --address` on Ray's fake
autoscaling cluster that starts with no workers, and the cluster-launcher configs as `ray up` reads them."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_autoscaling_config(port: int) -> dict:
    """cluster.yaml's node types on the fake provider: a head with no CPU for trials and its GPU worker
    type, here 1 CPU and no GPU, 0..2 of them, launched as local raylets.

    Not ray.cluster_utils.AutoscalingCluster itself: its start() runs `ray stop --force`, which kills
    every Ray instance on the machine (other users' included), and Ray 2.60's wheel lacks the
    example.yaml it builds its config from. This is the same fake provider, on a port of our own."""
    types = yaml.safe_load((ROOT / "cluster.yaml").read_text())["available_node_types"]
    head, worker = types["head"], types["gpu_worker"]
    assert head["resources"] == {"CPU": 0} and worker["min_workers"] == 0
    return {
        "cluster_name": "fake", "max_workers": 2, "upscaling_speed": 1.0, "idle_timeout_minutes": 1,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{port}"},
        "available_node_types": {
            "ray.head.default": {"resources": head["resources"], "node_config": {}, "max_workers": 0},
            "gpu_worker": {"resources": {"CPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2}},
        "head_node_type": "ray.head.default", "auth": {}, "docker": {}, "file_mounts": {},
        "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        **{k: [] for k in ("initialization_commands", "setup_commands", "head_setup_commands",
                           "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")}}


def wait_for_port(port: int, head: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert head.poll() is None, "ray start --head exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the fake cluster's GCS did not open port {port}")


@pytest.mark.slow
def test_sweep_on_autoscaling_cluster_from_zero_workers(tmp_path):
    port = free_port()
    # short: Ray's unix sockets live under it and their paths may not exceed 107 bytes
    ray_tmp = Path(tempfile.mkdtemp(prefix="bpb-", dir="/tmp"))
    config = tmp_path / "autoscaling.yaml"
    config.write_text(yaml.safe_dump(fake_autoscaling_config(port)))
    token = tmp_path / "auth_token"
    token.write_text(uuid.uuid4().hex)
    base = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    base.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_TOKEN_PATH=str(token))
    # the cluster requires the token; the sweep gets only the token's path, as a user with
    # ~/.ray/auth_token would, and must switch token auth on itself for an explicit address
    head_env = {**base, "RAY_AUTH_MODE": "token", "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    ray_cli = str(Path(sys.executable).parent / "ray")
    head = subprocess.Popen([ray_cli, "start", "--head", "--block", f"--port={port}", "--num-cpus=0", f"--temp-dir={ray_tmp}",
                             "--include-dashboard=false", f"--autoscaling-config={config}"],
                            env=head_env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, head)
        grid = tmp_path / "g.yaml"
        grid.write_text(yaml.safe_dump({
            "fixed": {"epochs": 1, "train_subset": 1000, "val_size": 500, "hidden": [32], "sparsities": [0, 0.9],
                      "compile": False, "lr": 1e-3, "device": "cpu"},
            "grid": {"method": ["sgd"], "dataset": ["mnist"], "seed": [0, 1]}}))
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "suite.run", "--grid", str(grid), "--address", f"127.0.0.1:{port}",
                            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage-path",
                            str(tmp_path / "ray")], cwd=ROOT, env=base, capture_output=True, text=True, timeout=300)
        took = time.monotonic() - t0
        assert r.returncode == 0, r.stdout + r.stderr
        # the head offers no CPU, so nothing fitted until the autoscaler launched a worker
        assert "no node fits a trial yet" in r.stdout and "waiting for the autoscaler" in r.stdout
        c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        runs = c.search_runs([c.get_experiment_by_name("g").experiment_id])
        assert len(runs) == 2 and all(x.info.status == "FINISHED" for x in runs)
        assert all(x.data.tags["node_id"] for x in runs)
        assert took < 120, f"the sweep took {took:.0f} s"
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # ray start --block stops its processes on SIGTERM
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_cluster_yaml_validates_like_ray_up():
    from ray.autoscaler._private.util import prepare_config, validate_config
    config = prepare_config(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    validate_config(config)
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    assert any("pip install -e" in c for c in config["setup_commands"])
    assert_store_in_postgres(config, "--host 0.0.0.0")


def test_onprem_config_validates_like_ray_up():
    from ray.autoscaler._private.util import prepare_config, validate_config
    raw = yaml.safe_load((ROOT / "cluster-onprem.yaml").read_text())
    config = prepare_config(raw)  # for provider local this also builds the node type from the IPs
    validate_config(config)
    assert config["provider"]["type"] == "local"
    node_type = config["available_node_types"][config["head_node_type"]]
    assert node_type["min_workers"] == node_type["max_workers"] == len(raw["provider"]["worker_ips"])
    start = " ".join(config["head_start_ray_commands"])
    assert "--num-cpus=0" in start
    assert_store_in_postgres(config, "--host 127.0.0.1")
    assert any("pip install -q -e" in c for c in config["setup_commands"])
    assert any("venv" in c for c in config["setup_commands"])


def assert_store_in_postgres(config: dict, host: str) -> None:
    """The head's tracking server keeps its store in PostgreSQL on the shared volume, never sqlite there."""
    start = " ".join(config["head_start_ray_commands"])
    assert f"python -m suite.tracking_server {host} --port 5000" in start and "--data /mnt/shared/pgdata" in start
    assert "sqlite" not in start
    assert any("[cluster]" in c and "pip install" in c for c in config["head_setup_commands"])


def test_tracking_server_takes_the_newest_installed_postgresql(monkeypatch):
    from suite import tracking_server
    monkeypatch.setattr(tracking_server.shutil, "which", lambda name: None)
    monkeypatch.setattr(tracking_server.glob, "glob", lambda pattern: ["/usr/lib/postgresql/9/bin/pg_ctl",
                                                       "/usr/lib/postgresql/15/bin/pg_ctl"])
    assert tracking_server.pg_bin() == Path("/usr/lib/postgresql/15/bin")  # 15 > 9 as numbers, not as text


def test_tracking_server_without_postgresql_says_how_to_install_it(monkeypatch, tmp_path):
    from suite import tracking_server
    monkeypatch.setattr(tracking_server.shutil, "which", lambda name: None)
    monkeypatch.setattr(tracking_server.glob, "glob", lambda pattern: [])
    with pytest.raises(SystemExit) as e:
        tracking_server.main(["--data", str(tmp_path / "pg"), "--artifacts", str(tmp_path / "art")])
    assert "PostgreSQL's server is not installed" in str(e.value) and "apt-get install -y postgresql" in str(e.value)
    assert not (tmp_path / "pg").exists()  # nothing created before the error
