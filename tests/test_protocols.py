"""Pruning protocols as plug-ins: the registry, a protocol added in a few lines, and the invariants
that tie the built-in protocols to each other and to the masks they promise."""
import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from suite.config import ConfigError, TrialConfig
from suite.data import make_splits
from suite.methods import build
from suite.protocols import PROTOCOLS, Protocol, register
from suite.protocols.gradual import cubic_levels
from suite.protocols.iterative import round_targets
from suite.trial import run_trial

PLUGIN = '''
from dataclasses import dataclass

from suite import prune
from suite.protocols import Params, Protocol, register


@dataclass(frozen=True)
class InverseParams(Params):
    inverse_top: bool = True
    """Prune the highest scores first (false: the lowest, as oneshot does)."""


@register
class Inverse(Protocol):
    """Prunes the highest-scoring weights first: the sanity floor of a score."""

    name, order = "inverse", 90.0
    Params = InverseParams
    label_suffix = " inverted"

    def mask(self, level):
        sign = -1 if self.cfg.inverse_top else 1
        return prune.keep_mask(sign * self.score, self.allowed, level, self.cfg.prune_scope, self.model)
'''


def tiny(method="sgd", **kw):
    base = dict(method=method, hidden=(32,), epochs=1, train_subset=2000, val_size=1000, lr=1e-3,
                sparsities=(0.0, 0.9), test_samples=2, compile=False)
    return TrialConfig(**{**base, **kw})


def test_registry_lists_the_builtin_protocols():
    assert list(PROTOCOLS) == ["oneshot", "finetune", "natural", "gradual", "gradual_train", "iterative"]
    assert all(issubclass(p, Protocol) and p.name == n for n, p in PROTOCOLS.items())
    with pytest.raises(ConfigError, match="protocol='prune' is invalid: allowed oneshot \\| finetune \\| natural"):
        TrialConfig(protocol="prune")


def test_a_protocols_fields_are_an_error_under_the_others():
    with pytest.raises(ConfigError, match=r"finetune_lr=0.001 is invalid: allowed null with protocol=oneshot "
                                          r"\(only finetune \| gradual \| iterative use it\)"):
        TrialConfig(finetune_lr=1e-3)
    with pytest.raises(ConfigError, match="finetune_epochs=2 is invalid: allowed 0 with protocol=natural"):
        TrialConfig(method="sparse_vd", protocol="natural", finetune_epochs=2)
    TrialConfig(protocol="finetune", finetune_epochs=1, finetune_lr=1e-3)


def test_labels_tags_and_epochs_come_from_the_protocol():
    ft = TrialConfig(protocol="finetune", finetune_epochs=3, epochs=2, sparsities=(0.0, 0.5, 0.9))
    assert ft.total_epochs == 2 + 2 * 3  # level 0 is not retrained
    assert ft.label() == "SGD + fine-tune" and ft.run_name().startswith("SGD+fine-tune-")
    tags = ft.run_tags()
    assert tags["label_order"] == "0.5" and tags["color"] == "#17becf" and "baseline" not in tags
    assert TrialConfig().run_tags()["baseline"] == "true" and TrialConfig().total_epochs == 50
    assert TrialConfig(method="sparse_vd", protocol="natural").label() == "Sparse VD"


