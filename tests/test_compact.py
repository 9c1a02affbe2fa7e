import pytest
import torch

from suite import prune
from suite.config import TrialConfig
from suite.evaluate import compact, latency
from suite.methods import METHODS, build


def hand_pruned(biases=(0.5, -0.2, 0.3)):
    """784-4-3-10 SGD net with hand-made masks (activation a, unit j written a:j):
    1:0 reads pixels 0 and 1; 1:1 reads pixel 2; 1:2 reads nothing (constant relu(b)); 1:3 reads pixel 3
    but nothing reads 1:3. 2:0 reads 1:0 and 1:2; 2:1 reads 1:1; 2:2 reads only 1:2, so once 1:2 is
    folded, 2:2 has no live input either and folds into the output bias. Every output reads 2:0..2:2.
    Hand count: live inputs {0, 1, 2}, hidden {1:0, 1:1}, {2:0, 2:1}: widths [3, 2, 2, 10]."""
    torch.manual_seed(0)
    m = build(TrialConfig(method="sgd", hidden=(4, 3), compile=False)).eval()
    w1, b1, w2, b2, w3, _ = (torch.zeros(s.shape, dtype=torch.bool) for s in m.layout)
    w1[0, [0, 1]] = w1[1, 2] = w1[3, 3] = True
    w2[0, [0, 2]] = w2[1, 1] = w2[2, 2] = True
    w3[:, :] = True
    keep = torch.cat([t.flatten() for t in (w1, b1 | True, w2, b2 | True, w3, torch.ones(10, dtype=torch.bool))])
    with torch.no_grad():
        m.theta[m.layout[1].start + 2] = biases[0]  # b1 of the input-less unit 1:2
    m.prune_(keep)
    return m


def test_hand_masks_give_the_hand_counted_widths_and_the_same_logits():
    m = hand_pruned()
    c = compact.compact(m)
    assert c.widths == [3, 2, 2, 10]
    assert c.index.tolist() == [0, 1, 2]
    x = torch.rand(32, 784)
    assert (c(x) - m(x)).abs().max() <= 1e-5
    s = compact.stats(m, c)
    assert s["flops_compact"] == 2 * (3 * 2 + 2 * 2 + 2 * 10)
    assert s["flops_nonzero"] == 2 * (4 + 4 + 30)  # 4 weights in W1, 4 in W2, all 30 of W3
    assert s["flops_dense"] == 2 * (784 * 4 + 4 * 3 + 3 * 10)
    assert s["params_compact"] == 3 * 2 + 2 + 2 * 2 + 2 + 2 * 10 + 10
    assert s["flops_run"] == 2 * (3 * 16 + 16 * 16 + 16 * 10)  # window 0..2, hidden widths padded to 16
    assert [s[f"compact_width_l{i}"] for i in range(3)] == [3, 2, 2]


def test_the_forward_pads_hidden_widths_to_whole_registers_and_keeps_the_logits():
    g = torch.Generator().manual_seed(0)
    w0, w1, w2 = (torch.randn(o, i, generator=g) for o, i in [(67, 5), (49, 67), (10, 49)])
    b0, b1, b2 = (torch.randn(o, generator=g) for o in (67, 49, 10))
    c = compact.CompactMLP(torch.tensor([3, 4, 5, 6, 7]), [(w0, b0), (w1, b1), (w2, b2)], [784, 300, 100, 10])
    run = [(getattr(c, f"_run_weight_{i}"), getattr(c, f"_run_bias_{i}")) for i in range(3)]
    assert [tuple(w.shape) for w, _ in run] == [(80, 5), (64, 80), (10, 64)]  # 67 -> 80, 49 -> 64
    assert c.widths == [5, 67, 49, 10]
    assert set(c.state_dict()) == {"index", *(f"{k}_{i}" for i in range(3) for k in ("weight", "bias"))}  # unpadded
    x = torch.rand(8, 784, generator=g)
    by_hand = torch.relu(torch.relu(x[:, 3:8] @ w0.T + b0) @ w1.T + b1) @ w2.T + b2
    assert (c(x) - by_hand).abs().max() <= 1e-5


