"""Every comparison table of the report carries the budgets: epochs per model at the level shown and
epochs per trial (budget.py). The runs are a tiny hand-made frame (the columns suite.analysis.load gives)
whose total_epochs / model_epochs_pNN are set by hand; an old run without them gets both from its params,
checked against epochs counted by hand from the protocol's definition (Han et al.'s rounds written out)."""
import math

import pandas as pd
import pytest

from suite.analysis import accuracy, budget, compression, quote
from suite.analysis.headline import headline_table
from suite.analysis.table import EPOCHS_MODEL, EPOCHS_TRIAL, budget_table

LEVELS = (0.0, 0.5, 0.9)
# label -> (protocol, order, baseline, per-seed (total_epochs, {level: model_epochs}) or None (old run), test_acc per level)
ARMS = {
    "SGD": ("oneshot", 0, True, [(10, {0.0: 10, 0.5: 10, 0.9: 10})] * 2, (0.98, 0.985, 0.60)),
    "SGD + fine-tune": ("finetune", 2, False, [(30, {0.0: 10, 0.5: 20, 0.9: 20}), (32, {0.0: 12, 0.5: 22, 0.9: 22})],
                        (0.98, 0.98, 0.975)),
    "SGD + iterative": ("iterative", 4, False, None, (0.98, 0.98, 0.985)),
    "Sparse VD": ("oneshot", 6, False, [(40, {0.0: 40, 0.5: 40, 0.9: 40})] * 2, (0.97, 0.97, 0.97)),
}
# the old iterative run's params: 10 epochs, 5 per round, half of what remains per round. Rounds by hand:
# 0 -> 0.5 (1 round, reaches 50 %); 0.5 -> 0.75 -> 0.875 -> 0.9 (3 rounds, the last capped at 90 %)
OLD = {"epochs": "10", "finetune_epochs": "5", "iterative_fraction": "0.5", "sparsities": "[0.0, 0.5, 0.9]"}
OLD_MODEL = {"p00": 10, "p50": 10 + 5 * 1, "p90": 10 + 5 * 4}
OLD_TOTAL = 10 + 5 * 4


def tag(p: float) -> str:
    return f"p{round(p * 100):02d}"


@pytest.fixture
def runs() -> pd.DataFrame:
    rows = []
    for label, (protocol, order, base, seeds, acc) in ARMS.items():
        for seed, spent in enumerate(seeds or [None, None]):
            row = {"run_id": f"{label}-{seed}", "label": label, "dataset": "mnist", "seed": seed, "label_order": order,
                   "color": None, "baseline": base, "collapsed": False, "protocol": protocol, "hidden": "[20, 10]",
                   "epochs": 10, "param.hidden": "[20, 10]"}
            if spent is None:   # logged before trials recorded their budget: load computes total_epochs from params
                row.update({f"param.{k}": v for k, v in OLD.items()}, total_epochs=budget.budget_from_params(protocol, OLD))
            else:
                row["total_epochs"] = float(spent[0])
                row.update({f"model_epochs_{tag(p)}": float(e) for p, e in spent[1].items()})
            for p, a in zip(LEVELS, acc):
                row.update({f"test_acc_{tag(p)}": a + 0.001 * seed, f"sparsity_{tag(p)}": p,
                            f"flops_dense_{tag(p)}": 2.0 * 1000, f"flops_nonzero_{tag(p)}": 2.0 * 1000 * (1 - p)})
            rows.append(row)
    return pd.DataFrame(rows)


def test_old_runs_get_their_budgets_from_their_params(runs):
    assert budget.budget_from_params("iterative", OLD) == OLD_TOTAL
    old = runs[runs.label == "SGD + iterative"]
    for level, epochs in OLD_MODEL.items():
        assert budget.model_epochs(old, level).tolist() == [epochs, epochs]
    finetune = {**OLD, "finetune_epochs": "7"}
    assert [budget.model_epochs_from_params(p, finetune, lv) for p in ("finetune", "gradual") for lv in ("p00", "p90")] == [
        10, 17, 10, 17]
    assert budget.model_epochs_from_params("oneshot", {"epochs": "10"}, "p90") == 10
    assert budget.model_epochs_from_params("natural", {"epochs": "10"}, "nat") == 10
    assert math.isnan(budget.model_epochs_from_params("someplugin", OLD, "p90"))
    assert math.isnan(budget.model_epochs_from_params("finetune", {"epochs": "10"}, "p90"))  # finetune_epochs unknown
    # logged values win over the params
    logged = runs[runs.label == "SGD + fine-tune"]
    assert budget.model_epochs(logged, "p90").tolist() == [20, 22]


