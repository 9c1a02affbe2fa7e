"""Bayesian Compression (bc_gnj, bc_ghs): the KL terms against independent computations, the
half-Cauchy decomposition, the posterior moments against sampling, whole-group pruning, training."""
import json
import math
import subprocess
import sys

import pytest
import torch
from torch import distributions as D

from suite import prune
from suite.config import ConfigError, TrialConfig
from suite.methods import build
from suite.methods.bc_ghs import kl_lognormal_gamma, kl_lognormal_invgamma
from suite.methods.bc_gnj import gnj_kl
from suite.methods.sparse_vd import neg_kl_approx
from suite.trial import run_trial


def small(method, **kw):
    return TrialConfig(method=method, hidden=(40, 30), compile=False, **kw)


def test_gnj_kl_is_sparse_vds_approximation_at_the_groups_log_alpha():
    """Louizos et al. eq. 8 uses Molchanov et al.'s eq. 14 for q(z): Sparse VD's -KL, negated."""
    la = torch.linspace(-8, 8, 161, dtype=torch.float64)
    torch.testing.assert_close(gnj_kl(la), -neg_kl_approx(la), rtol=0, atol=1e-12)


@pytest.mark.parametrize("mu,log_var,shape,scale", [(0.3, -1.0, 0.5, 1.0), (-2.0, -3.0, 0.5, 1.0),
                                                      (-23.0, -2.0, 0.5, 1e-10), (1.0, 0.5, 2.0, 3.0)])
def test_lognormal_kls_match_monte_carlo(mu, log_var, shape, scale):
    """Closed forms against E_q[log q - log p] over 400k float64 samples, torch.distributions' densities."""
    torch.manual_seed(0)
    q = D.LogNormal(torch.tensor(mu, dtype=torch.float64), torch.tensor(math.exp(0.5 * log_var), dtype=torch.float64))
    x = q.sample((400_000,))
    a, b = torch.tensor(shape, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64)
    for closed, p in ((kl_lognormal_gamma, D.Gamma(a, 1 / b)), (kl_lognormal_invgamma, D.InverseGamma(a, b))):
        mc = q.log_prob(x) - p.log_prob(x)
        got = float(closed(torch.tensor(mu, dtype=torch.float64), torch.tensor(log_var, dtype=torch.float64), shape, scale))
        assert got == pytest.approx(float(mc.mean()), abs=5 * float(mc.std()) / math.sqrt(len(x)) + 1e-6)


def test_half_cauchy_is_the_product_of_the_gamma_and_inverse_gamma_factors():
    """sqrt(a b), a ~ Gamma(1/2, scale k^2), b ~ InvGamma(1/2, 1) has C+(0, k)'s quantiles (eq. 11)."""
    torch.manual_seed(0)
    k, n = 0.3, 200_000
    a = D.Gamma(torch.tensor(0.5, dtype=torch.float64), torch.tensor(1 / k ** 2, dtype=torch.float64)).sample((n,))
    b = D.InverseGamma(torch.tensor(0.5, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)).sample((n,))
    probs = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
    want = k * torch.tan(math.pi / 2 * probs)  # the half-Cauchy's quantile function
    torch.testing.assert_close(torch.quantile((a * b).sqrt(), probs), want, rtol=0.02, atol=0)


@pytest.mark.parametrize("method", ["bc_gnj", "bc_ghs"])
def test_point_weights_and_weight_variance_are_the_moments_of_the_samples(method):
    torch.manual_seed(0)
    m = build(small(method))
    with torch.no_grad():  # noisy enough that the variance is not just sigma^2
        m.z_log_var.add_(7.0)
        m.log_sigma2.add_(4.0)
    s = torch.stack([m.sample() for _ in range(4000)]).double()
    mean, var = m.point_weights().detach().double(), m.weight_variance().double()
    se = (s.var(0) / len(s)).sqrt()
    assert (s.mean(0) - mean).abs().le(5 * se + 1e-7).float().mean() > 0.999
    w = m.is_weight
    assert torch.equal(var[~w], torch.zeros_like(var[~w]))
    assert float(((s.var(0)[w] - var[w]) / var[w]).abs().median()) < 0.05