def test_a_protocol_is_one_file_plus_registration(mnist):
    namespace = {}
    exec(compile(PLUGIN, "inverse_protocol.py", "exec"), namespace)
    try:
        assert list(PROTOCOLS)[-1] == "inverse" and namespace["Inverse"] is PROTOCOLS["inverse"]
        torch.set_num_threads(1)
        inv = run_trial(tiny(protocol="inverse"), arrays=mnist)
        one = run_trial(tiny(), arrays=mnist)
        assert inv.config.label() == "SGD inverted" and inv.info["protocol"] == "inverse"
        assert inv.metrics["sparsity_p90"] == pytest.approx(0.9, abs=1e-4)
        assert inv.metrics["test_acc_p00"] == one.metrics["test_acc_p00"]  # nothing pruned: the same model
        # pruning the largest weights first destroys what magnitude pruning keeps
        assert inv.metrics["test_acc_p90"] < one.metrics["test_acc_p90"] - 0.2
        # its own setting: a flat key routed to its Params, in the key, refused under other protocols
        low = run_trial(tiny(protocol="inverse", inverse_top="false"), arrays=mnist)
        assert low.config.protocol_params == namespace["InverseParams"](inverse_top=False)
        assert low.metrics["test_acc_p90"] == one.metrics["test_acc_p90"]  # lowest first: oneshot's mask
        assert low.config.grid_key() != inv.config.grid_key() == tiny(protocol="inverse", inverse_top=True).grid_key()
        with pytest.raises(ConfigError, match="inverse_top is a setting of protocol inverse, not of protocol='oneshot'"):
            tiny(inverse_top=False)
    finally:
        PROTOCOLS.unregister("inverse")
    with pytest.raises(ConfigError, match="protocol='inverse' is invalid"):
        TrialConfig(protocol="inverse")


def test_registering_a_name_twice_is_an_error():
    class Other(Protocol):
        name = "finetune"
    with pytest.raises(ValueError, match="protocol 'finetune' is registered twice"):
        register(Other)
    assert PROTOCOLS["finetune"] is not Other


def test_finetune_agrees_with_oneshot_and_holds_its_mask(mnist):
    torch.set_num_threads(1)
    cfg = tiny(protocol="finetune", finetune_epochs=2)
    epochs, last = [], {}

    def on_epoch(log, state):
        epochs.append(log["epoch"])
        last.update(copy.deepcopy(state()))
    ft, one = run_trial(cfg, on_epoch, arrays=mnist), run_trial(tiny(), arrays=mnist)
    assert epochs == list(range(1, cfg.total_epochs + 1)) == [1, 2, 3]
    for k in ("acc", "nll", "ece"):
        assert ft.metrics[f"test_{k}_p00"] == one.metrics[f"test_{k}_p00"]      # level 0 is not retrained
        assert ft.metrics[f"oneshot_{k}_p90"] == one.metrics[f"test_{k}_p90"]   # the same copy before retraining
    assert ft.metrics["finetune_val_acc_p90"] == last["finetune"]["p90"]["history"][-1]["val_acc"]
    level = last["finetune"]["p90"]
    theta, adam = level["model"]["theta"], level["optimizer"]["state"][0]
    n_weights = 784 * 32 + 32 * 10
    pruned = build(cfg).weight_entries() & (theta == 0)
    assert int(pruned.sum()) == round(0.9 * n_weights)   # exactly the level's count, still 0 after retraining
    assert torch.all(adam["exp_avg"][pruned] == 0) and torch.all(adam["exp_avg_sq"][pruned] == 0)
    assert adam["exp_avg_sq"][~pruned].sum() > 0        # the kept weights did train


def test_natural_adds_the_methods_own_mask_as_level_nat(mnist):
    torch.set_num_threads(1)
    nat = run_trial(tiny("sparse_vd", protocol="natural"), arrays=mnist)
    one = run_trial(tiny("sparse_vd"), arrays=mnist)
    model = build(nat.config)
    model.load_state_dict(nat.state_dict)
    weights = model.weight_entries()
    dropped = int((weights & ~model.natural_keep()).sum())
    assert dropped > 0 and nat.metrics["sparsity_nat"] == dropped / int(weights.sum())
    for k in ("test_acc_p90", "test_acc_mc_p90", "test_nll_p00", "sparsity_p90"):
        assert nat.metrics[k] == one.metrics[k]  # the numeric levels are oneshot's, untouched by `nat`
    assert "test_acc_nat" not in one.metrics and "test_acc_mc_nat" in nat.metrics


