"""The report's payoff sections (what compression buys, uncertainty under pruning), equal budgets and
collapsed runs, over a real store of hand-built TrialResults (no training): every expected figure below
is computed by hand from the metrics written here."""
import json

import numpy as np
import pandas as pd
import pytest

from suite import tracking
from suite.analysis import budget, figure, payoff, report
from suite.analysis.load import load
from suite.config import TrialConfig
from suite.evaluate import EVAL_VERSION
from suite.trial import TrialResult

LEVELS = {"p00": 0.0, "p90": 0.9, "p98": 0.98}
NAT_LAYERS = (0.985, 0.973, 0.76)
WIDTHS = {"p00": (784, 300, 100), "p90": (600, 200, 80), "p98": (300, 90, 40)}
DENSE_FLOPS = 2 * (784 * 300 + 300 * 100 + 100 * 10)    # 532400
WINDOW = {"p00": 784, "p90": 700, "p98": 400}           # the compacted forward's input window, pixels


def run_flops(tag: str) -> float:
    """FLOPs of the forward that runs: the window, hidden widths padded to multiples of 16."""
    h1, h2 = (-(-w // 16) * 16 for w in WIDTHS[tag][1:])
    return 2.0 * (WINDOW[tag] * h1 + h1 * h2 + h2 * 10)


# Sparse VD at 90 % logged per-round speed-ups (median, q25, q75) per seed for these kernels at batch 1000; every
# other cell has the ratio of the two medians only
PER_ROUND = {"compact": ((4.5, 4.1, 4.8), (4.7, 4.3, 5.0)), "sparse": ((0.65, 0.6, 0.7), (0.75, 0.7, 0.8))}
# per method: (config, compacted / CSR latency at batch 1000 and batch 1 per level, ms; dense is 2.0 ms (seed 1:
# 2.2 ms) at batch 1000 and 0.05 ms at batch 1; OOD AUROC by entropy; mean rotated accuracy)
ARMS = {
    "SGD + fine-tune": (dict(method="sgd", protocol="finetune", finetune_epochs=2, epochs=10),
                        {"p00": (2.1, 20.0, 0.06, 0.2), "p90": (1.0, 3.0, 0.04, 0.06), "p98": (0.25, 1.0, 0.03, 0.04)},
                        {"p00": 0.80, "p90": 0.75, "p98": 0.60}, {"p00": 0.52, "p90": 0.45, "p98": 0.30}),
    "Sparse VD": (dict(method="sparse_vd", protocol="natural", epochs=20),
                  {"p00": (2.1, 20.0, 0.06, 0.2), "p90": (0.5, 3.0, 0.04, 0.06), "p98": (0.1, 1.0, 0.03, 0.04)},
                  {"p00": 0.90, "p90": 0.89, "p98": 0.85}, {"p00": 0.55, "p90": 0.54, "p98": 0.50}),
}


def level_metrics(tag: str, layers, seed: int, lat, auroc: float, shift: float, mc: bool) -> dict[str, float]:
    sizes = np.array([784 * 300, 300 * 100, 100 * 10])
    m = {f"test_acc_{tag}": 0.98 - 0.01 * seed, f"test_nll_{tag}": 0.07, f"test_ece_{tag}": 0.01,
         f"sparsity_{tag}": float(np.dot(sizes, layers) / sizes.sum()),
         **{f"sparsity_l{i}_{tag}": s for i, s in enumerate(layers, 1)},
         f"latency_dense_b1000_ms_{tag}": 2.0 + 0.2 * seed, f"latency_dense_b1_ms_{tag}": 0.05,
         f"size_dense_bytes_{tag}": 1.0e6, f"size_csr_bytes_{tag}": 2.0e5,
         f"ood_auroc_entropy_{tag}": auroc, f"ood_aupr_entropy_{tag}": auroc - 0.05,
         f"shift_acc_mean_{tag}": shift, f"shift_nll_mean_{tag}": 1.5, f"shift_ece_mean_{tag}": 0.2}
    if lat is not None:
        m |= {f"latency_compact_b1000_ms_{tag}": lat[0], f"latency_sparse_b1000_ms_{tag}": lat[1],
              f"latency_compact_b1_ms_{tag}": lat[2], f"latency_sparse_b1_ms_{tag}": lat[3]}
    if tag in WIDTHS:
        w = WIDTHS[tag]
        m |= {**{f"compact_width_l{i}_{tag}": float(x) for i, x in enumerate(w)},
              f"flops_dense_{tag}": DENSE_FLOPS, f"flops_compact_{tag}": 2.0 * (w[0] * w[1] + w[1] * w[2] + w[2] * 10),
              f"flops_nonzero_{tag}": 2.0 * float(np.dot(sizes, 1 - np.asarray(layers))), f"flops_run_{tag}": run_flops(tag)}
    if tag in ("p00", "p98"):
        m |= {f"shift_acc_r{a}_{tag}": shift + (0.4 if a == 0 else -0.1) for a in range(0, 181, 15)}
    if mc:
        m[f"ood_auroc_mi_mc_{tag}"] = auroc + 0.02
    return m


def results(new_metrics: bool = True) -> list[tuple[TrialResult, dict]]:
    out = []
    for label, (kw, lat, auroc, shift) in ARMS.items():
        for seed in (0, 1):
            cfg = TrialConfig(dataset="mnist", seed=seed, hidden=(300, 100), sparsities=tuple(LEVELS.values()), **kw)
            assert cfg.label() == label
            m = {"train_wall_s": 30.0, "total_wall_s": 40.0}
            for tag, p in LEVELS.items():
                m |= level_metrics(tag, (p, p, p), seed, lat[tag], auroc[tag], shift[tag], kw["method"] == "sparse_vd")
            if kw["method"] == "sparse_vd":
                m |= {f"latency_speedup_{k}_b1000{q}_p90": v[seed][i] for k, v in PER_ROUND.items()
                      for i, q in enumerate(("", "_q25", "_q75"))}
            if kw["protocol"] == "natural":   # compacted to 200-50-20 inputs / units, 0.4 ms at batch 1000
                m |= level_metrics("nat", NAT_LAYERS, seed, (0.4, 1.5, 0.02, 0.05), 0.9, 0.55, True)
                m |= {"compact_width_l0_nat": 200.0, "compact_width_l1_nat": 50.0, "compact_width_l2_nat": 20.0,
                      "flops_dense_nat": DENSE_FLOPS, "flops_compact_nat": 2.0 * (200 * 50 + 50 * 20 + 20 * 10)}
            if not new_metrics:
                m = {k: v for k, v in m.items() if not k.startswith(("latency_compact", "latency_speedup", "compact_",
                                                                     "flops_", "ood_", "shift_"))}
            collapsed = label == "SGD + fine-tune" and seed == 1
            if collapsed:   # trained to chance: its accuracy says so at every level
                m |= {f"test_acc_{t}": 0.1135 for t in LEVELS}
            # tagged with the current evaluation version: their OOD and shift figures are reported (load.PROBES_SINCE)
            tags = {"git_commit": "test", "eval_version": str(EVAL_VERSION), **({"collapsed": "true"} if collapsed else {})}
            out.append((TrialResult(cfg, m, [{"epoch": 1, "train_loss": 0.3, "val_acc": 0.95}], {"device": "cpu"}), tags))
    return out


def build(tmp_path, new_metrics: bool = True):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.connect(uri)
    exp_id = tracking.ensure_experiment(client, "payoff")
    for r, tags in results(new_metrics):
        tracking.log_result_locally(client, exp_id, r, tags)
    out = tmp_path / "report"
    assert report.main(["--experiment", "payoff", "--tracking-uri", uri, "--out", str(out)]) == 0
    return load("payoff", uri), out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build(tmp_path_factory.mktemp("payoff"))


def table(out, stem: str) -> pd.DataFrame:
    return pd.read_csv(out / "tables" / f"{stem}.csv", index_col=0, dtype=str)


def test_speedup_table_ratios_flops_and_widths(store):
    _, out = store
    t = pd.read_csv(out / "tables" / "speedup_mnist.csv", dtype=str).set_index(["method", "level"])
    vd98 = t.loc[("Sparse VD", "98 %")]
    # dense / compacted at batch 1000: 2.0 / 0.1 = 20 and 2.2 / 0.1 = 22 -> mean 21, std sqrt(2); ratios of medians
    # (no per-round ratios logged): one measurement per run, no quartiles
    assert vd98["speed-up x b1000 compacted"] == f"21.00 ± {np.sqrt(2):.2f} (n=2)"
    assert vd98["speed-up x b1 CSR"] == "1.25 ± 0.00 (n=2)"                     # 0.05 / 0.04
    assert vd98["FLOPs x (run)"] == f"{DENSE_FLOPS / (2 * (400 * 96 + 96 * 48 + 48 * 10)):.1f} ± 0.0 (n=2)"
    assert vd98["compression x"] == "50.0 ± 0.0 (n=2)"
    assert vd98["FLOPs x (compacted)"] == f"{DENSE_FLOPS / 62000:.1f} ± 0.0 (n=2)"   # 2 (300*90 + 90*40 + 40*10)
    assert vd98["FLOPs x (nonzero)"] == "50.0 ± 0.0 (n=2)"
    assert vd98["compacted widths"] == "300-90-40" and vd98["total epochs"] == "20"
    # the epochs behind the 90 % model: 10 + its own 2 of retraining (from the params: these runs logged no
    # model_epochs_p90), not the trial's 10 + 2 x 2 levels > 0
    assert t.loc[("SGD + fine-tune", "90 % †"), "total epochs"] == "12"


def test_speedups_are_the_per_round_median_with_quartiles_where_logged(store):
    _, out = store
    t = pd.read_csv(out / "tables" / "speedup_mnist.csv", dtype=str).set_index(["method", "level"])
    vd90 = t.loc[("Sparse VD", "90 %")]
    # per-round medians 4.5 and 4.7 (not the ratios of medians 2.0 / 0.5, 2.2 / 0.5): mean 4.6, std 0.1414;
    # quartiles: mean of 4.1, 4.3 and of 4.8, 5.0
    assert vd90["speed-up x b1000 compacted"] == "4.60 ± 0.14 [4.20, 4.90] (n=2)"
    assert vd90["speed-up x b1000 CSR"] == "0.70 ± 0.07 [0.65, 0.75] (n=2)"
    assert vd90["speed-up x b1 compacted"] == "1.25 ± 0.00 (n=2)"            # 0.05 / 0.04, ratio of medians
    inference = table(out, "inference_mnist").loc["Sparse VD"]
    assert inference["CSR x b1000 @90 %"] == "0.70 ± 0.07 [0.65, 0.75] (n=2)"
    assert inference["CSR x b1 @90 %"] == f"{0.05 / 0.06:.2f} ± 0.00 (n=2)"
    pair = np.array([2.0 / 3.0, 2.2 / 3.0])  # SGD + fine-tune: dense 2.0 / 2.2 ms over CSR 3.0 ms
    assert table(out, "inference_mnist").loc["SGD + fine-tune", "CSR x b1000 @90 %"] == \
        f"{pair.mean():.2f} ± {pair.std(ddof=1):.2f} (n=2)"
    md = (out / "report.md").read_text()
    assert md.count("is 1 measurement per run") == 2  # under the speed-up and the inference table
    frame = pd.DataFrame({"x": [4.0, 2.0], "x_q25": [3.5, 1.5], "x_q75": [5.0, 2.5]})
    assert not payoff.single(frame) and payoff.single(frame.assign(x_q25=[3.5, np.nan]))  # the note only where needed


def test_break_even_level_per_kernel_and_batch(store):
    _, out = store
    b = table(out, "break_even_mnist")
    # Sparse VD, compacted b1000: 2.0/2.1 < 1 at 0 %, 4-4.4 at 90 %; CSR b1000: 2/3 at 90 %, 2-2.2 at 98 %
    assert b.loc["Sparse VD", "compacted b1000"] == "90 %" and b.loc["Sparse VD", "CSR b1000"] == "98 %"
    assert b.loc["Sparse VD", "CSR b1"] == "98 %" and b.loc["Sparse VD", "compacted b1"] == "90 %"


def test_collapsed_runs_are_marked_in_level_tables(store):
    _, out = store
    acc = table(out, "test_acc_mnist")
    # SGD + fine-tune's seed 1 collapsed: (0.98 + 0.1135) / 2, std of the pair, and the dagger
    pair = np.array([0.98, 0.1135])
    assert acc.loc["SGD + fine-tune", "90 %"] == f"{pair.mean():.4f} ± {pair.std(ddof=1):.4f} † (n=2)"
    assert "†" not in acc.loc["Sparse VD", "90 %"]
    assert "†" in table(out, "ood_auroc_entropy_mnist").loc["SGD + fine-tune", "98 %"]
    speed = pd.read_csv(out / "tables" / "speedup_mnist.csv", dtype=str)
    assert list(speed.level[speed.method == "SGD + fine-tune"]) == ["0 % †", "90 % †", "98 % †"]
    assert not speed.level[speed.method == "Sparse VD"].str.contains("†").any()
    head = pd.read_csv(out / "tables" / "headline.csv", dtype=str).set_index("method")
    assert "†" in head.loc["SGD + fine-tune", "test acc dense"] and "†" not in head.loc["Sparse VD", "test acc dense"]
    md = (out / "report.md").read_text()
    assert "† at chance: collapsed" in md


def test_headlines_are_generated_from_the_numbers(store):
    _, out = store
    md = (out / "report.md").read_text()
    # 98 %: Sparse VD 21x (mean of 20, 22) beats SGD + fine-tune seed 0's 8x; the collapsed seed is left out;
    # test accuracy 0.98 and 0.97 at every level: 2.5 % error
    assert (f"MNIST: at 98 % pruned, the compacted Sparse VD net runs 21.0x faster than dense at batch 1000 and "
            f"1.7x faster at batch 1, with 50.0x fewer weights and {DENSE_FLOPS / 62000:.1f}x fewer FLOPs, at 2.5% "
            "test error (mean over 2 run(s), 20 training epochs).") in md
    # nat: dense 2.0 / 2.2 ms over 0.4 ms -> 5.0x and 5.5x, mean 5.25x; batch 1 0.05 / 0.02 = 2.5x;
    # compression from NAT_LAYERS' weighted sparsity; FLOPs 532400 / 22400
    weights = 1 / (1 - float(np.dot([784 * 300, 300 * 100, 100 * 10], NAT_LAYERS) / (784 * 300 + 300 * 100 + 1000)))
    assert ("MNIST: at its natural level (the mask it learns), the compacted Sparse VD net runs 5.2x faster than "
            f"dense at batch 1000 and 2.5x faster at batch 1, with {weights:.1f}x fewer weights and "
            f"{DENSE_FLOPS / 22400:.1f}x fewer FLOPs, at 2.5% test error") in md
    assert ("MNIST: at 98 % pruned, OOD detection by predictive entropy is best for Sparse VD (AUROC 0.850, -0.050 vs "
            "unpruned) and worst for SGD + fine-tune (AUROC 0.600, -0.200 vs unpruned).") in md
    assert "SGD + fine-tune keeps" not in md and "Sparse VD keeps the highest accuracy (50.0%; 55.0% unpruned)" in md


def test_the_speed_headline_leaves_out_nets_at_chance(store):
    exp, _ = store
    df = exp.runs.copy()
    df.loc[df.label == "Sparse VD", "test_acc_p98"] = 0.11   # at chance (<= 1.5 x 1/10) at 98 %
    lines = payoff.headline(df)
    # SGD + fine-tune seed 0 alone (seed 1 collapsed): 2.0 / 0.25 ms = 8.0x, 0.05 / 0.03 = 1.7x, 2.0 % error, 12 epochs
    # behind the 98 % model (10 + its own 2)
    assert lines[0] == (f"MNIST: at 98 % pruned, the compacted SGD + fine-tune net runs 8.0x faster than dense at "
                        f"batch 1000 and 1.7x faster at batch 1, with 50.0x fewer weights and {DENSE_FLOPS / 62000:.1f}x "
                        "fewer FLOPs, at 2.0% test error (mean over 1 run(s), 12 training epochs).")


def test_uncertainty_tables_and_plots(store):
    _, out = store
    mi = table(out, "ood_auroc_mi_mc_mnist")
    assert list(mi.index) == ["Sparse VD"] and mi.loc["Sparse VD", "98 %"] == "0.8700 ± 0.0000 (n=2)"
    assert table(out, "shift_acc_mean_mnist").loc["Sparse VD", "0 %"] == "0.5500 ± 0.0000 (n=2)"
    for stem in ("speedup_vs_compression", "uncertainty", "rotation"):
        assert (out / "plots" / f"{stem}_mnist.png").stat().st_size > 10_000


def test_total_epochs_in_cost_tables_and_legends(store):
    exp, out = store
    cost = table(out, "cost_mnist")
    assert cost.loc["SGD + fine-tune", "total epochs"] == "14" and cost.loc["Sparse VD", "total epochs"] == "20"
    assert table(out, "inference_mnist").loc["Sparse VD", "total epochs"] == "20"
    assert figure.budget_label(exp.runs, "mnist", "SGD + fine-tune") == "SGD + fine-tune (14 ep, † 1 of 2 runs collapsed)"
    assert figure.budget_label(exp.runs, "mnist", "Sparse VD") == "Sparse VD (20 ep)"


@pytest.mark.parametrize("kw", [dict(protocol="iterative", finetune_epochs=3, iterative_fraction=0.5),
                                dict(protocol="iterative", finetune_epochs=2, iterative_fraction=0.3),
                                dict(protocol="gradual", finetune_epochs=3, gradual_epochs=(1, 2)),
                                dict(protocol="finetune", finetune_epochs=4), dict(protocol="oneshot")])
def test_budget_from_params_matches_the_protocols(kw):
    """The analysis restates the protocols' epoch count (it imports no training code): the training
    code's TrialConfig.total_epochs is the second implementation."""
    cfg = TrialConfig(method="sgd", epochs=10, sparsities=(0.0, 0.5, 0.9, 0.98), **kw)
    params = {k: json.dumps(v) if isinstance(v, (list, tuple)) else str(v) for k, v in cfg.to_dict().items()}
    assert budget.total_epochs(cfg.protocol, params, {}) == cfg.total_epochs
    assert budget.total_epochs(cfg.protocol, params, {"total_epochs": 99.0}) == 99.0
    assert np.isnan(budget.total_epochs("someplugin", params, {}))


def test_old_store_renders_with_sections_omitted(tmp_path):
    _, out = build(tmp_path, new_metrics=False)
    md = (out / "report.md").read_text()
    assert "## What compression buys" in md and "Omitted: no run logged the compaction metrics" in md
    assert "## Uncertainty under pruning" in md and "Omitted: no run logged the OOD or rotation metrics" in md
    assert not (out / "tables" / "speedup_mnist.csv").exists() and (out / "tables" / "test_acc_mnist.csv").exists()
    assert "index.html" in {p.name for p in out.iterdir()}


def test_the_budget_is_read_from_the_trial_metrics_else_computed_from_params(store):
    """A run that logged total_epochs / model_epochs_<level> is taken at its word; a run from before trials
    recorded their budget gets budget_from_params, and a level's budget model_epochs_from_params (the run's total
    when its params do not say)."""
    params = {"epochs": "20", "finetune_epochs": "10", "iterative_fraction": "0.5", "sparsities": "[0.0, 0.5, 0.75, 0.9]"}
    # iterative, pruning half of what remains per round: 0 -> 0.5 (1 round), -> 0.75 (1), -> 0.875 -> 0.9 (2)
    assert budget.budget_from_params("iterative", params) == 20 + 10 * (1 + 1 + 2)
    assert budget.total_epochs("iterative", params, {}) == 60
    assert budget.total_epochs("iterative", params, {"total_epochs": 75.0, "model_epochs_p50": 30.0}) == 75
    runs = pd.DataFrame({"total_epochs": [75.0, 60.0], "model_epochs_p50": [30.0, np.nan]})
    assert list(budget.model_epochs(runs, "p50")) == [30.0, 60.0] and list(budget.model_epochs(runs, "p90")) == [75.0, 60.0]
    # the speed-up table's budget per level: the logged per-level figure where there is one, else from the params
    exp, _ = store
    df = exp.runs.assign(model_epochs_p90=np.where(exp.runs.label == "SGD + fine-tune", 13.0, np.nan))
    t = payoff.speedup_table(df, "mnist").cells
    assert t.loc[("SGD + fine-tune", "90 % †"), "total epochs"] == "13"
    # 10 epochs + 2 of the level's own retraining (finetune_epochs); the trial's 14 include the 90 % copy's 2
    assert t.loc[("SGD + fine-tune", "98 % †"), "total epochs"] == "12" and t.loc[("Sparse VD", "90 %"), "total epochs"] == "20"