@pytest.mark.parametrize("method", ["bc_gnj", "bc_ghs"])
def test_per_example_input_scales_are_the_scaled_weights_of_each_example(method):
    """x_j zeta_j through mu and sigma^2 is, for each example, the local reparameterisation of
    weights zeta_j mu_ij with variances zeta_j^2 sigma_ij^2 (the per-weight form, one example at a time
    with the same noise); and the scale draws of a batch are independent across examples."""
    torch.manual_seed(0)
    m = build(small(method))
    with torch.no_grad():
        m.z_log_var.add_(6.0)
        m.log_sigma2.add_(5.0)
    x = torch.rand(3, 784, dtype=torch.float64)
    m = m.double()
    zeta = m.scale_sample(3).detach()
    var = torch.where(m.is_weight, torch.exp(m.log_sigma2), 0.0).detach()
    torch.manual_seed(1)
    got = m(x, m.mu.detach(), var, scale=zeta)
    torch.manual_seed(1)
    eps = [torch.randn(3, n, dtype=torch.float64) for n in m.sizes[1:]]  # the noise the batch drew, layer by layer
    for b in range(3):
        zw = m.per_weight(zeta[b], 1.0)
        h = x[b:b + 1]
        parts = (zw * m.mu.detach()).split([s.end - s.start for s in m.layout])
        vparts = (zw * zw * var).split([s.end - s.start for s in m.layout])
        for i in range(len(m.sizes) - 1):
            w, v = parts[2 * i].view(m.layout[2 * i].shape), vparts[2 * i].view(m.layout[2 * i].shape)
            h = h @ w.T + parts[2 * i + 1] + ((h * h) @ v.T).clamp_min(1e-16).sqrt() * eps[i][b]
            h = torch.relu(h) if i < len(m.sizes) - 2 else h
        torch.testing.assert_close(got[b:b + 1], h, rtol=1e-10, atol=1e-10)
    draws = m.scale_sample(20_000).detach()
    first, second = m.scale_moments()
    torch.testing.assert_close(draws.mean(0), first.detach(), rtol=0.05, atol=1e-3)
    c = torch.corrcoef(torch.stack([draws[:-1, 5], draws[1:, 5]]))[0, 1]
    assert abs(float(c)) < 0.05  # consecutive examples draw independently


@pytest.mark.parametrize("method", ["bc_gnj", "bc_ghs"])
def test_natural_keep_removes_whole_units_and_prunes_to_exact_zeros(method):
    torch.manual_seed(0)
    m = build(small(method))
    pixel, hidden = 300, 7  # one pixel of layer 1, one unit of the first hidden layer (a group of layer 2)
    with torch.no_grad():
        if method == "bc_gnj":  # log alpha of those groups far above every threshold
            m.z_mu[[pixel, 784 + hidden]] = 1e-3
        else:  # Var[log z~] of those groups large: log alpha far above the threshold
            m.z_log_var[[pixel, 784 + hidden]] = 2.0
    keep = m.natural_keep()
    w1 = keep[:40 * 784].view(40, 784)
    w2 = keep[40 * 785:40 * 785 + 30 * 40].view(30, 40)
    assert not w1[:, pixel].any() and not w2[:, hidden].any()  # every weight leaving the dropped units
    assert not w1[hidden].any()  # a unit nothing reads loses its inputs too
    assert int((~keep).sum()) == 40 + 30 + 783  # and nothing else (biases all kept)
    pruned = prune.pruned_copy(m, keep)
    x = torch.rand(4, 784)
    for flat in (None, pruned.sample()):
        assert prune.measured_sparsity(pruned, x, False, flat)[0] == pytest.approx((40 + 30 + 783) / (40 * 784 + 30 * 40 + 300))
    assert torch.equal(pruned.weight_variance()[~keep], torch.zeros(int((~keep).sum())))