def test_the_cubic_schedule_by_hand():
    # s_f (1 - (1 - k/n)^3) for s_f = 0.9, n = 4: 0.9 (1 - 27/64), 0.9 (1 - 1/8), 0.9 (1 - 1/64), 0.9
    assert cubic_levels(0.9, 4) == pytest.approx([0.5203125, 0.7875, 0.8859375, 0.9], abs=1e-15)
    # 2000 examples / 100 = 20 steps per epoch; epochs 2..3 = steps 21..60: t0 = 20, n = 40 // 10 = 4
    cfg = tiny(protocol="gradual", finetune_epochs=3, gradual_epochs=[2, 3], gradual_interval=10)
    assert PROTOCOLS["gradual"].schedule(cfg, 0.8) == pytest.approx({30: 0.4625, 40: 0.7, 50: 0.7875, 60: 0.8})
    assert cfg.total_epochs == 1 + 3
    # the default span is the first 60 % of retraining, rounded up: [1, ceil(1.8)] here, [1, 30] of 50
    assert tiny(protocol="gradual", finetune_epochs=3, gradual_interval=10).gradual_epochs == (1, 2)
    assert tiny(protocol="gradual", finetune_epochs=50).gradual_epochs == (1, 30)
    with pytest.raises(ConfigError, match="gradual_epochs=\\[0, 2\\] is invalid"):
        tiny(protocol="gradual", finetune_epochs=3, gradual_epochs=[0, 2])
    with pytest.raises(ConfigError, match="gradual_interval=100 is invalid"):  # 40 steps in [1, 2] here
        tiny(protocol="gradual", finetune_epochs=3)
    with pytest.raises(ConfigError, match="gradual_interval=41 is invalid"):
        tiny(protocol="gradual", finetune_epochs=3, gradual_epochs=[2, 3], gradual_interval=41)
    with pytest.raises(ConfigError, match="gradual_interval=5 is invalid: allowed 100 with protocol=finetune"):
        tiny(protocol="finetune", finetune_epochs=1, gradual_interval=5)


def test_iterative_rounds_by_hand():
    # half of what remains per round: 0.5, 0.75, 0.875, then capped at 0.9; 0.95 in one more round
    assert round_targets([0.5, 0.9, 0.95], 0.5) == [[0.5], [0.75, 0.875, 0.9], [0.95]]
    cfg = tiny(protocol="iterative", finetune_epochs=2, sparsities=(0.0, 0.5, 0.9, 0.95))
    assert cfg.total_epochs == 1 + 5 * 2
    with pytest.raises(ConfigError, match="sparsities=.* is invalid: allowed ascending levels below 1"):
        tiny(protocol="iterative", finetune_epochs=1, sparsities=(0.9, 0.5))


def _held_state(state, tag):
    """The last saved progress of a retrained level: weights, optimiser state and mask."""
    return state["finetune"][tag]


@pytest.mark.parametrize("method", ["sgd", "bbb"])
def test_gradual_ends_at_its_target_with_zeros_and_frozen_moments(method, mnist):
    torch.set_num_threads(1)
    cfg = tiny(method, hidden=(64,), protocol="gradual", finetune_epochs=2, gradual_epochs=[1, 1], gradual_interval=5)
    last = {}
    r = run_trial(cfg, lambda log, state: last.update(copy.deepcopy(state())), arrays=mnist)
    assert r.metrics["sparsity_p90"] == pytest.approx(0.9, abs=1e-4)  # measured in the (sampled) forward pass
    assert r.metrics["test_acc_p90"] > 0.5                             # chance is 0.1
    _assert_held(_held_state(last, "p90"), build(cfg), round(0.9 * (784 * 64 + 64 * 10)))


def _assert_held(level, model, n_pruned):
    """Exactly n_pruned weights are held at 0 (also in a weight sample) and every optimiser moment of
    theirs is 0, while the kept weights trained."""
    pruned = ~level["held"].cpu()
    assert int(pruned.sum()) == n_pruned and not pruned[~model.weight_entries()].any()
    model.load_state_dict(level["model"])
    sample = model.sample()
    assert torch.all(model.point_weights()[pruned] == 0) and (sample is None or torch.all(sample[pruned] == 0))
    for st in level["optimizer"]["state"].values():
        assert torch.all(st["exp_avg"][pruned] == 0) and torch.all(st["exp_avg_sq"][pruned] == 0)
        assert st["exp_avg_sq"][~pruned].sum() > 0


