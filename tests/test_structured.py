"""Structured pruning (prune_structure: units): whole input units go, so a level is a smaller dense
net. Masks counted by hand on a chosen net, the structure checked on any net, tighten's masks only
shrinking, and a units trial through the real trial code and its stored re-evaluation."""
import math
from pathlib import Path

import pytest
import torch
from test_gradual_train import states
from test_gradual_train import tiny as tiny_gradual
from test_protocols import tiny
from test_stored import assert_reproduces, evaluated_again

from suite import prune, stored
from suite.analysis import runsfile
from suite.config import ConfigError, TrialConfig, load_grid
from suite.data import make_splits
from suite.evaluate import compact
from suite.methods import build
from suite.protocols import PROTOCOLS
from suite.protocols.base import tighten
from suite.trial import run_trial

ROOT = Path(__file__).resolve().parent.parent


def hand_net():
    """784-2-10 SGD net. Unit RMS of |w| over its column: hidden 0 0.05, pixel 0 0.1, pixel 2
    sqrt(0.2^2 / 2) = 0.1414, pixel 1 sqrt((0.3^2 + 0.4^2) / 2) = 0.3536, the other pixels 1, hidden 1 2."""
    m = build(TrialConfig(method="sgd", hidden=(2,), compile=False, prune_structure="units"))
    w0, w1 = torch.ones(2, 784), torch.full((10, 2), 2.0)
    w0[:, 0], w0[:, 1], w0[:, 2] = torch.tensor([0.1, 0.1]), torch.tensor([0.3, -0.4]), torch.tensor([0.2, 0.0])
    w1[:, 0] = 0.05
    with torch.no_grad():
        m.theta.copy_(torch.cat([w0.reshape(-1), torch.zeros(2), w1.reshape(-1), torch.zeros(10)]))
    return m


def expected(dead_rows0: list[int], dead_cols0: list[int], dead_cols1: list[int]) -> torch.Tensor:
    """The keep mask written out: W0 rows / columns and W1 columns removed, every bias kept."""
    k0, k1 = torch.ones(2, 784, dtype=torch.bool), torch.ones(10, 2, dtype=torch.bool)
    k0[dead_rows0, :] = False
    k0[:, dead_cols0] = False
    k1[:, dead_cols1] = False
    return torch.cat([k0.reshape(-1), torch.ones(2, dtype=torch.bool), k1.reshape(-1), torch.ones(10, dtype=torch.bool)])


def units_mask(m, p, scope="global", biases=False):
    score = prune.scores(m, "magnitude", 0, "units")
    return prune.keep_mask(score, prune.prunable(m, biases), p, scope, m, "units")


def test_units_go_in_score_order_until_the_level_by_hand():
    m = hand_net()  # 1588 weights; hidden 0 takes its column (10) and its row of W0 (784): 794
    keep, thr = units_mask(m, 0.5)  # k = 794: hidden 0 alone
    assert torch.equal(keep, expected([0], [], [0])) and thr == pytest.approx(0.05)
    keep, thr = units_mask(m, 0.01)  # k = 16: one unit overshoots to 794, reported as measured
    assert torch.equal(keep, expected([0], [], [0]))
    keep, thr = units_mask(m, 0.501)  # k = round(795.6) = 796: then pixel 0 (+1: row 0 is gone) and pixel 2 (+1)
    assert torch.equal(keep, expected([0], [0, 2], [0])) and thr == pytest.approx(0.2 / 2 ** 0.5)
    x = torch.rand(8, 784)
    assert prune.measured_sparsity(prune.pruned_copy(m, keep), x, False)[0] == 796 / 1588


def test_layer_scope_counts_each_layer_from_the_output_back_by_hand():
    m = hand_net()
    # W1 (20): k = round(10.2) = 10, hidden 0's column; W0 (1568): k = round(799.68) = 800, its row
    # gives 784, each pixel then 1: 16 pixels, 0, 2, 1, then 3..15 (tied at 1: by index)
    keep, thr = units_mask(m, 0.51, "layer")
    assert torch.equal(keep, expected([0], list(range(16)), [0])) and thr != thr  # NaN: one threshold per layer


def test_pruned_biases_go_with_their_unit():
    m = hand_net()
    keep, _ = units_mask(m, 0.5, biases=True)  # k = round(0.5 * 1600) = 800: hidden 0 (794 + its bias) and pixels 0, 2, 1, 3, 4
    want = expected([0], [0, 1, 2, 3, 4], [0])
    want[2 * 784] = False
    assert torch.equal(keep, want)