def test_run_flops_count_the_input_window_and_the_padded_widths():
    """784-3-10 net reading pixels 5 (unit 0) and 12 (unit 1); unit 2 reads nothing and folds. Live: 2 inputs,
    2 hidden units; what runs: the window of pixels 5..12 (8 wide), 2 units padded to 16, 10 outputs."""
    torch.manual_seed(0)
    m = build(TrialConfig(method="sgd", hidden=(3,), compile=False)).eval()
    w1 = torch.zeros(m.layout[0].shape, dtype=torch.bool)
    w1[0, 5] = w1[1, 12] = True
    keep = torch.ones(m.n_params, dtype=torch.bool)
    keep[:w1.numel()] = w1.flatten()
    m.prune_(keep)
    c = compact.compact(m)
    assert c.widths == [2, 2, 10] and c.run_widths == [8, 16, 10]
    s = compact.stats(m, c)
    assert s["flops_compact"] == 2 * (2 * 2 + 2 * 10) and s["flops_run"] == 2 * (8 * 16 + 16 * 10)
    x = torch.rand(4, 784)
    assert (c(x) - m(x)).abs().max() <= 1e-5


def test_a_unit_with_live_inputs_but_no_reader_is_removed():
    m = hand_pruned()
    c = compact.compact(m)
    w1 = compact.point_layers(m)[0][0]
    assert (w1[3] != 0).sum() == 1  # unit 1:3 does read pixel 3 ...
    assert 3 not in c.index.tolist() and c.widths[1] == 2  # ... but it and its pixel are gone


@pytest.mark.parametrize("b", [0.5, -0.2])
def test_an_input_less_unit_folds_relu_b_into_the_next_bias_and_cascades(b):
    m = hand_pruned((b,))
    (w1, b1), (w2, b2), (w3, b3) = compact.point_layers(m)
    c = compact.compact(m)
    # hand fold: 1:2 is the constant relu(b) = max(b, 0); 2:2 (reads only 1:2) becomes the constant
    # relu(b2[2] + w2[2, 2] relu(b)), which moves into the output bias through column 2 of W3
    c1 = max(b, 0.0)
    expect_b2 = b2[:2] + w2[:2, 2] * c1
    c2 = torch.relu(b2[2] + w2[2, 2] * c1)
    expect_b3 = b3 + w3[:, 2] * c2
    torch.testing.assert_close(c.bias_1, expect_b2, rtol=0, atol=1e-6)
    torch.testing.assert_close(c.bias_2, expect_b3, rtol=0, atol=1e-6)
    x = torch.rand(8, 784)
    assert (c(x) - m(x)).abs().max() <= 1e-5


def test_an_all_pruned_layer_leaves_constant_logits():
    torch.manual_seed(0)
    m = build(TrialConfig(method="sgd", hidden=(8,), compile=False)).eval()
    keep = torch.ones(m.n_params, dtype=torch.bool)
    keep[m.layout[0].start:m.layout[0].end] = False  # W1 entirely pruned
    m.prune_(keep)
    c = compact.compact(m)
    assert c.widths == [0, 0, 10]
    x = torch.rand(4, 784)
    assert (c(x) - m(x)).abs().max() <= 1e-5 and (c.gather_forward(x) - m(x)).abs().max() <= 1e-5
    assert (m(x) - m(x[:1])).abs().max() == 0  # the same logits for every input


@pytest.mark.parametrize("method,kw", [(m, {}) for m in METHODS] + [("sgd", {"dropout": 0.5})])
@pytest.mark.parametrize("level", [0.9, 0.98])
def test_every_method_compacts_to_its_own_prediction(method, kw, level):
    torch.manual_seed(1)
    cfg = TrialConfig(method=method, hidden=(40, 30), compile=False, **kw)
    model = build(cfg).eval()
    keep, _ = prune.keep_mask(prune.scores(model, cfg.resolved_pruner, 0), prune.prunable(model, False),
                              level, "global", model)
    m = prune.pruned_copy(model, keep).eval()
    c = compact.compact(m)
    x = torch.rand(64, 784)
    logits = c(x)
    assert (torch.softmax(logits, -1) - m.predict(x)).abs().max() <= 1e-5
    assert (logits - m(x)).abs().max() <= 1e-5
    assert (c.gather_forward(x) - m(x)).abs().max() <= 1e-5  # the live pixels copied out: the same logits
    assert c.widths[-1] == 10 and all(a <= b for a, b in zip(c.widths, m.sizes))
    if level == 0.98:  # 657 of 32,860 weights left: whole units must have gone
        assert sum(c.widths[:-1]) < sum(m.sizes[:-1])


def test_measure_names_every_metric_with_the_level():
    m = hand_pruned()
    out, c = compact.measure(m, "p98")
    assert out["compact_width_l1_p98"] == 2 and out["flops_compact_p98"] == 60 and out["flops_run_p98"] == 928
    assert all(k.endswith("_p98") for k in out)
    lat, _ = latency.measure(m, torch.rand(1000, 784), "p98", others={"compact": c.readers()})
    for b in (1, 1000):
        assert lat[f"latency_compact_b{b}_ms_p98"] > 0
