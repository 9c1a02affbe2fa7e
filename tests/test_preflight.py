"""Bad inputs fail within seconds with one line naming the fix, before Ray or training start, and
leave no MLflow experiment behind. Only loopback addresses."""
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from suite import preflight
from suite.preflight import PreflightError


def run_cli(args, cwd, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"RAY_USAGE_STATS_ENABLED": "0", **(env_extra or {})})
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "suite.run", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=300, env=env)
    return r, time.monotonic() - t0


def free_port() -> int:
    """A loopback port nothing listens on (bound, read, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_error_line(r) -> str:
    """Exit code 2 and exactly one error line naming a fix; no traceback (MLflow's own INFO lines
    about creating a new sqlite store may precede it)."""
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    return errors[0]


@pytest.mark.slow  # a CLI subprocess
def test_tracking_server_nothing_listens_on(tmp_path):
    r, took = run_cli(["--grid", "smoke", "--tracking-uri", "http://127.0.0.1:9"], tmp_path)
    line = one_error_line(r)
    assert "tracking server at http://127.0.0.1:9 does not answer" in line and "mlflow server" in line
    assert took < 60 and not (tmp_path / "ray_results").exists()


@pytest.mark.slow  # a CLI subprocess
def test_ray_address_nothing_listens_on(tmp_path):
    port = free_port()
    r, took = run_cli(["--grid", "smoke", "--address", f"127.0.0.1:{port}"], tmp_path)
    line = one_error_line(r)
    assert f"no Ray cluster answers at 127.0.0.1:{port}" in line and f"ray start --head --port={port}" in line
    assert took < 60 and not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow  # starts a local Ray to count its CPUs
def test_trial_that_fits_no_node_fails_and_leaves_no_experiment(tmp_path):
    """More CPUs per trial than this machine has (the local Ray cluster is this machine), more GPUs
    than any machine has, device cuda without one: each one line, and the store holds no experiment."""
    cpus = (os.cpu_count() or 1) + 1
    r, took = run_cli(["--grid", "smoke", "--cpus-per-trial", str(cpus)], tmp_path)
    line = one_error_line(r)
    assert f"a trial needs {cpus} CPU and 0 GPU on one node" in line and "--cpus-per-trial" in line
    assert took < 60
    r, _ = run_cli(["--grid", "smoke", "--gpus-per-trial", "64"], tmp_path)
    assert "--gpus-per-trial" in one_error_line(r)
    if not torch.cuda.is_available():
        r, _ = run_cli(["--grid", "smoke", "--device", "cuda"], tmp_path)
        assert "no CUDA GPU is visible" in one_error_line(r)
    assert MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_experiment_by_name("smoke") is None


@pytest.mark.parametrize("address, says", [("ray://127.0.0.1:10001", "Ray Client mode is not supported"),
                                           ("http://127.0.0.1:8265", "dashboard / job-submission URL"),
                                           ("127.0.0.1", "expected host:port")])
def test_unusable_address_forms(address, says):
    with pytest.raises(PreflightError, match=says):
        preflight.check_ray_address(address)


def test_token_auth_enabled_only_when_a_token_exists_and_mode_unset(tmp_path, monkeypatch):
    # setenv first so that monkeypatch restores the variable's original state (usually absent) at the
    # end, including what enable_ray_token_auth writes: a leaked mode breaks later in-process Ray tests
    monkeypatch.setenv("RAY_AUTH_MODE", "")
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token either
    preflight.enable_ray_token_auth()
    assert "RAY_AUTH_MODE" not in os.environ
    (tmp_path / "token").write_text("0123456789abcdef")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "token"))
    preflight.enable_ray_token_auth()
    assert os.environ["RAY_AUTH_MODE"] == "token"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the user's explicit choice wins
    preflight.enable_ray_token_auth()
    assert os.environ["RAY_AUTH_MODE"] == "disabled"


def test_fit_counts_one_node_and_launchable_node_types(tmp_path):
    head, worker = {"CPU": 0.0}, {"CPU": 2.0}
    preflight.check_fit(2, 0, [head, worker])
    with pytest.raises(PreflightError, match=r"largest: 2 CPU, 0 GPU\): pass --cpus-per-trial 2 and --gpus-per-trial 0 "):
        preflight.check_fit(3, 0.5, [head, worker, worker])  # 4 CPUs in all, but a trial is one bundle
    # what `ray up` leaves on the head: the node types, resources filled in, the head's own max_workers 0
    boot = tmp_path / "ray_bootstrap_config.yaml"
    boot.write_text(yaml.safe_dump({"available_node_types": {
        "head": {"resources": {"CPU": 0}, "max_workers": 0},
        "gpu_worker": {"resources": {"CPU": 8, "GPU": 1}, "min_workers": 0, "max_workers": 8}}}))
    types = preflight.launchable_node_types(boot)
    assert types == [{"CPU": 8, "GPU": 1}]
    preflight.check_fit(4, 0.25, [head, *types])  # no worker is up yet, but one can be launched
    assert preflight.launchable_node_types(tmp_path / "absent.yaml") is None


def test_experiments_are_training_kind_runs_described_and_the_hint_fits_the_store(tmp_path):
    """What a user sees in the MLflow UI: the model-training kind, a run description, the right URL."""
    from suite import tracking
    from suite.config import load_grid
    client = tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp_id = tracking.ensure_experiment(client, "smoke")
    assert client.get_experiment(exp_id).tags[tracking.EXPERIMENT_KIND] == "custom_model_development"
    cfg = load_grid("smoke").trials[0]
    run = client.get_run(tracking.start_run(client, exp_id, cfg, {}))
    note = run.data.tags["mlflow.note.content"]
    assert run.info.run_name == cfg.run_name() and cfg.label() in note and cfg.grid_key() in note
    assert "`epochs=1`" in note and "test_acc_p00" in note  # smoke differs from the default 50 epochs
    hint = tracking.browse_hint("http://127.0.0.1:5000", exp_id)
    assert hint == f"open http://127.0.0.1:5000/#/experiments/{exp_id}?workflowType=machine_learning"
    assert "mlflow ui --backend-store-uri sqlite:///" in tracking.browse_hint(f"sqlite:///{tmp_path}/m.db", exp_id)


def test_any_http_answer_counts_as_a_tracking_server(tmp_path):
    """A server that answers, even 404 (no /health behind a proxy), passes; MLflow reports the rest."""
    import http.server
    import threading
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # 501 to all
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        preflight.check_tracking(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
    with pytest.raises(PreflightError, match="folder .* does not exist"):
        preflight.check_tracking(f"sqlite:///{tmp_path}/missing/mlflow.db")
