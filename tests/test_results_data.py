"""Runs files (suite.analysis.results, runsfile): a tiny real store of a tiny real grid -> export -> the same
report from the file as from the store; import into another store -> suite.run counts every point finished."""
import json
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from suite import tracking
from suite.analysis import report, results, runsfile
from suite.analysis.load import AnalysisError, load_file
from suite.config import load_grid
from suite.trial import run_trial

GRID = """description: two tiny trials
fixed: {epochs: 2, train_subset: 300, val_size: 300, hidden: [8], test_samples: 2, sparsities: [0, 0.5, 0.9],
        lr: 1.0e-3, compile: false}
grid: {method: [sgd, bbb], dataset: [mnist], seed: [0]}
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory, mnist):
    """Experiment `tiny`: the grid's runs, an accidental second FINISHED run of one point and a FAILED run;
    `half-a` and `half-b`: the grid's runs split in two."""
    root = tmp_path_factory.mktemp("results")
    (root / "grid.yaml").write_text(GRID)
    trials = load_grid(str(root / "grid.yaml")).trials
    outcomes = [run_trial(cfg, arrays=mnist) for cfg in trials]
    uri = f"sqlite:///{root / 'source.db'}"
    client = tracking.connect(uri)
    tags = {"device": "cpu", "git_commit": "test"}
    tiny = tracking.ensure_experiment(client, "tiny")
    for r in [*outcomes, outcomes[0]]:
        tracking.log_result_locally(client, tiny, r, tags)
    client.set_terminated(tracking.start_run(client, tiny, trials[0], tags), "FAILED")
    for name, half in (("half-a", outcomes[:1]), ("half-b", outcomes[1:])):
        exp_id = tracking.ensure_experiment(client, name)
        for r in half:
            tracking.log_result_locally(client, exp_id, r, tags)
    return root, uri, outcomes


def export(uri: str, experiment: str, out) -> None:
    assert results.main(["export", "--experiment", experiment, "--tracking-uri", uri, "--out", str(out)]) == 0


@pytest.fixture(scope="module")
def tiny_file(store):
    root, uri, _ = store
    export(uri, "tiny", root / "tiny.parquet")
    return root / "tiny.parquet"


def test_the_file_holds_what_the_trials_produced(store, tiny_file):
    _, _, outcomes = store
    data = runsfile.read(tiny_file)
    n = len(outcomes) + 1
    assert data.experiment == "tiny" and data.status_counts == {"FINISHED": n, "FAILED": 1} and len(data.runs) == n
    for out in outcomes:
        key = out.config.grid_key()
        run = max((r for r in data.runs if r.tags["grid_key"] == key), key=lambda r: r.end_time)
        assert run.status == "FINISHED" and run.run_name == out.config.run_name() and run.start_time < run.end_time
        assert run.params == {k: json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
                              for k, v in out.config.to_dict().items()}
        final, per_epoch = run.latest(), {k for e in out.history for k in e}
        # a metric also logged per epoch (step_time_ms) reads as its last epoch's value, as in MLflow
        assert all(final[k] == pytest.approx(v) for k, v in out.metrics.items() if k not in per_epoch)
        assert run.history("val_acc") == [(e["epoch"], pytest.approx(e["val_acc"])) for e in out.history]
        assert set(run.artifacts) == set(out.artifacts)   # the histograms, never model.pt
    assert tiny_file.stat().st_size < 100_000


def test_report_from_the_file_equals_the_report_from_the_store(store, tiny_file):
    root, uri, _ = store
    a, b = root / "from-store", root / "from-file"
    assert report.main(["--experiment", "tiny", "--tracking-uri", uri, "--out", str(a)]) == 0
    assert report.main(["--runs", str(tiny_file), "--out", str(b)]) == 0
    assert "1 older duplicate" in (a / "report.md").read_text() and "FAILED 1" in (a / "report.md").read_text()
    assert (a / "report.md").read_bytes() == (b / "report.md").read_bytes()
    csvs = sorted(p.name for p in (a / "tables").glob("*.csv"))
    assert len(csvs) >= 8 and csvs == sorted(p.name for p in (b / "tables").glob("*.csv"))
    for name in csvs:
        assert (a / "tables" / name).read_bytes() == (b / "tables" / name).read_bytes(), name
    # the histogram plots need the exported .npz artifacts
    plots = {p.name for p in (a / "plots").glob("*.png")}
    assert {"weights_mnist.png", "snr_mnist.png", "training_curves_mnist.png", "prior.png"} <= plots
    assert plots == {p.name for p in (b / "plots").glob("*.png")}


@pytest.fixture(scope="module")
def imported(store):
    """Both halves, exported and imported into an empty store."""
    root, uri, _ = store
    for half in ("half-a", "half-b"):
        export(uri, half, root / f"{half}.parquet")
    target = f"sqlite:///{root / 'target.db'}"
    for half in ("half-a", "half-b"):
        assert results.main(["import", str(root / f"{half}.parquet"), "--experiment", "tiny", "--tracking-uri", target]) == 0
    return target


