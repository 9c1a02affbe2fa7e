"""Compression after pruning and after precision reduction (suite/evaluate/bits.py): the paper's bit
rule, fixed-point rounding, Han et al.'s relative-index storage and the whole count against hand
computations; the validation-chosen precision against its own promise, measured through the
method's forward pass; every level of a tiny trial logging the metrics."""
import pytest
import torch
from test_protocols import tiny

from suite import methods
from suite.data import make_splits
from suite.evaluate import bits, compact
from suite.evaluate.metrics import accuracy
from suite.methods import build
from suite.trial import run_trial


def test_the_bit_rule_is_the_papers_on_a_hand_computed_layer():
    """Per weight, #{t in 1..23 : 2 var < 2^-t}; the layer: ceil of the mean.
    2 var = 2e-4: 2^-12 = 2.44e-4 > 2e-4 > 2^-13 -> 12; 2 var = 0.02: 2^-5 = 0.031 > 0.02 > 2^-6 -> 5;
    2 var = 0.6 > 2^-1 -> 0. Mean 17/3 = 5.67 -> 6."""
    assert bits.variance_fraction_bits(torch.tensor([1e-4, 1e-2, 0.3])) == 6
    assert bits.variance_fraction_bits(torch.tensor([2.0 ** -6])) == 4  # 2 var = 2^-5: strict, t = 1..4
    assert bits.variance_fraction_bits(torch.tensor([0.0, 0.0])) == 23  # no uncertainty: float32's 23
    assert bits.variance_fraction_bits(torch.tensor([1e-4, 1e-4])) == 12  # an integer mean is not rounded up


def test_quantisation_rounds_to_the_step_and_counts_sign_and_magnitude():
    """F = 2, step 0.25: 0.3 -> 0.25 (code 1), -0.7 -> -0.75 (-3), 0.05 -> 0, 1.26 -> 1.25 (5); the
    largest code 5 needs 3 magnitude bits, plus the sign: 4 bits."""
    wq, b = bits.quantise(torch.tensor([0.3, -0.7, 0.05, 1.26]), 2)
    assert wq.tolist() == [0.25, -0.75, 0.0, 1.25] and b == 4
    w = torch.randn(1000) * 0.3
    for f in range(bits.MAX_FRACTION_BITS + 1):
        wq, b = bits.quantise(w, f)
        assert (wq - w).abs().max() <= 2.0 ** -(f + 1), f  # half a step at most
        assert (wq * 2 ** f).abs().max() <= 2 ** (b - 1) - 1  # every code fits b - 1 magnitude bits
    assert bits.quantise(w, None) == (w, 32)


def test_bisection_finds_the_fewest_passing_bits_next_to_a_failing_one():
    calls = []

    def at_least(n):
        return lambda f: calls.append(f) or f >= n
    assert [bits.fewest_passing(at_least(n)) for n in (0, 1, 7, 23, 24)] == [0, 1, 7, 23, None]
    assert len(calls) <= 4 * 6 + 1  # 23 first, then at most 5 halvings of (-1, 23]; None after the first call


def test_relative_indices_and_the_cheaper_format_by_hand():
    """Nonzeros of a 3x4 matrix at row-major places 0, 5, 11: gaps 1, 5, 6. Entries with k index bits
    (a gap d takes ceil(d / 2^k)): k=1 1+3+3 = 7, k=2 1+2+2 = 5, k=3 3. At b = 4 value bits: 7*5 = 35,
    5*6 = 30, 3*7 = 21, k=4 3*8 = 24: sparse k3 21 bits, cheaper than dense 12*4 = 48."""
    w = torch.zeros(3, 4)
    w.view(-1)[[0, 5, 11]] = torch.tensor([1.0, -2.0, 3.0])
    assert [bits.relative_index_entries(w, k) for k in (1, 2, 3)] == [7, 5, 3]
    assert bits.weight_bits(w, 4) == (21, "sparse k3")
    assert bits.weight_bits(torch.ones(2, 2), 3) == (12, "dense")  # sparse k1: 4 entries x 4 bits = 16
    # the stored net: the 4-bit input mask + 21 + three float32 biases + a 64-bit header
    assert bits.stored_bits([(w, torch.zeros(3))], [4], 4) == (4 + 21 + 3 * 32 + 64, ["sparse k3"])


def hand_net():
    """784-2-10 SGD net: W1[0, 0] = 0.5, W1[0, 3] = 0.75, W1[1, 3] = -0.25, b1 = (0.1, 0.2); W2[0, 0] = 1,
    W2[1, 1] = -1.5, every other weight and b2 zero. Compacted: live inputs {0, 3}, both hidden units."""
    m = build(tiny(hidden=(2,))).eval()
    with torch.no_grad():
        m.theta.zero_()
        w1, b1, w2 = (m.theta[s.start:s.end].view(s.shape) for s in m.layout[:3])
        w1[0, 0], w1[0, 3], w1[1, 3] = 0.5, 0.75, -0.25
        b1[:] = torch.tensor([0.1, 0.2])
        w2[0, 0], w2[1, 1] = 1.0, -1.5
    return m


