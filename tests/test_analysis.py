"""analysis/ over a small real MLflow store filled by the real tracking code with tiny real trials."""
import numpy as np
import pandas as pd
import pytest

from analysis import report, tables
from analysis.load import AnalysisError, load
from suite import tracking
from suite.config import TrialConfig
from suite.trial import run_trial


@pytest.fixture(scope="module")
def store(tmp_path_factory, mnist):
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = tracking.connect(uri)
    exp_id = tracking.ensure_experiment(client, "tiny")
    results = []
    for method, dropout in (("sgd", 0.0), ("sgd", 0.5), ("bbb", 0.0)):
        for seed in (0, 1):
            cfg = TrialConfig(method=method, dropout=dropout, seed=seed, epochs=2, train_subset=1500, val_size=1000,
                              hidden=(32,), test_samples=2, sparsities=(0.0, 0.5, 0.9), lr=1e-3, compile=False)
            results.append(run_trial(cfg, arrays=mnist))
    for r in results:
        tracking.log_result_locally(client, exp_id, r, {"device": "cpu", "git_commit": "test"})
    # an accidental second FINISHED run of one grid point (must not double-count) ...
    tracking.log_result_locally(client, exp_id, results[0], {"device": "cpu", "git_commit": "test"})
    # ... and a failed one (must be counted, not used)
    failed = tracking.start_run(client, exp_id, TrialConfig(seed=9), {"device": "cpu"})
    client.set_terminated(failed, "FAILED")
    one = tracking.ensure_experiment(client, "one-seed")
    tracking.log_result_locally(client, one, results[-1], {"device": "cpu", "git_commit": "test"})
    tracking.ensure_experiment(client, "empty")
    return uri, results


def test_tables_equal_a_direct_computation(store):
    uri, results = store
    exp = load("tiny", uri)
    assert len(exp.runs) == 6 and exp.duplicates_dropped == 1
    assert exp.status_counts == {"FINISHED": 7, "FAILED": 1}
    cells, means = tables.level_table(exp.runs, "test_acc", "mnist")
    assert list(cells.index) == ["SGD", "Dropout 0.5", "BBB"] and list(cells.columns) == ["0 %", "50 %", "90 %"]
    for label, method, dropout in (("SGD", "sgd", 0.0), ("Dropout 0.5", "sgd", 0.5), ("BBB", "bbb", 0.0)):
        vals = [r.metrics["test_acc_p90"] for r in results if r.config.method == method and r.config.dropout == dropout]
        assert means.loc[label, "90 %"] == pytest.approx(np.mean(vals))
        assert cells.loc[label, "90 %"] == f"{np.mean(vals):.4f} ± {np.std(vals, ddof=1):.4f} (n=2)"
    best = means["0 %"].idxmax()
    marked = tables.mark_best(cells, means, True)
    assert marked.loc[best, "0 %"].startswith("**") and sum(marked["0 %"].str.startswith("**")) == 1


def test_reference_diff_and_spread(store):
    uri, results = store
    exp = load("tiny", uri)
    ref = tables.reference_table(exp.runs, tables.load_reference("prasad2021"))
    row = ref[(ref.dataset == "mnist") & (ref.label == "SGD") & (ref.sparsity == 0.9)].iloc[0]
    ours = [r.metrics["test_acc_p90"] for r in results if r.config.method == "sgd" and r.config.dropout == 0]
    assert row.published == 0.6943
    assert row["diff"] == pytest.approx(np.mean(ours) - 0.6943)
    assert row.inside_spread == ("yes" if abs(row["diff"]) <= 2 * np.std(ours, ddof=1) else "no")
    assert (ref[ref.sparsity == 0.75].inside_spread == "not run").all()  # no 75 % level in these runs
    assert (ref[ref.dataset == "fmnist"].inside_spread == "not run").all()


def test_report_writes_every_file(store, tmp_path):
    uri, _ = store
    assert report.main(["--experiment", "tiny", "--tracking-uri", uri, "--out", str(tmp_path / "r")]) == 0
    out = tmp_path / "r"
    for name in ("accuracy_vs_sparsity_mnist", "training_curves_mnist", "weights_mnist", "snr_mnist", "prior",
                 "cost", "latency", "ece_vs_sparsity_mnist"):
        p = out / "plots" / f"{name}.png"
        assert p.is_file() and p.stat().st_size > 10_000, name
    for stem in ("test_acc_mnist", "test_acc_mc_mnist", "test_nll_mnist", "test_ece_mnist", "sparsity_mnist",
                 "cost_mnist", "reference_prasad2021"):
        for ext in ("md", "csv", "tex"):
            assert (out / "tables" / f"{stem}.{ext}").stat().st_size > 50, f"{stem}.{ext}"
    text = (out / "report.md").read_text()
    assert "FAILED 1" in text and "FINISHED 7" in text and "1 older duplicate" in text
    assert "the study reports BBB accuracy" in text
    html = (out / "index.html").read_text()
    assert html.count("data:image/png;base64,") == len(list((out / "plots").glob("*.png")))
    csv = pd.read_csv(out / "tables" / "reference_prasad2021.csv")
    assert {"published", "ours_mean", "diff", "inside_spread"} <= set(csv.columns)


def test_one_seed_is_shown_as_such(store, tmp_path):
    uri, _ = store
    exp = load("one-seed", uri)
    cells, _ = tables.level_table(exp.runs, "test_acc", "mnist")
    assert cells.loc["BBB", "0 %"].endswith("(1 seed)")
    report.build(exp, tmp_path / "one")
    assert "one seed" in (tmp_path / "one" / "report.md").read_text()


def test_missing_or_empty_experiment_is_one_clear_error(store, capsys):
    uri, _ = store
    with pytest.raises(AnalysisError, match="no experiment 'nope'.*it has: .*tiny"):
        load("nope", uri)
    with pytest.raises(AnalysisError, match="no FINISHED runs"):
        load("empty", uri)
    assert report.main(["--experiment", "nope", "--tracking-uri", uri]) == 2
    assert "it has:" in capsys.readouterr().err
