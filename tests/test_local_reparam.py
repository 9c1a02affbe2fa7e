"""The fused local-reparameterisation layer against the unfused formula it replaced (autograd over
F.linear, clamp, sqrt, randn_like), and its hand-written backward against finite differences."""
import math

import pytest
import torch
import torch.nn.functional as F

from suite.config import TrialConfig
from suite.methods import build
from suite.methods.local_reparam import local_reparam_linear
from suite.methods.sparse_vd import vd_terms


def unfused(x, w, b, v, vb, eps):
    """The formula Method.forward ran per layer before the fused layer, differentiated by autograd."""
    return F.linear(x, w, b) + F.linear(x * x, v, vb).clamp_min(1e-16).sqrt() * eps


def layer_inputs(dtype, n=7, n_in=13, n_out=5):
    """Random layer inputs; example 0 is all zeros and output 0 has zero variances, so the clamp of
    the variance binds at (0, 0) and the gradient must skip the variance path there."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, n_in, generator=g, dtype=dtype).relu()
    x[0] = 0.0
    w = torch.randn(n_out, n_in, generator=g, dtype=dtype) * 0.3
    b = torch.randn(n_out, generator=g, dtype=dtype)
    v = torch.rand(n_out, n_in, generator=g, dtype=dtype) * 0.05
    vb = torch.rand(n_out, generator=g, dtype=dtype) * 0.01
    v[0], vb[0] = 0.0, 0.0
    eps = torch.randn(n, n_out, generator=g, dtype=dtype)
    gout = torch.randn(n, n_out, generator=g, dtype=dtype)
    return [x, w, b, v, vb], eps, gout


@pytest.mark.parametrize("dtype,tol", [(torch.float64, dict(rtol=1e-12, atol=1e-14)),
                                       (torch.float32, dict(rtol=1e-5, atol=1e-6))])
def test_fused_layer_matches_the_unfused_formula(dtype, tol):
    inputs, eps, gout = layer_inputs(dtype)
    results = []
    for fn in (local_reparam_linear, unfused):
        leaves = [t.clone().requires_grad_() for t in inputs]
        out = fn(*leaves, eps)
        out.backward(gout)
        results.append([out.detach(), *(t.grad for t in leaves)])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, **tol)
    assert results[0][5][0] == 0 and results[0][4][0].abs().sum() == 0  # clamped everywhere: no variance gradient


def test_hand_written_backward_passes_gradcheck():
    inputs, eps, _ = layer_inputs(torch.float64)
    inputs[0][0] = 0.5  # away from the clamp: the formula is smooth in every input
    inputs[3][0] = 0.01
    leaves = [t.clone().requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(lambda *a: local_reparam_linear(*a, eps), leaves)


def unfused_forward(m, x, flat, var):
    """Method.forward's training path as it was before the fused layer (no dropout)."""
    parts, vparts = flat.split([s.end - s.start for s in m.layout]), var.split([s.end - s.start for s in m.layout])
    h = x
    for i in range(len(m.sizes) - 1):
        shape = m.layout[2 * i].shape
        out = F.linear(h, parts[2 * i].view(shape), parts[2 * i + 1])
        std = F.linear(h * h, vparts[2 * i].view(shape), vparts[2 * i + 1]).clamp_min(1e-16).sqrt()
        h = out + std * torch.randn_like(out)
        h = F.relu(h) if i < len(m.sizes) - 2 else h
    return h


@pytest.mark.parametrize("dtype,tol", [(torch.float64, dict(rtol=1e-10, atol=1e-12)),
                                       (torch.float32, dict(rtol=1e-4, atol=1e-5))])
def test_sparse_vd_forward_draws_the_same_noise_and_gradients_as_before(dtype, tol):
    """The whole training forward of a Sparse VD net under one seed: the fused layer takes the same
    normals from the generator, in the same order, as the unfused randn_like did, so logits and the
    gradients w.r.t. theta, log sigma^2 and the input agree to rounding."""
    torch.manual_seed(0)
    m = build(TrialConfig(method="sparse_vd", hidden=(40, 30), compile=False)).to(dtype)
    with torch.no_grad():
        m.log_sigma2.uniform_(-12, 0)
        m.theta[:50] = 0.0  # variance exactly 0 there
    x0, y = torch.rand(16, 784, dtype=dtype), torch.randint(0, 10, (16,))
    results = []
    for forward in (m.forward, lambda x, flat, var: unfused_forward(m, x, flat, var)):
        th, ls = m.theta.detach().clone().requires_grad_(), m.log_sigma2.detach().clone().requires_grad_()
        x = x0.clone().requires_grad_()
        var, _ = vd_terms(th, ls, m.is_weight)
        torch.manual_seed(123)
        logits = forward(x, th, var)
        F.cross_entropy(logits, y).backward()
        results.append([logits.detach(), th.grad, ls.grad, x.grad])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, **tol)
    assert results[0][2].abs().max() > 0 and not math.isnan(float(results[0][0].sum()))