def test_a_hand_counted_net_with_posterior_variances():
    """Variances 2^-8 in layer 1 (2 var = 2^-7: F = 6), 2^-4 in layer 2 (F = 2). Layer 1 codes 32, 48, -16
    (max 48: 6 magnitude bits, b = 7), compacted 2x2, nonzeros at 0, 1, 3 (gaps 1, 1, 2, each one entry
    at k = 1): sparse k1 3 x 8 = 24 < k2 3 x 9 = 27 < dense 4 x 7 = 28. Layer 2 codes 4, -6 (b = 4), 10x2, nonzeros at 0, 3
    (gaps 1, 3): k2 2 x 6 = 12 < k1 15, dense 80. Stored: 784 + (24 + 2*32 + 64) + (12 + 10*32 + 64) = 1332
    bits against 32 x 1600 float32 bits; 5 of 1588 weights kept; mean value bits (3*7 + 2*4) / 5."""
    m = hand_net()
    var = torch.where(torch.arange(m.n_params) < m.layout[2].start, 2.0 ** -8, 2.0 ** -4)
    m.weight_variance = lambda: var
    x, y = torch.rand(64, 784), torch.randint(0, 10, (64,))
    got, info = bits.measure(m, compact.compact(m), x, y, None, "p90")
    assert got == {"compression_pruned_p90": 1588 / 5, "bits_l1_p90": 7.0, "bits_l2_p90": 4.0, "bits_p90": 29 / 5,
                   "stored_bytes_p90": 1332 / 8, "compression_bits_p90": 32 * 1600 / 1332,
                   "quant_acc_p90": accuracy(m(x), y)}  # the hand weights are exact at these precisions
    assert info == {"bits_rule": "posterior variance", "bits_format_p90": "sparse k1,sparse k2"}


def test_a_point_estimate_net_without_a_validation_split_gets_no_precision():
    m = hand_net()
    got, info = bits.measure(m, compact.compact(m), torch.rand(8, 784), torch.zeros(8, dtype=torch.long), None, "p90")
    assert got == {"compression_pruned_p90": 1588 / 5} and info == {}


@pytest.fixture(scope="module")
def sgd_trial(mnist, fmnist):
    torch.set_num_threads(1)
    cfg = tiny(sparsities=(0.0, 0.5, 0.9))
    return run_trial(cfg, arrays=mnist, ood_images=fmnist.x_test)


def with_weights(m, layers):
    """A copy of point-estimate model m whose weight matrices are `layers`' (the pruned model's shapes)."""
    q = methods.build(m.cfg).eval()
    q.load_state_dict(m.state_dict())
    with torch.no_grad():
        for s, w in zip([s for s in q.layout if not s.is_bias], layers):
            q.theta[s.start:s.end] = w.flatten()
    return q


def test_the_validation_chosen_precision_keeps_its_tolerance_and_is_the_smallest_it_scanned(sgd_trial, mnist):
    """The chosen fraction bits, written into the trained net and run through its own forward pass, lose
    at most TOLERANCE of validation accuracy; one bit fewer in layer i (the earlier layers at their
    choice, the later ones float32, as when layer i was chosen) loses more than the tolerance."""
    cfg = sgd_trial.config
    m = build(cfg).eval()
    m.load_state_dict(sgd_trial.state_dict)
    data = make_splits(mnist, cfg.val_size, cfg.train_subset, cfg.seed, torch.device("cpu"))
    layers = compact.point_layers(m)  # the unpruned net (the search takes any MLP's layers and input)
    ws = [w for w, _ in layers]
    frac = bits.validation_fraction_bits(layers, data.x_val, data.y_val)
    floor = accuracy(m(data.x_val), data.y_val) - bits.TOLERANCE
    assert all(f is not None and 0 <= f <= bits.MAX_FRACTION_BITS for f in frac), frac
    assert accuracy(with_weights(m, [bits.quantise(w, f)[0] for w, f in zip(ws, frac)])(data.x_val), data.y_val) >= floor
    for i, f in enumerate(frac):
        if f == 0:
            continue
        fewer = [bits.quantise(w, g)[0] for w, g in zip(ws, [*frac[:i], f - 1, *[None] * (len(ws) - i - 1)])]
        assert accuracy(with_weights(m, fewer)(data.x_val), data.y_val) < floor, (i, f)


@pytest.mark.parametrize("method,extra", [("sgd", {}), ("sparse_vd", {"protocol": "natural"})])
def test_every_level_of_a_trial_logs_compression_and_its_quantised_accuracy(method, extra, sgd_trial, mnist, fmnist):
    """Every level: compression after pruning (for SGD, whose forward reads its point weights, exactly
    1 / (1 - measured sparsity)), value bits per layer, the stored size and its ratio, the quantised
    accuracy; the rule as a run tag. Without a validation split SGD gets compression after pruning only."""
    torch.set_num_threads(1)
    r = sgd_trial if method == "sgd" else run_trial(tiny(method, sparsities=(0.0, 0.5, 0.9), **extra), arrays=mnist,
                                                    ood_images=fmnist.x_test)
    tags = ["p00", "p50", "p90"] + (["nat"] if method == "sparse_vd" else [])
    for t in tags:
        mt = r.metrics
        for name in ("bits_", "bits_l1_", "bits_l2_", "stored_bytes_", "compression_bits_", "quant_acc_"):
            assert f"{name}{t}" in mt, name + t
        assert 1 <= mt[f"bits_l1_{t}"] <= 32 and mt[f"compression_bits_{t}"] > 1
        assert abs(mt[f"quant_acc_{t}"] - mt[f"test_acc_{t}"]) < 0.05
        if method == "sgd":
            assert mt[f"compression_pruned_{t}"] == pytest.approx(1 / (1 - mt[f"sparsity_{t}"]), rel=1e-9)
    assert r.info["bits_rule"] == ("validation" if method == "sgd" else "posterior variance")
    if method == "sgd":
        no_val = run_trial(tiny(sparsities=(0.9,), val_size=0), arrays=mnist, ood_images=fmnist.x_test).metrics
        assert "compression_pruned_p90" in no_val and not any(k.startswith(("bits_", "quant_acc_")) for k in no_val)
