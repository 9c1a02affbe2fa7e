"""Every evaluated model is kept: a level a protocol retrains is stored sparse (levels/pNN.npz,
prune.held_state), survives a resumed trial, and rebuilds (prune.held_model) into exactly the model
the trial evaluated."""
import copy

import numpy as np
import pytest
import torch
from test_protocols import state_at_interruption, tiny

from suite import export, prune, tracking
from suite.data import images, make_splits
from suite.evaluate.level import curve_levels, evaluate_level, level_seed, probes
from suite.methods import build
from suite.trial import run_trial, write_artifacts

RETRAINING = [("finetune", "bbb", {}), ("gradual", "l0", {"gradual_interval": 5}), ("iterative", "sparse_vd", {})]


def level_model(result, tag):
    """The level's model rebuilt from what the trial wrote: model.pt's state and levels/<tag>.npz."""
    model = build(result.config).eval()
    model.load_state_dict(result.state_dict)
    return prune.held_model(model, result.artifacts[f"levels/{tag}.npz"])


@pytest.mark.parametrize("protocol,method,extra", RETRAINING)
def test_a_stored_level_gives_the_trials_numbers(protocol, method, extra, mnist, fmnist, tmp_path):
    """Evaluated afresh, as the trial evaluates a level (its seed, its probes), the rebuilt model of
    every retrained level gives the trial's logged numbers exactly; its artifact is a fraction of model.pt."""
    torch.set_num_threads(1)
    cfg = tiny(method, protocol=protocol, finetune_epochs=1, sparsities=(0.0, 0.5, 0.9), **extra)
    r = run_trial(cfg, arrays=mnist, ood_images=fmnist.x_test)
    levels = cfg.protocol_cls.levels(cfg)
    assert sorted(r.artifacts) == ["levels/p50.npz", "levels/p90.npz", *sorted(n for n in r.artifacts if "/" not in n)]
    data = make_splits(mnist, cfg.val_size, cfg.train_subset, cfg.seed, torch.device("cpu"))
    probe = probes(data.x_test, data.y_test, images(fmnist.x_test, torch.device("cpu")))
    for i, p in enumerate(levels):
        if not cfg.protocol_cls.retrains(p):
            continue
        tag = prune.level_tag(p)
        arrays = r.artifacts[f"levels/{tag}.npz"]
        assert set(arrays) == {"held", *build(cfg).state_dict()}
        m = level_model(r, tag)  # before seeding: building a model draws its initialisation
        torch.manual_seed(level_seed(cfg.seed, i))
        got, _ = evaluate_level(m, cfg, data.x_test, data.y_test, tag, probe, p in curve_levels(levels))
        numbers = [k for k in got if k.startswith(("test_", "sparsity_", "ood_"))]
        assert f"test_acc_{tag}" in numbers and f"sparsity_{tag}" in numbers and f"test_acc_mc_{tag}" in numbers
        assert {k: got[k] for k in numbers} == {k: r.metrics[k] for k in numbers}
    write_artifacts(r, tmp_path)
    ratio = (tmp_path / "levels" / "p90.npz").stat().st_size / (tmp_path / "model.pt").stat().st_size
    assert ratio < 0.3, ratio


@pytest.mark.slow  # three trials, each interrupted and resumed
@pytest.mark.parametrize("protocol,method,extra", RETRAINING)
def test_levels_finished_before_an_interruption_are_stored_after_resume(protocol, method, extra, mnist, fmnist):
    """Interrupted in its second level, the resumed trial stores the first level (finished before the
    interruption, kept in the trial state) and the second exactly as the uninterrupted trial does."""
    torch.set_num_threads(1)
    cfg = tiny(method, protocol=protocol, finetune_epochs=2, sparsities=(0.5, 0.9), **extra)
    full = run_trial(cfg, arrays=mnist, ood_images=fmnist.x_test)
    # killed in the second level's first epoch (iterative: of its first round)
    saved = state_at_interruption(cfg, cfg.epochs + 3, arrays=mnist, ood_images=fmnist.x_test)
    assert "weights" in saved["finetune"]["p50"]  # finished before the interruption: kept in the state
    resumed = run_trial(cfg, arrays=mnist, resume=saved, ood_images=fmnist.x_test)
    for name in ("levels/p50.npz", "levels/p90.npz"):
        want, got = full.artifacts[name], resumed.artifacts[name]
        assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want), name