def snapshot(uri: str, experiment: str) -> dict:
    """Per grid_key: name, status, times, tags, params, every metric point, the histogram artifacts."""
    c = MlflowClient(uri)
    runs = c.search_runs([c.get_experiment_by_name(experiment).experiment_id])
    assert len({r.data.tags["grid_key"] for r in runs}) == len(runs), "a grid point imported twice"
    return {r.data.tags["grid_key"]: (r.info.run_name, r.info.status, r.info.start_time, r.info.end_time, r.data.tags,
                                      r.data.params, {k: [(m.step, m.timestamp, m.value) for m in
                                                          c.get_metric_history(r.info.run_id, k)] for k in r.data.metrics},
                                      sorted(a.path for a in c.list_artifacts(r.info.run_id) if a.path.endswith(".npz")))
            for r in runs}


def test_import_keeps_every_run_and_twice_adds_nothing(store, imported, tiny_file, capsys):
    root, uri, outcomes = store
    want = snapshot(uri, "half-a") | snapshot(uri, "half-b")
    assert snapshot(imported, "tiny") == want and len(want) == len(outcomes)
    capsys.readouterr()
    assert results.main(["import", str(root / "half-a.parquet"), "--experiment", "tiny", "--tracking-uri", imported]) == 0
    out = capsys.readouterr().out
    assert "imported 0 runs" in out and out.count("already FINISHED") == 1
    assert snapshot(imported, "tiny") == want
    # the file's older duplicate is not imported; a store is a source too
    other = f"sqlite:///{root / 'other.db'}"
    assert results.main(["import", str(tiny_file), "--experiment", "t", "--tracking-uri", other]) == 0
    assert f"imported {len(outcomes)} runs" in capsys.readouterr().out
    assert results.main(["import", "--from-uri", uri, "--from-experiment", "half-a", "--experiment", "t",
                         "--tracking-uri", other]) == 0
    assert "imported 0 runs" in capsys.readouterr().out and len(snapshot(other, "t")) == len(outcomes)


@pytest.mark.slow
def test_suite_run_counts_imported_points_finished(store, imported):
    root, _, outcomes = store
    p = subprocess.run([sys.executable, "-m", "suite.run", "--grid", str(root / "grid.yaml"), "--dry-run",
                        "--tracking-uri", imported, "--experiment", "tiny"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = [line for line in p.stdout.splitlines() if line.rstrip().endswith(("finished", "pending"))]
    assert len(rows) == len(outcomes) and all(line.rstrip().endswith("finished") for line in rows)
    assert f"{len(outcomes)} trials ({len(outcomes)} already finished)" in p.stdout


def test_bad_input_is_one_clear_error_before_anything_is_written(store, tiny_file, tmp_path, capsys):
    _, uri, _ = store
    good = pq.read_table(tiny_file)
    meta = json.loads(good.schema.metadata[runsfile.META_KEY])
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "plain.parquet")
    pq.write_table(good.replace_schema_metadata({runsfile.META_KEY: json.dumps(meta | {"schema_version": 99})}),
                   tmp_path / "v99.parquet")
    pq.write_table(good.drop_columns(["blob"]).replace_schema_metadata(good.schema.metadata), tmp_path / "cols.parquet")
    (tmp_path / "text.parquet").write_text("grid_key,label\n")
    for name, why in (("plain", "not a runs export"), ("v99", "schema version 99"), ("cols", "its columns are"),
                      ("text", "not a Parquet file"), ("missing", "no runs file")):
        with pytest.raises(runsfile.FormatError, match=why):
            runsfile.read(tmp_path / f"{name}.parquet")
        target = tmp_path / f"{name}.db"
        assert results.main(["import", str(tmp_path / f"{name}.parquet"), "--experiment", "x",
                             "--tracking-uri", f"sqlite:///{target}"]) == 2
        assert why in capsys.readouterr().err and not target.exists()
        with pytest.raises(AnalysisError, match=why):
            load_file(tmp_path / f"{name}.parquet")
    assert results.main(["export", "--experiment", "nope", "--tracking-uri", uri, "--out", str(tmp_path / "n.parquet")]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err and not (tmp_path / "n.parquet").exists()
    assert results.main(["export", "--experiment", "tiny", "--tracking-uri", uri, "--out", str(tmp_path / "no/r.parquet")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "no").exists()
    assert results.main(["export", "--experiment", "tiny", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}",
                         "--out", str(tmp_path / "n.parquet")]) == 2
    assert "no MLflow store" in capsys.readouterr().err and not (tmp_path / "none.db").exists()
    assert report.main(["--runs", str(tmp_path / "v99.parquet")]) == 2
