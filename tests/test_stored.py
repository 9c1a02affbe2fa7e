"""A finished trial evaluated again from what its run stores (suite.stored) gives the trial's own
numbers: the trial's metrics come from the evaluation at the end of training, an independent path
to each level's model (the protocol's pruning and retraining), so equality is the claim itself."""
import pytest
import torch
from test_protocols import tiny

from suite import stored
from suite.data import images, make_splits
from suite.evaluate import EVAL_VERSION
from suite.trial import run_trial, write_artifacts

OWN = ("oneshot_", "finetune_val_acc_", "model_epochs_")  # the protocol's own, from retraining: not recomputed


def level_metrics(metrics: dict, levels) -> set[str]:
    """The trial's metrics an evaluation recomputes: every level's (the protocol's own aside), and weight_std."""
    tags = tuple(f"_{t}" for t in levels)
    return {k for k in metrics if k.endswith(tags) and not k.startswith(OWN)} | {"weight_std"}


def assert_reproduces(got: dict, trial: dict, levels) -> None:
    """Every recomputed metric is one the trial logged; every non-timing one equal, latencies present."""
    assert set(got) == level_metrics(trial, levels)
    for must in ("test_acc_", "test_nll_", "test_ece_", "sparsity_", "ood_auroc_entropy_", "shift_acc_mean_",
                 "compact_width_l1_", "flops_compact_", "size_csr_bytes_", "latency_dense_b1_ms_"):
        assert all(f"{must}{t}" in got for t in levels), must
    numbers = {k for k in got if not k.startswith("latency_")}
    assert {k: got[k] for k in numbers} == {k: trial[k] for k in numbers}


def evaluated_again(r, mnist, fmnist, tmp_path, on_level=None):
    write_artifacts(r, tmp_path)
    run = stored.read(tmp_path)
    data = make_splits(mnist, run.cfg.val_size, run.cfg.train_subset, run.cfg.seed, torch.device("cpu"))
    return stored.evaluate_stored(run, data, images(fmnist.x_test, torch.device("cpu")), on_level)


@pytest.mark.parametrize("method,protocol,extra", [("bbb", "oneshot", {}), ("sparse_vd", "natural", {}),
                                                   ("sgd", "finetune", {"finetune_epochs": 1})])
def test_stored_evaluation_reproduces_the_trials_metrics(method, protocol, extra, mnist, fmnist, tmp_path):
    torch.set_num_threads(1)
    cfg = tiny(method, protocol=protocol, sparsities=(0.0, 0.5, 0.9), **extra)
    r = run_trial(cfg, arrays=mnist, ood_images=fmnist.x_test)
    assert r.info["eval_version"] == str(EVAL_VERSION)
    seen = []
    got, info = evaluated_again(r, mnist, fmnist, tmp_path, seen.append)
    tags = [d.tag for d in seen]
    assert tags == (["p00", "p50", "p90", "nat"] if protocol == "natural" else ["p00", "p50", "p90"])
    assert [(d.i, d.n) for d in seen] == [(i, len(tags)) for i in range(len(tags))]
    assert_reproduces(got, r.metrics, tags)
    assert info and set(info) <= set(r.info)


def test_a_retrained_level_without_its_stored_weights_is_named(mnist, fmnist, tmp_path):
    cfg = tiny(protocol="finetune", finetune_epochs=1)
    r = run_trial(cfg, arrays=mnist, ood_images=fmnist.x_test)
    r.artifacts = {k: v for k, v in r.artifacts.items() if not k.startswith("levels/")}
    with pytest.raises(stored.MissingArtifacts, match=r"no levels/p90.npz artifact \(logged before retrained levels"):
        evaluated_again(r, mnist, fmnist, tmp_path)


def test_a_folder_without_model_pt_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(stored.MissingArtifacts, match=r"no model.pt artifact \(a run imported from a runs file"):
        stored.read(tmp_path)
