"""What compression buys and what it costs in trust, wired into every level of a trial
(suite.evaluate.level.evaluate_level): compaction, out-of-distribution detection, rotation shift."""
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score  # the second implementation (installed with mlflow)

from suite import methods, stored
from suite.config import TrialConfig
from suite.data import images, make_splits
from suite.driver import Runtime, load_data
from suite.evaluate import compact, metrics, ood
from suite.prune import level_tag
from suite.train import epoch_seed
from suite.trial import run_trial

HIDDEN = 32
# by hand for 784-32-10: weights + biases, and 2 FLOPs per weight
N_PARAMS = 784 * HIDDEN + HIDDEN + HIDDEN * 10 + 10
FLOPS = 2 * (784 * HIDDEN + HIDDEN * 10)


def tiny(method="sgd", **kw):
    base = dict(method=method, hidden=(HIDDEN,), epochs=1, train_subset=2000, val_size=1000, lr=1e-3,
                sparsities=(0.0, 0.9), test_samples=2, compile=False)
    return TrialConfig(**{**base, **kw})


# sgd at lr 1e-2: 1 epoch reaches ~84 % (at 1e-3 it stops at ~63 %, a net that is more confident on
# Fashion-MNIST than on MNIST: OOD AUROC ~0.33), so its OOD check below has a signal to find
CONFIGS = {"sgd": tiny(lr=1e-2, sparsities=(0.0, 0.5, 0.9)), "bbb": tiny("bbb"),
           "sparse_vd": tiny("sparse_vd", protocol="natural"), "l0": tiny("l0")}


@pytest.fixture(scope="module")
def trials(mnist):
    torch.set_num_threads(1)
    return {name: run_trial(cfg, arrays=mnist) for name, cfg in CONFIGS.items()}


def expected_names(cfg: TrialConfig, tag: str, curve: bool) -> set[str]:
    names = {f"compact_width_l{i}_{tag}" for i in range(len(cfg.hidden) + 1)}
    names |= {f"{k}_{kind}_{tag}" for k in ("params", "flops") for kind in ("dense", "nonzero", "compact")}
    names |= {f"latency_compact_b{b}_ms_{tag}" for b in (1, 1000)} | {f"flops_run_{tag}", f"latency_rounds_b1_{tag}"}
    names |= {f"latency_speedup_{k}_b{b}{q}_{tag}" for k in ("sparse", "compact") for b in (1, 1000)
              for q in ("", "_q25", "_q75")}
    names |= {f"ood_{k}_entropy_{tag}" for k in ("auroc", "aupr")}
    if cfg.method_cls.has_mc:
        names |= {f"ood_{k}_{s}_mc_{tag}" for k in ("auroc", "aupr") for s in ("entropy", "expected_entropy", "mi")}
    names |= {f"shift_{k}_mean_{tag}" for k in ("acc", "nll", "ece")}
    if curve:
        names |= {f"shift_{k}_r{a}_{tag}" for k in ("acc", "nll", "ece") for a in ood.ANGLES}
    return names


@pytest.mark.parametrize("method", list(CONFIGS))
def test_every_level_logs_what_compression_buys_and_costs(method, trials):
    r = trials[method]
    levels = r.config.protocol_cls.levels(r.config)
    numeric = [p for p in levels if not isinstance(p, str)]
    for p in levels:
        tag = level_tag(p)
        curve = p in (min(numeric), max(numeric))  # per-angle shift only at the least and most pruned level
        want = expected_names(r.config, tag, curve)
        assert want <= set(r.metrics), f"{tag}: missing {sorted(want - set(r.metrics))}"
        extra = {k for k in r.metrics if k.endswith("_" + tag) and k.startswith(("shift_", "ood_", "compact_"))} - want
        assert not extra, f"{tag}: unexpected {sorted(extra)}"
        assert r.metrics[f"params_dense_{tag}"] == N_PARAMS and r.metrics[f"flops_dense_{tag}"] == FLOPS
        assert r.metrics[f"flops_compact_{tag}"] <= r.metrics[f"flops_dense_{tag}"]
        assert r.metrics[f"flops_compact_{tag}"] <= r.metrics[f"flops_run_{tag}"]
        for k in ("sparse", "compact"):
            q25, q50, q75 = (r.metrics[f"latency_speedup_{k}_b1000{q}_{tag}"] for q in ("_q25", "", "_q75"))
            assert 0 < q25 <= q50 <= q75
        for k in ("auroc", "aupr"):
            assert 0 <= r.metrics[f"ood_{k}_entropy_{tag}"] <= 1
        assert 0 <= r.metrics[f"shift_acc_mean_{tag}"] <= 1
    if method == "sparse_vd":
        assert "compact_width_l1_nat" in r.metrics


def at_level(r, level):
    """The trial's model at a level not retrained, rebuilt from its trained weights as suite.stored does."""
    run = stored.Stored(r.config, r.state_dict, {})
    return stored.model_at(stored.protocol(run), run, level)


def test_the_logged_compaction_is_the_trials_pruned_copy_compacted(trials, mnist):
    """Rebuild the p90 copy from the trial's trained weights and mask: its compaction computes the
    same outputs on the whole test set, and its widths and sizes are the ones the trial logged."""
    r = trials["sgd"]
    pruned = at_level(r, 0.9)
    c = compact.compact(pruned)
    x = torch.tensor(mnist.x_test, dtype=torch.float32).reshape(-1, 784) / 255
    torch.testing.assert_close(c(x), pruned(x), rtol=0, atol=1e-5)
    assert [r.metrics[f"compact_width_l{i}_p90"] for i in range(2)] == c.widths[:2]
    live = [len(c.index), *(w.shape[0] for w, _ in c.layers())]  # the window's dead pixels not counted
    assert r.metrics["params_compact_p90"] == sum(a * b + b for a, b in zip(live[:-1], live[1:]))
    assert r.metrics["params_nonzero_p90"] == int((pruned.point_weights() != 0).sum())
    assert r.metrics["flops_compact_p90"] < FLOPS  # at 90 % some pixel or unit has lost every weight


