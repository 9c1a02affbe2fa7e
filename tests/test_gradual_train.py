"""gradual_train: Zhu & Gupta's cubic schedule over training epochs, checked against hand-computed
sparsities, held zeros with zero Adam moments, exact resume, and a stored model that rebuilds its level."""
import copy

import pytest
import torch

from suite import methods, stored
from suite.config import ConfigError, TrialConfig
from suite.data import make_splits
from suite.protocols import PROTOCOLS
from suite.trial import run_trial

N_WEIGHTS = 784 * 64 + 64 * 10  # hidden (64,): the prunable entries (biases never)


def tiny(**kw):
    base = dict(hidden=(64,), epochs=4, train_subset=2000, val_size=1000, lr=1e-3, sparsities=(0.9,), test_samples=2,
                compile=False, protocol="gradual_train", gradual_train_epochs=[1, 3])
    return TrialConfig(**{**base, **kw})


def test_the_schedule_by_hand_and_the_checks():
    # s_f (1 - (1 - k/n)^3), s_f = 0.9, n = 4 updates after epochs 2..5: 0.9 (1 - 27/64), 0.9 (1 - 1/8), 0.9 (1 - 1/64), 0.9
    cfg = tiny(epochs=6, gradual_train_epochs=[2, 5])
    assert PROTOCOLS["gradual_train"].schedule(cfg) == pytest.approx({2: 0.5203125, 3: 0.7875, 4: 0.8859375, 5: 0.9},
                                                                     abs=1e-15)
    assert cfg.total_epochs == 6 and cfg.label() == "SGD + gradual in training"
    for bad, needle in [({"sparsities": (0.0, 0.9)}, r"sparsities=\[0.0, 0.9\] is invalid: allowed exactly one level"),
                        ({"sparsities": (0.9, 0.95)}, "sparsities=.* is invalid: allowed exactly one level in \\(0, 1\\)"),
                        ({"gradual_train_epochs": []}, r"gradual_train_epochs=\[\] is invalid: allowed \[a, b\]"),
                        ({"gradual_train_epochs": [0, 2]}, r"gradual_train_epochs=\[0, 2\] is invalid"),
                        ({"gradual_train_epochs": [3, 5]}, r"gradual_train_epochs=\[3, 5\] is invalid: .*epochs=4")]:
        with pytest.raises(ConfigError, match=needle):
            tiny(**bad)
    with pytest.raises(ConfigError, match="gradual_train_epochs is a setting of protocol gradual_train"):
        TrialConfig(gradual_train_epochs=[1, 2])


def states(cfg, mnist, stop: int | None = None):
    """Run the trial, keeping a copy of the state saved after every epoch; stop after epoch `stop`."""
    saved = []

    class Stop(Exception):
        pass

    def on_epoch(log, state):
        saved.append(copy.deepcopy(state()))
        if log["epoch"] == stop:
            raise Stop
    try:
        return run_trial(cfg, on_epoch, arrays=mnist), saved
    except Stop:
        return None, saved


def test_the_net_prunes_on_schedule_holds_zeros_and_rebuilds_from_model_pt(mnist):
    torch.set_num_threads(1)
    cfg = tiny()
    r, saved = states(cfg, mnist)
    # after epochs 1, 2, 3: round(0.9 (1 - (2/3)^3) n), round(0.9 (1 - (1/3)^3) n), round(0.9 n); then unchanged
    expected = [round(s * N_WEIGHTS) for s in (0.9 * 19 / 27, 0.9 * 26 / 27, 0.9, 0.9)]
    model = methods.build(cfg)
    earlier = torch.zeros(model.n_params, dtype=torch.bool)
    for state, n_pruned in zip(saved, expected):
        pruned = ~state["finetune"]["gradual_train"]["held"]
        assert int(pruned.sum()) == n_pruned and not pruned[~model.weight_entries()].any()
        assert torch.all(pruned[earlier])  # the masks only shrink
        earlier = pruned
        model.load_state_dict(state["model"])
        assert torch.all(model.theta.detach()[pruned] == 0) and torch.all(model.theta.detach()[~pruned] != 0)
        for st in state["optimizer"]["state"].values():
            assert torch.all(st["exp_avg"][pruned] == 0) and torch.all(st["exp_avg_sq"][pruned] == 0)
    assert r.metrics["sparsity_p90"] == expected[-1] / N_WEIGHTS  # measured in the forward pass: s_f exactly
    assert r.metrics["model_epochs_p90"] == r.metrics["total_epochs"] == 4 and r.metrics["test_acc_p90"] > 0.5
    # what a re-evaluation has, model.pt and the config, gives the held mask and the logged metrics
    model.load_state_dict(r.state_dict)
    keep = PROTOCOLS["gradual_train"](cfg, model.eval(), None, {}).mask(0.9)[0]
    assert torch.equal(keep, ~earlier | ~model.weight_entries())
    assert torch.equal(keep, PROTOCOLS["oneshot"](cfg, model, None, {}).mask(0.9)[0])  # the magnitude mask export uses
    data = make_splits(mnist, cfg.val_size, cfg.train_subset, cfg.seed, torch.device("cpu"))
    got, _ = stored.evaluate_stored(stored.Stored(cfg, r.state_dict, {}), data, None)
    for k in ("test_acc_p90", "test_nll_p90", "test_ece_p90", "sparsity_p90"):
        assert got[k] == r.metrics[k], k


@pytest.mark.parametrize("stop", [2, 3])  # mid-schedule (after an update), and at its last update
def test_a_resumed_trial_is_bit_identical(stop, mnist):
    torch.set_num_threads(1)
    cfg = tiny()
    full, _ = states(cfg, mnist)
    _, saved = states(cfg, mnist, stop=stop)
    resumed = run_trial(cfg, arrays=mnist, resume=saved[-1])
    assert all(torch.equal(resumed.state_dict[k], v) for k, v in full.state_dict.items())
    assert {k: v for k, v in resumed.metrics.items() if k.startswith(("test_", "sparsity_"))} == \
        {k: v for k, v in full.metrics.items() if k.startswith(("test_", "sparsity_"))}
