import math

import numpy as np
import torch
from scipy import stats

from suite.config import TrialConfig
from suite.kernels import Prior, kl_kernels, normal_noise, sample_and_kl, softplus, weight_noise_key
from suite.methods import build


def reference_kl_terms(mu, rho, eps, prior):
    """Straightforward autograd implementation: w, -H[q] - log P(w) with torch's own ops."""
    sigma = torch.nn.functional.softplus(rho)
    w = mu + sigma * eps
    n = w.numel()
    neg_entropy = -(torch.log(sigma).sum() + 0.5 * (1 + math.log(2 * math.pi)) * n)
    log_prior = prior.log_prob(w).sum()
    return w, neg_entropy - log_prior


def test_mixture_log_density_matches_direct_computation():
    prior = Prior(0.3, 1.0, math.exp(-6))
    w = torch.tensor([-2.0, -0.1, -1e-3, 0.0, 1e-4, 0.05, 3.0], dtype=torch.float64)
    direct = np.log(0.3 * stats.norm.pdf(w.numpy(), 0, 1.0) + 0.7 * stats.norm.pdf(w.numpy(), 0, math.exp(-6)))
    np.testing.assert_allclose(prior.log_prob(w).numpy(), direct, rtol=1e-10)


def test_fused_kl_value_and_gradients_match_autograd_reference():
    torch.manual_seed(0)
    prior = Prior(0.5, 1.0, math.exp(-6))
    n = 2000
    mu = (torch.rand(n, dtype=torch.float64) * 0.4 - 0.2).requires_grad_()
    rho = (torch.rand(n, dtype=torch.float64) - 5).requires_grad_()
    eps = torch.randn(n, dtype=torch.float64)
    g_w = torch.randn(n, dtype=torch.float64)
    w, kl = sample_and_kl(mu, rho, eps, prior)
    ((w * g_w).sum() + 0.7 * kl).backward()
    got = mu.grad.clone(), rho.grad.clone()
    mu.grad = rho.grad = None
    w_ref, kl_ref = reference_kl_terms(mu, rho, eps, prior)
    ((w_ref * g_w).sum() + 0.7 * kl_ref).backward()
    torch.testing.assert_close(w, w_ref)
    torch.testing.assert_close(kl, kl_ref, rtol=1e-9, atol=1e-6)
    torch.testing.assert_close(got[0], mu.grad)
    torch.testing.assert_close(got[1], rho.grad)


def test_compiled_kernels_equal_eager():
    torch.manual_seed(1)
    prior = Prior(0.5, 1.0, math.exp(-6))
    mu, rho, eps = torch.rand(5000) * 0.4 - 0.2, torch.rand(5000) - 5, torch.randn(5000)
    mu.requires_grad_(), rho.requires_grad_()
    out = {}
    for compiled in (False, True):
        w, kl = sample_and_kl(mu, rho, eps, prior, compiled)
        (w.sum() + kl).backward()
        out[compiled] = (w.detach(), kl.detach(), mu.grad.clone(), rho.grad.clone())
        mu.grad = rho.grad = None
    for a, b in zip(out[False], out[True]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-3)


def test_monte_carlo_kl_agrees_with_closed_form_for_a_gaussian_prior():
    """sigma1 = sigma2 = s makes the mixture a single Gaussian, where KL(q||p) has a closed form."""
    torch.manual_seed(2)
    s = 0.5
    prior = Prior(0.5, s, s)
    mu, rho = torch.randn(200, dtype=torch.float64) * 0.3, torch.randn(200, dtype=torch.float64) * 0.5 - 1
    sigma = softplus(rho)
    closed = (torch.log(s / sigma) + (sigma ** 2 + mu ** 2) / (2 * s ** 2) - 0.5).sum()
    draws = torch.stack([sample_and_kl(mu, rho, torch.randn(200, dtype=torch.float64), prior)[1] for _ in range(4000)])
    se = draws.std() / math.sqrt(len(draws))
    assert abs(draws.mean() - closed) < 4 * se, (float(draws.mean()), float(closed), float(se))
    # and the estimator is not trivially constant
    assert draws.std() > 0.1


def test_flat_layout_views_cover_all_parameters():
    m = build(TrialConfig(method="sgd", hidden=(500, 500)))
    assert m.n_params == 784 * 500 + 500 + 500 * 500 + 500 + 500 * 10 + 10 == m.theta.numel()
    assert m(torch.rand(3, 784)).shape == (3, 10)


def test_bbb_objective_has_gradients_for_mu_and_rho():
    torch.manual_seed(0)
    m = build(TrialConfig(method="bbb", hidden=(32,), train_samples=2, compile=False))
    loss, nll, kl = m.objective(torch.rand(8, 784), torch.randint(0, 10, (8,)), kl_weight=0.5)
    torch.testing.assert_close(loss, nll + kl)
    loss.backward()
    assert m.mu.grad.abs().sum() > 0 and m.rho.grad.abs().sum() > 0


def test_threefry_normals_are_standard_independent_and_compile_invariant():
    n = 400_003
    z = normal_noise(n, torch.tensor([12345, 678, 9, 10]))
    assert z.shape == (n,) and torch.isfinite(z).all()
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    assert abs(float((z ** 4).mean()) - 3) < 0.05 and abs(float((z ** 3).mean())) < 0.03  # kurtosis, skew
    assert abs(float(stats.kstest(z[:50_000].numpy(), "norm").statistic)) < 0.01
    other = normal_noise(n, torch.tensor([12346, 678, 9, 10]))
    assert abs(float(torch.corrcoef(torch.stack([z, other]))[0, 1])) < 0.01
    torch.testing.assert_close(kl_kernels(True)[2](n, torch.tensor([12345, 678, 9, 10])), z, rtol=1e-5, atol=1e-5)
    torch.manual_seed(3)
    k1 = weight_noise_key(torch.device("cpu"))
    torch.manual_seed(3)
    assert torch.equal(k1, weight_noise_key(torch.device("cpu")))