def test_the_shift_at_0_degrees_and_the_ood_scores_cover_every_test_image(trials, mnist, fmnist):
    """shift_*_r0 is the unrotated prediction on all 10k MNIST test images, and the OOD AUROC ranks the
    entropies of all of them against all 10k Fashion-MNIST test images: recomputed here, the entropy by
    hand and the AUROC by scikit-learn."""
    r = trials["sgd"]
    model = methods.build(r.config)
    model.load_state_dict(r.state_dict)
    model.eval()
    x, x_ood = (torch.tensor(a.x_test, dtype=torch.float32).reshape(-1, 784) / 255 for a in (mnist, fmnist))
    y = torch.tensor(mnist.y_test, dtype=torch.int64)
    assert len(x) == len(x_ood) == 10_000  # the published test splits
    with torch.no_grad():
        p, q = model.predict(x), model.predict(x_ood)
    ref = metrics.classification(p, y)
    assert r.metrics["shift_acc_r0_p00"] == pytest.approx(ref["acc"], abs=1e-7)
    assert r.metrics["shift_nll_r0_p00"] == pytest.approx(ref["nll"], rel=1e-6)
    entropy = [-(torch.where(v > 0, v * v.log(), 0.0)).sum(1).numpy() for v in (p, q)]
    auroc = roc_auc_score(np.r_[np.zeros(10_000), np.ones(10_000)], np.concatenate(entropy))
    assert r.metrics["ood_auroc_entropy_p00"] == pytest.approx(auroc, abs=1e-6)


def test_a_trained_mnist_net_tells_fashion_mnist_apart(trials):
    """A real signal: the (MNIST, 1 epoch, 32 units) SGD net's predictive entropy is higher on
    Fashion-MNIST than on MNIST test images for most pairs (chance is 0.5; measured ~0.68)."""
    r = trials["sgd"]
    assert r.metrics["test_acc_p00"] > 0.8  # the net has learnt MNIST at all, or the check means nothing
    assert r.metrics["ood_auroc_entropy_p00"] > 0.6


@pytest.mark.parametrize("method", ["bbb", "sparse_vd", "l0"])
def test_monte_carlo_metrics_are_predict_mc_with_the_level_seed(method, trials, mnist):
    """The shared Monte Carlo pass leaves test_*_mc_ as a direct predict_mc call gives them: at level
    i, reseeded with epoch_seed(seed, 10_000 + i), one weight sample for the sparsity measurement,
    then predict_mc."""
    r = trials[method]
    x = torch.tensor(mnist.x_test, dtype=torch.float32).reshape(-1, 784) / 255
    y = torch.tensor(mnist.y_test, dtype=torch.int64)
    for i, p in enumerate(r.config.sparsities):
        m = at_level(r, p)
        torch.manual_seed(epoch_seed(r.config.seed, 10_000 + i))
        with torch.no_grad():
            m.sample()
            ref = metrics.classification(m.predict_mc(x, r.config.test_samples), y)
        tag = level_tag(p)
        assert {k: r.metrics[f"test_{k}_mc_{tag}"] for k in ref} == ref


@pytest.mark.parametrize("method", list(CONFIGS))
def test_the_stored_weights_at_the_protocols_masks_give_the_trials_metrics(method, trials, mnist, fmnist):
    """suite.stored on what a trial stores (model.pt: the trained state dict; no level here retrains)
    rebuilds every level at its protocol's mask and recomputes its metrics bit for bit, and weight_std.
    latency_* are medians of wall-clock time, so they are only required to be there."""
    r = trials[method]
    cfg, cpu = r.config, torch.device("cpu")
    data = make_splits(mnist, cfg.val_size, cfg.train_subset, cfg.seed, cpu)
    got, info = stored.evaluate_stored(stored.Stored(cfg, r.state_dict, {}), data, images(fmnist.x_test, cpu))
    levels = cfg.protocol_cls.levels(cfg)
    logged = {k for k in r.metrics if k.endswith(tuple("_" + level_tag(p) for p in levels))
              and not k.startswith("model_epochs_")} | {"weight_std"}  # the epochs behind a model are training's record
    assert set(got) == logged
    assert set(info) <= set(r.info)
    numbers = [k for k in got if not k.startswith("latency_")]
    assert {k: got[k] for k in numbers} == {k: r.metrics[k] for k in numbers}


def test_trials_get_the_partner_datasets_test_images_but_a_search_does_not(tmp_path: Path):
    rt = Runtime(tracking_uri=f"sqlite:///{tmp_path}/m.db", storage=tmp_path)
    arrays = load_data(rt, [tiny()], validation_only=False)
    assert set(arrays) == {"mnist", "fmnist"}
    assert len(arrays["fmnist"].x_test) == 10_000 and len(arrays["fmnist"].x_train) == 0
    assert len(arrays["mnist"].x_train) == 60_000
    assert set(load_data(rt, [tiny()], validation_only=True)) == {"mnist"}
    both = load_data(rt, [tiny(), tiny(dataset="fmnist")], validation_only=False)
    assert len(both["fmnist"].x_train) == 60_000 and len(both["mnist"].x_test) == 10_000