@pytest.mark.slow
@pytest.mark.parametrize("protocol,extra", [("gradual", {"gradual_interval": 5}), ("finetune", {})])
def test_export_of_a_retrained_level_is_the_level_model(protocol, extra, mnist, fmnist, tmp_path):
    """suite.export --level 90 of a logged run writes the retrained level's model: the exported net's
    logits match the rebuilt level model's, and its test accuracy is the run's test_acc_p90. A run
    logged without the level's artifact is refused in one line."""
    torch.set_num_threads(1)
    cfg = tiny(protocol=protocol, finetune_epochs=1, **extra)
    r = run_trial(cfg, arrays=mnist, ood_images=fmnist.x_test)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.connect(uri)
    exp = tracking.ensure_experiment(client, "export")
    run_id = tracking.log_result_locally(client, exp, r, {"device": "cpu"})
    out = tmp_path / "x"
    assert export.main(["--run-id", run_id, "--level", "90", "--tracking-uri", uri, "--out", str(out),
                        "--format", "safetensors"]) == 0
    from test_export import docstring_loader
    x = images(mnist.x_test, torch.device("cpu"))
    logits = docstring_loader()(str(out / "model_p90"))(x.numpy())
    assert np.abs(logits - level_model(r, "p90")(x).detach().numpy()).max() <= 1e-5
    y = np.asarray(mnist.y_test)  # test_acc is a float32: to 1e-6 (one image is 1e-4)
    assert float((logits.argmax(1) == y).mean()) == pytest.approx(r.metrics["test_acc_p90"], abs=1e-6)

    old = copy.copy(r)
    old.artifacts = {k: v for k, v in r.artifacts.items() if not k.startswith("levels/")}
    old_id = tracking.log_result_locally(client, exp, old, {"device": "cpu"})
    with pytest.raises(export.ExportError, match="logged before retrained levels were kept"):
        export.export(old_id, 0.9, uri, tmp_path / "y", ["safetensors"])


def test_a_level_finished_under_older_evaluation_code_is_evaluated_again_on_resume(mnist, fmnist):
    """A retrained level that a trial state holds as finished by an older evaluation version (a trial
    interrupted, the suite upgraded, the trial resumed) is evaluated again from its kept weights: its
    level metrics become what the current code gives, its retraining metrics stay; without kept weights
    it cannot be, and the run is tagged with that older version instead of the current one."""
    from suite.evaluate import EVAL_VERSION
    from suite.trial import evaluate_pruned
    torch.set_num_threads(1)
    cfg = tiny("sgd", protocol="finetune", finetune_epochs=1, sparsities=(0.0, 0.5))
    r = run_trial(cfg, arrays=mnist, ood_images=fmnist.x_test)
    model = build(cfg).eval()
    model.load_state_dict(r.state_dict)
    data = make_splits(mnist, cfg.val_size, cfg.train_subset, cfg.seed, torch.device("cpu"))
    store: dict = {}
    first, info, _ = evaluate_pruned(model, cfg, data, store)
    assert info["eval_version"] == str(EVAL_VERSION) and store["p50"]["eval_version"] == EVAL_VERSION
    old = copy.deepcopy(store)
    old["p50"]["eval_version"] = 1
    old["p50"]["metrics"]["test_acc_p50"] = -1.0  # what "older code" logged
    again, info, _ = evaluate_pruned(model, cfg, data, old)
    assert info["eval_version"] == str(EVAL_VERSION)
    assert again["test_acc_p50"] == first["test_acc_p50"] and again["finetune_val_acc_p50"] == first["finetune_val_acc_p50"]
    assert old["p50"]["history"] == store["p50"]["history"]  # nothing retrained
    unkept = copy.deepcopy(store)
    unkept["p50"]["eval_version"] = 1
    unkept["p50"]["metrics"]["test_acc_p50"] = -1.0
    del unkept["p50"]["weights"]
    stale, info, _ = evaluate_pruned(model, cfg, data, unkept)
    assert info["eval_version"] == "1" and stale["test_acc_p50"] == -1.0
