"""Sparse Variational Dropout: the KL approximation, clipping, thresholding to exact zeros, training."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from suite import prune
from suite.config import TrialConfig
from suite.methods import build
from suite.methods.sparse_vd import LOG_ALPHA_CLIP, neg_kl_approx
from suite.trial import run_trial


def neg_kl_numeric(log_alpha: float) -> float:
    """-KL(N(theta, alpha theta^2) || log-uniform) up to its constant, by quadrature:
    0.5 log alpha - E_{e ~ N(1, alpha)} log|e| (Molchanov et al. 2017, eq. 13), shifted so that it
    vanishes as alpha -> inf (the limit of the integral is (gamma + log 2) / 2)."""
    s = math.exp(0.5 * log_alpha)
    lo, hi = 1 - 40 * s, 1 + 40 * s
    # split at the integrable log singularity x = 0, so each piece has it at an end point
    pieces = [(lo, 0.0), (0.0, hi)] if lo < 0 else [(lo, hi)]
    e_log = sum(integrate.quad(lambda x: math.log(abs(x)) * stats.norm.pdf(x, 1.0, s), a, b, limit=400)[0]
                for a, b in pieces)
    return 0.5 * log_alpha - e_log - (np.euler_gamma + math.log(2)) / 2


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")  # accuracy is what the test checks
@pytest.mark.parametrize("log_alpha", [-6.0, -3.0, -1.0, 0.0, 1.0, 3.0, 6.0])
def test_kl_approximation_matches_the_integral(log_alpha):
    approx = float(neg_kl_approx(torch.tensor(log_alpha, dtype=torch.float64)))
    assert approx == pytest.approx(neg_kl_numeric(log_alpha), abs=0.01)  # the paper's stated error is ~0.009


def small(**kw):
    return TrialConfig(method="sparse_vd", hidden=(40, 30), compile=False, **kw)


def test_log_alpha_is_clipped_and_finite_at_zero_weights():
    m = build(small())
    with torch.no_grad():
        m.theta[:5] = 0.0           # log theta^2 = log 1e-8: huge log alpha
        m.log_sigma2[5:10] = -60.0  # tiny variance: very negative log alpha
    la = m.log_alpha()
    assert torch.isfinite(la).all() and la.max() <= LOG_ALPHA_CLIP and la.min() >= -LOG_ALPHA_CLIP
    assert torch.all(la[:5] == LOG_ALPHA_CLIP) and torch.all(la[5:10] == -LOG_ALPHA_CLIP)


def test_threshold_gives_exact_zeros_in_the_forward_pass():
    torch.manual_seed(0)
    m = build(small())
    with torch.no_grad():  # make a known part of the weights noisy: log sigma^2 high there
        m.log_sigma2[::3] = 5.0
    keep = m.natural_keep()
    dropped = (m.log_alpha() > 3) & m.is_weight
    assert torch.equal(~keep, dropped) and dropped.sum() > 0
    pruned = prune.pruned_copy(m, keep)
    x = torch.rand(4, 784)
    want = int(dropped.sum()) / int(m.is_weight.sum())
    assert prune.measured_sparsity(pruned, x, False)[0] == pytest.approx(want)
    assert prune.measured_sparsity(pruned, x, False, pruned.sample())[0] == pytest.approx(want)  # samples too


def test_objective_equals_a_hand_computation():
    """A 784-3-10 net in float64 from the paper's formulas: log alpha = log sigma^2 - log theta^2
    (theta^2 + 1e-8, clipped to [-8, 8]), each layer's pre-activation drawn as mean + sqrt(x^2 alpha
    theta^2) eps (local reparameterisation, with the same eps), the NLL from explicitly computed
    logits, -KL per weight = k1 sigmoid(k2 + k3 log alpha) - 0.5 log1p(1 / alpha) - k1 (Molchanov et
    al. 2017, eq. 14) summed over the weights (not the biases), times kl_weight, everything per
    example. Gradients w.r.t. theta and log sigma^2: float64 autograd of the same computation."""
    h, kl_weight = 3, 0.3
    torch.manual_seed(0)
    m = build(TrialConfig(method="sparse_vd", hidden=(h,), compile=False))
    with torch.no_grad():
        m.log_sigma2.uniform_(-14, 0)  # log alpha on both sides of the clip range and inside it
        m.theta[:20] = 0.0
    x, y = torch.rand(4, 784), torch.tensor([3, 0, 9, 3])
    torch.manual_seed(7)
    loss, nll, kl = m.objective(x, y, kl_weight)
    loss.backward()

    torch.manual_seed(7)  # the pre-activation noise, layer by layer
    e1, e2 = torch.randn(len(y), h).double(), torch.randn(len(y), 10).double()
    theta, ls = m.theta.detach().double().requires_grad_(), m.log_sigma2.detach().double().requires_grad_()
    la = (ls - torch.log(theta * theta + 1e-8)).clamp(-8, 8)
    var = torch.exp(la) * theta * theta
    w1, b1, w2, b2 = split_784_h_10(theta, h)
    v1, _, v2, _ = split_784_h_10(var, h)
    a = torch.relu(x.double() @ w1.T + b1 + torch.sqrt(x.double() ** 2 @ v1.T) * e1)
    assert (a > 0).any(1).all()  # every example reaches the second layer's noise (sqrt is smooth there)
    logits = a @ w2.T + b2 + torch.sqrt(a * a @ v2.T) * e2
    nll_h = (torch.logsumexp(logits, 1) - logits[torch.arange(len(y)), y]).mean()
    k1, k2, k3 = 0.63576, 1.87320, 1.48695
    neg_kl = k1 * torch.sigmoid(k2 + k3 * la) - 0.5 * torch.log1p(torch.exp(-la)) - k1
    la_w = weight_entries(la, h)
    assert (la_w == 8).any() and (la_w == -8).any() and ((la_w > -8) & (la_w < 8)).any()
    kl_h = -weight_entries(neg_kl, h).sum() * kl_weight / len(y)
    (nll_h + kl_h).backward()

    assert nll.item() == pytest.approx(nll_h.item(), rel=1e-6)
    assert kl.item() == pytest.approx(kl_h.item(), rel=1e-5) and kl.item() > 1
    assert loss.item() == pytest.approx((nll_h + kl_h).item(), rel=1e-5)
    for got, want in ((m.theta.grad, theta.grad), (m.log_sigma2.grad, ls.grad)):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))
    assert torch.all(m.log_sigma2.grad[~m.is_weight] == 0)  # biases are deterministic


def split_784_h_10(flat: torch.Tensor, h: int):
    """The documented flat layout of a 784-h-10 net: [W1 (h x 784), b1 (h), W2 (10 x h), b2 (10)]."""
    a, b, c = 784 * h, 785 * h, 795 * h
    return flat[:a].view(h, 784), flat[a:b], flat[b:c].view(10, h), flat[c:]


def weight_entries(flat: torch.Tensor, h: int) -> torch.Tensor:
    w1, _, w2, _ = split_784_h_10(flat, h)
    return torch.cat([w1.flatten(), w2.flatten()])


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["mnist", "fmnist"])
def test_two_epoch_lenet_trial_is_above_chance_with_a_natural_level(dataset, request):
    cfg = TrialConfig(method="sparse_vd", hidden=(300, 100), epochs=2, train_subset=10000, val_size=2000, lr=1e-3,
                      kl_warmup=[1, 10], protocol="natural", sparsities=(0.0, 0.9), test_samples=2, dataset=dataset)
    r = run_trial(cfg, arrays=request.getfixturevalue(dataset))
    m = r.metrics
    assert m["test_acc_nat"] > 0.6 and m["test_acc_mc_nat"] > 0.6
    assert 0 < m["sparsity_nat"] < 1 and r.history[-1]["train_kl"] > 0
    assert {"sparsity_l1_nat", "sparsity_l2_nat", "sparsity_l3_nat"} <= set(m)


@pytest.mark.parametrize("compiled", [False, True])
def test_fused_terms_match_autograd_reference(compiled):
    """Value and hand-written gradients against float64 autograd of the textbook formulas; the eager
    path in float64 to rounding, the compiled float32 kernel to float32 tolerance."""
    from suite.methods.sparse_vd import vd_terms
    torch.manual_seed(0)
    n = 3000
    theta64 = torch.randn(n, dtype=torch.float64) * 0.05
    theta64[:10] = 0.0
    ls64 = torch.rand(n, dtype=torch.float64) * 16 - 14  # log alpha spans the clip range and beyond
    in_kl = torch.rand(n) > 0.1
    g_var = torch.randn(n, dtype=torch.float64)

    def reference(th, ls):
        la = (ls - torch.log(th * th + 1e-8)).clamp(-LOG_ALPHA_CLIP, LOG_ALPHA_CLIP)
        var = torch.where(in_kl, torch.exp(la) * th * th, 0.0)
        return var, -torch.where(in_kl, neg_kl_approx(la), 0.0).sum()
    dtype = torch.float32 if compiled else torch.float64
    out = []
    for fn, dt in ((lambda a, b: vd_terms(a, b, in_kl, compiled), dtype), (reference, torch.float64)):
        th, ls = theta64.to(dt).requires_grad_(), ls64.to(dt).requires_grad_()
        var, kl = fn(th, ls)
        ((var * g_var.to(dt)).sum() + 0.3 * kl).backward()
        out.append([t.detach().double() for t in (var, kl, th.grad, ls.grad)])
    tol = dict(rtol=2e-5, atol=1e-4) if compiled else dict(rtol=1e-9, atol=1e-12)
    for got, want in zip(*out):
        torch.testing.assert_close(got, want, **tol)