def test_ghs_log_alpha_is_the_scales_variance_over_its_squared_mean():
    """log alpha_j = log(Var[zeta_j] / E[zeta_j]^2), here from the scale's first two moments."""
    torch.manual_seed(0)
    m = build(small("bc_ghs")).double()
    with torch.no_grad():
        m.z_log_var.normal_(-2.0, 1.5)
        m.s_log_var.normal_(-3.0, 0.5)
    first, second = (t.detach() for t in m.scale_moments())
    torch.testing.assert_close(m.log_alpha().detach(), torch.log((second - first ** 2) / first ** 2), rtol=1e-9, atol=1e-9)


def test_a_held_level_keeps_its_group_parameters_through_its_sparse_state():
    """prune.held_state stores [P] vectors at the held entries and per-group tensors whole."""
    torch.manual_seed(0)
    m = build(small("bc_ghs"))
    keep = torch.rand(m.n_params) > 0.5
    m.hold_(keep)
    with torch.no_grad():
        m.z_mu.add_(0.5)
    back = prune.held_model(build(small("bc_ghs")), prune.held_state(m))
    for k, v in m.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v)


def test_thresholds_must_match_the_depth():
    with pytest.raises(ConfigError, match="gnj_thresholds"):
        TrialConfig(method="bc_gnj", hidden=(100,), gnj_thresholds=[-3, -3, -3])
    assert TrialConfig(method="bc_gnj", hidden=(100,), gnj_thresholds=[-3]).gnj_thresholds == (-3.0,)
    assert TrialConfig(method="bc_ghs").lr == 1e-3


@pytest.mark.slow
def test_two_epoch_gnj_trial_is_above_chance_and_removes_units(mnist):
    """lr 1e-2 so 100 steps can move mu_z of the unused pixels to 0 (the paper trains 200 epochs at 1e-3)."""
    cfg = TrialConfig(method="bc_gnj", hidden=(300, 100), epochs=2, train_subset=5000, val_size=2000, lr=1e-2,
                      protocol="natural", sparsities=(0.0,), test_samples=2, compile=False)
    r = run_trial(cfg, arrays=mnist)
    m = r.metrics
    assert m["test_acc_nat"] > 0.8 and m["test_acc_mc_nat"] > 0.8
    assert m["sparsity_nat"] > 0.2 and r.history[-1]["train_kl"] > 0


@pytest.mark.slow
def test_two_epoch_ghs_trial_is_above_chance(mnist):
    cfg = TrialConfig(method="bc_ghs", hidden=(300, 100), epochs=2, train_subset=5000, val_size=2000, lr=1e-2,
                      protocol="natural", sparsities=(0.0, 0.9), test_samples=2, compile=False)
    r = run_trial(cfg, arrays=mnist)
    assert r.metrics["test_acc_nat"] > 0.8 and r.metrics["test_acc_p90"] > 0.5


@pytest.mark.slow
def test_cli_trains_bc_gnj(tmp_path):
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "suite.trial", "--method", "bc_gnj", "--epochs", "1", "--train-subset", "1000",
                        "--hidden", "32", "--gnj-thresholds", "-3", "--protocol", "natural", "--sparsities", "0,0.9",
                        "--test-samples", "2", "--compile", "false", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    m = json.loads(out.read_text())["metrics"]
    assert m["test_acc_p00"] > 0.5 and "sparsity_nat" in m



@pytest.mark.slow
@pytest.mark.parametrize("method", ["bc_gnj", "bc_ghs"])
def test_finetune_holds_the_mask_with_per_group_parameters(method, mnist):
    """The held mask zeroes the [P] gradients only; the per-group scales train on, the pruned weights
    stay exactly 0 (measured sparsity = the level) and the retrained level stays above chance."""
    cfg = TrialConfig(method=method, hidden=(64,), epochs=1, train_subset=2000, val_size=1000, protocol="finetune",
                      finetune_epochs=1, sparsities=(0.9,), test_samples=2, compile=False, lr=1e-2,
                      **{f"{method[3:]}_thresholds": [-3.0]})
    m = run_trial(cfg, arrays=mnist).metrics
    assert m["sparsity_p90"] == pytest.approx(0.9, abs=1e-3) and m["test_acc_p90"] > 0.5