def test_iterative_passes_the_levels_in_order_holding_its_masks(mnist):
    torch.set_num_threads(1)
    cfg = tiny(hidden=(64,), protocol="iterative", finetune_epochs=1, sparsities=(0.0, 0.5, 0.9))
    epochs, last = [], {}

    def on_epoch(log, state):
        epochs.append(log["epoch"])
        last.update(copy.deepcopy(state()))
    r = run_trial(cfg, on_epoch, arrays=mnist)
    assert epochs == list(range(1, 1 + 4 + 1))  # training, then rounds 0.5 | 0.75, 0.875, 0.9
    assert r.metrics["sparsity_p50"] == pytest.approx(0.5, abs=1e-4)
    assert r.metrics["sparsity_p90"] == pytest.approx(0.9, abs=1e-4) and r.metrics["test_acc_p90"] > 0.5
    assert len(last["finetune"]["p50"]["history"]) == 1 and len(last["finetune"]["p90"]["history"]) == 3
    _assert_held(_held_state(last, "p90"), build(cfg), round(0.9 * (784 * 64 + 64 * 10)))


def state_at_interruption(cfg, epoch, **kw) -> dict:
    """The trial state saved after `epoch` (numbered on through retraining), where the trial is killed."""
    saved = {}

    class Stop(Exception):
        pass

    def on_epoch(log, state):
        if log["epoch"] == epoch:
            saved.update(copy.deepcopy(state()))
            raise Stop
    with pytest.raises(Stop):
        run_trial(cfg, on_epoch, **kw)
    return saved


@pytest.mark.parametrize("protocol,extra", [("iterative", {"rewind_epoch": 0}),
                                            ("gradual", {"gradual_epochs": [1, 2], "gradual_interval": 7})])
def test_gradual_and_iterative_resume_exactly(protocol, extra, mnist):
    """Interrupted mid-way through a level (iterative: mid-way through its rounds, after a finished
    level), a trial resumed from its last state gives the uninterrupted trial's numbers."""
    torch.set_num_threads(1)
    cfg = tiny(protocol=protocol, finetune_epochs=2, sparsities=(0.5, 0.9), **extra)
    full = run_trial(cfg, arrays=mnist)
    # the second level's first epoch (iterative: of its first round)
    resumed = run_trial(cfg, arrays=mnist, resume=state_at_interruption(cfg, cfg.epochs + 3, arrays=mnist))
    for k, v in full.metrics.items():
        if k.startswith(("test_", "sparsity_")):
            assert resumed.metrics[k] == v, k


def test_rewinding_restores_the_saved_weights_on_the_kept_entries(mnist):
    torch.set_num_threads(1)
    cfg = tiny(protocol="iterative", finetune_epochs=1, rewind_epoch=1, sparsities=(0.0, 0.5))
    store = {}
    r = run_trial(cfg, lambda log, state: store.update(copy.deepcopy(state()["finetune"])), arrays=mnist)
    saved = store["rewind"]["model"]
    assert torch.equal(saved["theta"], r.state_dict["theta"])  # epoch 1 is the end of training
    trained = build(cfg)
    trained.load_state_dict(r.state_dict)
    data = make_splits(mnist, cfg.val_size, cfg.train_subset, cfg.seed, torch.device("cpu"))
    proto = PROTOCOLS["iterative"](cfg, trained, data, {})
    m, snapshot = copy.deepcopy(trained), build(cfg).state_dict()  # another model's weights to rewind to
    before = m.theta.detach().clone()
    proto.tighten(m, 0.5, rewind=snapshot)
    n = 784 * 32 + 32 * 10
    weights = m.weight_entries()
    order = torch.argsort(torch.where(weights, before.abs(), torch.inf))
    pruned = torch.zeros_like(weights)
    pruned[order[:round(0.5 * n)]] = True
    assert torch.equal(~m.held, pruned)           # pruned by the weights before rewinding
    assert torch.all(m.theta[pruned] == 0)
    assert torch.equal(m.theta[~pruned], snapshot["theta"][~pruned])    # the kept entries are exactly the snapshot's


