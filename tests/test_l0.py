"""L0 regularisation: the gate distribution, exact zeros at the natural level, training, fine-tuning."""
import pytest
import torch

from suite import prune
from suite.config import TrialConfig
from suite.methods import build
from suite.methods.l0 import deterministic_gate, open_probability, sample_gate
from suite.trial import run_trial


def small(**kw):
    return TrialConfig(method="l0", hidden=(40, 30), compile=False, **kw)


@pytest.mark.parametrize("log_alpha", [-4.0, -1.0, 0.0, 2.0])
def test_open_probability_is_the_sampled_frequency_of_open_gates(log_alpha):
    torch.manual_seed(0)
    z = sample_gate(torch.full((400_000,), log_alpha))
    assert z.min() >= 0 and z.max() <= 1 and (z == 0).any() and (z == 1).any()  # hard: mass at 0 and at 1
    want = float(open_probability(torch.tensor(log_alpha)))
    assert float((z > 0).float().mean()) == pytest.approx(want, abs=3e-3)  # eq. 12 against 400k samples


def test_deterministic_gate_closes_exactly_below_its_threshold():
    la = torch.tensor([-2.5, -2.39, 0.0, 2.4, 3.0])
    g = deterministic_gate(la)
    assert g[0] == 0 and 0 < g[1] < 0.01 and g[3] == pytest.approx(1.0, abs=1e-3) and g[4] == 1


def test_natural_keep_gives_exact_zeros_in_the_forward_pass():
    torch.manual_seed(0)
    m = build(small())
    with torch.no_grad():
        m.log_alpha[::3] = -5.0  # closed gates on a known third of the entries
    keep = m.natural_keep()
    closed = (m.log_alpha < -2.4) & m.is_weight
    assert torch.equal(~keep, closed) and closed.sum() > 0
    want = int(closed.sum()) / int(m.is_weight.sum())
    x = torch.rand(4, 784)
    assert prune.measured_sparsity(m, x, False)[0] == pytest.approx(want)  # already 0 before pruning
    pruned = prune.pruned_copy(m, keep)
    assert prune.measured_sparsity(pruned, x, False, pruned.sample())[0] >= want  # samples never reopen them


def test_objective_pays_for_open_gates_and_trains_both_vectors():
    torch.manual_seed(0)
    m = build(small(l0_lambda=0.5))
    loss, nll, pen = m.objective(torch.rand(8, 784), torch.randint(0, 10, (8,)), kl_weight=0.25)
    pen = pen.detach()
    n_weights = int(m.is_weight.sum())
    assert float(pen) == pytest.approx(0.25 * 0.5 * float(open_probability(m.log_alpha.detach())[m.is_weight].sum()) / 8)
    assert 0.4 * n_weights < float(pen) * 8 / 0.25 / 0.5 < 0.9 * n_weights  # droprate 0.5: ~2/3 of gates open
    loss.backward()
    assert m.theta.grad.abs().sum() > 0 and m.log_alpha.grad[m.is_weight].abs().sum() > 0
    assert torch.all(m.log_alpha.grad[~m.is_weight] == 0)  # biases have no gate


def test_bad_settings_are_one_error():
    from suite.config import ConfigError
    with pytest.raises(ConfigError, match="l0_droprate_init"):
        small(l0_droprate_init=1.0)
    with pytest.raises(ConfigError, match="l0_lambda"):
        small(l0_lambda=-1)


@pytest.mark.slow
def test_two_epoch_lenet_trial_is_above_chance_with_a_natural_level(mnist):
    cfg = TrialConfig(method="l0", hidden=(300, 100), epochs=2, train_subset=10000, val_size=2000, lr=1e-3,
                      protocol="natural", sparsities=(0.0, 0.9), test_samples=2, l0_lambda=1.0, compile=False)
    m = run_trial(cfg, arrays=mnist).metrics
    assert m["test_acc_nat"] > 0.6 and m["test_acc_mc_nat"] > 0.6 and m["test_acc_p90"] > 0.3
    assert 0 < m["sparsity_nat"] < 1 and {"sparsity_l1_nat", "sparsity_l3_nat"} <= set(m)


def test_finetune_keeps_the_pruned_gates_shut(mnist):
    r = run_trial(TrialConfig(method="l0", hidden=(64,), epochs=1, train_subset=2000, val_size=1000, lr=1e-3,
                              protocol="finetune", finetune_epochs=1, sparsities=(0, 0.9), test_samples=2,
                              compile=False), arrays=mnist)
    # the pruned 90 % stay exactly 0; more gates may close while the kept weights retrain (measured, not forced)
    assert 0.9 - 1e-4 <= r.metrics["sparsity_p90"] < 0.99