@pytest.mark.parametrize("method", ["sgd", "bbb", "sparse_vd", "l0", "bc_gnj", "bc_ghs"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_a_units_mask_removes_whole_columns_and_their_rows_only(method, scope):
    torch.manual_seed(0)
    cfg = TrialConfig(method=method, hidden=(20, 12), compile=False, prune_structure="units", prune_scope=scope)
    m = build(cfg).eval()
    allowed = prune.prunable(m, False)
    keep, _ = prune.keep_mask(prune.scores(m, cfg.resolved_pruner, 0, "units"), allowed, 0.9, scope, m, "units")
    segs = m.layout[::2]
    dead = [(~keep[s.start:s.end].view(s.shape)).all(0) for s in segs]  # units whose whole column went
    for i, s in enumerate(segs):
        rows = dead[i + 1] if i + 1 < len(segs) else torch.zeros(s.shape[0], dtype=torch.bool)
        assert torch.equal(~keep[s.start:s.end].view(s.shape), rows[:, None] | dead[i][None, :])
    assert keep[~allowed].all()  # biases untouched
    n_layer = [s.shape[0] * s.shape[1] for s in segs]
    removed = [int((~keep[s.start:s.end]).sum()) for s in segs]
    if scope == "global":
        assert sum(removed) >= round(0.9 * sum(n_layer))
    else:
        assert all(r >= round(0.9 * n) for r, n in zip(removed, n_layer))
    c = compact.compact(prune.pruned_copy(m, keep).eval())  # the smaller dense net it is
    assert c.widths[1:-1] == [int((~d).sum()) for d in dead[1:]] and len(c.index) == int((~dead[0]).sum())
    assert c.widths[-1] == 10 and len(c.index) + sum(c.widths[1:-1]) < sum(m.sizes[:-1])


@pytest.mark.parametrize("method", ["sgd", "bbb"])
def test_tighten_only_shrinks_the_units_mask(method):
    torch.manual_seed(0)
    cfg = TrialConfig(method=method, hidden=(20, 12), compile=False, prune_structure="units")
    m = build(cfg)
    tighten(m, cfg, 0.5)
    first = m.held.clone()
    with torch.no_grad():  # new weights, so the second round ranks the units afresh
        for p in m.parameters():
            p.add_(0.5 * torch.randn_like(p) * p.abs().clamp(max=1))
    m.prune_(m.held)
    tighten(m, cfg, 0.8)
    weights = m.weight_entries()
    assert torch.equal(first & m.held, m.held) and not torch.equal(first, m.held)  # only shrinks, and did
    assert int((weights & ~m.held).sum()) >= round(0.8 * int(weights.sum()))
    assert torch.equal(m.held, m.units_keep(m.reduce_units(m.held.float(), "max") > 0) | ~weights)  # whole units


def test_the_field_is_validated_and_leaves_every_released_key_alone():
    with pytest.raises(ConfigError, match=r"prune_structure='neurons' is invalid: allowed weights \| units\."):
        TrialConfig(prune_structure="neurons")
    runs = runsfile.read(ROOT / "results" / "lenet" / "runs.parquet").runs
    assert {t.grid_key() for t in load_grid("lenet").trials} == {r.tags["grid_key"] for r in runs}
    assert TrialConfig(prune_structure="units").grid_key() != TrialConfig().grid_key()


def test_a_units_arm_has_its_own_label_after_its_twin_and_is_never_the_baseline():
    weights = TrialConfig(method="sgd", dropout=0.0)
    units = TrialConfig(method="sgd", dropout=0.0, prune_structure="units")
    assert weights.label() == "SGD" and units.label() == "SGD (units)"
    nxt = TrialConfig(method="sgd", dropout=0.0, protocol="finetune", finetune_epochs=1)  # the next protocol's arm
    order = [float(c.run_tags()["label_order"]) for c in (weights, units, nxt)]
    assert order == sorted(order) and len(set(order)) == 3
    assert weights.run_tags().get("baseline") == "true" and "baseline" not in units.run_tags()


def test_a_units_trial_fine_tunes_whole_units_and_is_evaluated_again_the_same(mnist, fmnist, tmp_path):
    torch.set_num_threads(1)
    cfg = tiny(protocol="finetune", finetune_epochs=1, prune_structure="units")
    ft = run_trial(cfg, arrays=mnist, ood_images=fmnist.x_test)
    m = build(cfg)
    m.load_state_dict(ft.state_dict)
    level = prune.held_model(m, {k: v for k, v in ft.artifacts["levels/p90.npz"].items()})
    theta = level.theta.detach()
    w0, w1 = theta[:784 * 32].view(32, 784), theta[784 * 32 + 32:784 * 32 + 32 + 320].view(10, 32)
    dead_pixels, dead_hidden = (w0 == 0).all(0), (w1 == 0).all(0)
    zero0 = dead_hidden[:, None] | dead_pixels[None, :]
    assert torch.equal(w0 == 0, zero0) and int(dead_hidden.sum()) + int(dead_pixels.sum()) > 0  # whole units, still 0
    assert ft.metrics["sparsity_p90"] >= 0.9 and ft.metrics["compact_width_l1_p90"] == 32 - int(dead_hidden.sum())
    one = run_trial(tiny(prune_structure="units", sparsities=(0.0, 0.5, 0.9)), arrays=mnist, ood_images=fmnist.x_test)
    got, _ = evaluated_again(one, mnist, fmnist, tmp_path)  # stored.model_at rebuilds each units mask
    assert_reproduces(got, one.metrics, ["p00", "p50", "p90"])


def test_gradual_train_holds_whole_units_and_its_model_pt_rebuilds_the_mask(mnist):
    torch.set_num_threads(1)
    cfg = tiny_gradual(prune_structure="units")
    r, saved = states(cfg, mnist)
    model = build(cfg)
    weights, earlier = model.weight_entries(), torch.ones(model.n_params, dtype=torch.bool)
    for state in saved:
        held = state["finetune"]["gradual_train"]["held"]
        assert torch.equal(earlier & held, held)  # only shrinks
        assert torch.equal(held, model.units_keep(model.reduce_units(held.float(), "max") > 0) | ~weights)
        earlier = held
    assert r.metrics["sparsity_p90"] >= 0.9
    model.load_state_dict(r.state_dict)
    keep, thr = PROTOCOLS["gradual_train"](cfg, model.eval(), None, {}).mask(0.9)
    assert torch.equal(keep, earlier) and math.isfinite(thr)  # the held mask, from the weights alone; its score threshold
    data = make_splits(mnist, cfg.val_size, cfg.train_subset, cfg.seed, torch.device("cpu"))
    got, _ = stored.evaluate_stored(stored.Stored(cfg, r.state_dict, {}), data, None)
    for k in ("test_acc_p90", "test_nll_p90", "sparsity_p90", "compact_width_l1_p90"):
        assert got[k] == r.metrics[k], k