@pytest.mark.slow
def test_a_protocol_plugin_runs_through_the_cli(tmp_path):
    """A user's protocol file, named in $BPB_PLUGINS, runs through suite.trial like a built-in."""
    (tmp_path / "inverse_protocol.py").write_text(PLUGIN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()]),
           "BPB_PLUGINS": "inverse_protocol"}
    out = subprocess.run([sys.executable, "-m", "suite.trial", "--protocol", "inverse", "--epochs", "1",
                          "--train-subset", "1000", "--val-size", "1000", "--hidden", "16", "--sparsities", "0,0.5",
                          "--threads", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "SGD inverted on mnist" in out.stdout and "protocol inverse" in out.stdout
    row = next(ln.split() for ln in out.stdout.splitlines() if ln.strip().startswith("p50"))
    assert float(row[1]) == pytest.approx(0.5, abs=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("first", ["suite.protocols", "suite.methods", "suite.train", "suite.config"])
def test_a_plugin_loads_whichever_package_is_imported_first(first, tmp_path):
    """Plug-ins are imported once both registries exist, so the import order of a user's script
    cannot break a plug-in that imports suite.protocols (or suite.methods)."""
    (tmp_path / "inverse_protocol.py").write_text(PLUGIN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()]),
           "BPB_PLUGINS": "inverse_protocol"}
    code = f"import {first}; from suite.protocols import PROTOCOLS; print(list(PROTOCOLS))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "'inverse'" in out.stdout


@pytest.mark.parametrize("protocol,extra,expected", [
    # 1 training epoch; finetune / gradual: 2 retraining epochs per level > 0
    ("finetune", {}, {"p00": 1, "p50": 3, "p90": 3, "total": 5}),
    ("gradual", {"gradual_epochs": [1, 2], "gradual_interval": 10}, {"p00": 1, "p50": 3, "p90": 3, "total": 5}),
    # iterative, half of what remains per round: 0.5 in 1 round, then 0.75, 0.875, 0.9 in 3, one model throughout
    ("iterative", {"iterative_fraction": 0.5}, {"p00": 1, "p50": 1 + 2, "p90": 1 + 2 + 3 * 2, "total": 9}),
])
def test_the_trial_logs_the_epochs_behind_every_model(protocol, extra, expected, mnist):
    torch.set_num_threads(1)
    cfg = tiny(protocol=protocol, finetune_epochs=2, sparsities=(0.0, 0.5, 0.9), **extra)
    m = run_trial(cfg, arrays=mnist).metrics
    assert {t: m[f"model_epochs_{t}"] for t in ("p00", "p50", "p90")} | {"total": m["total_epochs"]} == expected
    assert m["total_epochs"] == cfg.total_epochs  # what was trained is what the protocol planned


@pytest.mark.slow
def test_gradual_runs_on_its_defaults_from_the_cli(tmp_path):
    """Only the retraining budget given: the span is the first 60 % of it, [1, 6] of 10 epochs
    (100 steps each here, so the default mask update every 100 steps fits it)."""
    out = subprocess.run([sys.executable, "-m", "suite.trial", "--protocol", "gradual", "--finetune-epochs", "10",
                          "--epochs", "1", "--train-subset", "10000", "--hidden", "16", "--sparsities", "0,0.9",
                          "--threads", "1", "--json", str(tmp_path / "out.json")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["config"]["gradual_epochs"] == [1, 6] and result["metrics"]["model_epochs_p90"] == 11
    assert result["metrics"]["sparsity_p90"] == pytest.approx(0.9, abs=1e-3)
