"""Runs files are verified and imports are all or nothing; the analysis commands check the store and
the output before any work and fail in one line.

A tiny real MLflow store (three runs logged with MlflowClient, no training) is exported to a version 2
runs file; damaged copies of it are made by dropping rows with pyarrow, as a tool or a bad merge would.
"""
import io
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from suite.analysis import report, results, runsfile

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "results" / "paper-seeds" / "runs.parquet"   # a committed version 1 file: 5 FINISHED runs
EPOCHS = 40
FINAL = [f"test_acc_p{p:02d}" for p in (0, 50, 90, 95, 98, 99)] + [f"sparsity_p{p:02d}" for p in (0, 50, 90, 95, 98, 99)] + [
    "train_wall_s", "compile_s", "eval_wall_s", "total_wall_s", "epochs_to_fit"]
POINTS = 3 * EPOCHS + len(FINAL)   # 137: three per-epoch histories and the final metrics
LABELS = ("SGD", "Dropout", "BBB")
UNREACHABLE = "http://127.0.0.1:9"   # the discard port: nothing listens, the connection is refused at once


def log_run(client: MlflowClient, exp_id: str, label: str, i: int) -> None:
    tags = {"grid_key": f"mnist-{label.lower()}-0", "label": label, "method": "bbb" if label == "BBB" else "sgd",
            "dataset": "mnist", "seed": "0", "git_commit": "test", "device": "cpu"}
    run_id = client.create_run(exp_id, start_time=1_000_000 + i, tags=tags, run_name=f"mnist-{label.lower()}-s0").info.run_id
    history = [Metric(k, 0.5 + 0.01 * ep + i, 2_000_000 + ep, ep) for ep in range(EPOCHS)
               for k in ("val_acc", "train_loss", "train_nll")]
    final = [Metric(k, 0.9 - 0.01 * j - 0.001 * i, 3_000_000, 0) for j, k in enumerate(FINAL)]
    client.log_batch(run_id, metrics=history + final,
                     params=[Param(k, v) for k, v in {"hidden": "[8]", "epochs": str(EPOCHS), "lr": "0.001"}.items()])
    buf = io.BytesIO()
    np.savez(buf, weights=np.arange(10.0) * (i + 1))
    client.log_text(run_id, "", "model.txt")  # not exported: only .npz artifacts travel
    path = Path(client.download_artifacts(run_id, "model.txt")).parent / "hist_weights.npz"
    path.write_bytes(buf.getvalue())
    client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED", end_time=4_000_000 + i)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """(the store's URI, its export: a version 2 runs file of experiment `tiny`)."""
    root = tmp_path_factory.mktemp("integrity")
    uri = f"sqlite:///{root / 'source.db'}"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("tiny")
    for i, label in enumerate(LABELS):
        log_run(client, exp_id, label, i)
    assert results.main(["export", "--experiment", "tiny", "--tracking-uri", uri, "--out", str(root / "runs.parquet")]) == 0
    return uri, root / "runs.parquet"


def snapshot(uri: str, experiment: str = "tiny") -> dict:
    """Per run name: status, times, tags, params, every metric point, the .npz artifacts; active runs only."""
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    runs = c.search_runs([exp.experiment_id])
    assert len({r.info.run_name for r in runs}) == len(runs), "a run imported twice"
    return {r.info.run_name: (r.info.status, r.info.start_time, r.info.end_time, r.data.tags, r.data.params,
                              {k: [(m.step, m.timestamp, m.value) for m in c.get_metric_history(r.info.run_id, k)]
                               for k in r.data.metrics},
                              sorted(a.path for a in c.list_artifacts(r.info.run_id) if a.path.endswith(".npz")))
            for r in runs}


def damaged(path: Path, out: Path, drop) -> Path:
    """A copy of the runs file without the rows for which drop(row, n) is true, n counting the rows of the
    same run and kind so far (1, 2, ...); the metadata kept, as a tool that drops rows keeps it."""
    table = pq.read_table(path)
    seen: Counter = Counter()
    keep = []
    for row in table.select(["run_id", "kind"]).to_pylist():
        seen[row["run_id"], row["kind"]] += 1
        keep.append(not drop(row, seen[row["run_id"], row["kind"]]))
    pq.write_table(table.filter(pa.array(keep)), out)
    return out


def run_id_of(path: Path, label: str) -> str:
    return next(r.run_id for r in runsfile.read(path).runs if r.tags["label"] == label)


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err.strip()


def test_an_export_carries_each_runs_counts_and_digest_and_replaces_a_file_whole(source, tmp_path):
    uri, path = source
    meta = json.loads(pq.read_schema(path).metadata[runsfile.META_KEY])
    assert meta["schema_version"] == runsfile.SCHEMA_VERSION == 2
    assert [(m["run_name"], m["metric_points"], m["params"], m["artifacts"]) for m in meta["runs"]] == [
        (f"mnist-{lab.lower()}-s0", POINTS, 3, 1) for lab in reversed(LABELS)]   # MLflow lists the newest first
    assert {m["sha256"] for m in meta["runs"]} == {r.digest() for r in runsfile.read(path).runs}
    out = tmp_path / "runs.parquet"
    out.write_text("an older export")
    assert results.main(["export", "--experiment", "tiny", "--tracking-uri", uri, "--out", str(out)]) == 0
    assert out.read_bytes() == path.read_bytes() and os.listdir(tmp_path) == ["runs.parquet"]   # no temporary left


def test_a_file_with_rows_dropped_is_refused_naming_the_run_and_adds_nothing(source, tmp_path, capsys):
    _, path = source
    dropout, sgd = run_id_of(path, "Dropout"), run_id_of(path, "SGD")
    half = damaged(path, tmp_path / "half.parquet",   # every second of Dropout's metric points
                   lambda row, n: row["run_id"] == dropout and row["kind"] == "metric" and n % 2 == 0)
    gone = damaged(path, tmp_path / "gone.parquet", lambda row, n: row["run_id"] == sgd)
    table = pq.read_table(path)   # one value of Dropout's changed: the counts agree, the digest does not
    values = table["value"].to_pylist()
    values[next(i for i, (rid, kind) in enumerate(zip(table["run_id"].to_pylist(), table["kind"].to_pylist()))
                if rid == dropout and kind == "metric")] += 1
    pq.write_table(table.set_column(table.schema.get_field_index("value"), "value", pa.array(values, pa.float64())),
                   changed := tmp_path / "changed.parquet")
    target = tmp_path / "target.db"
    kept = POINTS - POINTS // 2
    for file, why in ((half, f"run mnist-dropout-s0 ({dropout}) in {half} has {kept} metric points, its export says "
                              f"{POINTS}: the file is damaged; export it again"),
                      (gone, f"run mnist-sgd-s0 ({sgd}) in {gone} is missing, its export lists it: the file is damaged"),
                      (changed, f"run mnist-dropout-s0 ({dropout}) in {changed} differs from its export (sha256 of its "
                                "content): the file is damaged")):
        assert results.main(["import", str(file), "--experiment", "tiny", "--tracking-uri", f"sqlite:///{target}"]) == 2
        assert why in one_line(capsys) and not target.exists()   # verified before the store is even opened
        assert report.main(["--runs", str(file), "--out", str(tmp_path / "report")]) == 2 and why in one_line(capsys)
    assert results.main(["import", str(path), "--experiment", "tiny", "--tracking-uri", f"sqlite:///{target}"]) == 0
    assert "imported 3 runs" in capsys.readouterr().out


def test_a_version_1_file_is_checked_against_its_status_counts_and_still_imports(tmp_path, capsys):
    first = runsfile.read(SEEDS).runs[0].run_id
    short = damaged(SEEDS, tmp_path / "short.parquet", lambda row, n: row["run_id"] == first)
    target = f"sqlite:///{tmp_path / 'target.db'}"
    assert results.main(["import", str(short), "--experiment", "paper-seeds", "--tracking-uri", target]) == 2
    assert f"{short} holds 4 FINISHED runs, its export says 5: the file is damaged" in one_line(capsys)
    assert not (tmp_path / "target.db").exists()
    assert results.main(["import", str(SEEDS), "--experiment", "paper-seeds", "--tracking-uri", target]) == 0
    assert "imported 5 runs" in capsys.readouterr().out


def test_an_import_killed_midway_is_repaired_by_the_next(source, tmp_path, monkeypatch, capsys):
    uri, path = source
    target = f"sqlite:///{tmp_path / 'target.db'}"
    calls = []
    real = MlflowClient.log_artifacts

    def dies_on_the_second_run(self, run_id, local_dir, artifact_path=None):
        calls.append(run_id)
        if len(calls) == 2:   # the second run has its params, tags and metrics, not its artifacts
            raise KeyboardInterrupt
        return real(self, run_id, local_dir, artifact_path)
    monkeypatch.setattr(MlflowClient, "log_artifacts", dies_on_the_second_run)
    with pytest.raises(KeyboardInterrupt):
        results.main(["import", str(path), "--experiment", "tiny", "--tracking-uri", target])
    monkeypatch.undo()
    left = MlflowClient(target).search_runs([MlflowClient(target).get_experiment_by_name("tiny").experiment_id])
    assert sorted((r.info.status, "import_incomplete" in r.data.tags) for r in left) == [("FINISHED", False), ("RUNNING", True)]
    capsys.readouterr()
    assert results.main(["import", str(path), "--experiment", "tiny", "--tracking-uri", target]) == 0
    out = capsys.readouterr().out
    assert "left RUNNING by an interrupted import; imported again" in out and "imported 2 runs" in out and "repaired 1" in out
    assert snapshot(target) == snapshot(uri)   # every run whole, FINISHED, untagged, once


def test_a_run_imported_partially_by_an_older_version_is_imported_over(source, tmp_path, capsys):
    uri, path = source
    target = f"sqlite:///{tmp_path / 'target.db'}"
    client = MlflowClient(target)
    exp_id = client.create_experiment("tiny")
    # what an older version wrote from a damaged file: FINISHED, unmarked, 17 of the 137 points, no artifacts
    whole = next(r for r in runsfile.read(path).runs if r.tags["label"] == "Dropout")
    partial = runsfile.RunRecord(whole.run_id, whole.run_name, "FINISHED", whole.start_time, whole.end_time, whole.tags,
                                 whole.params, whole.metrics[:17])
    results._log(client, exp_id, partial, {})
    capsys.readouterr()
    assert results.main(["import", str(path), "--experiment", "tiny", "--tracking-uri", target]) == 0
    out = capsys.readouterr().out
    assert ("repaired mnist-dropout-0 (mnist-dropout-s0): imported partially (0 of its 1 artifacts, 17 of its 137 metric "
            "points); imported again") in out and "imported 3 runs" in out
    assert snapshot(target) == snapshot(uri)
    assert results.main(["import", str(path), "--experiment", "tiny", "--tracking-uri", target]) == 0
    out = capsys.readouterr().out
    assert "imported 0 runs" in out and out.count("already FINISHED") == 3 and "repaired" not in out


def test_a_repaired_parent_keeps_its_children(tmp_path, capsys):
    """A search's parent run imported partially, its recipe runs whole: the parent is imported again, and
    the children already in the store follow its new run id."""
    parent = runsfile.RunRecord("p", "search-sgd", "FINISHED", 1, 9, {"search_parent": "true"}, {"space": "sgd"},
                                [("best_val_acc", 0, 9, 0.9), ("recipes", 0, 9, 2.0)])
    kids = [runsfile.RunRecord(f"c{i}", f"recipe-{i}", "FINISHED", 2 + i, 5 + i, {results.PARENT: "p", "grid_key": f"k{i}"},
                               {"lr": str(i)}, [("val_acc", 0, 5, 0.8 + i / 100)]) for i in range(2)]
    path = runsfile.write(runsfile.RunsExport("search", [parent, *kids], status_counts={"FINISHED": 3}),
                          tmp_path / "search.parquet")
    target = f"sqlite:///{tmp_path / 'target.db'}"
    client = MlflowClient(target)
    exp_id = client.create_experiment("search")
    old = {"p": results._log(client, exp_id, runsfile.RunRecord(**{**vars(parent), "metrics": parent.metrics[:1]}), {})}
    for kid in kids:
        results._log(client, exp_id, kid, old)
    assert results.main(["import", str(path), "--experiment", "search", "--tracking-uri", target]) == 0
    assert "repaired - (search-sgd): imported partially (1 of its 2 metric points); imported again" in capsys.readouterr().out
    runs = {r.info.run_name: r for r in client.search_runs([exp_id])}
    assert len(runs) == 3 and runs["search-sgd"].info.run_id != old["p"]
    assert {runs[f"recipe-{i}"].data.tags[results.PARENT] for i in range(2)} == {runs["search-sgd"].info.run_id}

def commands(uri: str, tmp_path: Path, file: Path) -> dict[str, list[str]]:
    """Every analysis command that talks to a store, pointed at `uri`."""
    return {"report": ["report", "--experiment", "tiny", "--tracking-uri", uri, "--out", str(tmp_path / "r")],
            "export": ["export", "--experiment", "tiny", "--tracking-uri", uri, "--out", str(tmp_path / "x.parquet")],
            "import": ["import", str(file), "--experiment", "tiny", "--tracking-uri", uri],
            "import --from-uri": ["import", "--from-uri", uri, "--experiment", "tiny",
                                  "--tracking-uri", f"sqlite:///{tmp_path / 'target.db'}"]}


def main(argv: list[str]) -> int:
    return report.main(argv[1:]) if argv[0] == "report" else results.main(argv)


@pytest.mark.timeout(60)   # before the check, each command retried for minutes
@pytest.mark.parametrize("command", ["report", "export", "import", "import --from-uri"])
def test_an_unreachable_tracking_server_is_refused_within_seconds(command, source, tmp_path, capsys):
    start = time.monotonic()
    assert main(commands(UNREACHABLE, tmp_path, source[1])[command]) == 2
    assert time.monotonic() - start < 10
    assert f"the MLflow tracking server at {UNREACHABLE} does not answer" in one_line(capsys)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
@pytest.mark.parametrize("command", ["report", "export", "import", "import --from-uri"])
def test_a_damaged_sqlite_store_is_one_line(command, damage, source, tmp_path, capsys):
    db = tmp_path / "mlflow.db"
    if damage == "garbage":
        db.write_bytes(np.random.default_rng(0).bytes(50_000))
    else:
        data = Path(source[0][len("sqlite:///"):]).read_bytes()
        db.write_bytes(data[:len(data) // 2])
    assert main(commands(f"sqlite:///{db}", tmp_path, source[1])[command]) == 2
    assert f"error: the MLflow store {db} is damaged (sqlite: " in one_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


@pytest.mark.parametrize("command", ["report", "export"])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(command, source, tmp_path, capsys):
    """Tests run as root, where permission bits stop no write: the unwritable places are a path under a file and
    /proc (procfs takes no new files, even from root)."""
    uri, path = source
    (tmp_path / "file.txt").write_text("")
    for out, why in ((tmp_path / "file.txt" / "out", f"{tmp_path / 'file.txt'} is a file, not a folder"),
                     (Path("/proc/bpb-out"), "cannot write into /proc")):
        argv = commands(uri, tmp_path, path)[command]
        argv[argv.index("--out") + 1] = str(out / "runs.parquet" if command == "export" else out)
        assert main(argv) == 2
        assert f"error: --out {out}: " in (err := one_line(capsys)) and why in err   # export names the file's folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_the_html_report_rebuilds_byte_for_byte(source, tmp_path):
    """Table ids come from the table's place in the report, not from Styler's random uuid."""
    for out in ("a", "b"):
        assert report.main(["--runs", str(source[1]), "--out", str(tmp_path / out)]) == 0
    html = (tmp_path / "a" / "index.html").read_bytes()
    assert html.count(b"<table") >= 5 and html == (tmp_path / "b" / "index.html").read_bytes()
