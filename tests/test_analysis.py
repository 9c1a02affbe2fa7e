"""analysis/ over a small real MLflow store filled by the real tracking code with tiny real trials."""
import re

import numpy as np
import pandas as pd
import pytest

from suite import tracking
from suite.analysis import figure, references, report
from suite.analysis.levels import level_table
from suite.analysis.load import AnalysisError, baseline_label, load, ordered_labels
from suite.config import TrialConfig
from suite.trial import run_trial

pytestmark = pytest.mark.slow  # six real trials fill the store; test_report.py covers the tables on a logged store


@pytest.fixture(scope="module")
def store(tmp_path_factory, mnist):
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = tracking.connect(uri)
    exp_id = tracking.ensure_experiment(client, "tiny")
    results = []
    for method, kw in (("sgd", {}), ("sgd", {"dropout": 0.5}), ("bbb", {})):
        for seed in (0, 1):
            cfg = TrialConfig(method=method, seed=seed, epochs=2, train_subset=1500, val_size=1000, hidden=(32,),
                              test_samples=2, sparsities=(0.0, 0.5, 0.9), lr=1e-3, compile=False, **kw)
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
    # the same results with the run-tag contract set here (whatever the suite logs): BBB is the baseline and
    # comes first, Dropout has no label_order (sorts last) and no colour (palette fallback) ...
    tagged = tracking.ensure_experiment(client, "tagged")
    order = {"SGD": {"label_order": "2", "color": "#000000"}, "BBB": {"label_order": "1", "color": "#ff0000"}}
    for r in results:
        label = r.config.label()
        tags = {"protocol": "oneshot", "baseline": str(label == "BBB").lower(), "device": "cpu", "git_commit": "test"}
        run_id = tracking.log_result_locally(client, tagged, r, tags | order.get(label, {}))
        if label not in order:
            strip(client, run_id, ("label_order", "color"))
    # ... and as a store from before the contract: no protocol, label_order, color or baseline tags
    legacy = tracking.ensure_experiment(client, "legacy")
    for r in results:
        strip(client, tracking.log_result_locally(client, legacy, r, {"device": "cpu", "git_commit": "test"}),
              ("protocol", "label_order", "color", "baseline"))
    return uri, results


def strip(client, run_id: str, keys) -> None:
    """Delete those tags from a run (MLflow refuses to delete a tag that is not there)."""
    present = client.get_run(run_id).data.tags
    for k in keys:
        if k in present:
            client.delete_tag(run_id, k)


def test_tables_equal_a_direct_computation(store):
    uri, results = store
    exp = load("tiny", uri)
    assert len(exp.runs) == 6 and exp.duplicates_dropped == 1
    assert exp.status_counts == {"FINISHED": 7, "FAILED": 1}
    t = level_table(exp.runs, "test_acc", "mnist")
    cells, means = t.cells, t.means
    assert set(cells.index) == {"SGD", "Dropout 0.5", "BBB"} and list(cells.columns) == ["0 %", "50 %", "90 %"]
    for label in ("SGD", "Dropout 0.5", "BBB"):
        vals = [r.metrics["test_acc_p90"] for r in results if r.config.label() == label]
        assert means.loc[label, "90 %"] == pytest.approx(np.mean(vals))
        assert cells.loc[label, "90 %"] == f"{np.mean(vals):.4f} ± {np.std(vals, ddof=1):.4f} (n=2)"
    best = means["0 %"].idxmax()
    assert t.best()["0 %"].sum() == 1 and t.best().loc[best, "0 %"]
    assert f"**{cells.loc[best, '0 %']}**" in t.markdown() and t.markdown().count("**") == 2 * t.best().sum().sum()


def test_a_store_without_the_run_tags_falls_back_to_the_old_order(store):
    uri, _ = store
    exp = load("legacy", uri)
    assert (exp.runs.protocol == "oneshot").all()
    assert ordered_labels(exp.runs) == ["SGD", "Dropout 0.5", "BBB"] and baseline_label(exp.runs) == "SGD"
    assert figure.palette(exp.runs) == {"SGD": "#1f77b4", "Dropout 0.5": "#ff7f0e", "BBB": "#d62728"}


def test_the_baseline_comes_from_run_tags_order_and_colours_from_the_label(store, tmp_path):
    uri, _ = store
    exp = load("tagged", uri)
    # the tags put BBB first and colour SGD black and BBB pure red; built-in labels keep labels.py's order and colours
    assert ordered_labels(exp.runs) == ["SGD", "Dropout 0.5", "BBB"]
    assert baseline_label(exp.runs) == "BBB"
    pal = figure.palette(exp.runs)
    assert pal["SGD"] == "#1f77b4" and pal["BBB"] == "#d62728" and pal["Dropout 0.5"] not in ("#000000", "#ff0000")
    report.build(exp, tmp_path / "tagged")
    headline = (tmp_path / "tagged" / "tables" / "headline.csv").read_text()
    assert "vs BBB at 90 %" in headline and "baseline" in headline