def test_the_budget_table_gives_epochs_per_model_at_each_level_and_per_trial(runs):
    t = budget_table(runs, "mnist")
    assert list(t.cells.columns) == ["0 %", "50 %", "90 %", EPOCHS_TRIAL]
    assert list(t.cells.index) == ["SGD", "SGD + fine-tune", "SGD + iterative", "Sparse VD"]
    assert t.cells.loc["SGD"].tolist() == ["10", "10", "10", "10"]
    assert t.cells.loc["SGD + fine-tune"].tolist() == ["10-12", "20-22", "20-22", "30-32"]
    assert t.cells.loc["SGD + iterative"].tolist() == ["10", "15", "30", "30"]
    assert t.cells.loc["Sparse VD"].tolist() == ["40", "40", "40", "40"]
    # the quote kind builds the same table for READMEs
    names, builder = quote.KINDS["budget"]
    assert names == ("dataset",) and builder(runs, "mnist").cells.equals(t.cells)


def test_the_headline_shows_each_methods_epochs_per_model_and_per_trial(runs):
    for with_compression in (False, True):
        t, _ = headline_table(runs, with_compression=with_compression)
        model = "epochs per model (dense / 90 %)"
        assert t.cells.loc[("MNIST", "SGD + fine-tune"), model] == "10-12 / 20-22"
        assert t.cells.loc[("MNIST", "SGD + iterative"), model] == "10 / 30"
        assert t.cells.loc[("MNIST", "Sparse VD"), model] == "40 / 40"
        assert t.cells.loc[("MNIST", "SGD + iterative"), EPOCHS_TRIAL] == "30"
        assert t.cells.loc[("MNIST", "SGD"), EPOCHS_TRIAL] == "10"
        assert not t.best()[[model, EPOCHS_TRIAL]].any().any()   # a budget is no result: never bold


def test_the_compression_table_shows_the_budget_of_the_level_it_picked(runs):
    t, _ = compression.compression_table(runs, "mnist")   # MNIST's bar: error <= 2 %
    assert t.cells.loc["SGD + iterative", "level"] == "90 %"       # 1.5 / 1.4 % error at 90 %
    assert (t.cells.loc["SGD + iterative", EPOCHS_MODEL], t.cells.loc["SGD + iterative", EPOCHS_TRIAL]) == ("30", "30")
    assert t.cells.loc["SGD", "level"] == "50 %"                   # 40 % error at 90 % misses the bar
    assert (t.cells.loc["SGD", EPOCHS_MODEL], t.cells.loc["SGD", EPOCHS_TRIAL]) == ("10", "10")
    assert (t.cells.loc["SGD + fine-tune", EPOCHS_MODEL], t.cells.loc["SGD + fine-tune", EPOCHS_TRIAL]) == ("20-22", "30-32")
    assert t.cells.loc["Sparse VD", "compression"] == "none meets the bar"   # 3 % error everywhere
    assert (t.cells.loc["Sparse VD", EPOCHS_MODEL], t.cells.loc["Sparse VD", EPOCHS_TRIAL]) == ("40", "40")


def test_the_accuracy_section_opens_with_the_budget_table(runs, tmp_path):
    subs = accuracy.subsections(runs, "mnist", tmp_path)
    assert subs[0].title == "Training budget" and subs[1].title == "Test accuracy"
    assert (tmp_path / "budget_mnist.md").read_text().splitlines()[0].split("|")[2:6] == [
        " 0 %   ", " 50 %   ", " 90 %   ", " epochs per trial   "]