def test_reference_only_against_the_same_protocol(store):
    uri, results = store
    exp = load("tiny", uri)
    study = references.load_reference("prasad2021")
    ref, differ = references.compare(exp.runs, study)
    ran = (ref.dataset == "mnist") & ref.label.isin(["SGD", "Dropout 0.5", "BBB"])
    assert set(ref[ran].status) == {"protocol differs"} and set(ref[~ran].status) == {"not run"}
    assert ref["diff"].isna().all()
    assert differ.loc["hidden", "published"] == "[500, 500]" and differ.loc["hidden", "SGD (mnist)"] == "[32]"
    assert differ.loc["epochs", "BBB (mnist)"] == "2" and differ.loc["test_samples", "SGD (mnist)"] == "-"
    # the study's cells stated under the tiny runs' protocol are compared
    like = study.assign(hidden="[32]", epochs="2", lr="0.001", val_size="1000", train_subset="1500",
                        prune_biases="false", test_samples="", train_samples="")
    ref, differ = references.compare(exp.runs, like)
    assert differ.empty
    row = ref[(ref.dataset == "mnist") & (ref.label == "SGD") & (ref.sparsity == 0.9)].iloc[0]
    ours = [r.metrics["test_acc_p90"] for r in results if r.config.label() == "SGD"]
    assert row.published == 0.6943 and row.status == "compared"
    assert row["diff"] == pytest.approx(np.mean(ours) - 0.6943)
    assert row.inside_spread == ("yes" if abs(row["diff"]) <= 2 * np.std(ours, ddof=1) else "no")
    assert (ref[(ref.sparsity == 0.75) & (ref.label == "SGD") & (ref.dataset == "mnist")].status == "level not run").all()
    assert (ref[ref.dataset == "fmnist"].status == "not run").all()


def test_report_writes_every_file(store, tmp_path):
    uri, _ = store
    assert report.main(["--experiment", "tiny", "--tracking-uri", uri, "--out", str(tmp_path / "r")]) == 0
    out = tmp_path / "r"
    for name in ("headline", "accuracy_vs_sparsity_mnist", "training_curves_mnist", "weights_mnist", "snr_mnist", "prior",
                 "cost", "latency", "ece_vs_sparsity_mnist", "error_vs_compression_mnist"):
        p = out / "plots" / f"{name}.png"
        assert p.is_file() and p.stat().st_size > 10_000, name
    for stem in ("headline", "test_acc_mnist", "test_acc_mc_mnist", "test_nll_mnist", "test_ece_mnist", "sparsity_mnist",
                 "cost_mnist", "inference_mnist", "compression_mnist", "protocol_prasad2021"):
        for ext in ("md", "csv", "tex"):
            assert (out / "tables" / f"{stem}.{ext}").stat().st_size > 50, f"{stem}.{ext}"
    text = (out / "report.md").read_text()
    assert "FAILED 1" in text and "FINISHED 7" in text and "1 older duplicate" in text
    assert "Not compared: our runs of SGD (mnist), Dropout 0.5 (mnist), BBB (mnist) differ" in text
    assert not (out / "tables" / "reference_prasad2021.csv").exists()   # nothing comparable: no diff table
    html = (out / "index.html").read_text()
    assert html.count("data:image/png;base64,") == len(list((out / "plots").glob("*.png")))
    # the same tables in both renderings: one markdown separator row per HTML <table>
    assert html.count("<table") == sum(bool(re.match(r"^\|[:-]", line)) for line in text.splitlines()) >= 10
    protocol = pd.read_csv(out / "tables" / "protocol_prasad2021.csv", index_col=0)
    assert protocol.loc["epochs", "published"] == "50" and protocol.loc["epochs", "BBB (mnist)"] == "2"


def test_one_seed_is_shown_as_such(store, tmp_path):
    uri, _ = store
    exp = load("one-seed", uri)
    cells = level_table(exp.runs, "test_acc", "mnist").cells
    assert cells.loc["BBB", "0 %"].endswith("(1 seed)")
    report.build(exp, tmp_path / "one")
    text = (tmp_path / "one" / "report.md").read_text()
    assert "one seed" in text and "no run is tagged `baseline=true`" in text


def test_missing_or_empty_experiment_is_one_clear_error(store, capsys):
    uri, _ = store
    with pytest.raises(AnalysisError, match="no experiment 'nope'.*it has: .*tiny"):
        load("nope", uri)
    with pytest.raises(AnalysisError, match="no FINISHED runs"):
        load("empty", uri)
    assert report.main(["--experiment", "nope", "--tracking-uri", uri]) == 2
    assert "it has:" in capsys.readouterr().err
